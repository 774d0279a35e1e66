# The two commands a newcomer runs: `make demo` and `make test`.
# Each creates .venv if missing and installs the project with its dev extras first.

VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup clean

setup: $(STAMP)

# deploy/install.sh is the one install recipe: the Docker image runs it too.
$(STAMP): pyproject.toml deploy/install.sh
	deploy/install.sh $(VENV)
	@touch $(STAMP)

# The default study (digits + mlp, grid over none/l1/l2 x 7 learning rates), then its report.
demo: $(STAMP)
	$(VENV)/bin/insgd-study launch
	$(VENV)/bin/insgd-study report --study default

# .ci/chromium: the dashboard test's Chromium, installed when missing (root with apt-get).
test: $(STAMP)
	.ci/chromium
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -ra

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

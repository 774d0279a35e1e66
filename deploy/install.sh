#!/usr/bin/env bash
# The one way insgd-study is installed: by `make setup` (hence `make test` and .ci/run) and by
# deploy/docker/Dockerfile, so the image that runs studies on a cluster is built by exactly
# the steps that CI tests. Run it from the repository root:
#
#     deploy/install.sh [VENV]          # VENV defaults to .venv
#
# It creates VENV if it has no python (with whichever python3 is first on PATH; Python 3.11
# or newer), upgrades pip, and installs the project editable with its dev extras (pytest and
# ruff: the image can then run the test suite against its own install).
set -euo pipefail

VENV="${1:-.venv}"
test -x "$VENV/bin/python" || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[dev]'

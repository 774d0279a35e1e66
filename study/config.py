"""What a study is: `StudyConfig`, merged from defaults, a preset, a TOML file and flags.

Precedence is defaults < ``--preset`` < TOML file < command-line flags, and everything is
validated here, before Ray starts or the database is opened, so that bad input costs
nothing and writes nothing. The defaults *are* the default study (`make demo`): digits +
mlp, a grid over none/l1/l2 x 7 learning rates from 1e-3 to 10, one seed.

Fields fall in two kinds. *Study fields* (`STUDY_FIELDS`) define what is being measured:
a study stored under a name keeps them, and launching that name with different ones is
refused. *Run fields* (where it runs, how many at once, ...) may change from one launch of
a study to the next. `trials` is the target count of finished trials; it may grow on
``--resume``.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from study.errors import UsageError
from trainers.config import TrainConfig

SAMPLERS: tuple[str, ...] = ("tpe", "random", "qmc", "grid")
SCHEDULERS: tuple[str, ...] = ("fifo", "asha")
#: "none" is the plain SGD baseline; l1 / l2 are INSGD's input-energy norms.
VARIANTS: tuple[str, ...] = ("none", "l1", "l2")
#: The eps of a one-point eps grid (TrainConfig's default, the paper's 0.01).
DEFAULT_EPS = TrainConfig().eps
#: The longest a launch waits for its database to come back (one day).
MAX_DB_RETRY_SECONDS = 86400.0
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

#: TrainConfig fields a study sets itself; `[train]` in the TOML may set every other one.
STUDY_OWNED_TRAIN_FIELDS: frozenset[str] = frozenset(
    {
        "dataset",
        "model",
        "data_dir",
        "optimizer",
        "norm",
        "lr",
        "eps",
        "seed",
        "epochs",
        "batch_size",
        "device",
        "download",
    }
)


@dataclass(frozen=True)
class StudyConfig:
    """One study: what to train, what to search, how to run it. See the module docstring."""

    # identity and where results go
    name: str = "default"
    storage: str | None = None
    # what one trial trains
    dataset: str = "digits"
    model: str = "mlp"
    data_dir: str | None = None
    epochs: int = 8
    batch_size: int = 64
    train: dict[str, Any] = field(default_factory=dict)
    # what to search
    trials: int | None = None
    sampler: str = "grid"
    sampler_seed: int | None = None
    norms: tuple[str, ...] = VARIANTS
    lr_min: float = 1e-3
    lr_max: float = 10.0
    lr_points: int = 7
    eps_min: float = 1e-3
    eps_max: float = 1.0
    eps_points: int = 1
    seeds: int = 1
    scheduler: str = "fifo"
    grace_period: int = 1
    reduction_factor: int = 2
    # how to run it
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 3
    address: str | None = None
    results_dir: str | None = None
    db_retry_seconds: float = 120.0
    resume: bool = False
    verbose: bool = False

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise UsageError naming the first bad value (flag spelling, as a user typed it)."""
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise UsageError(
                f"--name must be 1-100 letters, digits, '_', '.' or '-' (starting with a "
                f"letter or digit); got {self.name!r}"
            )
        from trainers.data import check_dataset_name
        from trainers.models import check_model_name

        _wrap(check_dataset_name, self.dataset, "--dataset")
        _wrap(check_model_name, self.model, "--model")
        for key in (
            "epochs",
            "batch_size",
            "lr_points",
            "eps_points",
            "seeds",
            "grace_period",
            "max_failures",
        ):
            minimum = 0 if key == "max_failures" else 1
            value = getattr(self, key)
            if not _is_int(value) or value < minimum:
                raise UsageError(f"{_flag(key)} must be an integer >= {minimum}; got {value!r}")
        _choice("sampler", self.sampler, SAMPLERS)
        _choice("scheduler", self.scheduler, SCHEDULERS)
        if not _is_int(self.reduction_factor) or self.reduction_factor < 2:
            raise UsageError(
                f"reduction_factor must be an integer >= 2; got {self.reduction_factor!r}"
            )
        if self.grace_period > self.epochs:
            raise UsageError(
                f"grace_period ({self.grace_period}) must not exceed --epochs ({self.epochs})"
            )
        if self.sampler_seed is not None and not _is_int(self.sampler_seed):
            raise UsageError(f"--sampler-seed must be an integer; got {self.sampler_seed!r}")
        self._validate_norms()
        _range("lr", self.lr_min, self.lr_max, self.lr_points, self.sampler)
        if self.insgd_norms:
            _range("eps", self.eps_min, self.eps_max, self.eps_points, self.sampler)
        self._validate_trials()
        self._validate_resources()
        self._validate_train_options()

    def _validate_norms(self) -> None:
        if not isinstance(self.norms, tuple) or not self.norms:
            raise UsageError(f"--norms needs at least one of {', '.join(VARIANTS)}")
        for norm in self.norms:
            if norm not in VARIANTS:
                raise UsageError(
                    f"--norms: unknown variant {norm!r}; choose from {', '.join(VARIANTS)} "
                    f"('none' is the SGD baseline)"
                )
        if len(set(self.norms)) != len(self.norms):
            raise UsageError(f"--norms lists a variant twice: {','.join(self.norms)}")

    def _validate_trials(self) -> None:
        if self.trials is not None and (not _is_int(self.trials) or self.trials < 1):
            raise UsageError(f"--trials must be an integer >= 1; got {self.trials!r}")
        if self.sampler == "grid":
            size = self.grid_size
            if self.trials is not None and self.trials != size:
                raise UsageError(
                    f"--trials {self.trials} contradicts the grid, which has {size} trials "
                    f"({self.grid_description()}); omit --trials with --sampler grid"
                )
            return
        if self.trials is None:
            raise UsageError(f"--trials is required with --sampler {self.sampler}")
        if self.trials % self.seeds:
            raise UsageError(
                f"--trials {self.trials} is not a multiple of --seeds {self.seeds}: every "
                f"configuration runs once per seed"
            )

    def _validate_resources(self) -> None:
        if self.max_concurrent is not None and (
            not _is_int(self.max_concurrent) or self.max_concurrent < 1
        ):
            raise UsageError(
                f"--max-concurrent must be an integer >= 1; got {self.max_concurrent!r}"
            )
        if not _is_number(self.cpus_per_trial) or self.cpus_per_trial <= 0:
            raise UsageError(f"--cpus-per-trial must be a number > 0; got {self.cpus_per_trial!r}")
        gpus = self.gpus_per_trial
        if not _is_number(gpus) or gpus < 0:
            raise UsageError(f"--gpus-per-trial must be a number >= 0; got {gpus!r}")
        if gpus > 1 and gpus != int(gpus):
            raise UsageError(f"--gpus-per-trial above 1 must be a whole number; got {gpus!r}")
        for key in ("address", "results_dir", "data_dir", "storage"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise UsageError(f"{_flag(key)} must be a non-empty string; got {value!r}")
        retry = self.db_retry_seconds
        if not _is_number(retry) or not 0 <= retry <= MAX_DB_RETRY_SECONDS:
            raise UsageError(
                f"--db-retry-seconds must be a number from 0 to {MAX_DB_RETRY_SECONDS:g}; "
                f"got {retry!r}"
            )
        if not isinstance(self.resume, bool) or not isinstance(self.verbose, bool):
            raise UsageError("resume and verbose must be true or false")

    def _validate_train_options(self) -> None:
        if not isinstance(self.train, dict):
            raise UsageError(f"[train] must be a table of training options; got {self.train!r}")
        owned = sorted(set(self.train) & STUDY_OWNED_TRAIN_FIELDS)
        if owned:
            raise UsageError(
                f"[train] must not set {', '.join(owned)}: the study sets "
                f"{'them' if len(owned) > 1 else 'it'} (use the study's own keys/flags)"
            )
        for norm in self.norms:
            try:
                self.train_config(norm, self.lr_min, self.eps_min, seed=0)
            except (TypeError, ValueError) as exc:
                raise UsageError(f"[train]: {_one_line(exc)}") from None

    # ------------------------------------------------------------------ derived values
    @property
    def insgd_norms(self) -> tuple[str, ...]:
        return tuple(n for n in self.norms if n != "none")

    @property
    def grid_size(self) -> int:
        """Trials in the grid: lrs x (1 for SGD + eps points per INSGD norm) x seeds."""
        per_lr = (1 if "none" in self.norms else 0) + len(self.insgd_norms) * self.eps_points
        return self.lr_points * per_lr * self.seeds

    def grid_description(self) -> str:
        """E.g. "7 lrs x (1 SGD + 2 INSGD norms x 1 eps) x 1 seeds", for error messages."""
        sgd = "1 SGD + " if "none" in self.norms else ""
        return (
            f"{self.lr_points} lrs x ({sgd}{len(self.insgd_norms)} INSGD norms x "
            f"{self.eps_points} eps) x {self.seeds} seeds"
        )

    @property
    def target_trials(self) -> int:
        """How many finished trials the study ends with."""
        return self.grid_size if self.sampler == "grid" else int(self.trials or 0)

    def train_config(
        self, norm: str, lr: float, eps: float | None, seed: int, device: str = "auto"
    ) -> TrainConfig:
        """The TrainConfig of one trial: "none" is SGD, l1/l2 are INSGD with that norm."""
        options: dict[str, Any] = dict(self.train)
        options.update(
            dataset=self.dataset,
            model=self.model,
            data_dir=self.data_dir,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=float(lr),
            seed=int(seed),
            device=device,
        )
        if norm == "none":
            options["optimizer"] = "sgd"
        else:
            options.update(
                optimizer="insgd",
                norm=norm,
                eps=float(eps if eps is not None else DEFAULT_EPS),
            )
        return TrainConfig.from_dict(options)

    def study_dict(self) -> dict[str, Any]:
        """What the database stores as the study's configuration (study fields + trials)."""
        data = {key: _jsonable(getattr(self, key)) for key in STUDY_FIELDS}
        data["trials"] = self.target_trials
        return data

    def differences(
        self, stored: Mapping[str, Any], keys: frozenset[str] | None = None
    ) -> list[str]:
        """Study fields whose value differs from a stored configuration, as "key: a vs b"."""
        out = []
        for key in sorted(keys if keys is not None else STUDY_FIELDS):
            if key not in STUDY_FIELDS:
                continue
            mine = _jsonable(getattr(self, key))
            theirs = stored.get(key, _jsonable(_DEFAULTS.get(key)))
            if not _same(mine, theirs):
                out.append(f"{key}: stored {theirs!r}, given {mine!r}")
        return out


STUDY_FIELDS: frozenset[str] = frozenset(
    {
        "dataset",
        "model",
        "epochs",
        "batch_size",
        "train",
        "sampler",
        "sampler_seed",
        "norms",
        "lr_min",
        "lr_max",
        "lr_points",
        "eps_min",
        "eps_max",
        "eps_points",
        "seeds",
        "scheduler",
        "grace_period",
        "reduction_factor",
    }
)
_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(StudyConfig))
_DEFAULTS: dict[str, Any] = {
    f.name: (f.default_factory() if callable(f.default_factory) else f.default)  # type: ignore[misc]
    for f in fields(StudyConfig)
}

# What each key accepts in a TOML file (flags are typed by argparse).
_KINDS: dict[str, str] = {
    "name": "str",
    "storage": "str?",
    "dataset": "str",
    "model": "str",
    "data_dir": "str?",
    "epochs": "int",
    "batch_size": "int",
    "train": "table",
    "trials": "int?",
    "sampler": "str",
    "sampler_seed": "int?",
    "norms": "norms",
    "lr_min": "float",
    "lr_max": "float",
    "lr_points": "int",
    "eps_min": "float",
    "eps_max": "float",
    "eps_points": "int",
    "seeds": "int",
    "scheduler": "str",
    "grace_period": "int",
    "reduction_factor": "int",
    "max_concurrent": "int?",
    "cpus_per_trial": "float",
    "gpus_per_trial": "float",
    "max_failures": "int",
    "address": "str?",
    "results_dir": "str?",
    "db_retry_seconds": "float",
    "resume": "bool",
    "verbose": "bool",
}
assert set(_KINDS) == set(_FIELD_NAMES), "every StudyConfig field needs a TOML kind"


@dataclass(frozen=True)
class MergedConfig:
    """A validated config plus which keys the user set explicitly (preset, TOML or flag)."""

    config: StudyConfig
    explicit: frozenset[str]

    def resumed_from(self, stored: Mapping[str, Any]) -> StudyConfig:
        """The stored study with this launch's run fields (and an explicit --trials) on top.

        An explicitly given study field that disagrees with the stored one is refused:
        ``--resume`` continues the study as it was defined, it does not redefine it.
        """
        conflicts = self.config.differences(stored, self.explicit & STUDY_FIELDS)
        if conflicts:
            raise UsageError(
                f"--resume continues study {self.config.name!r} as stored, but "
                f"{'; '.join(conflicts)} (drop these flags, or use another --name)"
            )
        values = {key: _from_stored(key, stored[key]) for key in STUDY_FIELDS if key in stored}
        if "trials" in self.explicit or stored.get("sampler") == "grid":
            values["trials"] = self.config.trials
        else:
            values["trials"] = stored.get("trials")
        try:
            return replace(self.config, **values)
        except UsageError as exc:
            raise UsageError(f"stored study {self.config.name!r}: {exc}") from None


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a study TOML file; a missing or malformed file is a one-line UsageError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"malformed TOML in {path}: {_one_line(exc)}") from None
    return normalize_mapping(data, source=str(path))


def normalize_mapping(data: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """Check keys and value types of a TOML table or preset; '-' in keys reads as '_'."""
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in _KINDS:
            raise UsageError(
                f"{source}: unknown key {raw_key!r}; known keys: {', '.join(sorted(_KINDS))}"
            )
        out[key] = _coerce(key, value, source)
    return out


def merge(
    *,
    preset: Mapping[str, Any] | None = None,
    toml: Mapping[str, Any] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> MergedConfig:
    """defaults < preset < TOML < flags, then validate.

    Without an explicit sampler, a study with a `trials` count is a search (tpe) and one
    without is the grid: the default study is the grid, and ``--trials 50`` alone means
    "50 TPE trials".
    """
    values: dict[str, Any] = {}
    for layer in (preset, toml, flags):
        if layer:
            values.update(layer)
    explicit = frozenset(values)
    if "sampler" not in values:
        values["sampler"] = "tpe" if values.get("trials") is not None else "grid"
    return MergedConfig(StudyConfig(**values), explicit)


# ---------------------------------------------------------------------------- helpers
def _coerce(key: str, value: Any, source: str) -> Any:
    kind = _KINDS[key]
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    where = f"{source}: {key}"
    if optional and value in ("", None):
        return None
    if kind == "str":
        if not isinstance(value, str):
            raise UsageError(f"{where} must be a string; got {_type(value)} {value!r}")
        return value
    if kind == "int":
        if not _is_int(value):
            raise UsageError(f"{where} must be an integer; got {_type(value)} {value!r}")
        return value
    if kind == "float":
        if not _is_number(value):
            raise UsageError(f"{where} must be a number; got {_type(value)} {value!r}")
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise UsageError(f"{where} must be true or false; got {_type(value)} {value!r}")
        return value
    if kind == "norms":
        return parse_norms(value, where)
    if kind == "table":
        if not isinstance(value, Mapping):
            raise UsageError(
                f"{where} must be a table of training options; got {_type(value)} {value!r}"
            )
        return dict(value)
    raise AssertionError(kind)  # pragma: no cover


def parse_norms(value: Any, where: str = "--norms") -> tuple[str, ...]:
    """ "none,l1,l2" or ["none", "l1"] -> ("none", "l1", ...); names are checked later."""
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        items = [str(v).strip() for v in value]
    else:
        raise UsageError(
            f'{where} must be a list of variant names like "none,l1,l2"; got {value!r}'
        )
    if any(not item for item in items):
        raise UsageError(f"{where} has an empty variant name: {value!r}")
    return tuple(items)


def _range(name: str, low: Any, high: Any, points: int, sampler: str) -> None:
    for bound, value in (("min", low), ("max", high)):
        if not _is_number(value) or value <= 0:
            raise UsageError(f"--{name}-{bound} must be a positive number; got {value!r}")
    if low > high:
        raise UsageError(f"--{name}-min {low:g} is above --{name}-max {high:g}")
    if sampler == "grid" and points > 1 and low == high:
        raise UsageError(
            f"--{name}-points {points} needs --{name}-min below --{name}-max (both are {low:g})"
        )


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"{_flag(key)} must be one of {', '.join(choices)}; got {value!r}")


def _wrap(check: Any, value: Any, flag: str) -> None:
    try:
        check(value)
    except ValueError as exc:
        raise UsageError(f"{flag}: {_one_line(exc)}") from None


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _type(value: Any) -> str:
    return type(value).__name__


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _from_stored(key: str, value: Any) -> Any:
    if key == "norms":
        return tuple(value)
    if _KINDS[key].rstrip("?") == "float" and value is not None:
        return float(value)
    return value


def _same(a: Any, b: Any) -> bool:
    if _is_number(a) and _is_number(b):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return a == b

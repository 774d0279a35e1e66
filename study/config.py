"""What a study is: `StudyConfig`, merged from defaults, a preset, a TOML file and flags.

Precedence is defaults < ``--preset`` < TOML file < command-line flags, and everything is
validated here, before Ray starts or the database is opened, so that bad input costs
nothing and writes nothing. The defaults *are* the default study (`make demo`): digits +
mlp, a grid over sgd/insgd-l1/insgd-l2 x 7 learning rates from 1e-3 to 10, one seed.

What a study compares are its *variants* (`VARIANTS`, `variant_settings`): plain SGD,
INSGD with the l1 or l2 input-energy norm, and the *frozen* controls, INSGD whose
input-power normalizer is frozen after its first step (beta = 1.0: P stays P_1). A frozen
control rescales each layer's step once and never adapts, so comparing it with its INSGD
variant separates INSGD's adaptivity from a fixed per-layer rescale of the lr. `norms`
(none/l1/l2) is the older spelling of the first three and is still accepted (`merge`).

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
from typing import Any, NamedTuple

from study.errors import UsageError
from trainers.config import TrainConfig

SAMPLERS: tuple[str, ...] = ("tpe", "random", "qmc", "grid")
SCHEDULERS: tuple[str, ...] = ("fifo", "asha")
#: The largest bundle `fuse` accepts (members of one fused model).
MAX_FUSE = 256
#: What a study can compare, in this order: the SGD baseline, INSGD with the l1 / l2
#: input-energy norm, and the frozen controls (INSGD with its normalizer frozen after the
#: first step: beta = 1.0). See the module docstring and `variant_settings`.
VARIANTS: tuple[str, ...] = ("sgd", "insgd-l1", "insgd-l2", "insgd-l1-frozen", "insgd-l2-frozen")
#: The variants of a study that names none: SGD vs INSGD-l1/l2.
DEFAULT_VARIANTS: tuple[str, ...] = VARIANTS[:3]
#: The ``--norms`` shorthand (TOML `norms`, and the stored configs of studies launched
#: before variants existed): each norm name and the variant it stands for.
NORM_VARIANTS: dict[str, str] = {"none": "sgd", "l1": "insgd-l1", "l2": "insgd-l2"}
#: The beta of a frozen control: P_t = beta P_{t-1} + (1 - beta) E_t stays P_1.
FROZEN_BETA = 1.0
#: The eps of a one-point eps grid (TrainConfig's default, the paper's 0.01).
DEFAULT_EPS = TrainConfig().eps
#: The longest a launch waits for its database to come back (one day).
MAX_DB_RETRY_SECONDS = 86400.0
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
#: The largest count a setting may hold: the results database's INTEGER columns (trial
#: numbers, seeds, epochs, batch sizes) are 32-bit on PostgreSQL.
MAX_INT = 2**31 - 1
#: Optuna's samplers seed numpy, which takes a seed in [0, 2**32 - 1].
MAX_SAMPLER_SEED = 2**32 - 1

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


class VariantSettings(NamedTuple):
    """What a variant trains: its optimizer, its input norm ("none" for SGD) and the beta
    it forces (None: TrainConfig's, i.e. [train]'s or momentum)."""

    optimizer: str
    norm: str
    beta: float | None


def variant_settings(variant: str) -> VariantSettings:
    """The optimizer, norm and beta override of a variant; ValueError for an unknown one."""
    if variant == "sgd":
        return VariantSettings("sgd", "none", None)
    if variant in VARIANTS:
        _, norm, *frozen = variant.split("-")
        return VariantSettings("insgd", norm, FROZEN_BETA if frozen else None)
    raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")


def is_insgd_variant(variant: str) -> bool:
    """INSGD variants (the frozen controls too) take an eps; SGD does not."""
    return variant != "sgd"


def variant_of(optimizer: str | None, norm: str | None, beta: float | None = None) -> str:
    """The variant a trial trained, from its optimizer, norm and beta (a results row of a
    study launched before variants were stored): "sgd" for SGD or no norm, else
    "insgd-<norm>", "-frozen" added where beta is 1.0. The 0003 migration's backfill."""
    if optimizer == "sgd" or norm in (None, "", "none"):
        return "sgd"
    return f"insgd-{norm}" + ("-frozen" if beta == FROZEN_BETA else "")


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
    variants: tuple[str, ...] = DEFAULT_VARIANTS
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
    fuse: int | str = "auto"
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
            _at_most(key, value, MAX_INT)
        _choice("sampler", self.sampler, SAMPLERS)
        _choice("scheduler", self.scheduler, SCHEDULERS)
        if not _is_int(self.reduction_factor) or self.reduction_factor < 2:
            raise UsageError(
                f"reduction_factor must be an integer >= 2; got {self.reduction_factor!r}"
            )
        _at_most("reduction_factor", self.reduction_factor, MAX_INT)
        if self.grace_period > self.epochs:
            raise UsageError(
                f"grace_period ({self.grace_period}) must not exceed --epochs ({self.epochs})"
            )
        if self.sampler_seed is not None and (
            not _is_int(self.sampler_seed) or not 0 <= self.sampler_seed <= MAX_SAMPLER_SEED
        ):
            raise UsageError(
                f"--sampler-seed must be an integer from 0 to {MAX_SAMPLER_SEED} (2**32 - 1); "
                f"got {self.sampler_seed!r}"
            )
        self._validate_variants()
        _range("lr", self.lr_min, self.lr_max, self.lr_points, self.sampler)
        if self.insgd_variants:
            _range("eps", self.eps_min, self.eps_max, self.eps_points, self.sampler)
        self._validate_trials()
        self._validate_resources()
        self._validate_train_options()

    def _validate_variants(self) -> None:
        if not isinstance(self.variants, tuple) or not self.variants:
            raise UsageError(f"--variants needs at least one of {', '.join(VARIANTS)}")
        for variant in self.variants:
            if variant not in VARIANTS:
                raise UsageError(_unknown_variant(variant))
        if len(set(self.variants)) != len(self.variants):
            raise UsageError(f"--variants lists a variant twice: {','.join(self.variants)}")

    def _validate_trials(self) -> None:
        if self.trials is not None and (not _is_int(self.trials) or self.trials < 1):
            raise UsageError(f"--trials must be an integer >= 1; got {self.trials!r}")
        if self.trials is not None:
            _at_most("trials", self.trials, MAX_INT)
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
        if self.max_concurrent is not None:
            _at_most("max_concurrent", self.max_concurrent, MAX_INT)
        self._validate_fuse()
        if not _is_number(self.cpus_per_trial) or self.cpus_per_trial <= 0:
            raise UsageError(f"--cpus-per-trial must be a number > 0; got {self.cpus_per_trial!r}")
        gpus = self.gpus_per_trial
        if not _is_number(gpus) or gpus < 0:
            raise UsageError(f"--gpus-per-trial must be a number >= 0; got {gpus!r}")
        if gpus > 1:
            # a trial trains on one device (`trainers.train`): a second GPU would sit idle
            raise UsageError(
                f"--gpus-per-trial must be at most 1 (a trial trains on one GPU; a fraction "
                f"packs several trials on one); got {gpus:g}"
            )
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

    def _validate_fuse(self) -> None:
        """`fuse`: "auto" or a bundle size K >= 1 (`study.run.bundle`); K > 1 needs the
        FIFO scheduler. Every sampler fuses: grid, random and qmc take the next K
        configurations, TPE asks them at once (constant liar, `study.search.samplers`)."""
        fuse = self.fuse
        if fuse == "auto":
            return
        if not _is_int(fuse) or fuse < 1:
            raise UsageError(f"--fuse must be an integer >= 1 or auto; got {fuse!r}")
        _at_most("fuse", fuse, MAX_FUSE)
        if fuse > 1 and self.scheduler != "fifo":
            raise UsageError(
                f"--fuse {fuse} with --scheduler {self.scheduler}: a scheduler would stop "
                f"single members of a fused bundle; use --fuse 1 (or auto) with "
                f"{self.scheduler}, or --scheduler fifo"
            )

    def _validate_train_options(self) -> None:
        if not isinstance(self.train, dict):
            raise UsageError(f"[train] must be a table of training options; got {self.train!r}")
        owned = sorted(set(self.train) & STUDY_OWNED_TRAIN_FIELDS)
        if owned:
            raise UsageError(
                f"[train] must not set {', '.join(owned)}: the study sets "
                f"{'them' if len(owned) > 1 else 'it'} (use the study's own keys/flags)"
            )
        if self.train.get("beta") == FROZEN_BETA:
            raise UsageError(
                "[train] beta = 1.0 is the frozen-normalizer control: name it as a variant "
                "(--variants insgd-l1-frozen,insgd-l2-frozen) so that its trials are told apart"
            )
        for variant in self.variants:
            try:
                self.train_config(variant, self.lr_min, self.eps_min, seed=0)
            except (TypeError, ValueError, OverflowError) as exc:
                raise UsageError(f"[train]: {_one_line(exc)}") from None

    # ------------------------------------------------------------------ derived values
    @property
    def insgd_variants(self) -> tuple[str, ...]:
        """The variants that take an eps (INSGD, the frozen controls included)."""
        return tuple(v for v in self.variants if is_insgd_variant(v))

    @property
    def sgd_variants(self) -> tuple[str, ...]:
        """The variants without an eps: one grid point per lr each."""
        return tuple(v for v in self.variants if not is_insgd_variant(v))

    @property
    def grid_size(self) -> int:
        """Trials in the grid: lrs x (1 per SGD variant + eps points per INSGD variant) x
        seeds."""
        per_lr = len(self.sgd_variants) + len(self.insgd_variants) * self.eps_points
        return self.lr_points * per_lr * self.seeds

    def grid_description(self) -> str:
        """E.g. "7 lrs x (1 SGD + 2 INSGD variants x 1 eps) x 1 seeds", for error messages."""
        sgd = f"{len(self.sgd_variants)} SGD + " if self.sgd_variants else ""
        return (
            f"{self.lr_points} lrs x ({sgd}{len(self.insgd_variants)} INSGD variants x "
            f"{self.eps_points} eps) x {self.seeds} seeds"
        )

    @property
    def target_trials(self) -> int:
        """How many finished trials the study ends with."""
        return self.grid_size if self.sampler == "grid" else int(self.trials or 0)

    def train_config(
        self, variant: str, lr: float, eps: float | None, seed: int, device: str = "auto"
    ) -> TrainConfig:
        """The TrainConfig of one trial of `variant` (`variant_settings`): "sgd" is SGD,
        the others INSGD with their norm; a frozen control's beta (1.0) overrides any
        [train] beta."""
        settings = variant_settings(variant)
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
        if settings.optimizer == "sgd":
            options["optimizer"] = "sgd"
        else:
            options.update(
                optimizer="insgd",
                norm=settings.norm,
                eps=float(eps if eps is not None else DEFAULT_EPS),
            )
            if settings.beta is not None:
                options["beta"] = settings.beta
        return TrainConfig.from_dict(options)

    def study_dict(self) -> dict[str, Any]:
        """What the database stores as the study's configuration (study fields + trials)."""
        data = {key: _jsonable(getattr(self, key)) for key in STUDY_FIELDS}
        data["trials"] = self.target_trials
        return data

    def differences(
        self, stored: Mapping[str, Any], keys: frozenset[str] | None = None
    ) -> list[str]:
        """Study fields whose value differs from a stored configuration, as "key: a vs b".

        A configuration stored before variants existed (`norms`, no `variants`) is read as
        the variants its norms stand for (`stored_study`); variants compare as a set.
        """
        stored = stored_study(stored)
        out = []
        for key in sorted(keys if keys is not None else STUDY_FIELDS):
            if key not in STUDY_FIELDS:
                continue
            mine = _jsonable(getattr(self, key))
            theirs = stored.get(key, _jsonable(_DEFAULTS.get(key)))
            if key == "variants" and isinstance(theirs, list) and set(mine) == set(theirs):
                continue  # the same variants in another order: the same study
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
        "variants",
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
    "variants": "variants",
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
    "fuse": "fuse",
    "cpus_per_trial": "float",
    "gpus_per_trial": "float",
    "max_failures": "int",
    "address": "str?",
    "results_dir": "str?",
    "db_retry_seconds": "float",
    "resume": "bool",
    "verbose": "bool",
}
#: Keys a preset, TOML file or flag may give that are not StudyConfig fields: `merge`
#: turns them into fields (`norms` is the shorthand of `variants`).
_SHORTHANDS: frozenset[str] = frozenset({"norms"})
assert set(_KINDS) == set(_FIELD_NAMES) | _SHORTHANDS, "every StudyConfig field needs a TOML kind"


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
        stored = stored_study(stored)
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


def stored_study(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A stored study configuration in today's keys: one stored before variants existed
    has `norms` ("none", "l1", "l2") and no `variants`; it gets the variants they stand
    for (an unknown norm is kept as it is, for validation to name)."""
    out = dict(stored)
    norms = out.pop("norms", None)
    if "variants" not in out and isinstance(norms, list | tuple):
        out["variants"] = [NORM_VARIANTS.get(str(n), str(n)) for n in norms]
    return out


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
    "50 TPE trials". Within one layer, `norms` is the shorthand of `variants`: both may be
    given only if they name the same variants (`_variants_of_layer`).
    """
    values: dict[str, Any] = {}
    for layer, where in ((preset, "the preset"), (toml, "the config file"), (flags, None)):
        if layer:
            values.update(_variants_of_layer(layer, where))
    explicit = frozenset(values)
    if "sampler" not in values:
        values["sampler"] = "tpe" if values.get("trials") is not None else "grid"
    return MergedConfig(StudyConfig(**values), explicit)


def _variants_of_layer(layer: Mapping[str, Any], where: str | None) -> dict[str, Any]:
    """A layer (`where`: None for the flags) with its `norms` turned into the `variants`
    they stand for; a `variants` that names other ones is a UsageError, as giving both
    is only meant to say the same thing twice."""
    out = dict(layer)
    if "norms" not in out:
        return out
    names = ("--variants", "--norms") if where is None else ("variants", "norms")
    place = "" if where is None else f"{where}: "
    norms = parse_norms(out.pop("norms"), place + names[1])
    from_norms = tuple(NORM_VARIANTS[norm] for norm in norms)
    given = out.get("variants")
    if given is not None and set(given) != set(from_norms):
        raise UsageError(
            f"{place}{names[0]} {','.join(given)} contradicts {names[1]} {','.join(norms)} "
            f"(= {names[0]} {','.join(from_norms)}); give one of them"
        )
    out["variants"] = tuple(given) if given is not None else from_norms
    return out


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
    if kind == "fuse":
        return parse_fuse(value, where)
    if kind == "norms":
        return parse_norms(value, where)
    if kind == "variants":
        return parse_variants(value, where)
    if kind == "table":
        if not isinstance(value, Mapping):
            raise UsageError(
                f"{where} must be a table of training options; got {_type(value)} {value!r}"
            )
        return dict(value)
    raise AssertionError(kind)  # pragma: no cover


def parse_fuse(value: Any, where: str = "--fuse") -> int | str:
    """ "auto", an integer, or its text ("8") -> "auto" or the int; anything else is a
    UsageError (the range is checked by `StudyConfig`)."""
    if value == "auto" or _is_int(value):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value.strip()):
        return int(value)
    raise UsageError(f"{where} must be an integer >= 1 or auto; got {value!r}")


def parse_variants(value: Any, where: str = "--variants") -> tuple[str, ...]:
    """ "sgd,insgd-l2" or ["sgd", "insgd-l2"] -> ("sgd", "insgd-l2"); names are checked
    by `StudyConfig`."""
    return _names(value, where, '"sgd,insgd-l2,insgd-l2-frozen"')


def parse_norms(value: Any, where: str = "--norms") -> tuple[str, ...]:
    """The ``--norms`` shorthand: "none,l1,l2" or ["none", "l1"] -> ("none", "l1", ...),
    each a key of `NORM_VARIANTS` (`merge` turns them into variants); an unknown or
    repeated norm is a UsageError."""
    norms = _names(value, where, '"none,l1,l2"')
    for norm in norms:
        if norm not in NORM_VARIANTS:
            raise UsageError(
                f"{where}: unknown variant {norm!r}; choose from {', '.join(NORM_VARIANTS)} "
                f"('none' is the SGD baseline)"
            )
    if len(set(norms)) != len(norms):
        raise UsageError(f"{where} lists a variant twice: {','.join(norms)}")
    return norms


def _names(value: Any, where: str, example: str) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        items = [str(v).strip() for v in value]
    else:
        raise UsageError(f"{where} must be a list of variant names like {example}; got {value!r}")
    if any(not item for item in items):
        raise UsageError(f"{where} has an empty variant name: {value!r}")
    return tuple(items)


def _unknown_variant(variant: Any) -> str:
    hint = ""
    if variant in NORM_VARIANTS:
        hint = f" ({variant!r} is a --norms name: --variants {NORM_VARIANTS[variant]})"
    return f"--variants: unknown variant {variant!r}; choose from {', '.join(VARIANTS)}{hint}"


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
    """A finite int or float; an int too large for a float is not one."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _at_most(key: str, value: int, maximum: int) -> None:
    if value > maximum:
        raise UsageError(f"{_flag(key)} must be at most {maximum}; got {value}")


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
    if key == "variants":
        return tuple(value)
    if _KINDS[key].rstrip("?") == "float" and value is not None:
        return float(value)
    return value


def _same(a: Any, b: Any) -> bool:
    if _is_number(a) and _is_number(b):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return a == b

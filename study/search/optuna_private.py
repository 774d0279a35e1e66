"""The parts of Optuna outside its public API that this project relies on, in one place.

Why they are needed: the driver's Optuna storage (`study.search.optuna_storage`) is
Optuna's own cache of an `RDBStorage`, extended to serve the driver's RUNNING trials
from memory and to write Optuna's rows with its own statements; the searcher
(`study.search.searcher`) tells Optuna without the copy `Study.tell` makes; the report's
attachment (`study.analysis.dashboard`) edits a study's artifact records. None of these
is public, so an Optuna release may move or rename any of them without notice.

Every other module imports them from here, never from `optuna._*` itself, and `NEEDED`
says what each is for. `missing()` looks each one up (with the private attributes the
project reads or sets on Optuna's objects) in the installed Optuna; the test
tests/study/test_study_optuna_contract.py fails on any it lacks, naming it and the
installed version, and importing this module with one of the names below gone raises
the same message. Optuna's conformance suite for storages, run in that test file on the
driver's storage, checks that what they do still adds up to a storage.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Needed:
    """One private name of Optuna (`module:qualified.name`) and why the project uses it.

    `members`: attributes of it the project reads or sets that Optuna does not document,
    looked up on the object itself or, for a class listed in `_EXAMPLES`, on an instance
    (attributes its `__init__` sets).
    """

    name: str
    why: str
    members: tuple[str, ...] = ()


_CACHED = "optuna.storages._cached_storage"
_MODELS = "optuna.storages._rdb.models"

NEEDED: tuple[Needed, ...] = (
    Needed(
        f"{_CACHED}:_CachedStorage",
        "DriverStorage is Optuna's cache of an RDBStorage (what optuna.get_storage wraps it "
        "in), subclassed to also serve the driver's RUNNING trials; it reads and fills the "
        "cache under the cache's own lock",
        (
            "_backend",
            "_lock",
            "_studies",
            "_trial_id_to_study_id_and_number",
            "_add_trials_to_cache",
        ),
    ),
    Needed(
        f"{_CACHED}:_StudyInfo",
        "the cache's entry for a study: DriverStorage adds the trials it creates to it and "
        "reads the distributions Optuna cached there",
        ("trials", "param_distribution"),
    ),
    Needed(
        f"{_MODELS}:StudyModel",
        "its table: a new trial is created under the study row's lock, as Optuna does",
        ("__table__",),
    ),
    Needed(
        f"{_MODELS}:TrialModel",
        "its table, for the driver's own statements; find_or_raise_by_id reads back a "
        "completion time converted as Optuna's reads convert it; the driver writes trial "
        "times as naive UTC, as Optuna stores them since 5.0 (its _utc columns; Optuna 4 "
        "stored naive local time)",
        ("__table__", "find_or_raise_by_id", "_datetime_start_utc", "_datetime_complete_utc"),
    ),
    Needed(f"{_MODELS}:TrialParamModel", "its table: the driver writes parameters", ("__table__",)),
    Needed(
        f"{_MODELS}:TrialValueModel",
        "its table and Optuna's stored form of a value (infinities): the driver writes values",
        ("__table__", "value_to_stored_repr"),
    ),
    Needed(
        f"{_MODELS}:TrialIntermediateValueModel",
        "its table and Optuna's stored form of an intermediate value (NaN, infinities)",
        ("__table__", "intermediate_value_to_stored_repr"),
    ),
    Needed(
        f"{_MODELS}:TrialUserAttributeModel",
        "its table: the driver writes a trial's user attributes in one statement",
        ("__table__",),
    ),
    Needed(
        "optuna.storages._rdb.storage:_create_scoped_session",
        "Optuna's session with its error handling, for the one ORM read DriverStorage makes",
    ),
    Needed(
        "optuna.storages:RDBStorage",
        "its session factory, which _create_scoped_session takes",
        ("scoped_session",),
    ),
    Needed(
        "optuna.study._tell:_tell_with_warning",
        "Study.tell without the deep copy of the finished trial it returns (and Ray drops)",
    ),
    Needed(
        "optuna.study:Study",
        "the storage under a study (DriverStorage.one_transaction; the report's artifacts) "
        "and its id there",
        ("_storage", "_study_id"),
    ),
    Needed(
        "optuna.trial:Trial",
        "a trial's id, to write its user attributes in one statement, and the frozen copy "
        "it keeps, updated with them as Trial.set_user_attr updates it",
        ("_trial_id", "_cached_frozen_trial"),
    ),
    Needed(
        "optuna.trial:FrozenTrial",
        "DriverStorage copies trials field by field (faster than deepcopy) and completes "
        "its copy of a finished trial in place",
        ("_trial_id", "_values", "_params", "_distributions", "_user_attrs", "_system_attrs"),
    ),
    Needed(
        "optuna.artifacts._upload:ARTIFACTS_ATTR_PREFIX",
        "the prefix of a study's artifact records among its system attributes: the report "
        "replaces its earlier artifacts as optuna-dashboard deletes one",
    ),
)


def _study_example() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study()


def _trial_example() -> Any:
    return _study_example().ask()


def _frozen_trial_example() -> Any:
    study = _study_example()
    study.ask()
    return study.get_trials(deepcopy=False)[0]


def _rdb_example() -> Any:
    from optuna.storages import RDBStorage

    return RDBStorage("sqlite://")


#: Classes whose members above are instance attributes: how to build a small instance.
_EXAMPLES: dict[str, Callable[[Any], Any]] = {
    f"{_CACHED}:_CachedStorage": lambda cls: cls(None),  # its __init__ only stores it
    f"{_CACHED}:_StudyInfo": lambda cls: cls(),
    "optuna.storages:RDBStorage": lambda cls: _rdb_example(),
    "optuna.study:Study": lambda cls: _study_example(),
    "optuna.trial:Trial": lambda cls: _trial_example(),
    "optuna.trial:FrozenTrial": lambda cls: _frozen_trial_example(),
}


def _lookup(name: str) -> Any:
    module, _, qualified = name.partition(":")
    found: Any = importlib.import_module(module)
    for part in qualified.split("."):
        found = getattr(found, part)
    return found


def _gaps() -> Iterator[str]:
    for needed in NEEDED:
        try:
            found = _lookup(needed.name)
        except (ImportError, AttributeError):
            yield needed.name
            continue
        if needed.members and needed.name in _EXAMPLES:
            try:
                found = _EXAMPLES[needed.name](found)
            except Exception as exc:  # noqa: BLE001 - reported as what is missing
                yield f"{needed.name} (an instance could not be built: {exc!r})"
                continue
        for member in needed.members:
            if not hasattr(found, member):
                yield f"{needed.name}.{member}"


def missing() -> list[str]:
    """The names and members of `NEEDED` the installed Optuna lacks ([] if none)."""
    return list(_gaps())


def describe(gaps: list[str]) -> str:
    """What to tell a user whose Optuna lacks `gaps`: each one, why it is needed, and the
    installed Optuna's version (pyproject.toml pins the versions the tests passed on)."""
    import optuna

    why = {needed.name: needed.why for needed in NEEDED}
    lines = [
        f"the installed Optuna {optuna.__version__} lacks private names this project "
        "relies on (study/search/optuna_private.py):"
    ]
    for gap in gaps:
        head = gap.split(" ", 1)[0]
        owner = next((n for n in why if head == n or head.startswith(n + ".")), head)
        lines.append(f"  - {gap}: {why.get(owner, 'needed')}")
    lines.append("install the Optuna version pyproject.toml requires")
    return "\n".join(lines)


# The names themselves, imported (typed) after the table so that a failed import can say
# which of them are gone and which Optuna is installed.
try:
    from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX
    from optuna.storages._cached_storage import _CachedStorage, _StudyInfo
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from optuna.study._tell import _tell_with_warning
except ImportError as exc:
    raise ImportError(describe(missing() or [str(exc)])) from exc

__all__ = [
    "ARTIFACTS_ATTR_PREFIX",
    "NEEDED",
    "Needed",
    "_CachedStorage",
    "_StudyInfo",
    "_create_scoped_session",
    "_tell_with_warning",
    "describe",
    "missing",
    "models",
]

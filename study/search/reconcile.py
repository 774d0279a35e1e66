"""Optuna's trials made to agree with the results table, the study's record.

The driver writes each trial twice: its rows in the results tables and, per
configuration, Optuna's trial (`study.search.searcher`), on one writes thread in order
(`study.writes`). A launch that stops between the two (killed, or its database gone
for longer than ``--db-retry-seconds``) can leave them disagreeing: Optuna's trial
told COMPLETE while the results row of its seed is still RUNNING (and then FAIL on
``--resume``, which runs the configuration again: two COMPLETE Optuna trials for one
finished configuration), or the results row COMPLETE while Optuna's trial was never
told (and then FAIL: a finished configuration missing from Optuna's history).

`reconcile` runs when a launch opens an existing study, before anything else reads
Optuna's trials, and makes each Optuna trial say what the results table says:

- told COMPLETE or PRUNED, but a trial it was told for (its ``trial_numbers`` user
  attribute, else the results rows that name it as their ``optuna_trial``) is not
  finished in the results table: FAIL (its value removed, as Optuna keeps none for a
  failed trial);
- RUNNING, WAITING or FAIL, while every results row that names it is finished and the
  configuration has a finished trial for every seed (so the launch will not run it
  again): told as the searcher would have told it, from the results rows (the mean final
  accuracy over seeds, a diverged seed counting 0; PRUNED if a seed was stopped early;
  the mean curve as intermediate values; the ``variant``, ``diverged`` and
  ``trial_numbers`` user attributes);
- RUNNING or WAITING otherwise: FAIL (nothing runs it any more).

The changes are written directly into Optuna's tables (Optuna refuses to change a
finished trial through its API), in one transaction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

FINISHED = ("COMPLETE", "PRUNED")


@dataclass
class Repair:
    """What one Optuna trial becomes."""

    trial_id: int
    number: int
    state: str  # "FAIL", "COMPLETE" or "PRUNED"
    value: float | None = None
    intermediate: dict[int, float] | None = None
    attrs: dict[str, Any] | None = None
    completed: datetime | None = None


def reconcile(
    engine: Any,
    study: str,
    rows: Sequence[Any],
    seeds: int,
    curves: Callable[[], dict[int, dict[int, float]]],
    run: Callable[[Callable[[Any], Any]], Any] | None = None,
) -> list[Repair]:
    """Make Optuna's trials of `study` agree with the results `rows` (see the module
    docstring); returns the repairs made. `curves()` gives {trial number: {epoch:
    objective}} of the study's results (read only when a trial is told here); `run`
    runs a function of a connection in one write transaction (default: `engine.begin`).
    """
    from sqlalchemy import inspect, select

    from study.search.optuna_private import models

    studies = models.StudyModel.__table__
    trials = models.TrialModel.__table__
    attrs = models.TrialUserAttributeModel.__table__
    run = run or _in_transaction(engine)

    def plan(conn: Any) -> list[Repair]:
        if not inspect(conn).has_table(studies.name):
            return []
        study_id = conn.execute(
            select(studies.c.study_id).where(studies.c.study_name == study)
        ).scalar_one_or_none()
        if study_id is None:
            return []
        found = conn.execute(
            select(trials.c.trial_id, trials.c.number, trials.c.state).where(
                trials.c.study_id == study_id
            )
        ).all()
        told = {
            trial_id: json.loads(value)
            for trial_id, value in conn.execute(
                select(attrs.c.trial_id, attrs.c.value_json)
                .join(trials, trials.c.trial_id == attrs.c.trial_id)
                .where(trials.c.study_id == study_id, attrs.c.key == "trial_numbers")
            )
        }
        return _repairs(found, told, rows, seeds, curves)

    def repair(conn: Any) -> list[Repair]:
        repairs = plan(conn)
        for each in repairs:
            _write(conn, each)
        return repairs

    return run(repair)


def _repairs(
    found: Sequence[Any],
    told: dict[int, Any],
    rows: Sequence[Any],
    seeds: int,
    curves: Callable[[], dict[int, dict[int, float]]],
) -> list[Repair]:
    from optuna.trial import TrialState

    by_number = {r.trial_number: r for r in rows}
    by_optuna: dict[int, list[Any]] = {}
    for row in rows:
        asked = (row.params or {}).get("optuna_trial")
        if isinstance(asked, int):
            by_optuna.setdefault(asked, []).append(row)
    repairs: list[Repair] = []
    loaded: dict[int, dict[int, float]] | None = None
    for trial_id, number, state in sorted(found, key=lambda t: t[1]):
        numbers = told.get(trial_id)
        own = by_optuna.get(number, [])
        if state in (TrialState.COMPLETE, TrialState.PRUNED):
            covered = own
            if isinstance(numbers, list) and numbers:
                covered = [by_number.get(n) for n in numbers]
            if not covered or any(r is None or r.state not in FINISHED for r in covered):
                repairs.append(Repair(trial_id, number, "FAIL"))
            continue
        group = _finished_group(own, rows, seeds)
        if group is not None:
            if loaded is None:
                loaded = curves()
            repairs.append(_told(trial_id, number, group, loaded))
        elif state in (TrialState.RUNNING, TrialState.WAITING):
            repairs.append(Repair(trial_id, number, "FAIL"))
    return repairs


def _finished_group(own: list[Any], rows: Sequence[Any], seeds: int) -> list[Any] | None:
    """The finished results rows of every seed of the configuration `own` ran, if `own`
    (the rows that name one Optuna trial) all finished and every seed has one."""
    if not own or any(r.state not in FINISHED for r in own):
        return None
    point = _point(own[0])
    by_seed = {int(r.seed): r for r in own if r.seed is not None}
    for row in rows:
        if (
            row.state in FINISHED
            and row.seed is not None
            and int(row.seed) < seeds
            and int(row.seed) not in by_seed
            and _same_point(_point(row), point)
        ):
            by_seed[int(row.seed)] = row
    if any(s not in by_seed for s in range(seeds)):
        return None
    return [by_seed[s] for s in range(seeds)]


def _told(
    trial_id: int, number: int, group: list[Any], curves: dict[int, dict[int, float]]
) -> Repair:
    """Optuna's trial as `study.search.searcher.SeededSearch._tell` tells it."""
    from study.search.searcher import objective
    from study.search.space import row_variant

    steps: dict[int, list[float]] = {}
    for row in group:
        for epoch, value in curves.get(row.trial_number, {}).items():
            steps.setdefault(int(epoch), []).append(float(value))
    intermediate = {step: sum(v) / len(v) for step, v in sorted(steps.items())}
    pruned = any(r.state == "PRUNED" for r in group)
    if pruned:  # Optuna's tell of a pruned trial keeps its last intermediate value
        value = intermediate[max(intermediate)] if intermediate else None
    else:
        value = sum(0.0 if r.diverged else objective(r.final_val_accuracy) for r in group) / len(
            group
        )
    finished = [r.finished_at for r in group if r.finished_at is not None]
    return Repair(
        trial_id,
        number,
        "PRUNED" if pruned else "COMPLETE",
        value=value,
        intermediate=intermediate,
        attrs={
            "variant": row_variant(group[0]),
            "diverged": any(bool(r.diverged) for r in group),
            "trial_numbers": [r.trial_number for r in group],
        },
        completed=max(finished) if finished else None,
    )


def _write(conn: Any, repair: Repair) -> None:
    from optuna.trial import TrialState
    from sqlalchemy import delete, func, insert, update

    from study.search.optuna_private import models

    trials = models.TrialModel.__table__
    values = models.TrialValueModel.__table__
    intermediate = models.TrialIntermediateValueModel.__table__
    attrs = models.TrialUserAttributeModel.__table__
    tid = repair.trial_id
    conn.execute(delete(values).where(values.c.trial_id == tid))
    if repair.state == "FAIL":
        conn.execute(
            update(trials)
            .where(trials.c.trial_id == tid)
            .values(
                state=TrialState.FAIL,
                datetime_complete=func.coalesce(trials.c.datetime_complete, _stored(None)),
            )
        )
        return
    if repair.value is not None and math.isfinite(repair.value):
        stored, kind = models.TrialValueModel.value_to_stored_repr(repair.value)
        conn.execute(
            insert(values).values(trial_id=tid, objective=0, value=stored, value_type=kind)
        )
    if repair.intermediate:
        conn.execute(delete(intermediate).where(intermediate.c.trial_id == tid))
        rows = []
        for step, value in repair.intermediate.items():
            stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(
                value
            )
            rows.append(
                {
                    "trial_id": tid,
                    "step": step,
                    "intermediate_value": stored,
                    "intermediate_value_type": kind,
                }
            )
        conn.execute(insert(intermediate), rows)
    if repair.attrs:
        conn.execute(
            delete(attrs).where(attrs.c.trial_id == tid, attrs.c.key.in_(list(repair.attrs)))
        )
        conn.execute(
            insert(attrs),
            [
                {"trial_id": tid, "key": key, "value_json": json.dumps(value)}
                for key, value in repair.attrs.items()
            ],
        )
    conn.execute(
        update(trials)
        .where(trials.c.trial_id == tid)
        .values(state=TrialState[repair.state], datetime_complete=_stored(repair.completed))
    )


def _stored(moment: datetime | None) -> datetime:
    """A time as Optuna stores the ones it sets: naive UTC (now, when not given)."""
    moment = moment or datetime.now(UTC)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _point(row: Any) -> Any:
    """The configuration a results row ran (variant, lr, eps): `study.search.space.row_point`."""
    from study.search.space import row_point

    return row_point(row)


def _same_point(a: Any, b: Any) -> bool:
    return bool(a.same_as(b))


def _in_transaction(engine: Any) -> Callable[[Callable[[Any], Any]], Any]:
    def run(work: Callable[[Any], Any]) -> Any:
        with engine.begin() as conn:
            return work(conn)

    return run

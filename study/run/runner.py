"""Running a study: preflight checks, the plan, then Ray Tune with OptunaSearch.

The results database is the study's memory, not Tune's experiment directory. Each launch
(first, resumed, or continued) reads which trials exist, and plans only what is missing:

- trials a dead driver left RUNNING are marked FAIL (``--resume`` only; without it they
  mean another launch may be running the study, which is refused);
- COMPLETE and PRUNED trials are kept; a configuration with seeds missing (its trial
  failed, or the driver died) runs those seeds again, under new trial numbers;
- the rest of the budget (grid points not yet run, or new samples) follows, so the study
  ends with exactly its target number of finished trials and trial numbers never repeat.

Tuner.restore is not used: Tune checkpoints its experiment state every few seconds, so
after a SIGKILL it can be behind the database (trials it thinks pending are done, or the
reverse), and a restored Optuna searcher would double-count. A trial that Tune restarts
*within* a launch (its worker died) resumes from its per-epoch checkpoint via
`FailureConfig(max_failures)`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from storage.errors import DatabaseUnavailable, StorageError
from study.config import MergedConfig, StudyConfig
from study.errors import UsageError
from study.search.space import Point, find_point, grid_points, row_point

FINISHED_STATES = ("COMPLETE", "PRUNED")
#: Samplers whose next configuration does not depend on earlier results (grid points are
#: fixed and enqueued): the searcher may ask Optuna for it while the current one trains.
HISTORY_FREE_SAMPLERS = frozenset({"random", "qmc", "grid"})


@dataclass
class Plan:
    """What one launch runs: groups with their missing seeds, and how many trials in all."""

    groups: list[Any]  # study.search.searcher.Group (imported lazily: it needs ray)
    sample: bool
    budget: int
    first_number: int
    finished: int


@dataclass
class Prepared:
    """A study that passed every check, before anything was written or started."""

    config: StudyConfig
    url: str
    engine: Any  # None while the database does not exist: created once Ray is up
    exists: bool
    rows: list[Any]
    claim: Any = None  # storage.claims.Claim: this launch's, until the launch ends


def prepare(merged: MergedConfig) -> Prepared:
    """Everything that can be checked without writing: storage URL, dataset, name clash;
    then the study's claim (`storage.claims`), before anything else is written: another
    launch running the study refuses this one, and `--resume` takes over the claim of a
    launch that is gone.

    Raises UsageError / StorageError / FileNotFoundError: the CLI prints one line, exit 2.
    """
    from study.credentials import resolve_storage_url

    config = merged.config
    url = resolve_storage_url(config.storage)
    import storage
    from storage.urls import parse_url

    parse_url(url)  # a malformed URL is a StorageError before any file is created
    from study.run.preflight import check_local_resources, check_results_dir

    check_results_dir(config.results_dir)
    check_local_resources(config)
    if config.address:
        from study.run.raysetup import check_address

        check_address(config.address)
    config = replace(config, data_dir=_absolute_data_dir(config.data_dir))
    check_dataset(config)
    from storage.engine import open_existing

    engine = open_existing(url)  # creates nothing: a new database waits for Ray (`_run_study`)
    if engine is None:
        if config.resume:
            _no_study_to_resume(config, url)
        from study.run.fusing import check_fuse

        check_fuse(config)  # --fuse K > 1 of trials that cannot fuse: refused, nothing written
        # a new database: the study is claimed once it exists, before its first row
        # (`_run_claimed`), so a bad setting found until then leaves no file behind
        return Prepared(config=config, url=url, engine=None, exists=False, rows=[])
    exists = storage.ResultWriter(engine).get_study(config.name) is not None
    if config.resume and not exists:
        from storage.claims import read_claim

        holder = read_claim(engine, config.name)
        if holder is None or holder.gone():  # (a live one is named by `claim_for` below)
            _no_study_to_resume(config, url)
    # A gone launch's claim is taken over with --resume, or when it left no study behind.
    claim = claim_for(engine, config, take_over=config.resume or not exists)
    try:
        config, existing, rows = _check_existing(merged, config, engine)
    except BaseException:
        claim.release()
        raise
    return Prepared(
        config=config,
        url=url,
        engine=engine,
        exists=existing is not None,
        rows=rows,
        claim=claim,
    )


def _no_study_to_resume(config: StudyConfig, url: str) -> None:
    from storage.urls import mask_url

    raise UsageError(
        f"--resume: there is no study {config.name!r} in {mask_url(url)} to continue; "
        f"check --name and --storage, or drop --resume to start a new study"
    )


def claim_for(engine: Any, config: StudyConfig, *, take_over: bool) -> Any:
    """This launch's claim on its study (`storage.claims`); with `take_over`, the claim of
    a launch that is gone becomes ours (a live one is always refused). A holder silent for
    longer than it may wait for its database, plus a margin, is gone."""
    from storage.claims import STALE_S, claim_study

    stale_after = STALE_S + config.db_retry_seconds
    return claim_study(engine, config.name, stale_after=stale_after, take_over=take_over)


def _check_existing(
    merged: MergedConfig, config: StudyConfig, engine: Any
) -> tuple[StudyConfig, Any, list[Any]]:
    """An existing study: its stored configuration (with --resume) or one that matches,
    and its trials; RUNNING ones need --resume."""
    import storage

    existing = storage.ResultWriter(engine).get_study(config.name)
    rows: list[Any] = []
    if existing is not None and config.resume:
        config = _resumed_config(merged, existing.config)
    from study.run.fusing import check_fuse

    check_fuse(config)  # --fuse K > 1 of trials that cannot fuse: refused, nothing written
    if existing is not None:
        if not config.resume:
            diffs = config.differences(existing.config)
            if diffs:
                raise UsageError(
                    f"study {config.name!r} already exists with a different configuration "
                    f"({'; '.join(diffs)}); choose another --name, or --resume to continue "
                    f"it as stored"
                )
        rows = storage.queries.list_trials(engine, config.name)
        running = [r.trial_number for r in rows if r.state == "RUNNING"]
        if running and not config.resume:
            raise UsageError(
                f"study {config.name!r} has {len(running)} RUNNING trial(s) "
                f"({_numbers(running)}): another launch may be running it; if that launch "
                f"died, pass --resume to mark them FAIL and re-run them"
            )
    return config, existing, rows


def _resumed_config(merged: MergedConfig, stored: Any) -> StudyConfig:
    """The stored study with this launch's run fields; its dataset checked if it changed."""
    checked = (merged.config.dataset, _absolute_data_dir(merged.config.data_dir))
    config = merged.resumed_from(stored)
    config = replace(config, data_dir=_absolute_data_dir(config.data_dir))
    if (config.dataset, config.data_dir) != checked:
        check_dataset(config)
    return config


#: Datasets that ship inside installed packages or are generated: no files can be missing.
NO_FILES_DATASETS = frozenset({"digits", "mnist5k", "synthetic"})


def check_dataset(config: StudyConfig) -> None:
    """Missing dataset files are bad input: load the dataset once on the CPU to find out.

    Bundled and generated datasets are skipped (loading digits costs the driver an
    sklearn import for nothing); every other name, including future ones, is checked.
    """
    if config.dataset in NO_FILES_DATASETS:
        return
    from trainers.data import load_dataset

    load_dataset(
        config.dataset,
        data_dir=config.data_dir,
        download=False,
        device="cpu",
        seed=0,
        val_fraction=config.train.get("val_fraction", 0.1),
    )


def make_plan(
    config: StudyConfig, rows: Sequence[Any], curves: dict[int, dict[int, float]]
) -> Plan:
    """Groups to run (missing seeds of known configurations first), budget, numbering.

    `rows` are the study's trials (RUNNING ones already marked FAIL); `curves` maps the
    trial numbers of finished trials to {epoch: val accuracy} for the groups' Optuna
    intermediate values.
    """
    from study.search.searcher import Group, SeedOutcome, objective

    finished = [r for r in rows if r.state in FINISHED_STATES]
    first_number = max((r.trial_number for r in rows), default=-1) + 1
    seeds = config.seeds
    groups: list[Any] = []

    def group_for(point: Point) -> Any:
        for group in groups:
            if group.point.same_as(point):
                return group
        group = Group(key=f"resume-{len(groups)}", point=point, todo=deque(), seeds=seeds)
        groups.append(group)
        return group

    if config.sampler == "grid":
        for point in grid_points(config):
            group_for(point)
    for row in rows:
        point = row_point(row)
        if point.variant not in config.variants:
            continue  # not a variant of this study (cannot happen for an unchanged study)
        if config.sampler == "grid":
            canonical = find_point(point, (g.point for g in groups))
            if canonical is None:
                continue  # not a point of this grid (cannot happen for an unchanged study)
            point = canonical
        group = group_for(point)
        if row.state in FINISHED_STATES and row.seed is not None and row.seed < seeds:
            group.outcomes[int(row.seed)] = SeedOutcome(
                accuracy=None if row.diverged else objective(row.final_val_accuracy),
                epochs=row.epochs_completed,
                diverged=bool(row.diverged),
                pruned=row.state == "PRUNED",
                trial_number=row.trial_number,
            )
            group.curves[int(row.seed)] = dict(curves.get(row.trial_number, {}))
    for group in groups:
        group.todo.extend(s for s in range(seeds) if s not in group.outcomes)
    runnable = [g for g in groups if g.todo]
    budget = max(0, config.target_trials - len(finished))
    if config.sampler == "grid":
        budget = min(budget, sum(len(g.todo) for g in runnable))
    return Plan(
        groups=runnable,
        sample=config.sampler != "grid",
        budget=budget,
        first_number=first_number,
        finished=len(finished),
    )


def run_study(merged: MergedConfig, out: TextIO | None = None) -> int:
    """`insgd-study launch`: check, plan, run on Ray Tune, summarize. Returns the exit code.

    The garbage collector is paused from here until Tune's loop starts (`study.run.collector`:
    the imports of a fresh driver otherwise set off a second of full collections)."""
    from study.run.collector import collector_paused

    with collector_paused() as resume_collector:
        try:
            return _run_study(merged, out or sys.stdout, resume_collector)
        except DatabaseUnavailable as exc:
            # the CLI's one line, exit code 1: nothing the user typed was wrong
            raise DatabaseUnavailable(
                f"{exc}; the study stopped with what was written so far: once the "
                f"database is back, `insgd-study launch --resume --name "
                f"{merged.config.name}` finishes it"
            ) from None


def _run_study(merged: MergedConfig, out: TextIO, resume_collector: Callable[[], None]) -> int:
    prepared = prepare(merged)
    with contextlib.ExitStack() as claim_held:  # the claim is given up however the launch ends
        if prepared.claim is not None:
            claim_held.enter_context(prepared.claim)
            prepared.claim.keep_alive()
        return _run_claimed(prepared, out, resume_collector, claim_held)


def _run_claimed(
    prepared: Prepared,
    out: TextIO,
    resume_collector: Callable[[], None],
    claim_held: contextlib.ExitStack,
) -> int:
    config = prepared.config
    from study.run.raysetup import quiet_environment

    quiet_environment(config.verbose)
    import storage
    from storage.urls import mask_url
    from study.run.progress import summary_table

    shown = mask_url(prepared.url)
    retry = _db_retry(config, prepared, out)
    taken = None if prepared.claim is None else prepared.claim.taken_over
    if taken is not None:
        _say(
            out, f"study {config.name!r}: took over from a launch that is gone ({taken.describe()})"
        )
    finished_before = sum(r.state in FINISHED_STATES for r in prepared.rows)
    has_running = any(r.state == "RUNNING" for r in prepared.rows)
    if prepared.exists and finished_before >= config.target_trials and not has_running:
        _say(
            out,
            f"study {config.name!r} in {shown} already has {finished_before} finished "
            f"trials (target {config.target_trials}); nothing to run",
        )
        _reconcile(prepared, config, prepared.rows, retry, out)
        _say(out, summary_table(storage.queries.list_trials(prepared.engine, config.name)))
        return 0

    from study.run.collector import collector_off
    from study.run.raysetup import ray_session

    started = time.monotonic()
    with (
        contextlib.ExitStack() as until_ray_is_down,
        ray_session(config.address, verbose=config.verbose) as resources,
    ):
        if not (config.address or os.environ.get("RAY_ADDRESS")):
            _check_resources(config)  # a cluster may autoscale: only a local Ray is fixed
        if prepared.engine is None:  # a new database, created now that Ray is up
            engine = storage.open_database(prepared.url)
            claim = claim_for(engine, config, take_over=True)  # before the study's first row
            claim_held.enter_context(claim)
            claim.keep_alive()
            prepared = replace(prepared, engine=engine, claim=claim)
            _limit_busy_timeout(config, engine)
        writer = storage.ResultWriter(prepared.engine, retry)
        if not prepared.exists:
            writer.create_study(config.name, config.study_dict(), code_version())
            _say(out, f"study {config.name!r}: new, in {shown}")
        elif config.resume:
            failed = writer.fail_running_trials(
                config.name, "the launch that ran this trial died; its configuration re-runs"
            )
            if failed:
                _say(
                    out,
                    f"study {config.name!r}: marked {len(failed)} trial(s) left RUNNING "
                    f"as FAIL ({_numbers(failed)}); their configurations run again",
                )
        rows = retry(lambda: storage.queries.list_trials(prepared.engine, config.name))
        if prepared.exists:
            _reconcile(prepared, config, rows, retry, out)
        plan = make_plan(config, rows, _finished_curves(prepared.engine, config, rows))
        slots = concurrent_slots(config, resources)
        from study.run.fusing import fuse_size

        fuse = fuse_size(config, plan.budget, slots)
        fused = f", fused {fuse} per Ray trial" if fuse > 1 else ""
        _say(
            out,
            f"study {config.name!r}: {config.sampler} over "
            f"{','.join(config.variants)}, {plan.finished} of {config.target_trials} "
            f"trials finished, running {plan.budget} ({config.dataset}/{config.model}, "
            f"{config.epochs} epochs, up to {slots} at once{fused})",
        )
        emitted = (
            _fit(config, prepared, writer, plan, rows, slots, out, resume_collector, retry, fuse)
            if plan.budget
            else 0
        )
        leftover = writer.fail_running_trials(
            config.name,
            "the launch ended before this trial finished",
            from_number=plan.first_number,  # its own trials only
        )
        rows = retry(lambda: storage.queries.list_trials(prepared.engine, config.name))
        if retry.outages:  # a write whose commit was lost may have left an orphan
            _reconcile(prepared, config, rows, retry, out)
        # drawn while a local Ray shuts down (1.4 s of waiting for its processes), with no
        # automatic garbage collection until it is down (`study.run.collector.collector_off`)
        report = None
        if emitted:
            until_ray_is_down.enter_context(collector_off())
            report = _report_in_background(prepared.url, config.name)
    interrupted = emitted < plan.budget or bool(leftover)
    finished = sum(r.state in FINISHED_STATES for r in rows)
    if report is not None:
        _say_report(report, out)
    _say(out, "")
    _say(out, summary_table(rows))
    _say(
        out,
        f"study {config.name!r}: {finished}/{config.target_trials} trials finished in "
        f"{time.monotonic() - started:.0f}s; results in {shown}",
    )
    if interrupted:
        _say(
            out,
            f"interrupted: {len(leftover)} running trial(s) marked FAIL; launch the "
            f"same study again to finish it",
        )
        return 130
    if finished < config.target_trials:
        _say(
            out,
            f"{config.target_trials - finished} trial(s) failed; launch the same study "
            f"again to re-run their configurations",
        )
        return 1
    return 0


def _fit(
    config: StudyConfig,
    prepared: Prepared,
    writer: Any,
    plan: Plan,
    rows: Sequence[Any],
    slots: int,
    out: TextIO,
    resume_collector: Callable[[], None],
    retry: Any = None,
    fuse: int = 1,
) -> int:
    """Run the plan on Ray Tune; returns how many trials were handed to Tune (fewer than
    the budget when the run was interrupted, e.g. by Ctrl-C, which Tune handles itself).
    `resume_collector` runs once Tune is set up, just before its loop (`study.run.collector`).
    `retry` (`storage.transactions.DbRetry`) runs the driver's Optuna writes again while
    the database is unavailable; one that gives up stops the launch with its
    `DatabaseUnavailable` (which Tune would otherwise show as its own traceback).
    With `fuse` > 1 each Ray trial is a bundle of up to `fuse` trials (`study.run.bundle`):
    slots, resources and --max-concurrent then count bundles."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from study.run.collector import freeze_long_lived
    from study.run.progress import Best, Progress, best_per_variant
    from study.run.recorder import Recorder
    from study.run.trainable import bind, run_trial
    from study.run.trial_config import TrialTemplates
    from study.run.warmup import ReportWarmup
    from study.search.samplers import make_sampler, optuna_trial_count
    from study.search.searcher import METRIC, MODE, SeededSearch, StudyOptunaSearch
    from study.search.space import define_space
    from study.writes import BackgroundWrites

    busy = None if retry is None else _sqlite_busy_timeout(config)
    optuna_storage = optuna_driver_storage(prepared.url, busy, retry)
    clean_optuna_study(optuna_storage, config.name)
    optuna_search = StudyOptunaSearch(
        define_space(config),
        metric=METRIC,
        mode=MODE,
        # a resumed study's sampler goes on where it stopped (study.search.samplers)
        sampler=make_sampler(config, asked=optuna_trial_count(optuna_storage, config.name)),
        study_name=config.name,
        storage=optuna_storage,
    )
    name_objective(optuna_storage, config.name)
    writes = BackgroundWrites()  # the database and Optuna calls, off Tune's event loop
    if prepared.claim is not None:  # another launch took the study over: stop writing
        prepared.claim.on_lost = writes.stop
    searcher = SeededSearch(
        optuna_search,
        config,
        fixed=plan.groups,
        sample=plan.sample,
        budget=plan.budget,
        first_number=plan.first_number,
        writes=writes,
        ask_ahead=config.sampler in HISTORY_FREE_SAMPLERS,
    )
    if config.scheduler == "asha":
        scheduler: Any = ASHAScheduler(
            time_attr="epoch",
            max_t=config.epochs,
            grace_period=config.grace_period,
            reduction_factor=config.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    top = max(best_per_variant(rows), key=lambda r: r.mean, default=None)
    progress = Progress(
        total=config.target_trials,
        done_before=plan.finished,
        epochs_planned=config.epochs,
        best=None if top is None else Best(top.mean, top.label()),
        out=out,
    )
    resources = {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}
    warmup = ReportWarmup(then=freeze_long_lived)  # the report's imports, from trial 1 on
    templates = TrialTemplates.for_study(config)  # what every trial trains but its own values
    recorder = Recorder(writer, config.name, config.epochs, templates, writes)
    trainable: Any = run_trial
    search_alg: Any = searcher
    callbacks: list[Any] = [recorder, progress, warmup]
    if fuse > 1:
        from study.run.bundle import BundleSearch, FanOut, run_bundle

        trainable = run_bundle
        searcher = BundleSearch(searcher, fuse, config.epochs)  # its members: SeededSearch's
        search_alg = searcher
        callbacks = [FanOut([recorder, progress], config.epochs), warmup]
    tuner = tune.Tuner(
        tune.with_resources(bind(trainable, templates), resources),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode=MODE,
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=plan.budget,
            max_concurrent_trials=slots,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"insgd-{config.name}-{datetime.now():%Y%m%d-%H%M%S}",
            storage_path=_storage_path(config.results_dir),
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=config.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=1 if config.verbose else 0,
        ),
    )
    resume_collector()
    try:
        try:
            tuner.fit()
            searcher.fail_unfinished()
        except BaseException:
            with contextlib.suppress(Exception):  # the study's own error is the one to show
                recorder.flush()
            with contextlib.suppress(Exception):
                writes.close()
            raise
        try:
            recorder.flush()  # Tune's end of experiment did, unless its loop was cut short
        finally:
            writes.close()  # every queued write is in the database before anything reads it
    except BaseException:
        if writes.fatal is not None:  # inside Tune's TuneError, or raised as it is
            raise writes.fatal from None
        raise
    warmup.join()
    return searcher.emitted


def optuna_driver_storage(url: str, busy_timeout: float | None = None, retry: Any = None) -> Any:
    """The storage a launch gives Optuna: `DriverStorage` (its own RUNNING trials served
    from memory, `study.search.optuna_storage`; its writes retried while the database is
    unavailable) over `optuna_rdb_storage`. Built here alone, so the tests of Optuna's
    storage contract (tests/study/test_study_optuna_contract.py) run on exactly what a
    study uses."""
    from study.search.optuna_storage import DriverStorage

    return DriverStorage(optuna_rdb_storage(url, busy_timeout), retry=retry)


def _db_retry(config: StudyConfig, prepared: Prepared, out: TextIO) -> Any:
    """The launch's retry of its database writes (and reads) while the database is
    unavailable, for --db-retry-seconds each; its notes go to the progress output. A
    SQLite lock is waited for within that bound too (`storage.engine`'s busy timeout)."""
    from storage.transactions import DbRetry

    if prepared.engine is not None:  # a new database is created later, and limited then
        _limit_busy_timeout(config, prepared.engine)
    return DbRetry(config.db_retry_seconds, prepared.url, notify=lambda line: _say(out, line))


def _limit_busy_timeout(config: StudyConfig, engine: Any) -> None:
    from storage.engine import SQLITE_BUSY_TIMEOUT_S, limit_sqlite_busy_timeout

    if _sqlite_busy_timeout(config) < SQLITE_BUSY_TIMEOUT_S:
        limit_sqlite_busy_timeout(engine, _sqlite_busy_timeout(config))


def _sqlite_busy_timeout(config: StudyConfig) -> float:
    """How long one SQLite statement waits for another process's lock: at most the
    retry bound (at least a second), so that a bound shorter than SQLite's usual 30 s
    holds."""
    from storage.engine import SQLITE_BUSY_TIMEOUT_S

    return min(SQLITE_BUSY_TIMEOUT_S, max(1.0, config.db_retry_seconds))


def _reconcile(
    prepared: Prepared, config: StudyConfig, rows: Sequence[Any], retry: Any, out: TextIO
) -> None:
    """Optuna's trials made to agree with the results table (`study.search.reconcile`)."""
    import storage
    from storage.transactions import run_write
    from study.search.reconcile import reconcile
    from study.search.searcher import objective

    def curves() -> dict[int, dict[int, float]]:
        found: dict[int, dict[int, float]] = {}
        epochs = retry(lambda: storage.queries.study_epochs(prepared.engine, config.name))
        for epoch in epochs:
            found.setdefault(epoch.trial_number, {})[epoch.epoch] = objective(epoch.val_accuracy)
        return found

    repairs = reconcile(
        prepared.engine,
        config.name,
        rows,
        config.seeds,
        curves,
        run=lambda work: run_write(prepared.engine, work, retry),
    )
    if repairs:
        told = [r.number for r in repairs if r.state != "FAIL"]
        failed = [r.number for r in repairs if r.state == "FAIL"]
        parts = []
        if told:
            parts.append(f"{len(told)} told from their finished trials ({_numbers(told)})")
        if failed:
            parts.append(f"{len(failed)} marked FAIL ({_numbers(failed)})")
        _say(
            out,
            f"study {config.name!r}: Optuna's trials disagreed with the results table; "
            f"repaired {' and '.join(parts)}",
        )


def optuna_rdb_storage(url: str, busy_timeout: float | None = None) -> Any:
    """Optuna's RDBStorage on the results database (same driver; SQLite waits
    `busy_timeout` seconds for a lock, default 30; PostgreSQL's connections are checked
    before use and a connection attempt gives up after storage.engine's timeout)."""
    from storage.engine import CONNECT_TIMEOUT_S, SQLITE_BUSY_TIMEOUT_S
    from storage.urls import is_sqlite, normalize_url
    from study.search.optuna_storage import rdb_storage

    normalized = normalize_url(url)
    sqlite = is_sqlite(normalized)
    kwargs: dict[str, Any] = (
        {"connect_args": {"timeout": busy_timeout or SQLITE_BUSY_TIMEOUT_S}}
        if sqlite
        else {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    )
    try:
        rdb = rdb_storage(normalized, engine_kwargs=kwargs)
    except Exception as exc:  # noqa: BLE001 - Optuna wraps driver errors in many types
        from storage.urls import hide_secrets, mask_url

        reason = hide_secrets(" ".join(str(exc).split()), url)[:200]
        raise StorageError(f"cannot open Optuna's tables in {mask_url(url)}: {reason}") from None
    if sqlite:
        # The results tables already put the file in WAL mode with synchronous=NORMAL
        # (storage.engine); Optuna's connections would fsync every commit, ~40% of its
        # per-trial cost. NORMAL in WAL mode keeps the database consistent on a crash.
        from sqlalchemy import event

        event.listen(rdb.engine, "connect", _sqlite_synchronous_normal)
        rdb.engine.dispose()
    return rdb


def _sqlite_synchronous_normal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def clean_optuna_study(optuna_storage: Any, name: str) -> None:
    """Trials a dead driver left RUNNING (or enqueued, WAITING) in Optuna become FAIL.

    Only one launch runs a study at a time (checked in `prepare`), so any such trial is
    an orphan; left WAITING, it would be handed out as the next fixed point.
    """
    from optuna.trial import TrialState

    try:
        study_id = optuna_storage.get_study_id_from_name(name)
    except KeyError:
        return
    for trial in optuna_storage.get_all_trials(
        study_id, deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)
    ):
        trial_id = optuna_storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        if trial.state == TrialState.WAITING:
            # WAITING -> RUNNING is how Optuna pops an enqueued trial; then it can fail.
            optuna_storage.set_trial_state_values(trial_id, TrialState.RUNNING)
        optuna_storage.set_trial_state_values(trial_id, TrialState.FAIL)


def code_version() -> str:
    """The installed insgd-study version, plus the git commit when run from a checkout."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = version("insgd-study")
    except PackageNotFoundError:
        text = "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{text}+g{commit}" if commit else text


def _finished_curves(
    engine: Any, config: StudyConfig, rows: Sequence[Any]
) -> dict[int, dict[int, float]]:
    """Learning curves of finished trials, needed only when configurations repeat seeds."""
    if config.seeds == 1 or not any(r.state in FINISHED_STATES for r in rows):
        return {}
    import storage
    from study.search.searcher import objective

    curves: dict[int, dict[int, float]] = {}
    for epoch in storage.queries.study_epochs(engine, config.name):
        curves.setdefault(epoch.trial_number, {})[epoch.epoch] = objective(epoch.val_accuracy)
    return curves


def _check_resources(config: StudyConfig) -> None:
    """A trial must fit on one node of the local Ray, or Tune would wait for it forever."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(
        n.get("CPU", 0.0) >= config.cpus_per_trial and n.get("GPU", 0.0) >= config.gpus_per_trial
        for n in nodes
    ):
        return
    largest = max(nodes, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)), default={})
    raise UsageError(
        f"a trial needs {config.cpus_per_trial:g} CPU and {config.gpus_per_trial:g} GPU "
        f"(--cpus-per-trial / --gpus-per-trial) but no Ray node has that much (largest: "
        f"{largest.get('CPU', 0.0):g} CPU, {largest.get('GPU', 0.0):g} GPU)"
    )


def name_objective(storage: Any, study_name: str) -> None:
    """Name the Optuna study's objective after the metric it is (`val_accuracy`), so
    optuna-dashboard's plots and the importances say what they plot instead of
    "Objective 0". Called once the searcher has created (or loaded) the study, before
    the writes thread starts; on resume it writes the same name again."""
    import warnings

    import optuna

    from study.search.searcher import METRIC

    study = optuna.load_study(study_name=study_name, storage=storage)
    if study.metric_names == [METRIC]:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([METRIC])


def concurrent_slots(config: StudyConfig, resources: dict[str, float]) -> int:
    """How many trials Tune keeps running or pending: --max-concurrent, else what the
    cluster holds now. Pending trials are the demand an autoscaling cluster grows for, and
    with enough of them every slot fills at the start instead of one trial at a time."""
    if config.max_concurrent:
        return config.max_concurrent
    slots = int(resources.get("CPU", 0.0) // config.cpus_per_trial + 1e-9)
    if config.gpus_per_trial:
        slots = min(slots, int(resources.get("GPU", 0.0) // config.gpus_per_trial + 1e-9))
    return max(1, slots)


def _report_in_background(url: str, name: str) -> Future[list[str]]:
    """Start building the robustness report and attaching it beside Optuna's plots in the
    dashboard (note + figures), on a thread of its own; `_say_report` waits for it.

    The launch starts it just before leaving its Ray session: stopping a local Ray is
    1.4 s of waiting for Ray's processes to exit, time in which the report's 0.4-0.6 s of
    queries and drawing get the interpreter nearly to themselves.
    """
    from study.analysis.dashboard import publish_report

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="insgd-report")
    try:
        return pool.submit(publish_report, url, name)
    finally:
        pool.shutdown(wait=False)  # the thread ends with its one task


def _say_report(report: Future[list[str]], out: TextIO) -> None:
    """Wait for the report; say where it went, or why it did not.

    A study's results are already safe in the database, so a report that cannot be built
    (no COMPLETE trial yet, a read-only artifact folder) is one warning line, not a failure.
    """
    try:
        attached = report.result()
    except (UsageError, StorageError, OSError, ValueError) as exc:
        sys.stderr.write(f"warning: report not attached to the dashboard: {exc}\n")
        return
    if attached:
        _say(out, f"report attached to the Optuna study ({len(attached)} files) for the dashboard")


def _storage_path(results_dir: str | None) -> str | None:
    """Tune's storage path: a local folder made absolute, a URI (`s3://...`) left as given."""
    if not results_dir or "://" in results_dir:
        return results_dir or None
    return str(Path(results_dir).expanduser().resolve())


def _absolute_data_dir(data_dir: str | None) -> str:
    """Trials run in Ray's own working directories: give them an absolute data path."""
    from trainers.data import resolve_data_dir

    return str(resolve_data_dir(data_dir))


def _numbers(numbers: Sequence[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:10])
    return shown + (", ..." if len(numbers) > 10 else "")


def _say(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()

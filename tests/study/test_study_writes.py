"""The driver's background writes (`study.writes`) and what the study builds on them:
order, errors, event-time stamps, and Optuna asks made ahead without changing a study."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import optuna
import pytest
from test_study_units import FAKE_TEMPLATES, _fake_trial, _searcher

from study.config import merge
from study.search.searcher import METRIC
from study.writes import BackgroundWrites, InlineWrites


def test_background_writes_run_in_submission_order_on_one_other_thread() -> None:
    writes = BackgroundWrites()
    seen: list[tuple[int, str]] = []

    def note(n: int, pause: float = 0.0) -> int:
        time.sleep(pause)
        seen.append((n, threading.current_thread().name))
        return n

    writes.submit(note, 0, 0.05)  # a slow first write does not let later ones overtake it
    for n in range(1, 5):
        writes.submit(note, n)
    assert writes.call(note, 5) == 5  # a call waits for everything queued before it
    assert [n for n, _ in seen] == [0, 1, 2, 3, 4, 5]
    assert len({name for _, name in seen}) == 1
    assert seen[0][1] != threading.current_thread().name
    writes.submit(note, 6)
    writes.close()  # drains the queue
    assert seen[-1][0] == 6


def test_a_failed_write_is_raised_in_the_driver_at_the_next_submit_and_at_close() -> None:
    writes = BackgroundWrites()

    def boom() -> None:
        raise RuntimeError("database gone")

    gate = threading.Event()
    writes.submit(gate.wait)
    writes.submit(boom)
    writes.submit(lambda: None)  # queued behind the failure: accepted, nothing known yet
    gate.set()
    deadline = time.monotonic() + 5
    with pytest.raises(RuntimeError, match="database gone"):
        while time.monotonic() < deadline:  # raised once the failed call has run
            writes.submit(lambda: None)
            time.sleep(0.01)
    with pytest.raises(RuntimeError, match="database gone"):
        writes.close()
    with pytest.raises(RuntimeError):  # the thread is stopped: nothing more is taken
        writes.submit(lambda: None)


def test_inline_writes_run_at_once_in_the_callers_thread() -> None:
    writes = InlineWrites()
    out: list[str] = []
    future = writes.submit(lambda: out.append(threading.current_thread().name) or 7)
    assert future.done() and future.result() == 7
    assert out == [threading.current_thread().name]
    assert writes.call(lambda x: x + 1, 1) == 2


RESULT = {"epoch": 1, "val_accuracy": 0.5, "train_loss": 1.0, "diverged": False}


def _recorder(tmp_path, writes, epochs_planned: int = 1):
    """A study "r" in a fresh SQLite file and a Recorder writing it through `writes`."""
    import storage
    from study.run.recorder import Recorder

    engine = storage.open_database(f"sqlite:///{tmp_path / 'r.db'}")
    writer = storage.ResultWriter(engine)
    writer.create_study("r", {"x": 1}, "test")
    return engine, Recorder(writer, "r", epochs_planned, FAKE_TEMPLATES, writes=writes)


def test_recorder_stamps_trials_when_their_events_happen_not_when_rows_are_written(
    tmp_path,
) -> None:
    import storage

    writes = BackgroundWrites()
    gate = threading.Event()
    writes.submit(gate.wait)  # hold the queue: every row below is written late
    engine, recorder = _recorder(tmp_path, writes)
    result = RESULT
    trial = _fake_trial(0, "insgd-l2", result)
    before = datetime.now(UTC)
    recorder.on_trial_start(0, [], trial)
    recorder.on_step_end(0, [])  # Tune ends each step of its loop so
    recorder.on_trial_result(1, [], trial, result)
    recorder.on_step_end(1, [])
    recorder.on_trial_complete(2, [], trial)
    recorder.on_experiment_end([])
    after = datetime.now(UTC)
    assert storage.queries.list_trials(engine, "r") == []  # nothing written yet
    time.sleep(0.3)
    gate.set()
    writes.close()
    (row,) = storage.queries.list_trials(engine, "r")
    assert row.state == "COMPLETE" and row.final_val_accuracy == 0.5
    for stamp in (row.started_at, row.finished_at):
        stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
        assert before <= stamp <= after  # not 0.3 s later, when the rows were written


def _run_all(search, trials: int) -> list[dict]:
    """Tune's order with one trial at a time: suggest, report, complete, next."""
    configs = []
    for i in range(trials):
        config = search.suggest(f"t{i}")
        configs.append(config)
        accuracy = 0.1 + config["lr"]  # any result that depends on the configuration
        search.on_trial_result(f"t{i}", {METRIC: accuracy, "epoch": 1, "diverged": False})
        search.on_trial_complete(f"t{i}", {METRIC: accuracy, "epoch": 1, "diverged": False})
    assert search.suggest("end") == "FINISHED"
    return configs


@pytest.mark.parametrize("sampler", ["random", "qmc", "tpe"])
def test_background_writes_and_asking_ahead_sample_the_same_study(sampler) -> None:
    """A seeded study samples the same configurations, with the same Optuna numbers and
    values, whether Optuna is called inline or on the writes thread and asked ahead."""
    flags = {"trials": 6, "seeds": 2, "sampler": sampler, "sampler_seed": 3, "epochs": 1}
    config = merge(flags=flags).config
    inline, inline_inner = _searcher(config, writes=InlineWrites(), ask_ahead=False, name="a")
    expected = _run_all(inline, 6)
    writes = BackgroundWrites()
    ahead, ahead_inner = _searcher(config, writes=writes, ask_ahead=sampler != "tpe", name="b")
    got = _run_all(ahead, 6)
    writes.close()
    keys = ("trial_number", "variant", "lr", "eps", "seed", "optuna_trial")
    assert [{k: c[k] for k in keys} for c in got] == [{k: c[k] for k in keys} for c in expected]
    mine = ahead_inner._ot_study.trials
    theirs = inline_inner._ot_study.trials
    assert [t.state for t in mine] == [optuna.trial.TrialState.COMPLETE] * 3
    assert [(t.params, t.value, t.user_attrs) for t in mine] == [
        (t.params, t.value, t.user_attrs) for t in theirs
    ]


def test_asking_ahead_asks_one_configuration_early_and_never_past_the_budget() -> None:
    config = merge(flags={"trials": 3, "sampler": "random", "sampler_seed": 0}).config
    search, inner = _searcher(config, writes=InlineWrites(), ask_ahead=True, name="c")
    search.suggest("t0")
    assert len(inner._ot_study.trials) == 2  # the running configuration and the next one
    search.suggest("t1")
    search.suggest("t2")
    assert len(inner._ot_study.trials) == 3  # the budget is 3: nothing asked for a 4th


def test_an_interrupted_study_fails_what_it_asked_for_and_will_not_finish() -> None:
    config = merge(flags={"trials": 4, "sampler": "random", "sampler_seed": 0}).config
    writes = BackgroundWrites()
    search, inner = _searcher(config, writes=writes, ask_ahead=True, name="d")
    search.suggest("t0")
    search.on_trial_complete("t0", {METRIC: 0.5, "epoch": config.epochs, "diverged": False})
    search.suggest("t1")  # running when Tune stops; the third configuration is asked ahead
    search.fail_unfinished()  # what the launch does when Tune stops (Ctrl-C)
    search.fail_unfinished()  # and only once
    writes.close()
    states = [t.state for t in inner._ot_study.trials]
    complete, fail = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL
    assert states == [complete, fail, fail]


def test_a_held_queue_waits_for_release_at_most_max_hold_and_never_holds_the_driver() -> None:
    writes = BackgroundWrites(max_hold=30.0)
    ran = threading.Event()
    writes.hold()
    writes.submit(ran.set)
    assert not ran.wait(0.3)  # held
    writes.release()
    assert ran.wait(5.0)

    # the driver never waits on a hold: `call` and `wait` release it first
    writes.hold()
    started = time.monotonic()
    assert writes.call(lambda: 3) == 3
    writes.hold()
    assert writes.wait(writes.submit(lambda: 4)) == 4
    assert time.monotonic() - started < 10.0
    # waiting for a call that already ran keeps the hold
    ran_before = writes.submit(lambda: 5)
    assert writes.wait(ran_before) == 5
    writes.hold()
    assert writes.wait(ran_before) == 5
    still_held = threading.Event()
    writes.submit(still_held.set)
    assert not still_held.wait(0.3)
    writes.release()
    assert still_held.wait(5.0)
    # close releases and drains
    writes.hold()
    late = threading.Event()
    writes.submit(late.set)
    writes.close()
    assert late.is_set()

    # a hold nobody releases ends after max_hold
    short = BackgroundWrites(max_hold=0.2)
    done = threading.Event()
    short.hold()
    started = time.monotonic()
    short.submit(done.set)
    assert done.wait(5.0)
    assert 0.15 <= time.monotonic() - started < 5.0
    short.close()


class _SpyWrites(InlineWrites):
    """Inline writes that note what the study asks of them."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def submit(self, fn, /, *args, **kwargs):
        name = getattr(fn, "__name__", "call")
        if name == "write_all":  # the Recorder's batch: the writes in it
            name = "+".join(write for write, _ in args[0])
        self.events.append(name)
        return super().submit(fn, *args, **kwargs)

    def call(self, fn, /, *args, **kwargs):
        self.events.append(getattr(fn, "__name__", "call"))
        return super().call(fn, *args, **kwargs)

    def wait(self, future, timeout=None):
        self.events.append("wait")
        return super().wait(future, timeout)

    def hold(self) -> None:
        self.events.append("hold")

    def release(self) -> None:
        self.events.append("release")


def test_recorder_holds_the_queue_from_a_trials_last_result_to_the_next_trials_start(
    tmp_path,
) -> None:
    """Held from the last epoch's result (or the end of a trial stopped early) until the
    end of the Tune step that started the next trial, after Tune has sent it its task;
    each step's rows are one transaction, and a held queue's rows one with the next
    trial's start (`ResultWriter.write_all`)."""
    import storage

    writes = _SpyWrites()
    engine, recorder = _recorder(tmp_path, writes, epochs_planned=2)

    def step_end() -> None:
        recorder.on_step_end(0, [])

    def epoch(n: int, **extra) -> dict:
        return {**RESULT, "epoch": n, **extra}

    full = _fake_trial(0, "insgd-l2", epoch(2))
    recorder.on_trial_start(0, [], full)
    assert writes.events == []  # nothing queued, nothing released inside on_trial_start
    step_end()
    recorder.on_trial_result(0, [], full, epoch(1))
    step_end()  # released once per start, not at every step
    recorder.on_trial_result(0, [], full, epoch(2))
    step_end()
    recorder.on_trial_complete(0, [], full)
    step_end()
    assert writes.events == [
        "start_trial",
        "release",
        "record_epoch",
        "hold",  # its last epoch: held, and its row waits for the next trial's start
        "hold",  # its end
    ]

    writes.events.clear()
    diverged = _fake_trial(1, "insgd-l2", epoch(1, diverged=True))
    recorder.on_trial_start(0, [], diverged)
    step_end()
    recorder.on_trial_result(0, [], diverged, epoch(1, diverged=True))
    step_end()
    recorder.on_trial_complete(0, [], diverged)
    step_end()
    assert writes.events == [
        "record_epoch+finish_trial+start_trial",  # one transaction
        "release",
        "hold",  # diverged: its last epoch too
        "hold",
    ]

    writes.events.clear()
    pruned = _fake_trial(2, "insgd-l2", epoch(1))
    recorder.on_trial_start(0, [], pruned)
    step_end()
    recorder.on_trial_result(0, [], pruned, epoch(1))
    step_end()
    recorder.on_trial_complete(0, [], pruned)  # a scheduler stopped it after epoch 1
    step_end()
    assert writes.events == [
        "record_epoch+finish_trial+start_trial",
        "release",
        "record_epoch",
        "hold",
    ]
    writes.events.clear()
    recorder.on_experiment_end([])  # the last trial's end: no next trial starts
    assert writes.events == ["finish_trial"]
    rows = storage.queries.list_trials(engine, "r", order_by="trial_number")
    assert [(r.state, r.epochs_completed, r.diverged) for r in rows] == [
        ("COMPLETE", 2, False),
        ("COMPLETE", 1, True),
        ("PRUNED", 1, False),
    ]
    assert [r.final_val_accuracy for r in rows] == [0.5, 0.5, 0.5]


def test_a_hold_with_no_next_trial_ends_the_recorders_batch_after_max_hold(tmp_path) -> None:
    writes = _SpyWrites()
    engine, recorder = _recorder(tmp_path, writes, epochs_planned=1)
    recorder.max_hold = 0.2
    last = _fake_trial(0, "insgd-l2", RESULT)
    recorder.on_trial_start(0, [], last)
    recorder.on_step_end(0, [])
    recorder.on_trial_result(0, [], last, RESULT)
    recorder.on_step_end(0, [])
    recorder.on_trial_complete(0, [], last)
    recorder.on_step_end(0, [])
    assert writes.events == ["start_trial", "release", "hold", "hold"]
    time.sleep(0.25)
    recorder.on_step_end(0, [])  # Tune's loop steps at least every 0.1 s
    assert writes.events[-1] == "record_epoch+finish_trial"
    import storage

    (row,) = storage.queries.list_trials(engine, "r")
    assert row.state == "COMPLETE" and row.epochs_completed == 1


def test_the_searcher_waits_for_an_ask_made_ahead_through_the_writes() -> None:
    """So that a held queue is released before the driver waits on it."""
    config = merge(flags={"trials": 3, "sampler": "random", "sampler_seed": 0}).config
    writes = _SpyWrites()
    search, _ = _searcher(config, writes=writes, ask_ahead=True, name="w")
    _run_all(search, 3)
    # every configuration: the 1st asked when needed, the 2nd and 3rd asked ahead
    assert writes.events.count("wait") == 3
    assert writes.events.count("ask_group") == 3


def test_a_seeds_last_epoch_is_reported_with_its_end_in_one_call(tmp_path) -> None:
    """Per trial the writes thread gets the ask, one report per epoch before the last,
    and one call for the last epoch's report, the attributes and the tell (one
    transaction on the driver's storage); Optuna's trials hold every epoch's mean."""
    from study.run.runner import optuna_rdb_storage
    from study.search.optuna_storage import DriverStorage

    config = merge(flags={"trials": 2, "seeds": 2, "epochs": 2, "sampler_seed": 0}).config
    writes = _SpyWrites()
    storage = DriverStorage(optuna_rdb_storage(f"sqlite:///{tmp_path / 'o.db'}"))
    search, inner = _searcher(config, writes=writes, name="e", storage=storage)
    accuracy = {0: (0.2, 0.4), 1: (0.4, 0.8)}  # by seed, by epoch
    for i in range(2):  # one configuration, its two seeds one after the other
        search.suggest(f"t{i}")
        for epoch in (1, 2):
            result = {METRIC: accuracy[i][epoch - 1], "epoch": epoch, "diverged": False}
            search.on_trial_result(f"t{i}", result)
        search.on_trial_complete(f"t{i}", result)
    assert writes.events == ["ask_group", "wait", "report_steps", "tell_group"]
    (trial,) = optuna.load_study(
        study_name="e", storage=optuna_rdb_storage(storage._backend.url)
    ).trials
    assert trial.intermediate_values == pytest.approx({1: 0.3, 2: 0.6})
    assert trial.value == pytest.approx(0.6) and trial.user_attrs["trial_numbers"] == [0, 1]


def test_once_a_call_gives_up_on_the_database_the_calls_queued_after_it_do_not_run() -> None:
    """The database then holds a prefix of the study's writes, and the driver stops
    within one retry bound instead of one bound per queued call."""
    from storage.errors import DatabaseUnavailable

    writes = BackgroundWrites()
    ran: list[int] = []
    gone = DatabaseUnavailable("database sqlite:///x.db unavailable for 3s: database is locked")

    def give_up() -> None:
        raise gone

    writes.submit(ran.append, 0)
    failed = writes.submit(give_up)
    later = [writes.submit(ran.append, n) for n in (1, 2)]
    with pytest.raises(DatabaseUnavailable):
        writes.close()
    assert ran == [0]
    assert writes.fatal is gone
    assert failed.exception() is gone and all(f.exception() is gone for f in later)


def test_while_the_writes_wait_for_the_database_the_searcher_lets_tune_go_on(monkeypatch):
    """An ask queued behind a call stuck on the database: `suggest` answers None (Tune
    asks again later) instead of blocking Tune's loop, then the trial once it is back."""
    import study.writes

    monkeypatch.setattr(study.writes, "STALLED_AFTER", 0.2)
    config = merge(flags={"trials": 2, "sampler": "random", "sampler_seed": 0}).config
    writes = BackgroundWrites()
    search, inner = _searcher(config, writes=writes, ask_ahead=True, name="stall")
    back = threading.Event()
    writes.submit(back.wait)  # a write retrying while the database is away
    started = time.monotonic()
    assert search.suggest("t0") is None
    assert search.suggest("t1") is None
    assert time.monotonic() - started < 3
    assert search.emitted == 0
    back.set()
    deadline = time.monotonic() + 10
    config0 = None
    while config0 is None and time.monotonic() < deadline:
        config0 = search.suggest("t2")
    assert config0 is not None and config0["trial_number"] == 0
    assert search.emitted == 1
    writes.close()
    assert len(inner._ot_study.trials) == 2  # the asked one and the one asked ahead


def test_a_launch_that_lost_its_claim_stops_writing() -> None:
    """`stop` (from the claim's heartbeat thread): nothing queued or later is written,
    and the driver gets the error at its next submit and at close."""
    from storage.errors import ClaimLost

    writes = BackgroundWrites()
    ran: list[int] = []
    gate = threading.Event()
    writes.submit(gate.wait)
    writes.submit(ran.append, 1)
    lost = ClaimLost("study 's': another launch took over this launch's claim")
    writes.stop(lost)
    gate.set()
    with pytest.raises(ClaimLost):
        writes.submit(ran.append, 2)
    with pytest.raises(ClaimLost):
        writes.close()
    assert ran == [] and writes.fatal is lost

"""The launch's one-off costs moved out of its way: the garbage collector paused during
setup and frozen after it (`study.run.collector`), the report's imports made in the
background once the first trial has started (`study.run.warmup`)."""

from __future__ import annotations

import gc
import sys
import threading
import weakref

import pytest
from ray import cloudpickle

from study.run.collector import collector_paused, freeze_long_lived
from study.run.warmup import REPORT_MODULES, ReportWarmup


class _Node:
    """An object that can sit in a reference cycle and be watched by a weakref."""

    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> weakref.ref:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def collector_state():
    """Each test leaves the collector as it found it (on, nothing frozen by the test)."""
    was_enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if was_enabled:
        gc.enable()
    else:  # pragma: no cover - pytest runs with the collector on
        gc.disable()


def test_collector_is_paused_until_resume_then_frozen_and_on(collector_state):
    gc.enable()
    with collector_paused() as resume:
        assert not gc.isenabled()
        alive = _Node()  # alive at resume: frozen, out of every later collection
        alive.other = alive
        frozen_before = gc.get_freeze_count()
        resume()
        assert gc.isenabled()
        assert gc.get_freeze_count() > frozen_before
        assert not any(o is alive for o in gc.get_objects())  # frozen objects are not listed
        later = _cycle()  # made after resume: collected as usual
        gc.collect()
        assert later() is None
        frozen_after = gc.get_freeze_count()
        resume()  # once only
        assert gc.get_freeze_count() == frozen_after
    assert gc.isenabled()


def test_freeze_long_lived_freezes_what_is_alive(collector_state):
    kept = _Node()
    kept.other = kept
    assert any(o is kept for o in gc.get_objects())
    freeze_long_lived()
    assert not any(o is kept for o in gc.get_objects())


def test_leaving_the_block_resumes_even_on_error(collector_state):
    gc.enable()
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("bad input")
    assert gc.isenabled()


def test_a_collector_the_caller_turned_off_stays_off(collector_state):
    gc.disable()
    with collector_paused() as resume:
        resume()
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_resume_from_another_thread(collector_state):
    gc.enable()
    with collector_paused() as resume:
        thread = threading.Thread(target=resume)
        thread.start()
        thread.join()
        assert gc.isenabled()


def test_warmup_imports_from_the_first_trial_start_once_then_calls_then():
    calls: list[str] = []
    started: list[threading.Thread] = []
    real_start = threading.Thread.start

    def counting_start(self: threading.Thread) -> None:
        started.append(self)
        real_start(self)

    warmup = ReportWarmup(then=lambda: calls.append("then"), modules=("json", "no_such_mod_x"))
    threading.Thread.start = counting_start  # type: ignore[method-assign]
    try:
        assert not started  # nothing before Tune starts a trial
        warmup.on_trial_start(0, [], object())
        warmup.on_trial_start(1, [], object())
        warmup.join()
    finally:
        threading.Thread.start = real_start  # type: ignore[method-assign]
    assert len(started) == 1 and started[0].daemon
    assert calls == ["then"]  # a failed import does not stop the rest or `then`
    assert "json" in sys.modules


def test_warmup_join_runs_it_when_no_trial_started():
    calls: list[str] = []
    warmup = ReportWarmup(then=lambda: calls.append("then"), modules=())
    warmup.join()
    assert calls == ["then"]


def test_warmup_pickles_for_tunes_experiment_state():
    warmup = ReportWarmup(then=lambda: None, modules=("json",))
    warmup.start()
    warmup.join()
    state = cloudpickle.loads(cloudpickle.dumps(warmup)).__dict__
    assert state == {"_modules": ("json",)}


def test_report_modules_are_what_the_report_imports():
    # every name imports (a typo would only make the report pay for the import itself)
    import importlib

    for name in REPORT_MODULES:
        importlib.import_module(name)


def test_collector_off_turns_automatic_collection_off_for_the_block(collector_state):
    from study.run.collector import collector_off

    gc.enable()
    with pytest.raises(RuntimeError), collector_off():
        assert not gc.isenabled()
        raise RuntimeError("the launch's error")
    assert gc.isenabled()
    gc.disable()
    with collector_off():
        assert not gc.isenabled()
    assert not gc.isenabled()  # a collector the caller had off stays off

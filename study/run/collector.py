"""Full garbage collections kept off a launch's long-lived heap.

A launch's driver holds about half a million objects that live as long as the process
(the modules of Ray, torch, Optuna, SQLAlchemy, matplotlib and what they build at
import). Every full collection walks all of them (~0.3 s on a 2-core VM), and importing
them sets off six or seven: about a second of a launch, landing wherever Tune happened to
be starting a trial or the report was being drawn (and one more at interpreter exit).

So a launch pauses the collector while it imports and sets up (`collector_paused`), and
before Tune's loop starts, `resume` moves everything alive into the permanent generation
(`gc.freeze`) and turns collection back on: later collections walk only what the study
creates. The report's imports, made in the background once the first trial has started
(`study.run.warmup`), are frozen the same way when they are done (`freeze_long_lived`). The
pause never lasts into Tune's loop, however long trials wait for resources there.

What this costs: reference cycles that were already garbage when frozen are never
collected (measured: ~6,000 objects for a fresh `insgd-study launch`, whose process ends
with the study; ~16,000 per launch in a process that runs many, such as the test
suite). Collecting them first would walk everything the setup made: 0.16 s of a fresh
launch, on the way to its first trial.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[Callable[[], None]]:
    """Pause the cyclic garbage collector; yields `resume`, which freezes what is alive
    and turns collection back on (once, from any thread). Leaving the block resumes it
    too. A collector the caller had turned off stays off."""
    was_enabled = gc.isenabled()
    lock = threading.Lock()
    resumed = False

    def resume() -> None:
        nonlocal resumed
        with lock:
            if resumed:
                return
            resumed = True
            gc.freeze()
            if was_enabled:
                gc.enable()

    gc.disable()
    try:
        yield resume
    finally:
        resume()


def freeze_long_lived() -> None:
    """Move every object alive now into the permanent generation (after imports whose
    modules live as long as the process)."""
    gc.freeze()


@contextmanager
def collector_off() -> Iterator[None]:
    """No automatic collection in the block (a collector the caller had off stays off).

    For the end of a launch, when the report is drawn on a thread while Ray shuts down:
    an automatic collection runs in whichever thread happens to allocate, and one that
    frees Ray objects (object refs in reference cycles left by Tune's run) while Ray's
    core worker is being torn down makes Ray end the whole process ("The core worker has
    already been shutdown ... The process will exit": the launch exited 1 in most of
    eight tries without this). Once `ray.shutdown` has returned, freeing them is safe.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()

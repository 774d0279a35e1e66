"""Fused trials with the TPE sampler (``--sampler tpe --fuse K``): a bundle's K members
are asked of TPE back to back, before any of them is told, and TPE's constant liar keeps
them apart; a bundle whose first ask waits on the database is not the end of the study.

Without Ray: `BundleSearch` over the study's own `SeededSearch` and TPE sampler on an
in-memory Optuna study. With Ray (a real ``insgd-study launch`` as a process): a small
fused TPE study stores every member as its own trial, and ASHA with ``--fuse K`` is
still refused before anything is written.
"""

from __future__ import annotations

import math
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from itertools import combinations
from pathlib import Path
from typing import Any, TypeVar

import optuna
import pytest
import study_helpers as helpers
from ray.tune.search import Searcher
from test_study_units import _searcher

import storage
from study.config import merge
from study.run.bundle import BundleSearch
from study.run.fusing import fuse_reason, fuse_size
from study.search.searcher import METRIC
from study.search.space import Point
from study.writes import BackgroundWrites, InlineWrites

REPO = Path(__file__).resolve().parents[2]
TrialState = optuna.trial.TrialState
T = TypeVar("T")
#: Configurations told before a bundle is asked: past TPE's 10 random start-up trials.
HISTORY = 20


# --------------------------------------------------------------------------- the rule
def test_tpe_fuses_under_auto_and_an_explicit_k_and_asha_still_does_not():
    tpe = merge(flags={"trials": 60}).config  # --trials alone: tpe, fuse auto
    assert tpe.sampler == "tpe" and tpe.fuse == "auto"
    assert fuse_reason(tpe) is None
    # four waves of bundles at least (TPE_MIN_WAVES), so TPE learns between them:
    assert fuse_size(tpe, pending=60, slots=2) == 8  # a grid would run 15s (cap 16)
    assert fuse_size(merge(flags={"sampler": "grid"}).config, pending=60, slots=2) == 15
    assert fuse_size(tpe, pending=400, slots=2) == 16  # the MLP's CPU cap
    assert fuse_size(tpe, pending=6, slots=2) == 1
    assert fuse_size(merge(flags={"trials": 8, "fuse": 4}).config, 8, 2) == 4
    asha = merge(flags={"trials": 8, "scheduler": "asha"}).config
    assert fuse_reason(asha) is not None and fuse_size(asha, 8, 2) == 1


# --------------------------------------------------------------------------- a stalled ask
class ScriptedSeeded:
    """What `BundleSearch` needs of a `SeededSearch`, answering from a script: "trial"
    (the next numbered trial), None (the ask waits on the database) or FINISHED."""

    def __init__(self, *script: str | None) -> None:
        self.script = list(script)
        self.emitted = 0
        self.asked: list[str] = []

    def suggest(self, key: str) -> dict[str, Any] | str | None:
        self.asked.append(key)
        answer = self.script.pop(0)
        if answer != "trial":
            return answer
        self.emitted += 1
        return {"trial_number": self.emitted - 1, "variant": "sgd", "lr": 0.1, "seed": 0}


def test_a_bundle_whose_first_ask_waits_on_the_database_is_asked_again_not_finished():
    script = (None, "trial", "trial", None, None, "trial", Searcher.FINISHED, Searcher.FINISHED)
    inner = ScriptedSeeded(*script)
    search = BundleSearch(inner, 3, epochs_planned=1)
    assert search.suggest("a") is None  # was FINISHED: that ended the study
    assert "a" not in search._open
    first = search.suggest("b")  # back: 2 members, the third ask waits again
    assert [m["trial_number"] for m in first["members"]] == [0, 1]
    assert search._open == {"b": ["b#0", "b#1"]}  # not b#2, which got no trial
    assert search.suggest("c") is None
    assert search.suggest("d")["members"] == [
        {"trial_number": 2, "variant": "sgd", "lr": 0.1, "seed": 0, "member": 0}
    ]
    assert search.suggest("e") == Searcher.FINISHED  # only when the inner search says so
    assert inner.asked == ["a#0", "b#0", "b#1", "b#2", "c#0", "d#0", "d#1", "e#0"]
    assert set(search._open) == {"b", "d"}


class StallingWrites(InlineWrites):
    """Runs each call at once, as `InlineWrites`, until `runs` calls have run; from then
    on the database is away: calls wait, in order, until `back` runs them, and an ask's
    answer does not come (`wait` times out while `stalled`), as with `BackgroundWrites`
    whose running call retries a lost database."""

    def __init__(self, runs: int) -> None:
        self.runs = runs
        self.waiting: list[tuple[Future[Any], Callable[..., Any], tuple, dict]] = []

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        if self.runs > 0 and not self.waiting:
            self.runs -= 1
            return super().submit(fn, *args, **kwargs)
        future: Future[T] = Future()
        self.waiting.append((future, fn, args, kwargs))
        return future

    def wait(self, future: Future[T], timeout: float | None = None) -> T:
        if not future.done():
            raise FutureTimeout
        return future.result()

    def stalled(self) -> bool:
        return bool(self.waiting)

    def back(self) -> None:
        self.runs = 10**9
        while self.waiting:
            future, fn, args, kwargs = self.waiting.pop(0)
            future.set_result(fn(*args, **kwargs))


def _final(accuracy: float) -> dict[str, Any]:
    return {METRIC: accuracy, "epoch": 1, "diverged": False}


def test_a_partial_bundle_leaves_the_unanswered_member_nowhere():
    """The second member's ask waits on the database: the bundle goes with one member,
    the member key that got no answer is registered neither by the bundle nor by the
    study's searcher, and the next bundle takes the same ask (no Optuna trial is lost or
    asked twice), so every configuration is told once it is back."""
    config = merge(flags={"trials": 3, "sampler_seed": 0, "epochs": 1}).config
    writes = StallingWrites(runs=1)  # member a#0's ask, then the database is away
    seeded, inner = _searcher(config, writes=writes)
    search = BundleSearch(seeded, 3, epochs_planned=1)
    partial = search.suggest("a")
    assert [m["trial_number"] for m in partial["members"]] == [0]
    assert search._open == {"a": ["a#0"]}
    assert set(seeded._by_trial) == {"a#0"}  # not a#1
    assert seeded.emitted == 1
    assert search.suggest("b") is None and seeded.emitted == 1  # still away: ask again
    assert set(seeded._by_trial) == {"a#0"}
    writes.back()
    rest = search.suggest("c")
    assert [m["trial_number"] for m in rest["members"]] == [1, 2]
    assert set(seeded._by_trial) == {"a#0", "c#0", "c#1"}
    assert len(inner._ot_study.trials) == 3  # the waiting ask became c#0, none extra
    assert search.suggest("d") == Searcher.FINISHED
    search.on_trial_result("a", {"epoch": 1, "members": [{"member": 0, **_final(0.5)}]})
    search.on_trial_complete("a")
    rows = [{"member": i, **_final(0.6)} for i in (0, 1)]
    search.on_trial_result("c", {"epoch": 1, "members": rows})
    search.on_trial_complete("c")
    assert not seeded._by_trial
    assert [t.state for t in inner._ot_study.trials] == [TrialState.COMPLETE] * 3


def test_a_fused_tpe_study_waits_for_a_stalled_database_instead_of_finishing(monkeypatch):
    """The real writes thread stuck on the database before a bundle's first ask: `suggest`
    answers None (Tune asks again later), then the whole bundle once it is back."""
    import study.writes

    monkeypatch.setattr(study.writes, "STALLED_AFTER", 0.2)
    config = merge(flags={"trials": 4, "sampler_seed": 0, "epochs": 1}).config
    writes = BackgroundWrites()
    seeded, inner = _searcher(config, writes=writes)
    search = BundleSearch(seeded, 4, epochs_planned=1)
    back = threading.Event()
    writes.submit(back.wait)  # a write retrying while the database is away
    try:
        started = time.monotonic()
        assert search.suggest("a") is None
        assert time.monotonic() - started < 3
        assert not search._open and seeded.emitted == 0
    finally:
        back.set()
    deadline = time.monotonic() + 10
    bundle = None
    while bundle is None and time.monotonic() < deadline:
        bundle = search.suggest("b")
    assert bundle is not None and bundle != Searcher.FINISHED
    assert [m["trial_number"] for m in bundle["members"]] == [0, 1, 2, 3]
    writes.close()
    assert len(inner._ot_study.trials) == 4


# --------------------------------------------------------------------------- constant liar
def _accuracy(point: Point) -> float:
    """A smooth made-up objective: best at lr 0.1, a little better with INSGD."""
    return 0.95 - 0.1 * (math.log10(point.lr) + 1) ** 2 - (0.0 if point.eps else 0.02)


def _point(member: dict[str, Any]) -> Point:
    return Point(member["variant"], member["lr"], member["eps"])


def _history(config: Any) -> list[optuna.trial.FrozenTrial]:
    """`HISTORY` configurations (of all their seeds) asked and told one trial at a time,
    as an unfused study with one slot runs them (TPE's start-up, then TPE itself)."""
    seeded, inner = _searcher(config)
    for i in range(HISTORY * config.seeds):
        trial = seeded.suggest(f"h{i}")
        assert isinstance(trial, dict)
        seeded.on_trial_complete(f"h{i}", _final(_accuracy(_point(trial))))
    trials = inner._ot_study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * HISTORY
    return trials


def _bundle_after(history, config, size: int):
    """One bundle of `size` members asked of the study's searcher on an in-memory Optuna
    study holding `history`; (bundle, its BundleSearch, the OptunaSearch)."""
    memory = optuna.storages.InMemoryStorage()
    optuna.create_study(storage=memory, study_name="unit", direction="maximize").add_trials(history)
    seeded, inner = _searcher(config, storage=memory)
    search = BundleSearch(seeded, size, epochs_planned=1)
    bundle = search.suggest("bundle")
    assert isinstance(bundle, dict)
    return bundle, search, inner


@pytest.mark.parametrize(("seeds", "size"), [(1, 8), (2, 5)])
def test_a_tpe_bundle_asks_distinct_configurations_that_stay_running_until_told(seeds, size):
    """Past the start-up trials, a bundle's ceil(K / seeds) configurations are asked
    back to back: all different, each RUNNING in Optuna with the member's values until
    its seeds are told, then COMPLETE."""
    config = merge(flags={"trials": 60, "seeds": seeds, "sampler_seed": 3, "epochs": 1}).config
    bundle, search, inner = _bundle_after(_history(config), config, size)
    members = bundle["members"]
    assert [m["trial_number"] for m in members] == list(range(size))
    assert [m["seed"] for m in members] == [i % seeds for i in range(size)]
    configurations = math.ceil(size / seeds)
    asked = inner._ot_study.trials[HISTORY:]
    assert len(asked) == configurations
    assert all(t.state == TrialState.RUNNING for t in asked)
    by_number = {t.number: t for t in asked}
    for member in members:  # a configuration's seeds share its Optuna trial and values
        trial = by_number[member["optuna_trial"]]
        assert _point(member).same_as(Point.from_params(trial.params))
    points = [Point.from_params(t.params) for t in asked]
    assert not [(a, b) for a, b in combinations(points, 2) if a.same_as(b)]
    # told: the whole seeds of a configuration
    rows = [{"member": m["member"], **_final(_accuracy(_point(m)))} for m in members]
    search.on_trial_result("bundle", {"epoch": 1, "members": rows})
    search.on_trial_complete("bundle")
    told = {t.number: t.state for t in inner._ot_study.trials[HISTORY:]}
    complete = {m["optuna_trial"] for m in members if (m["member"] // seeds + 1) * seeds <= size}
    assert {n for n, state in told.items() if state == TrialState.COMPLETE} == complete
    assert all(told[n] == TrialState.RUNNING for n in told.keys() - complete)


def _closest_pair(members: list[dict[str, Any]]) -> float:
    """The smallest distance (in decades of lr) between two of the bundle's lrs."""
    lrs = sorted(math.log10(m["lr"]) for m in members)
    return min(b - a for a, b in zip(lrs, lrs[1:], strict=False))


@pytest.mark.parametrize("sampler_seed", [0, 1, 2])
def test_constant_liar_keeps_the_asks_of_a_bundle_apart(monkeypatch, sampler_seed):
    """The same history, seed and bundle with and without the study's constant liar.

    Without it, TPE asked 8 times before any tell draws 8 times from the same model, and
    its 8 lrs crowd around the best one (a few thousandths of a decade apart). With it,
    every RUNNING ask counts among the bad trials, so the next ask looks elsewhere.
    One variant (an lr-only space) keeps the distance plain.
    """
    config = merge(
        flags={"trials": 60, "variants": ("sgd",), "sampler_seed": sampler_seed, "epochs": 1}
    ).config
    history = _history(config)
    with_liar, _, _ = _bundle_after(history, config, 8)
    real = optuna.samplers.TPESampler

    def without_liar(**kwargs: Any) -> optuna.samplers.BaseSampler:
        return real(**{**kwargs, "constant_liar": False})

    monkeypatch.setattr(optuna.samplers, "TPESampler", without_liar)
    plain, _, _ = _bundle_after(history, config, 8)  # the study's sampler, liar off
    apart, crowded = _closest_pair(with_liar["members"]), _closest_pair(plain["members"])
    assert apart > 3 * crowded, (apart, crowded)


# --------------------------------------------------------------------------- end to end
def _launch(tmp_path: Path, *flags: str, timeout: int = 300) -> subprocess.CompletedProcess:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    argv = helpers.launch_command(url, "tpe", tmp_path / "ray", *flags)
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_tpe_with_fuse_and_asha_is_refused_before_anything_is_written(tmp_path):
    proc = _launch(
        tmp_path, "--sampler", "tpe", "--trials", "8", "--fuse", "4", "--scheduler", "asha"
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--fuse 4 with --scheduler asha" in lines[0], proc.stderr
    assert not (tmp_path / "studies.db").exists()


@pytest.mark.slow
def test_a_fused_tpe_study_stores_every_member_as_its_own_trial(tmp_path):
    """12 trials of 2 seeds (6 configurations) in bundles of 4 over 2 slots: one Optuna
    trial per configuration, one results row and 2 epoch rows per trial."""
    trials, seeds, epochs = 12, 2, 2
    proc = _launch(
        tmp_path,
        *("--dataset", "digits", "--model", "mlp", "--sampler", "tpe", "--sampler-seed", "1"),
        *("--trials", str(trials), "--seeds", str(seeds), "--epochs", str(epochs)),
        *("--variants", "sgd,insgd-l2", "--lr-min", "0.01", "--lr-max", "0.3"),
        *("--fuse", "4", "--max-concurrent", "2"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plan = proc.stdout.splitlines()[1]
    assert "tpe over sgd,insgd-l2" in plan and "fused 4 per Ray trial" in plan, plan
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    rows = helpers.trials(url, "tpe")
    assert len(rows) == trials and all(r.state == "COMPLETE" for r in rows)
    assert sorted(r.trial_number for r in rows) == list(range(trials))
    bundles = Counter(r.params["tune_trial_id"] for r in rows)
    assert len(bundles) >= trials // 4 and max(bundles.values()) <= 4
    epoch_rows = storage.queries.study_epochs(storage.open_database(url), "tpe")
    storage.dispose_engines()
    assert sorted((e.trial_number, e.epoch) for e in epoch_rows) == sorted(
        (r.trial_number, e) for r in rows for e in range(1, r.epochs_completed + 1)
    )
    assert sum(r.epochs_completed for r in rows) == trials * epochs  # lr <= 0.3: none diverge
    ot = helpers.optuna_trials(url, "tpe")
    assert len(ot) == trials // seeds
    assert all(t.state == TrialState.COMPLETE for t in ot)
    numbers = [n for t in ot for n in t.user_attrs["trial_numbers"]]
    assert sorted(numbers) == list(range(trials))  # each trial in one configuration
    for trial in ot:
        members = [r for r in rows if r.trial_number in trial.user_attrs["trial_numbers"]]
        assert sorted(r.seed for r in members) == list(range(seeds))
        assert {r.lr for r in members} == {trial.params["lr"]}
        mean = sum(r.final_val_accuracy for r in members) / seeds
        assert math.isclose(trial.value, mean)

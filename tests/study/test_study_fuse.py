"""Fused trials in a study (``--fuse K|auto``, `study.run.bundle`): the same study fused and
unfused stores the same trials, a fused one is faster on this CPU, and a bundle survives
a killed worker (from its per-epoch checkpoint) and a SIGKILLed driver (``--resume``).

The rule of ``auto`` (`study.run.fusing.fuse_size`) is checked without Ray.
"""

from __future__ import annotations

import io
import math
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import study_helpers as helpers

from study.config import merge, parse_fuse
from study.run.fusing import balanced_size, fuse_reason, fuse_size
from study.run.runner import run_study

REPO = Path(__file__).resolve().parents[2]
TrialState = optuna.trial.TrialState
#: digits' validation split (10% of 1797 images): one image is this much accuracy
ONE_IMAGE = 1 / 179


def test_auto_fuses_mlps_on_the_cpu_and_spreads_bundles_over_the_slots():
    config = merge(flags={}).config  # the default study: digits/mlp grid, fuse auto
    assert config.fuse == "auto"
    assert fuse_size(config, pending=21, slots=1) == 11  # two waves of 11 and 10, cap 16
    assert fuse_size(config, pending=21, slots=2) == 11  # one wave: 11 and 10 side by side
    assert fuse_size(config, pending=40, slots=2) == 10  # two waves of two 10s, not 16+16+8
    assert fuse_size(config, pending=6, slots=2) == 3  # every slot gets a bundle
    assert fuse_size(config, pending=1, slots=2) == 1
    assert fuse_size(merge(flags={"model": "toy-cnn"}).config, 21, 1) == 1  # slower fused
    # the CPU MLP fuses on small inputs only (its batched product gains there)
    assert fuse_size(merge(flags={"dataset": "mnist5k"}).config, 21, 2) == 11
    assert fuse_size(merge(flags={"dataset": "cifar10"}).config, 21, 2) == 1
    small = {"dataset_options": {"shape": [1, 16, 16]}}
    assert fuse_size(merge(flags={"dataset": "synthetic", "train": small}).config, 21, 2) == 11
    assert fuse_size(merge(flags={"dataset": "synthetic"}).config, 21, 2) == 1  # 3x32x32
    gpu = merge(flags={"model": "toy-cnn", "gpus_per_trial": 1.0}).config
    assert fuse_size(gpu, 21, 1) == 21
    assert fuse_size(gpu, 500, 1) == 32
    big = merge(flags={"model": "resnet50", "gpus_per_trial": 1.0}).config
    assert fuse_size(big, 21, 1) == 1  # one member may fill a GPU
    assert fuse_size(merge(flags={"model": "resnet20", "gpus_per_trial": 0.5}).config, 21, 1) == 7
    # what cannot fuse runs unfused under auto (TPE fuses: tests/study/test_study_fuse_tpe.py)
    for flags in (
        {"scheduler": "asha"},
        {"trials": 4, "scheduler": "asha"},
        {"train": {"compile": True}},
    ):
        config = merge(flags=flags).config
        assert fuse_reason(config) is not None
        assert fuse_size(config, 21, 1) == 1
    assert fuse_size(merge(flags={"trials": 4}).config, 21, 1) == 6  # tpe: 4 waves at least
    assert fuse_size(merge(flags={"fuse": 3}).config, 21, 1) == 3
    # the balanced size: fewest waves within the cap, then the smallest K filling them
    assert [balanced_size(21, 2, cap) for cap in (1, 5, 8, 11, 16, 64)] == [1, 4, 6, 11, 11, 11]
    assert (balanced_size(0, 0, 0), balanced_size(7, 1, 3), balanced_size(9, 4, 32)) == (1, 3, 3)
    assert (parse_fuse("5"), parse_fuse("auto"), parse_fuse(7)) == (5, "auto", 7)  # flag text


class FakeSeeded:
    """What `BundleSearch` needs of a `SeededSearch`: numbered trials, then FINISHED."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.emitted = 0
        self.calls: list[tuple] = []

    def suggest(self, key):
        if self.emitted >= self.budget:
            return "FINISHED"
        self.emitted += 1
        return {"trial_number": self.emitted - 1, "variant": "sgd", "lr": 0.1, "seed": 0}

    def on_trial_result(self, key, result):
        self.calls.append(("result", key, result["epoch"]))

    def on_trial_complete(self, key, result=None, error=False):
        self.calls.append(("complete", key, error))


class FakeBundle:
    def __init__(self, trial_id: str, config: dict) -> None:
        self.trial_id = trial_id
        self.config = config
        self.num_failures = 3

    def get_pickled_error(self):
        return "boom"

    def get_error(self):
        return "boom"


class Calls:
    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def on_trial_start(self, iteration, trials, trial, **info):
        self.seen.append(("start", trial.config["trial_number"]))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.seen.append(("result", trial.config["trial_number"], result["epoch"]))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.seen.append(("complete", trial.config["trial_number"], trial.last_result["epoch"]))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.seen.append(("error", trial.config["trial_number"], trial.get_pickled_error()))


def test_bundle_members_end_alone_and_a_failed_bundle_fails_the_rest():
    from study.run.bundle import BundleSearch, FanOut

    inner = FakeSeeded(budget=5)
    search = BundleSearch(inner, 3, epochs_planned=2)
    first = search.suggest("a")
    assert [m["trial_number"] for m in first["members"]] == [0, 1, 2]
    assert [m["trial_number"] for m in search.suggest("b")["members"]] == [3, 4]
    assert search.suggest("c") == "FINISHED" and search.emitted == 5
    # epoch 1: member 1 diverges (its last result), the others go on
    report = {
        "epoch": 1,
        "time_total_s": 1.5,
        "members": [
            {"member": 0, "epoch": 1, "val_accuracy": 0.5, "diverged": False},
            {"member": 1, "epoch": 1, "val_accuracy": 0.0, "diverged": True},
            {"member": 2, "epoch": 1, "val_accuracy": 0.6, "diverged": False},
        ],
    }
    search.on_trial_result("a", report)
    assert inner.calls == [
        ("result", "a#0", 1),
        ("result", "a#1", 1),
        ("complete", "a#1", False),
        ("result", "a#2", 1),
    ]
    inner.calls.clear()
    search.on_trial_complete("a", error=True)  # its worker died for good: the rest FAIL
    assert inner.calls == [("complete", "a#0", True), ("complete", "a#2", True)]

    calls = Calls()
    fan = FanOut([calls], epochs_planned=2)
    bundle = FakeBundle("a", first)
    fan.on_trial_start(0, [], bundle)
    fan.on_trial_result(0, [], bundle, report)
    fan.on_trial_start(0, [], bundle)  # a restart: only the members still running
    fan.on_trial_error(0, [], bundle)
    assert calls.seen == [
        ("start", 0),
        ("start", 1),
        ("start", 2),
        ("result", 0, 1),
        ("result", 1, 1),
        ("complete", 1, 1),
        ("result", 2, 1),
        ("start", 0),
        ("start", 2),
        ("error", 0, "boom"),
        ("error", 2, "boom"),
    ]


@pytest.fixture(scope="module")
def local_ray():
    import logging

    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    try:
        yield ray
    finally:
        ray.shutdown()


def study(tmp_path, name: str, **flags) -> tuple[int, str, str, float]:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    flags = {
        "storage": url,
        "name": name,
        "results_dir": str(tmp_path / "ray"),
        "dataset": "digits",
        "model": "mlp",
        **flags,
    }
    out = io.StringIO()
    started = time.perf_counter()
    code = run_study(merge(flags=flags), out=out)
    return code, out.getvalue(), url, time.perf_counter() - started


def by_config(rows):
    return {(r.variant, round(r.lr, 12), r.eps, r.seed): r for r in rows}


@pytest.mark.slow
def test_fused_grid_stores_the_unfused_study_and_is_faster(local_ray, tmp_path):
    import storage

    grid = {
        "norms": "none,l2",
        "lr_points": 3,
        "lr_min": 0.01,
        "lr_max": 0.3,
        "epochs": 2,
        "max_concurrent": 1,
    }
    code, out1, url, solo_s = study(tmp_path, "solo", fuse=1, **grid)
    assert code == 0, out1
    code, out8, _, fused_s = study(tmp_path, "fused", fuse=8, **grid)
    assert code == 0, out8
    assert "fused 8 per Ray trial" in out8 and "fused" not in out1.split("\n")[1]
    engine = storage.open_database(url)
    solo = storage.queries.list_trials(engine, "solo")
    fused = storage.queries.list_trials(engine, "fused")
    assert len(solo) == len(fused) == 6
    assert sorted(r.trial_number for r in fused) == list(range(6))
    assert all(r.state == "COMPLETE" for r in solo + fused)
    assert by_config(solo).keys() == by_config(fused).keys()
    for key, row in by_config(fused).items():
        twin = by_config(solo)[key]
        assert row.trial_number == twin.trial_number  # the same numbering, grid order
        assert row.epochs_completed == twin.epochs_completed
        assert row.diverged == twin.diverged
        assert math.isclose(row.final_val_accuracy, twin.final_val_accuracy, abs_tol=ONE_IMAGE)
        assert row.node_id and row.hostname and row.device_name.startswith("cpu")
    # one bundle: every member names the same Tune trial
    assert len({r.params["tune_trial_id"] for r in fused}) == 1
    assert len({r.params["tune_trial_id"] for r in solo}) == 6
    epochs = {n: storage.queries.study_epochs(engine, n) for n in ("solo", "fused")}
    assert len(epochs["solo"]) == len(epochs["fused"]) == 12
    # a progress line per member
    assert sum(" trial " in line and "acc " in line for line in out8.splitlines()) == 6
    # Optuna: one trial per configuration, told as unfused
    solo_ot = {t.number: t for t in helpers.optuna_trials(url, "solo")}
    fused_ot = {t.number: t for t in helpers.optuna_trials(url, "fused")}
    assert solo_ot.keys() == fused_ot.keys()
    for number, trial in fused_ot.items():
        assert trial.state == TrialState.COMPLETE
        assert trial.params == solo_ot[number].params
        assert trial.user_attrs["trial_numbers"] == solo_ot[number].user_attrs["trial_numbers"]
        assert math.isclose(trial.value, solo_ot[number].value, abs_tol=ONE_IMAGE)
    print(f"\n6 trials x 2 epochs: --fuse 1 {solo_s:.1f}s, --fuse 8 {fused_s:.1f}s")
    assert fused_s < solo_s


@pytest.mark.slow
def test_random_sampler_with_seeds_in_bundles_keeps_its_groups(local_ray, tmp_path):
    """Bundles of 3 over configurations of 2 seeds each: a group's seeds may sit in two
    bundles; Optuna still gets one trial per configuration, told once all its seeds end;
    a diverging member (lr up to 10) ends alone and its bundle goes on."""
    code, out, url, _ = study(
        tmp_path,
        "random",
        sampler="random",
        sampler_seed=1,
        trials=8,
        seeds=2,
        norms="none,l2",
        lr_min=0.01,
        lr_max=10.0,
        epochs=2,
        fuse=3,
    )
    assert code == 0, out
    assert "fused 3 per Ray trial" in out
    rows = helpers.trials(url, "random")
    assert len(rows) == 8 and all(r.state == "COMPLETE" for r in rows)
    assert sorted(r.trial_number for r in rows) == list(range(8))
    assert len({r.params["tune_trial_id"] for r in rows}) == 3  # 3 + 3 + 2
    ot = helpers.optuna_trials(url, "random")
    assert len(ot) == 4 and all(t.state == TrialState.COMPLETE for t in ot)
    for trial in ot:
        members = [r for r in rows if r.trial_number in trial.user_attrs["trial_numbers"]]
        assert sorted(r.seed for r in members) == [0, 1]
        assert {r.lr for r in members} == {trial.params["lr"]}
        accuracy = [0.0 if r.diverged else r.final_val_accuracy for r in members]
        assert math.isclose(trial.value, sum(accuracy) / 2)
        assert trial.user_attrs["diverged"] == any(r.diverged for r in members)


@pytest.mark.slow
def test_a_bundle_resumes_from_its_checkpoint_when_its_worker_dies(local_ray, tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    thread, killed = helpers.kill_workers_when(
        url, "killed", lambda rows: all(helpers.mid_trial(r) for r in rows)
    )
    code, out, _, _ = study(
        tmp_path,
        "killed",
        norms="none,l2",
        lr_points=2,
        lr_min=0.01,
        lr_max=0.3,
        epochs=8,
        batch_size=8,
        fuse=4,
        max_concurrent=1,
        max_failures=2,
    )
    thread.join(timeout=5)
    assert killed, "the worker was never caught mid-bundle"
    assert code == 0, out
    rows = helpers.trials(url, "killed")
    assert len(rows) == 4 and all(r.state == "COMPLETE" for r in rows)
    assert all(r.epochs_completed == 8 or r.diverged for r in rows)
    assert all(r.params["worker_failures"] == 1 for r in rows)
    assert all(r.params["resumed_from_epoch"] >= 1 for r in rows)  # not from epoch 0
    assert "worker failed" in out and "checkpoint" in out
    ot = helpers.optuna_trials(url, "killed")
    assert len(ot) == 4 and all(t.state == TrialState.COMPLETE for t in ot)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["grid", "tpe"])
def test_resume_after_the_driver_is_killed_mid_bundle(tmp_path, sampler):
    """Grid re-runs its killed points; TPE (a bundle of 4 asked at once) re-runs the
    killed configurations and asks the rest anew."""
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    base = helpers.launch_command(url, "crash", tmp_path / "ray")
    search = "--lr-points 3" if sampler == "grid" else "--sampler tpe --trials 6 --sampler-seed 3"
    study_flags = (
        f"--norms none,l2 {search} --lr-min 0.01 --lr-max 0.3 --epochs 8 --batch-size 8 "
        "--max-concurrent 1 --fuse 4"
    ).split()
    helpers.kill_driver_when(  # mid-way through the first bundle: its 4 members
        base + study_flags,
        url,
        "crash",
        lambda rows: len([r for r in rows if helpers.mid_trial(r)]) == 4,
        tmp_path / "first.log",
    )

    before = {r.trial_number: r for r in helpers.trials(url, "crash")}
    killed = [n for n, r in before.items() if r.state == "RUNNING"]
    assert len(killed) == 4

    proc = subprocess.run(
        base + ["--resume", "--max-concurrent", "1", "--fuse", "4"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    assert "marked 4 trial(s) left RUNNING as FAIL" in proc.stdout
    assert "6/6 trials finished" in proc.stdout
    rows = helpers.trials(url, "crash")
    numbers = [r.trial_number for r in rows]
    assert len(numbers) == len(set(numbers))
    assert not [r for r in rows if r.state == "RUNNING"]
    complete = [r for r in rows if r.state == "COMPLETE"]
    assert len(complete) == 6 and len(by_config(complete)) == 6
    failed = [r for r in rows if r.state == "FAIL"]
    assert sorted(r.trial_number for r in failed) == sorted(killed)
    for row in failed:
        (rerun,) = [r for r in complete if by_config([r]).keys() == by_config([row]).keys()]
        assert rerun.trial_number > max(before)
    ot = helpers.optuna_trials(url, "crash")
    states = [t.state for t in ot]
    assert states.count(TrialState.COMPLETE) == 6
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states

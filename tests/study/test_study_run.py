"""Whole studies on a real local Ray (one for the module, 2 CPUs and a fake GPU).

Each test runs `study.run.runner.run_study` in this process, as `insgd-study launch` does,
with tiny trials (digits + mlp, a few epochs), then reads back the results database and
Optuna's study. The fake GPU (`num_gpus=1` on a CPU machine) shows that fractional GPUs
pack trials and that a trial given a GPU Ray cannot back with CUDA still trains on the CPU.
"""

from __future__ import annotations

import gc
import io
import socket
import threading
from collections import Counter

import optuna
import pytest
import study_helpers as helpers

import storage
from study.config import merge
from study.errors import UsageError
from study.run.runner import run_study

TrialState = optuna.trial.TrialState
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    import logging

    import ray

    ray.init(
        num_cpus=2,
        num_gpus=1,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    try:
        yield ray
    finally:
        ray.shutdown()


def study(tmp_path, name: str, url: str | None = None, **flags) -> tuple[int, str, str]:
    url = url or f"sqlite:///{tmp_path / 'studies.db'}"
    flags = {
        "storage": url,
        "name": name,
        "results_dir": str(tmp_path / "ray"),
        "dataset": "digits",
        "model": "mlp",
        "fuse": 1,  # one trial per Ray trial: what these tests time, pack and kill
        **flags,
    }
    out = io.StringIO()
    code = run_study(merge(flags=flags), out=out)
    return code, out.getvalue(), url


def overlap(rows) -> int:
    """The most trials whose [started_at, finished_at] intervals overlap at one moment."""
    events = sorted(
        [(r.started_at, 1) for r in rows] + [(r.finished_at, -1) for r in rows],
        key=lambda e: (e[0], e[1]),
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_grid_study_with_seeds_records_everything(local_ray, tmp_path):
    # one trial at a time (concurrency is tested below): one worker start, not two at once
    code, out, url = study(
        tmp_path,
        "grid",
        variants=("sgd", "insgd-l2"),
        lr_points=2,
        lr_min=0.01,
        lr_max=0.3,
        seeds=2,
        epochs=2,
        max_concurrent=1,
    )
    assert code == 0, out
    assert gc.isenabled()  # paused for the launch's setup only (study.run.collector)
    assert "report attached" in out
    rows = helpers.trials(url, "grid")
    assert len(rows) == 8 and all(r.state == "COMPLETE" for r in rows)
    assert sorted(r.trial_number for r in rows) == list(range(8))
    assert overlap(rows) == 1  # --max-concurrent 1
    configs = Counter((r.variant, round(r.lr, 12), r.eps, r.seed) for r in rows)
    assert len(configs) == 8  # every grid point x seed exactly once
    assert {r.seed for r in rows} == {0, 1}
    assert {(r.variant, r.optimizer, r.norm) for r in rows} == {
        ("sgd", "sgd", "none"),
        ("insgd-l2", "insgd", "l2"),
    }
    assert all(r.eps is None for r in rows if r.variant == "sgd")
    assert all(r.eps == pytest.approx(0.01) for r in rows if r.variant == "insgd-l2")
    node = local_ray.get_runtime_context().get_node_id()
    for row in rows:
        assert (row.node_id, row.hostname) == (node, socket.gethostname())
        assert row.device_name.startswith("cpu")
        assert row.epochs_completed == 2 and not row.stopped_early
        assert row.started_at <= row.finished_at and row.wall_seconds > 0
    engine = storage.open_database(url)
    assert len(storage.queries.trial_epochs(engine, "grid", 0)) == 2

    ot = helpers.optuna_trials(url, "grid")
    assert len(ot) == 4 and all(t.state == TrialState.COMPLETE for t in ot)
    by_number = {r.trial_number: r for r in rows}
    for trial in ot:
        numbers = trial.user_attrs["trial_numbers"]
        assert len(numbers) == 2
        seeds = [by_number[n] for n in numbers]
        assert {s.seed for s in seeds} == {0, 1}
        assert trial.user_attrs["variant"] == trial.params["variant"]
        assert {s.variant for s in seeds} == {trial.params["variant"]}
        assert ("eps" in trial.params) == (trial.params["variant"] != "sgd")
        expected = sum(0.0 if s.diverged else s.final_val_accuracy for s in seeds) / 2
        assert trial.value == pytest.approx(expected)
        assert sorted(trial.intermediate_values) == [1, 2]
        assert trial.user_attrs["diverged"] == any(s.diverged for s in seeds)

    lines = [line for line in out.splitlines() if " trial " in line and "/8" in line]
    assert len(lines) == 8
    assert all(("acc 0." in line or "diverged" in line) and "seed=" in line for line in lines)
    assert "best " in lines[-1] and lines[-1].rstrip().endswith("done")
    assert "left" in lines[0]
    assert "best configuration per variant" in out and "insgd-l2" in out
    assert "8/8 trials finished" in out

    # the same study launched again (same configuration) has nothing left to run
    code, again, _ = study(
        tmp_path,
        "grid",
        variants=("sgd", "insgd-l2"),
        lr_points=2,
        lr_min=0.01,
        lr_max=0.3,
        seeds=2,
        epochs=2,
        max_concurrent=2,
    )
    assert code == 0 and "nothing to run" in again
    assert gc.isenabled()
    assert len(helpers.trials(url, "grid")) == 8


@pytest.mark.postgres
def test_asha_prunes_and_pruned_trials_are_never_complete(local_ray, tmp_path, postgres_url):
    """On PostgreSQL: our tables and Optuna's share the server's database."""
    code, out, url = study(
        tmp_path,
        "asha",
        url=postgres_url,
        sampler="random",
        trials=8,
        sampler_seed=0,
        variants=("sgd",),
        lr_min=1e-5,
        lr_max=0.3,
        epochs=4,
        scheduler="asha",
        grace_period=1,
        reduction_factor=2,
        max_concurrent=1,
        batch_size=128,
    )
    assert code == 0, out
    rows = helpers.trials(url, "asha")
    assert len(rows) == 8
    pruned = [r for r in rows if r.state == "PRUNED"]
    complete = [r for r in rows if r.state == "COMPLETE"]
    assert pruned, out
    assert all(r.stopped_early and r.epochs_completed < 4 for r in pruned)
    assert all(not r.stopped_early and (r.epochs_completed == 4 or r.diverged) for r in complete)
    ot = {t.user_attrs["trial_numbers"][0]: t for t in helpers.optuna_trials(url, "asha")}
    for row in rows:
        expected = TrialState.PRUNED if row.state == "PRUNED" else TrialState.COMPLETE
        assert ot[row.trial_number].state == expected
    assert "pruned@" in out


def test_half_gpus_pack_two_trials_on_one_gpu(local_ray, tmp_path):
    code, out, url = study(
        tmp_path,
        "gpu-half",
        variants=("sgd", "insgd-l2"),
        lr_points=2,
        lr_min=0.01,
        lr_max=0.1,
        epochs=2,
        batch_size=16,
        cpus_per_trial=0.5,
        gpus_per_trial=0.5,
    )
    assert code == 0, out
    rows = helpers.trials(url, "gpu-half")
    assert len(rows) == 4 and {r.state for r in rows} == {"COMPLETE"}
    assert overlap(rows) == 2  # 4 CPU slots, but the one GPU holds two trials at a time
    # Ray handed out a GPU that CUDA cannot back: the trials trained on the CPU
    assert all(r.device_name.startswith("cpu") for r in rows)


def test_tpe_on_a_whole_gpu_survives_a_killed_worker(local_ray, tmp_path):
    """TPE with 2 seeds, one (fake) GPU per trial so one runs at a time; a worker process
    is SIGKILLed mid-trial and its trial resumes from its last epoch's checkpoint."""
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    # mid-trial with epochs to spare (8 epochs of batch 8: a window even on fast CPUs)
    thread, killed = helpers.kill_workers_when(
        url, "tpe", lambda rows: any(helpers.mid_trial(r) for r in rows)
    )
    code, out, _ = study(
        tmp_path,
        "tpe",
        trials=4,
        seeds=2,
        sampler_seed=3,
        lr_min=0.01,
        lr_max=0.3,
        epochs=8,
        batch_size=8,
        cpus_per_trial=0.5,
        gpus_per_trial=1.0,
        max_failures=2,
    )
    thread.join(timeout=5)
    assert killed, "the worker was never caught mid-trial"
    assert code == 0, out
    rows = helpers.trials(url, "tpe")
    assert len(rows) == 4 and all(r.state == "COMPLETE" for r in rows)
    assert all(r.epochs_completed == 8 or r.diverged for r in rows)
    assert overlap(rows) == 1  # a whole GPU per trial: one at a time
    assert all(r.device_name.startswith("cpu") for r in rows)
    restarted = [r for r in rows if r.params["worker_failures"] == 1]
    assert len(restarted) == 1
    assert restarted[0].params["resumed_from_epoch"] >= 1  # from its checkpoint, not epoch 0
    assert "worker failed" in out and "checkpoint" in out

    ot = helpers.optuna_trials(url, "tpe")
    assert len(ot) == 2 and all(t.state == TrialState.COMPLETE for t in ot)
    for trial in ot:  # Optuna asked once per configuration; each ran with seeds 0 and 1
        members = [r for r in rows if r.trial_number in trial.user_attrs["trial_numbers"]]
        assert sorted(r.seed for r in members) == [0, 1]
        assert {r.lr for r in members} == {trial.params["lr"]}
        assert 0.01 <= trial.params["lr"] <= 0.3


def test_trial_larger_than_any_node_is_refused_before_writing(local_ray, tmp_path):
    with pytest.raises(UsageError, match="no Ray node has that much"):
        study(tmp_path, "big", cpus_per_trial=64.0)
    engine = storage.open_database(f"sqlite:///{tmp_path / 'studies.db'}")
    assert storage.ResultWriter(engine).get_study("big") is None


def test_report_is_drawn_while_the_ray_session_closes(local_ray, tmp_path, monkeypatch):
    """Stopping a local Ray is ~1.4 s of waiting for its processes: the report is drawn
    in that time, on another thread. The session here (the module's Ray stays up) closes
    only once the report has started, which a report drawn after it never would. While
    it closes no automatic garbage collection runs (one freeing Ray objects in the
    report's thread while Ray shuts down ended the process), and after, they run again."""
    import gc
    from contextlib import contextmanager

    from study.analysis import dashboard
    from study.run import raysetup

    started = threading.Event()
    threads: list[str] = []
    collecting: list[bool] = []
    real_session, real_publish = raysetup.ray_session, dashboard.publish_report

    @contextmanager
    def session(*args, **kwargs):
        with real_session(*args, **kwargs) as resources:
            yield resources
            assert started.wait(20), "the report did not start before the session closed"
            collecting.append(gc.isenabled())  # as Ray's shutdown begins

    def publish(url: str, name: str) -> list[str]:
        threads.append(threading.current_thread().name)
        started.set()
        return real_publish(url, name)

    monkeypatch.setattr(raysetup, "ray_session", session)
    monkeypatch.setattr(dashboard, "publish_report", publish)
    code, out, _ = study(
        tmp_path,
        "report-beside-shutdown",
        sampler="random",
        trials=2,
        epochs=1,
        max_concurrent=1,
    )
    assert code == 0, out
    assert collecting == [False] and gc.isenabled()
    assert len(threads) == 1 and threads[0] != threading.main_thread().name
    assert "report attached to the Optuna study" in out
    assert out.index("report attached") < out.index("best configuration per variant")

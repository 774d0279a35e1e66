"""The benchmarks still run: each script on tiny inputs, its figures read back.

The figures of docs/performance.md come from these scripts; a refactor that broke one
would leave the docs quoting a command that no longer works (the docs' exact command
lines are also parsed by each script's own parser, in
tests/deploy/test_deploy_doc_commands.py). Every script has its test here. Timings are not
asserted (they are measured side by side inside each script, not here), only that
every figure is produced, finite and of the right sign.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, timeout: float = 180) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_every_benchmark_has_its_test_here() -> None:
    """A script without a smoke test would rot; a test of a removed script would fail."""
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py")}
    tested = set(re.findall(r'_run\(\s*"(\w+\.py)"', Path(__file__).read_text()))
    assert scripts == tested


def test_optimizer_overhead_reports_a_ratio() -> None:
    out = json.loads(
        _run(
            "optimizer_overhead.py",
            *("--model", "mlp", "--batch-size", "32", "--rounds", "1"),
            *("--steps", "3", "--warmup", "1", "--threads", "1", "--json"),
        )
    )
    assert out["benchmark"] == "optimizer_overhead"
    assert set(out["median_ms"]) == {"sgd", "insgd"}
    assert all(_positive(v) for v in out["median_ms"].values())
    assert _positive(out["ratio_paired_median"])


def test_throughput_reports_images_per_second() -> None:
    out = json.loads(
        _run(
            "throughput.py",
            *("--models", "mlp", "--optimizers", "sgd,insgd", "--batch-size", "32"),
            *("--images", "256", "--val-images", "64", "--epochs", "1"),
            *("--warmup-epochs", "0", "--threads", "1", "--json"),
        )
    )
    rows = {(r["model"], r["optimizer"]): r for r in out["results"]}
    assert set(rows) == {("mlp", "sgd"), ("mlp", "insgd")}
    assert all(_positive(r["images_per_second"]) for r in rows.values())


def test_fused_throughput_reports_both_rates() -> None:
    out = json.loads(
        _run(
            "fused_throughput.py",
            *("--device", "cpu", "--models", "mlp", "--members", "2", "--batch-size", "32"),
            *("--images", "128", "--epochs", "1", "--warmup-epochs", "0", "--threads", "1"),
            "--json",
        )
    )
    assert out["benchmark"] == "fused_throughput"
    (row,) = out["results"]
    assert (row["model"], row["members"]) == ("mlp", 2)
    for key in ("solo_images_per_second", "fused_images_per_second", "speedup"):
        assert _positive(row[key]), key


def test_fused_throughput_quick_covers_every_model() -> None:
    out = json.loads(
        _run("fused_throughput.py", "--device", "cpu", "--quick", "--threads", "1", "--json")
    )
    rows = {(r["model"], r["members"]): r for r in out["results"]}
    assert set(rows) == {(m, k) for m in ("mlp", "mnist-toy", "toy-cnn") for k in (1, 4)}
    assert all(_positive(r["speedup"]) for r in rows.values())


def test_fused_study_times_both_arms_of_a_quick_study() -> None:
    out = json.loads(_run("fused_study.py", "--quick", "--cpus", "2", "--json", timeout=400))
    assert out["benchmark"] == "fused_study"
    assert set(out["median_seconds"]) == {"1", "auto"}
    assert all(_positive(v) for v in out["median_seconds"].values())
    assert _positive(out["speedup"]) and _positive(out["trials_speedup"])
    for fuse in ("1", "auto"):  # the trials are part of the launch
        assert 0 < out["median_trials_seconds"][fuse] < out["median_seconds"][fuse]
    assert "fused" in out["plans"]["auto"] and "fused" not in out["plans"]["1"]


def test_query_speed_prints_its_table() -> None:
    out = _run("query_speed.py", "--trials", "50", "--repeat", "1")
    lines = [line for line in out.splitlines() if line.startswith("| sqlite |")]
    assert len(lines) >= 4, out
    first = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert first[1] == "list_trials(study)" and first[2] == "50", first
    assert all(float(cell) > 0 for cell in first[3:]), first


def test_driver_writes_times_all_three_arms_on_real_writes() -> None:
    out = json.loads(_run("driver_writes.py", "--trials", "4", "--rounds", "2", "--json"))
    assert out["benchmark"] == "driver_writes"
    for kind in ("driver", "core", "optuna"):
        figures = out["ms_per_trial"][kind]
        assert set(figures) == {"ask", "tell", "rows", "total"}
        assert all(_positive(v) for v in figures.values()), (kind, figures)
        # 4 warm-up trials and 2 blocks of 4, each finished in both tables
        written = out["trials_written"][kind]
        assert (written["results_complete"], written["optuna_complete"]) == (12, 12), kind
    # the "core" arm's statements went through Connection.execute (its listener saw them)
    assert out["trials_written"]["core"]["statements_through_execute"] >= 12 * 10
    assert out["trials_written"]["driver"]["statements_through_execute"] == 0
    for over in ("optuna", "core"):
        assert _positive(out[f"ratio_driver_over_{over}"])
        assert len(out[f"ratio_blocks_over_{over}"]) == 2


@pytest.mark.slow
def test_study_overhead_runs_all_three_loops() -> None:
    """Two rounds: the second runs the loops in the other order (launch last)."""
    out = json.loads(
        _run("study_overhead.py", "--trials", "3", "--rounds", "2", "--json", timeout=400)
    )
    assert len(out["rounds"]) == 2
    for row in out["rounds"]:
        assert all(row[loop]["trials"] == 3 for loop in ("insgd_study_launch", "bare_tuner"))
    for loop in ("insgd_study_launch", "bare_tuner", "tuner_with_optuna_rdb"):
        row = out[loop]
        assert row["trials"] == 3, (loop, row)
        assert _positive(row["work_s"]) and row["wall_s"] > row["work_s"], (loop, row)
        assert _positive(row["steady_overhead_per_trial_s"]), (loop, row)
    for key in (
        "total_overhead_ratio",
        "steady_overhead_ratio",
        "total_overhead_ratio_vs_optuna_rdb",
        "steady_overhead_ratio_vs_optuna_rdb",
    ):
        assert _positive(out[key]), key
    pooled = out["steady_pooled"]
    low, high = pooled["ratio_ci90"]
    assert _positive(pooled["ratio"]) and low <= high


def test_pooled_steady_ratio_uses_every_rounds_gaps() -> None:
    """The pooled steady ratio is that of the medians of all gaps (not the median of
    the rounds' ratios), and its interval comes from resampling whole rounds."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "study_overhead", ROOT / "benchmarks" / "study_overhead.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def round_(ours: list[float], bare: list[float]) -> dict[str, list[float]]:
        return {"insgd_study_launch": ours, "bare_tuner": bare, "tuner_with_optuna_rdb": [1.0]}

    same = module.pooled_steady([round_([2.0, 2.0, 2.0], [1.0, 1.0, 1.0])] * 4)
    assert same["ratio"] == 2.0 and same["ratio_ci90"] == [2.0, 2.0]
    assert (same["insgd_study_launch_s"], same["bare_tuner_s"]) == (2.0, 1.0)
    # per-round ratios 3.0, 1.0, 1.0 (median 1.0); pooled medians 3 / 1 -> 3.0
    rounds = [round_([3.0] * 5, [1.0] * 5), round_([3.0] * 3, [3.0] * 3), round_([1.0], [1.0])]
    mixed = module.pooled_steady(rounds)
    assert mixed["ratio"] == 3.0
    low, high = mixed["ratio_ci90"]
    assert low < 3.0 <= high

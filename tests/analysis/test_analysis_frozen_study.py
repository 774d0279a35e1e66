"""A real study with SGD, INSGD-l2 and its frozen control, end to end through the CLI.

`insgd-study launch` trains the three variants on digits in Ray (tests/conftest.py's
`frozen_study`, launched once for this and tests/study/test_study_variants_launch.py),
`insgd-study report --format json` analyzes them, and the report's ranges and max
trainable lr are recomputed here from `insgd-study query --format json` with a plain loop
over the rows, written apart from `study.analysis.ranges`: what the report says is what
the stored trials say.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict

import optuna
import pytest

from study.cli import main

pytestmark = pytest.mark.slow


def _cli(capsys, *args: str) -> str:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def _curves(rows: list[dict]) -> dict[str, tuple[list[float], list[float], list[int]]]:
    """Per variant: sorted lrs, mean accuracy per lr (diverged = 0), diverged count per lr."""
    acc: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    div: dict[str, dict[float, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        if r["state"] != "COMPLETE":
            continue
        value = 0.0 if r["diverged"] or r["val_accuracy"] is None else r["val_accuracy"]
        lr = float(f"{r['lr']:.12g}")
        acc[r["variant"]][lr].append(value)
        div[r["variant"]][lr] += int(bool(r["diverged"]))
    out = {}
    for variant, by_lr in acc.items():
        lrs = sorted(by_lr)
        out[variant] = (
            lrs,
            [sum(by_lr[lr]) / len(by_lr[lr]) for lr in lrs],
            [div[variant][lr] for lr in lrs],
        )
    return out


def _range(lrs: list[float], means: list[float], chance: float, q: float) -> dict:
    """The range at level q, walking out from the best group one neighbour at a time."""
    best_i = max(range(len(means)), key=lambda i: (means[i], -i))
    threshold = chance + q * (means[best_i] - chance)
    logs = [math.log10(lr) for lr in lrs]

    def walk(step: int) -> tuple[float, bool]:
        i = best_i
        while 0 <= i + step < len(means):
            j = i + step
            if means[j] < threshold:
                t = (means[i] - threshold) / (means[i] - means[j])
                return logs[i] + t * (logs[j] - logs[i]), False
            i = j
        return logs[i], True

    low, censored_low = walk(-1)
    high, censored_high = walk(+1)
    return {
        "decades": high - low,
        "censored_low": censored_low,
        "censored_high": censored_high,
    }


def test_three_variants_on_digits_and_the_report_agrees_with_the_stored_rows(
    frozen_study, tmp_path, capsys
):
    url, study, launched = frozen_study.url, frozen_study.name, set(frozen_study.variants)
    rows = json.loads(_cli(capsys, "query", "--storage", url, "--study", study, "--format", "json"))
    assert len(rows) == 24 and all(r["state"] == "COMPLETE" for r in rows)
    assert {r["variant"] for r in rows} == launched
    assert all(r["beta"] == 1.0 for r in rows if r["variant"] == "insgd-l2-frozen")
    assert all(r["beta"] != 1.0 for r in rows if r["variant"] == "insgd-l2")
    frozen_rows = json.loads(
        _cli(
            capsys,
            "query",
            "--storage",
            url,
            "--study",
            study,
            "--where",
            "variant=insgd-l2-frozen",
            "--format",
            "json",
        )
    )
    assert len(frozen_rows) == 8 and {r["variant"] for r in frozen_rows} == {"insgd-l2-frozen"}

    out_dir = tmp_path / "report"
    payload = json.loads(
        _cli(
            capsys,
            "report",
            "--storage",
            url,
            "--study",
            study,
            "--format",
            "json",
            "--out",
            str(out_dir),
        )
    )
    assert payload["schema_version"] == 2 and payload["chance"] == pytest.approx(0.1)
    curves = _curves(rows)
    variants = {v["variant"]: v for v in payload["variants"]}
    assert set(variants) == set(curves)
    for name, (lrs, means, diverged) in curves.items():
        v = variants[name]
        assert [g["lr"] for g in v["groups"]] == pytest.approx(lrs)
        assert [g["mean_accuracy"] for g in v["groups"]] == pytest.approx(means)
        for key in ("0.5", "0.9", "0.95"):
            mine = _range(lrs, means, 0.1, float(key))
            theirs = v["ranges"][key]
            if theirs["at_chance"]:
                assert max(means) <= 0.1 + 1e-9
                continue
            assert theirs["decades"] == pytest.approx(mine["decades"], abs=1e-9), (name, key)
            assert (theirs["censored_low"], theirs["censored_high"]) == (
                mine["censored_low"],
                mine["censored_high"],
            )
        best = max(means)
        trainable = [
            lr
            for lr, m, d in zip(lrs, means, diverged, strict=True)
            if d == 0 and m >= 0.1 + 0.5 * (best - 0.1)
        ]
        assert v["max_trainable_lr"] == (pytest.approx(max(trainable)) if trainable else None)
    pairs = {(c["variant"], c["baseline"]) for c in payload["comparisons"]}
    assert pairs == {
        ("insgd-l2", "sgd"),
        ("insgd-l2", "insgd-l2-frozen"),
        ("insgd-l2-frozen", "sgd"),
    }
    (l2_line,) = [s for s in payload["verdicts"] if s.startswith("insgd-l2 ")]
    assert "its frozen control" in l2_line or "does not learn" in l2_line
    assert (out_dir / "range_widths.png").is_file()

    # the dashboard's view: the objective is named, the variant is Optuna's parameter,
    # and the study's note carries the new verdicts
    from optuna_dashboard import get_note

    storage = optuna.storages.RDBStorage(url)
    try:
        ot = optuna.load_study(study_name=study, storage=storage)
        assert ot.metric_names == ["val_accuracy"]
        assert {t.params["variant"] for t in ot.trials} == launched
        note = get_note(ot)
    finally:
        storage.engine.dispose()
    assert "keeps 90% of its gain over chance" in note
    assert frozen_study.artifacts.is_dir()  # the launch attached its report there

"""`insgd-study report` end to end on stored studies whose answers are known by construction."""

from __future__ import annotations

import base64
import json
import math
import re

import pytest

from study.cli import main


def _report(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(["report", *args])
    except SystemExit as exc:  # argparse's own errors (one line, exit 2)
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _variants(payload: dict) -> dict[str, dict]:
    return {v["variant"]: v for v in payload["variants"]}


def test_json_contract_matches_hand_computed_metrics(db_url, capsys, data):
    data.write_study(db_url, data.STUDY, data.known_trials())
    code, out, err = _report(
        capsys, "--storage", db_url, "--study", data.STUDY, "--format", "json", "--no-attach"
    )
    assert code == 0, err
    payload = json.loads(out)
    assert (payload["study"], payload["tolerance"], payload["bins"]) == (data.STUDY, 0.01, 8)
    assert payload["grouping"]["mode"] == "exact"
    assert payload["trial_counts"] == {"COMPLETE": 24, "FAIL": 1, "PRUNED": 1, "RUNNING": 1}
    v = _variants(payload)
    assert list(v) == ["sgd", "insgd-l1", "insgd-l2"]
    sgd, l1, l2 = v["sgd"], v["insgd-l1"], v["insgd-l2"]
    # PRUNED/FAIL/RUNNING (0.99 each) must not leak in; seeds are at mean -+ 0.002
    assert (sgd["n_trials"], sgd["n_seeds"]) == (8, 2)
    assert sgd["best_accuracy"] == pytest.approx(0.90) and sgd["best_lr"] == 0.1
    assert l2["best_accuracy"] == pytest.approx(0.91) and l2["best_lr"] == 0.1
    assert sgd["lr_window_decades"] == 0.0
    assert l1["lr_window_decades"] == pytest.approx(1.0)
    assert l2["lr_window_decades"] == pytest.approx(1.0)
    assert (sgd["max_stable_lr"], l1["max_stable_lr"]) == (1.0, 10.0)
    assert (sgd["divergence_rate"], l2["divergence_rate"]) == (0.25, 0.0)
    # trapezoid over log10 lr (-2, -1, 0, 1) of (0.8, 0.9, 0.6, 0.0), divided by 3 decades
    assert sgd["auc"] == pytest.approx((0.85 + 0.75 + 0.30) / 3)
    assert [g["mean_accuracy"] for g in sgd["groups"]] == pytest.approx([0.8, 0.9, 0.6, 0.0])
    assert sgd["groups"][3]["n_diverged"] == 2
    for variant in v.values():
        iv = variant["intervals"]["best_accuracy"]
        assert iv["low"] <= variant["best_accuracy"] <= iv["high"] + 1e-12
    comps = {c["variant"]: c for c in payload["comparisons"]}
    assert set(comps) == {"insgd-l1", "insgd-l2"}
    window = comps["insgd-l2"]["lr_window_decades_diff"]
    assert (window["estimate"], window["low"], window["high"]) == pytest.approx((1.0, 1.0, 1.0))
    assert payload["best_trials"]["insgd-l2"] in range(24)
    # schema 2: chance-aware ranges. sgd's means (0.8, 0.9, 0.6, 0.0) at log10 lr (-2..1),
    # chance 0.1 (digits), best 0.9: the 0.9 level's threshold is 0.1 + 0.9 * 0.8 = 0.82,
    # crossed at -2 + (0.82 - 0.8) / 0.1 = -1.8 and -1 + (0.9 - 0.82) / 0.3 = -0.7333
    assert payload["schema_version"] == 2 and payload["chance"] == pytest.approx(0.1)
    assert payload["levels"] == [0.5, 0.9, 0.95]
    r = sgd["ranges"]["0.9"]
    assert sgd["chance"] == pytest.approx(0.1)
    assert r["decades"] == pytest.approx(-0.7333333 + 1.8)
    assert (r["lr_low"], r["lr_high"]) == pytest.approx((10**-1.8, 10**-0.7333333))
    assert (r["censored_low"], r["censored_high"]) == (False, False)
    assert r["interval"]["low"] <= r["decades"] <= r["interval"]["high"]
    # no divergence and half the gain over chance (>= 0.5): lr 1 (0.6) qualifies, 10 does not
    assert sgd["max_trainable_lr"] == 1.0 and sgd["best_lr_shift_decades"] is None
    assert l2["best_lr_shift_decades"] == pytest.approx(0.0)
    diff = comps["insgd-l2"]["range_diff"]["0.9"]
    assert set(diff) >= {"estimate", "low", "high", "bound"}
    assert diff["estimate"] == pytest.approx(l2["ranges"]["0.9"]["decades"] - r["decades"])
    assert set(comps["insgd-l2"]) >= {"auc_diff", "best_accuracy_diff", "range_diff"}
    # one range verdict per INSGD variant, then best accuracy, max trainable lr, divergence, AUC
    assert len(payload["verdicts"]) == 6
    assert payload["verdicts"][0].startswith("insgd-l1 keeps 90% of its gain over chance")
    # importances come from the Optuna study: lr drives accuracy here, far more than norm
    imp = payload["importances"]["all"]["importances"]
    assert set(imp) == {"lr", "norm"} and imp["lr"] > imp["norm"]
    assert payload["importances"]["insgd"]["n_trials"] == 16


def test_table_shows_percent_intervals_verdicts_and_the_lr_table(known_study_url, capsys, data):
    code, out, err = _report(
        capsys, "--storage", known_study_url, "--study", data.STUDY, "--no-attach"
    )
    assert code == 0, err
    assert "90.00% [" in out and "91.00% [" in out  # best accuracy with its interval
    assert "excluded: 1 FAIL, 1 PRUNED, 1 RUNNING" in out
    verdict = out.split("Verdict:")[1]
    # the answer leads: sgd's range at the 0.9 level is 1.07 decades (see the JSON test)
    assert re.search(
        r"^- insgd-l2 keeps 90% of its gain over chance over [0-9.]+ decades \[[^]]+\] "
        r"\(lr [0-9.]+-[0-9.]+(, censored above)?\) vs sgd 1\.07 decades \[[^]]+\] "
        r"\(lr 0\.0158-0\.185\); ",
        verdict,
        re.M,
    ), verdict
    # a net that does not diverge but learns nothing is not "trainable": lr 10 is (70-75%)
    assert (
        "Max trainable lr (no divergence, half the gain over chance kept): insgd-l1 (lr 10 at "
        "70.00% accuracy) and insgd-l2 (lr 10 at 75.00% accuracy) lead (sgd lr 1 at 60.00% "
        "accuracy)" in verdict
    )
    assert "range 90% (dec)" in out and "max trainable lr" in out
    assert re.search(
        r"^10\s+0\.00 \+-0\.00 \(2/2 div\)\s+70\.00 \+-0\.28\s+75\.00 \+-0\.28$", out, re.M
    )
    assert "Parameter importances" in out and "INSGD trials only (16)" in out


def test_out_writes_figures_and_a_self_contained_html_page(known_study_url, tmp_path, capsys, data):
    out_dir = tmp_path / "new" / "report"
    code, out, err = _report(
        capsys,
        "--storage",
        known_study_url,
        "--study",
        data.STUDY,
        "--out",
        str(out_dir),
        "--no-attach",
        "--format",
        "json",
    )
    assert code == 0, err
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == [
        "accuracy_vs_lr.png",
        "eps_sensitivity.png",
        "learning_curves.png",
        "range_widths.png",
        "report.html",
        "report.json",
    ]
    for png in out_dir.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    page = (out_dir / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4 and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from elsewhere
    assert "insgd-l2 keeps 90% of its gain over chance" in page
    assert json.loads(out)["figures"]["accuracy_vs_lr"] == "accuracy_vs_lr.png"
    assert json.loads((out_dir / "report.json").read_text())["study"] == data.STUDY


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tolerance", "1"], "--tolerance must be >= 0 and < 1"),
        (["--tolerance", "-0.01"], "--tolerance must be >= 0 and < 1"),
        (["--tolerance", "nan"], "--tolerance must be >= 0 and < 1"),
        (["--bins", "1"], "--bins must be an integer >= 2"),
        (["--bins", "two"], "invalid int value"),
        (["--format", "xml"], "invalid choice"),
        (["--levels", "0"], "--levels: each level must be > 0 and < 1"),
        (["--levels", "1.5"], "--levels: each level must be > 0 and < 1"),
        (["--levels", "0.5,1"], "--levels: each level must be > 0 and < 1"),
        (["--levels", "0.5,x"], "--levels must be comma-separated numbers in (0, 1)"),
        (["--levels", "0.9,0.90"], "--levels names a level twice"),
        (["--study", "nope"], "unknown study 'nope' (studies in this database: robust-demo)"),
    ],
)
def test_bad_arguments_are_one_line_exit_2_and_write_nothing(
    known_study_url, tmp_path, capsys, data, args, message
):
    out_dir = tmp_path / "out"
    code, out, err = _report(
        capsys,
        "--storage",
        known_study_url,
        "--study",
        data.STUDY,
        "--out",
        str(out_dir),
        "--no-attach",
        *args,
    )
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err
    assert not out_dir.exists()


def test_levels_choose_the_ranges_and_the_headline(known_study_url, capsys, data):
    code, out, err = _report(
        capsys,
        "--storage",
        known_study_url,
        "--study",
        data.STUDY,
        "--no-attach",
        "--format",
        "json",
        "--levels",
        "0.8,0.6",
    )
    assert code == 0, err
    payload = json.loads(out)
    assert payload["levels"] == [0.6, 0.8]
    assert all(set(v["ranges"]) == {"0.6", "0.8"} for v in payload["variants"])
    # no 0.9 level: the verdicts lead with the middle one (of two, the higher)
    assert payload["verdicts"][0].startswith("insgd-l1 keeps 80% of its gain over chance")


def test_out_that_is_a_file_and_a_missing_database_are_refused(tmp_path, capsys, data):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    code, _, err = _report(
        capsys,
        "--storage",
        f"sqlite:///{tmp_path}/none.db",
        "--study",
        data.STUDY,
        "--out",
        str(a_file),
    )
    assert code == 2 and "exists and is not a directory" in err and err.count("\n") == 1
    missing = f"sqlite:///{tmp_path}/none.db"
    code, _, err = _report(capsys, "--storage", missing, "--study", data.STUDY)
    assert code == 2 and err.count("\n") == 1
    assert not (tmp_path / "none.db").exists()


def test_a_study_without_complete_trials_is_exit_2(tmp_path, capsys, data):
    url = f"sqlite:///{tmp_path}/s.db"
    data.write_study(
        url,
        "early",
        [
            data.trial_spec("l2", 0.1, 0, 0.5, "PRUNED"),
            data.trial_spec("l2", 0.1, 1, 0.5, "RUNNING"),
        ],
        with_optuna=False,
    )
    code, out, err = _report(capsys, "--storage", url, "--study", "early")
    assert code == 2 and out == ""
    assert err == (
        "insgd-study report: error: study 'early' has no COMPLETE trials yet "
        "(1 PRUNED, 1 RUNNING)\n"
    )


def test_random_sampler_studies_are_binned_and_single_seeds_get_no_intervals(
    tmp_path, capsys, data
):
    url = f"sqlite:///{tmp_path}/s.db"
    lrs = [10 ** (-3 + 4 * i / 19) for i in range(20)]  # 20 distinct lrs, 1e-3 .. 10
    specs = [
        data.trial_spec(norm, lr, 0, 0.9 - 0.1 * abs(math.log10(lr) + 1))
        for lr in lrs
        for norm in ("none", "l2")
    ]
    data.write_study(url, "tpe", specs, config={"sampler": "tpe"}, with_optuna=False)
    code, out, err = _report(
        capsys, "--storage", url, "--study", "tpe", "--bins", "4", "--format", "json"
    )
    assert code == 0, err
    payload = json.loads(out)
    assert payload["grouping"]["mode"] == "log-bins"
    assert payload["grouping"]["edges"] == pytest.approx([1e-3, 1e-2, 1e-1, 1.0, 10.0])
    sgd = _variants(payload)["sgd"]
    assert [g["n_trials"] for g in sgd["groups"]] == [5, 5, 5, 5]
    assert sgd["best_lr"] == pytest.approx(10**-1.5)  # centre of the bin [0.01, 0.1]
    assert sgd["intervals"] is None and sgd["ranges"]["0.9"]["interval"] is None
    # one seed: the comparison carries point differences only, never a clear verdict
    (comp,) = payload["comparisons"]
    assert comp["best_accuracy_diff"]["low"] is None
    assert all(not d["clear"] and d["low"] is None for d in comp["range_diff"].values())
    assert payload["importances"] == {"error": "no Optuna study named 'tpe' in this database"}


def test_paper_preset_studies_print_the_papers_numbers_beside_ours(tmp_path, capsys, data):
    url = f"sqlite:///{tmp_path}/s.db"
    specs = [
        data.trial_spec(norm, 0.1, seed, acc)
        for norm, acc in (("none", 0.11), ("l1", 0.6), ("l2", 0.7))
        for seed in (0, 1)
    ]
    data.write_study(
        url,
        "pm",
        specs,
        config={"sampler": "grid", "preset": "paper-mnist"},
        model="mnist-toy",
        dataset="mnist5k",
        with_optuna=False,
    )
    # our batchnorm flag lives in the trial's params; the paper-mnist row is the no-BN one
    from storage import ResultWriter, open_database

    writer = ResultWriter(open_database(url))
    for n in range(len(specs)):
        writer.finish_trial("pm", n, {"params": {"batchnorm": False}})
    code, out, err = _report(capsys, "--storage", url, "--study", "pm")
    assert code == 0, err
    paper = out.split("beside ours:")[1]
    assert re.search(
        r"toy CNN, no BN, CIFAR-10\s+0\.1\s+insgd-l2\s+74\.78 \+-7\.84\s+70\.00 "
        r"\+-0\.00\s+0\.1\s+2",
        paper,
    )
    assert "reports no accuracy" in paper


def test_report_attaches_a_note_and_figures_to_the_optuna_study(
    tmp_path, capsys, data, monkeypatch
):
    from optuna_dashboard import get_note

    monkeypatch.delenv("INSGD_ARTIFACT_DIR")  # the default: beside the SQLite file

    from study.analysis.dashboard import publish_report, study_artifacts
    from study.analysis.optuna_study import open_optuna_study

    url = f"sqlite:///{tmp_path}/s.db"
    data.write_study(url, data.STUDY, data.known_trials())
    data.write_study(url, "no-optuna", data.known_trials(), with_optuna=False)
    code, out, err = _report(capsys, "--storage", url, "--study", data.STUDY)
    assert code == 0, err
    assert "attached the report note and 6 files" in err
    # what launch calls at the end; a second attach replaces the first one's artifacts
    attached = publish_report(url, data.STUDY)
    files = sorted(a["filename"] for a in study_artifacts(url, data.STUDY))
    assert (
        files
        == sorted(attached)
        == [
            "accuracy_vs_lr.png",
            "eps_sensitivity.png",
            "learning_curves.png",
            "range_widths.png",
            "report.html",
            "report.json",
        ]
    )
    assert len(list((tmp_path / "artifacts").iterdir())) == 6  # old files left the store too
    with open_optuna_study(url, data.STUDY) as study:
        note = get_note(study)
    assert note.startswith(f"## Robustness to the learning rate: {data.STUDY}")
    assert "| insgd-l2 | 8 | 2 | 91.00% [" in note
    assert "- insgd-l2 keeps 90% of its gain over chance over " in note  # the v2 verdicts
    assert publish_report(url, "no-optuna") == []
    code, _, err = _report(capsys, "--storage", url, "--study", "no-optuna")
    assert code == 0 and err == ""  # nothing to attach to: silently a plain report


def test_text_tables_escape_newlines_and_control_characters() -> None:
    """`report --format table`: a cell (e.g. a setting named after a stored model) with a
    newline or an escape sequence stays on its row; other scripts pass unchanged."""
    from study.analysis.report import format_table

    text = format_table((["variant", "acc"], [["l2 [mlp\nfake row]", "1\x1b[31m"], ["é", "2"]]))
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("l2 [mlp\\nfake row]") and lines[2].endswith("1\\x1b[31m")
    assert lines[3].startswith("é")
    assert "\x1b" not in text

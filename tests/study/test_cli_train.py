"""`insgd-study train`: the per-epoch table, --json, checkpoints, and bad input (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from study.cli import main

QUICK = ["--epochs", "2", "--device", "cpu"]


# Tiny models on a shared 2-core box: a second OpenMP thread only spins.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "study", "train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse errors exit from inside parse_args
        return int(exc.code or 0)


def _strict_json(text: str) -> dict:
    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    return json.loads(text, parse_constant=no_constants)


def test_prints_an_aligned_row_per_epoch_and_a_final_line(tmp_path: Path) -> None:
    done = _cli(
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--optimizer",
        "insgd",
        "--norm",
        "l2",
        "--lr",
        "0.1",
        *QUICK,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 4, done.stdout
    header, rows, final = lines[0], lines[1:3], lines[3]
    assert header.split() == [
        "epoch",
        "train",
        "loss",
        "train",
        "acc",
        "val",
        "loss",
        "val",
        "acc",
        "lr",
        "seconds",
        "img/s",
    ]
    for number, row in enumerate(rows, start=1):
        cells = row.split()
        assert len(row) == len(header) and len(cells) == 8
        assert cells[0] == str(number) and cells[2].endswith("%") and cells[5] == "0.1"
    assert final.startswith("finished 2 epochs: final val acc ")
    assert "cpu" in final
    assert list(tmp_path.iterdir()) == []  # nothing written without --checkpoint


def test_json_prints_only_the_result_with_null_for_nan(capsys) -> None:
    assert _main(["train", "--json", "--optimizer", "sgd", "--lr", "1e4", *QUICK]) == 0
    result = _strict_json(capsys.readouterr().out)  # stdout holds nothing but the JSON
    assert result["diverged"] is True and result["final_val_accuracy"] == 0.0
    assert result["epochs"][-1]["train_loss"] is None  # NaN, written as null
    assert result["config"]["optimizer"] == "sgd" and result["config"]["lr"] == 1e4
    assert set(result) >= {
        "config",
        "epochs",
        "final_val_accuracy",
        "best_val_accuracy",
        "final_train_loss",
        "epochs_completed",
        "wall_seconds",
        "device_name",
    }


def test_bad_input_in_a_real_process_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = _cli("--device", "cuda:99", "--checkpoint", str(tmp_path / "c.pt"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("insgd-study train: error: ") and "cuda:99" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_then_resume_from_the_command_line(tmp_path: Path, capsys) -> None:
    ckpt = tmp_path / "trial.pt"
    assert _main(["train", "--epochs", "1", "--checkpoint", str(ckpt), "--device", "cpu"]) == 0
    assert ckpt.is_file()
    capsys.readouterr()
    assert (
        _main(["train", "--epochs", "1", "--resume", str(ckpt), "--json", "--device", "cpu"]) == 0
    )
    result = _strict_json(capsys.readouterr().out)
    assert result["epochs_completed"] == 1


BAD_INPUTS = {
    "negative lr": ["--lr", "-0.1"],
    "unknown optimizer": ["--optimizer", "adam"],
    "non-integer epochs": ["--epochs", "two"],
    "unknown dataset": ["--dataset", "mnist-9"],
    "unknown model": ["--model", "resnet7"],
    "bad model option": ["--model-option", "hidden"],
    "option the model lacks": ["--model-option", "depth=3"],
    "mlp hidden not a list": ["--model-option", "hidden=-1"],
    "dropout not a number": ["--model", "toy-cnn", "--model-option", "dropout=x"],
    "option the dataset lacks": ["--dataset-option", "shape=[3,32,32]"],
    "no such device": ["--device", "tpu"],
    "no such gpu": ["--device", "cuda:99"],
    "missing data files": ["--dataset", "cifar10", "--data-dir", "{tmp}/nodata"],
    "missing checkpoint": ["--resume", "{tmp}/missing.pt"],
    "other config's checkpoint": ["--resume", "{tmp}/other.pt"],
}


@pytest.mark.parametrize("args", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_one_stderr_line_exit_2_nothing_written(
    args: list[str], tmp_path: Path, capsys
) -> None:
    if "{tmp}/other.pt" in args:  # a checkpoint of a trial with another lr
        other = ["train", "--epochs", "1", "--lr", "0.3", "--checkpoint", f"{tmp_path}/other.pt"]
        assert _main([*other, "--device", "cpu"]) == 0
    before = sorted(tmp_path.iterdir())
    capsys.readouterr()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code = _main(["train", "--epochs", "1", "--checkpoint", str(tmp_path / "new.pt"), *argv])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("insgd-study train: error: "), err
    assert "Traceback" not in err
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_gpu_exits_2(capsys) -> None:
    assert _main(["train", "--device", "cuda", "--epochs", "1"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err

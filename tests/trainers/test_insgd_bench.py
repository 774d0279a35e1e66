"""The INSGD-vs-SGD timing command runs end to end and rejects bad input in one line."""

from __future__ import annotations

import pytest

from trainers.insgd_bench import main


def test_bench_runs_and_reports_each_optimizer(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--model", "mlp", "--image-size", "8", "--batch-size", "4"]
    assert main([*argv, "--steps", "1", "--rounds", "1", "--device", "cpu", "--threads", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("mlp, batch 4, norm l2, cpu")
    assert [line.split()[0] for line in out[1:4]] == ["sgd", "insgd-layer", "insgd-channel"]
    assert out[4].startswith("  input-energy reductions alone (layer): ")
    assert out[5].startswith("  input-energy reductions alone (channel): ")
    assert out[1].endswith("x1.000 vs sgd")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--threads", "-1"], "--threads must be >= 0, got -1"),
        (["--norm", "l3"], "invalid choice: 'l3'"),
        (["--device", "nonsense"], "unusable --device 'nonsense'"),
        (["--model", "nope", "--device", "cpu"], "unknown model 'nope'"),
    ],
)
def test_bench_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        raise SystemExit(main(argv))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1

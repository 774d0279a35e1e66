"""Learning-rate schedules: the lr at known epochs and steps, without training."""

from __future__ import annotations

import math

import pytest

from trainers.schedules import (
    learning_rate,
    multistep_milestones,
    schedule_factor,
    warmup_factor,
)


def test_multistep_milestones_scale_the_papers_to_the_epoch_count() -> None:
    assert multistep_milestones(200) == [80, 120, 160]
    assert multistep_milestones(10) == [4, 6, 8]
    assert multistep_milestones(1) == [1, 1, 1]  # never drops before the first epoch


def test_multistep_lr_drops_by_five_after_40_60_80_percent_of_epochs() -> None:
    lrs = [learning_rate(0.5, "multistep", epoch=e, epochs=10) for e in range(1, 11)]
    expected = [0.5] * 4 + [0.1] * 2 + [0.02] * 2 + [0.004] * 2
    assert lrs == pytest.approx(expected, rel=1e-12)
    # The paper's own schedule: epoch 80 still at the base lr, epoch 81 at 0.2x.
    assert schedule_factor("multistep", 80, 200) == 1.0
    assert schedule_factor("multistep", 81, 200) == pytest.approx(0.2)
    assert schedule_factor("multistep", 161, 200) == pytest.approx(0.008)


def test_cosine_starts_at_base_halves_midway_and_decreases() -> None:
    lrs = [learning_rate(1.0, "cosine", epoch=e, epochs=10) for e in range(1, 11)]
    assert lrs[0] == 1.0
    assert lrs[5] == pytest.approx(0.5)
    assert lrs[9] == pytest.approx(0.5 * (1 + math.cos(0.9 * math.pi)))
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[9] > 0


def test_cosine_after_warmup_runs_over_the_remaining_epochs() -> None:
    factors = [schedule_factor("cosine", e, 10, warmup_epochs=2) for e in range(1, 11)]
    assert factors[:3] == [1.0, 1.0, 1.0]
    assert factors[6] == pytest.approx(0.5)  # epoch 7: 4 of 8 post-warmup epochs done


def test_constant_schedule_is_the_base_lr_everywhere() -> None:
    assert {learning_rate(0.3, "constant", epoch=e, epochs=7) for e in range(1, 8)} == {0.3}


def test_warmup_ramps_linearly_per_step_then_stays_at_one() -> None:
    assert warmup_factor(1, 0, 10, warmup_epochs=2) == pytest.approx(1 / 20)
    assert warmup_factor(1, 9, 10, warmup_epochs=2) == pytest.approx(0.5)
    assert warmup_factor(2, 4, 10, warmup_epochs=2) == pytest.approx(15 / 20)
    assert warmup_factor(2, 9, 10, warmup_epochs=2) == 1.0
    assert warmup_factor(3, 0, 10, warmup_epochs=2) == 1.0
    assert warmup_factor(1, 0, 10, warmup_epochs=0) == 1.0
    lr = learning_rate(
        0.1, "multistep", epoch=1, epochs=10, step=4, steps_per_epoch=10, warmup_epochs=1
    )
    assert lr == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("schedule", "epoch", "epochs"), [("cosine", 0, 5), ("cosine", 6, 5), ("linear", 1, 5)]
)
def test_bad_epoch_or_schedule_is_a_value_error(schedule: str, epoch: int, epochs: int) -> None:
    with pytest.raises(ValueError):
        schedule_factor(schedule, epoch, epochs)

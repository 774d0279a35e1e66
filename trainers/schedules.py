"""Learning-rate schedules as pure functions of the training position.

The learning rate of a step depends only on (epoch, step within the epoch), never on
mutable scheduler objects: a checkpoint then only needs the epoch to restore the schedule,
and a test can check the lr at any epoch without training.

- ``constant``: the base lr throughout.
- ``multistep``: the paper's schedule (200 epochs, x0.2 at epochs 80/120/160) scaled to the
  epoch count: x0.2 once 40%, 60% and 80% of the epochs are done (milestones rounded to whole
  epochs, half up, at least 1, as ``torch.optim.lr_scheduler.MultiStepLR`` counts them: for 10
  epochs the lr drops before epochs 5, 7 and 9, i.e. after 4, 6 and 8 finished epochs).
- ``cosine``: per epoch, from the base lr in the first epoch after warmup down towards 0
  (``0.5 * (1 + cos(pi * k / n))`` for the k-th of the n post-warmup epochs, k from 0).

Optional linear warmup over ``warmup_epochs`` multiplies any schedule by a ramp that rises per
*step* (so the first steps, where a too-high lr blows up a network, are the gentlest):
``min(1, (global_step + 1) / (warmup_epochs * steps_per_epoch))``. The last step of warmup
epoch e (1-based) therefore trains at ``e / warmup_epochs`` of the scheduled lr.
"""

from __future__ import annotations

import math

from trainers.config import SCHEDULES

MULTISTEP_FRACTIONS: tuple[float, ...] = (0.4, 0.6, 0.8)
MULTISTEP_GAMMA = 0.2


def multistep_milestones(epochs: int) -> list[int]:
    """Numbers of finished epochs after which the multistep schedule multiplies the lr by 0.2.

    >>> multistep_milestones(200), multistep_milestones(10)
    ([80, 120, 160], [4, 6, 8])
    """
    return [max(1, math.floor(fraction * epochs + 0.5)) for fraction in MULTISTEP_FRACTIONS]


def schedule_factor(schedule: str, epoch: int, epochs: int, warmup_epochs: int = 0) -> float:
    """Multiplier of the base lr for the whole of `epoch` (1-based), before any warmup ramp."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")
    if not 1 <= epoch <= epochs:
        raise ValueError(f"epoch must be in [1, {epochs}], got {epoch}")
    done = epoch - 1  # finished epochs before this one
    if schedule == "multistep":
        drops = sum(1 for milestone in multistep_milestones(epochs) if done >= milestone)
        return MULTISTEP_GAMMA**drops
    if schedule == "cosine":
        span = epochs - warmup_epochs
        if span <= 0 or done < warmup_epochs:
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * (done - warmup_epochs) / span))
    return 1.0


def warmup_factor(epoch: int, step: int, steps_per_epoch: int, warmup_epochs: int) -> float:
    """Linear per-step warmup multiplier for `step` (0-based) of `epoch` (1-based)."""
    if warmup_epochs <= 0:
        return 1.0
    global_step = (epoch - 1) * steps_per_epoch + step
    return min(1.0, (global_step + 1) / (warmup_epochs * steps_per_epoch))


def learning_rate(
    base_lr: float,
    schedule: str,
    *,
    epoch: int,
    epochs: int,
    step: int = 0,
    steps_per_epoch: int = 1,
    warmup_epochs: int = 0,
) -> float:
    """The lr of `step` (0-based) in `epoch` (1-based): base x schedule x warmup ramp."""
    return (
        base_lr
        * schedule_factor(schedule, epoch, epochs, warmup_epochs)
        * warmup_factor(epoch, step, steps_per_epoch, warmup_epochs)
    )

"""Fused trials: K trainings that differ only in lr, optimizer/norm, eps, beta and seed run
as one model with a member axis, each member reproducing its own `trainers.train()` run.

Public: `train_fused(configs, on_epoch)` -> one `TrialResult` per config, `can_fuse(configs)`
(None, or the reason why not), and the parts (`fuse_models`/`FusedNet`, `FusedINSGD`,
`setup_fused`) for benchmarks and tests.

Technique: explicit batched layers (HFTA-style), not torch.func. See `_layers` for the
layout. DESIGN_NOTE_PLACEHOLDER
"""

from trainers.fused._model import FusedNet, fuse_models
from trainers.fused._optim import FusedINSGD, MemberRule
from trainers.fused._train import (
    FUSABLE_MODELS,
    VARYING_FIELDS,
    FusedRunner,
    can_fuse,
    member_rule,
    setup_fused,
    train_fused,
)

__all__ = [
    "FUSABLE_MODELS",
    "VARYING_FIELDS",
    "FusedINSGD",
    "FusedNet",
    "FusedRunner",
    "MemberRule",
    "can_fuse",
    "fuse_models",
    "member_rule",
    "setup_fused",
    "train_fused",
]

"""Fused trials: K trainings that differ only in lr, optimizer/norm, eps, beta and seed run
as one model with a member axis, each member reproducing its own `trainers.train()` run.

Public: `train_fused(configs, on_epoch)` -> one `TrialResult` per config (`on_epoch` gets
`(member_index, EpochMetrics)`), `can_fuse(configs)` -> None or the reason why not, and
the parts for benchmarks and tests: `fuse_models`/`FusedNet` (the model),
`FusedINSGD`/`MemberRule` (the optimizer), `setup_fused`/`FusedRunner` (the loop).

Technique: explicit batched layers (HFTA-style), not torch.func. `fuse_models` keeps the
registry model's own module tree and `forward` code and swaps each Linear, Conv2d,
BatchNorm2d, Dropout (and ResNet's option-A shortcut) for a fused layer over
member-packed activations (B, K*C, H, W): a grouped convolution with K groups, a batched
matmul, BatchNorm over K*C channels (see `_layers`). Why not vmap(functional_call) over
`stack_module_state`, which batches convs into the same grouped convolutions:

- **Each member's own dropout stream.** vmap's randomness draws one (K, ...) mask from one
  generator; a fused Dropout draws member k's mask from member k's generator exactly as
  the solo run draws it, so a CPU member gets its solo run's very masks.
- **INSGD's input energies.** A layer measures each member's input inside its forward;
  under vmap a hook sees a batched tensor it may not keep, so every energy would have to
  be threaded out of the vmapped function as an extra output.
- **Bit-identical to solo runs on CPU.** Owning the layers lets every fused operation
  compute the products the solo layer computes (a linear backward shaped like
  `nn.Linear`'s, cross entropy per row, per-member convs on CPU): on CPU a member's final
  weights equal its solo trial's bit for bit (tests/trainers/test_fused_equivalence.py).
  That is what makes a fused trial a drop-in replacement for a solo one in a study.
- **Speed.** Forward+backward CPU time, K=4, batch 64, 3x32x32, 1 thread, process time
  on a shared 2-core AMD EPYC VM (torch 2.14.1): resnet20 solo x4 1810 ms, fused 1728 ms,
  vmap 2072 ms; toy-cnn 130 / 128 / 169 ms; mlp 21.3 / 16.1 / 33.2 ms. vmap pays its
  batching layer on every op; the fused layers call the plain kernels (and stay
  channels_last-friendly for cuDNN on CUDA). On CPU fusion saves little (the work is
  compute-bound); its purpose is CUDA, where one small trial leaves the GPU mostly idle
  and K members share one stream of K-times-larger kernels. No GPU was available here:
  the CUDA path (grouped convs, channels_last, bf16 autocast, per-member CUDA dropout
  generators, the pinned non-finite watch) is written for CUDA, its grouped convs are
  checked on CPU against solo models (float64 to 1e-9), but it has not run on a GPU;
  `benchmarks/fused_throughput.py` measures it there.

A model can fuse when all its stateful layers have a fused form and its `forward` only
applies per-channel operations between them (checked for every registry model; another
layer type is a ValueError naming the model and the layer). `compile=True` is refused.
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

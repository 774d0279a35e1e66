"""The paper's reference numbers, for printing beside a paper preset's results.

Source: Atici, Pan & Cetin, "Input Normalized Stochastic Gradient Descent
Training of Deep Neural Networks" (arXiv 2212.09921 v2 / TMLR submission), as
summarized in docs/insgd.md. Accuracies are test accuracy in percent, mean
and standard deviation over seeds (None where the paper gives no deviation).
The paper reports no MNIST accuracies; `paper-mnist` is compared with the
closest experiment it does report (the toy CNN without BN at lr 0.1) and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

VARIANTS = ("sgd", "insgd-l1", "insgd-l2")


@dataclass(frozen=True)
class PaperRow:
    """One line of a paper table: a setting at an lr (None = at the paper's tuned lr)."""

    label: str
    lr: float | None
    values: dict[str, tuple[float, float | None]]
    batchnorm: bool = True


@dataclass(frozen=True)
class PaperReference:
    preset: str
    title: str
    rows: tuple[PaperRow, ...]
    note: str = ""


def _row(
    label: str,
    lr: float | None,
    sgd: tuple[float, float | None],
    l1: tuple[float, float | None],
    l2: tuple[float, float | None],
    batchnorm: bool = True,
) -> PaperRow:
    return PaperRow(label, lr, dict(zip(VARIANTS, (sgd, l1, l2), strict=True)), batchnorm)


_TOY_NO_BN = _row(
    "toy CNN, no BN, CIFAR-10", 0.1, (11.07, 2.74), (64.85, 10.98), (74.78, 7.84), False
)

REFERENCES: dict[str, PaperReference] = {
    "paper-toy": PaperReference(
        "paper-toy",
        "Toy CNN on CIFAR-10, test accuracy vs learning rate",
        (
            _row("toy CNN + BN, CIFAR-10", 0.01, (79.08, 0.34), (78.83, 0.43), (78.92, 0.31)),
            _row("toy CNN + BN, CIFAR-10", 0.1, (79.24, 0.39), (79.41, 0.37), (79.30, 0.38)),
            _row("toy CNN + BN, CIFAR-10", 0.25, (65.92, 1.32), (73.24, 1.17), (74.68, 0.85)),
        ),
        "Paper setup: 200 epochs, batch 128, momentum 0.9, weight decay 5e-4, "
        "lr x0.2 at epochs 80/120/160, crop+flip augmentation. Without BN: see "
        "the paper-toy-nobn preset.",
    ),
    "paper-toy-nobn": PaperReference(
        "paper-toy-nobn",
        "Toy CNN without BN on CIFAR-10",
        (_TOY_NO_BN,),
        "Paper setup: as paper-toy, without BatchNorm; the paper reports lr 0.1 only.",
    ),
    "paper-mnist": PaperReference(
        "paper-mnist",
        "MNIST toy net without BN; the paper gives no MNIST accuracies, so its nearest "
        "experiment stands in",
        (_TOY_NO_BN,),
        "The paper trains its MNIST toy net at lr 0.1 but reports no accuracy for it; the "
        "row shown is its nearest reported experiment (toy CNN without BN on CIFAR-10, "
        "lr 0.1), a reference for the shape of the claim (INSGD >> SGD without BN at a "
        "high lr), not for the numbers.",
    ),
    "paper-resnet20": PaperReference(
        "paper-resnet20",
        "ResNet-20 on CIFAR-10",
        (
            _row("ResNet-20, CIFAR-10", None, (92.57, 0.11), (92.67, 0.13), (92.60, 0.11)),
            _row(
                "ResNet-20, no BN, CIFAR-10",
                0.1,
                (90.14, None),
                (90.55, None),
                (90.70, None),
                False,
            ),
        ),
        "Paper setup: 200 epochs, batch 128, momentum 0.9, weight decay 5e-4, "
        "lr x0.2 at epochs 80/120/160.",
    ),
    "paper-wrn-cifar100": PaperReference(
        "paper-wrn-cifar100",
        "Wide ResNet-18 on CIFAR-100",
        (_row("WResNet-18, CIFAR-100", None, (78.24, 0.43), (78.08, 0.24), (78.47, 0.16)),),
        "Paper setup: 200 epochs, batch 128, momentum 0.9, weight decay 5e-4, "
        "lr x0.2 at epochs 80/120/160.",
    ),
    "paper-resnet50-imagenet": PaperReference(
        "paper-resnet50-imagenet",
        "ResNet-50 on ImageNet, top-1",
        (_row("ResNet-50, ImageNet", None, (75.60, 0.14), (75.92, 0.43), (75.90, 0.14)),),
        "Paper setup: 90 epochs.",
    ),
}


def reference_for(preset: str | None) -> PaperReference | None:
    """The paper's numbers for a paper preset (None for any other study)."""
    return REFERENCES.get(preset or "")

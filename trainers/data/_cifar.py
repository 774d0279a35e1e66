"""CIFAR-10/100 from the python-pickle batches of the official archives.

Files are read here with pickle (torchvision's format, without its md5 pass
over 180 MB at every load) and are only ever downloaded when asked to:
`download=True` hands the job to torchvision's downloader, which verifies the
archive's checksum and extracts it into `data_dir`.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainers.data._errors import DatasetNotFoundError


@dataclass(frozen=True)
class CifarSpec:
    title: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    meta_file: str
    names_key: str
    num_classes: int
    url: str
    torchvision_class: str


CIFAR_SPECS: dict[str, CifarSpec] = {
    "cifar10": CifarSpec(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key="labels",
        meta_file="batches.meta",
        names_key="label_names",
        num_classes=10,
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        torchvision_class="CIFAR10",
    ),
    "cifar100": CifarSpec(
        title="CIFAR-100",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        label_key="fine_labels",
        meta_file="meta",
        names_key="fine_label_names",
        num_classes=100,
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        torchvision_class="CIFAR100",
    ),
}


def _text_keys(entry: dict[Any, Any]) -> dict[str, Any]:
    """The archives were pickled by Python 2: keys may load as bytes or str."""
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in entry.items()}


def _read_pickle(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            entry = pickle.load(handle, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError) as exc:
        raise ValueError(
            f"cannot read {path} as a CIFAR pickle batch ({exc}); re-extract the archive there"
        ) from None
    if not isinstance(entry, dict):
        raise ValueError(f"{path} is not a CIFAR batch (a {type(entry).__name__}, not a dict)")
    return _text_keys(entry)


def _read_batches(folder: Path, files: tuple[str, ...], label_key: str) -> tuple[np.ndarray, ...]:
    images, labels = [], []
    for name in files:
        entry = _read_pickle(folder / name)
        try:
            data, target = entry["data"], entry[label_key]
        except KeyError as exc:
            raise ValueError(f"{folder / name} is not a CIFAR batch: no key {exc}") from None
        data = np.asarray(data, dtype=np.uint8)
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(target, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def cifar_folder(spec: CifarSpec, root: Path) -> Path:
    """`root/<archive folder>`, or `root` itself when it already is the extracted folder."""
    nested = root / spec.folder
    if not nested.exists() and (root / spec.train_files[0]).exists():
        return root
    return nested


def _missing(spec: CifarSpec, folder: Path) -> list[str]:
    return [f for f in (*spec.train_files, *spec.test_files) if not (folder / f).is_file()]


def _download(spec: CifarSpec, root: Path) -> None:
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, spec.torchvision_class)
    try:
        root.mkdir(parents=True, exist_ok=True)
        dataset_class(root=str(root), train=True, download=True)
    except Exception as exc:  # noqa: BLE001 - network/IO/checksum errors all mean "not there"
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DatasetNotFoundError(
            f"could not download {spec.title} from {spec.url} into {root}: {reason}; "
            f"download and extract that archive into {root} yourself",
            root,
        ) from exc


def load_cifar_arrays(
    name: str, root: Path, *, download: bool
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], list[str] | None]:
    """(train, test, class names) of CIFAR `name` under `root`; the test set is the val set."""
    spec = CIFAR_SPECS[name]
    folder = cifar_folder(spec, root)
    missing = _missing(spec, folder)
    if missing and download:
        _download(spec, root)
        folder = cifar_folder(spec, root)
        missing = _missing(spec, folder)
    if missing:
        how = (
            f"pass --download (download=True) to fetch {spec.url}, or extract that archive "
            f"into {root}"
        )
        if download:
            how = f"the download did not produce them; extract {spec.url} into {root}"
        raise DatasetNotFoundError(
            f"{spec.title} not found: looked in {folder} for {', '.join(missing)}; {how}", folder
        )
    train = _read_batches(folder, spec.train_files, spec.label_key)
    test = _read_batches(folder, spec.test_files, spec.label_key)
    classes = None
    meta_path = folder / spec.meta_file
    if meta_path.is_file():
        names = _read_pickle(meta_path).get(spec.names_key)
        if names is not None:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return train, test, classes

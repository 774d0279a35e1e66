"""Datasets one trial can train on, by name: `load_dataset(name, device=..., ...)`.

Small sets (digits, mnist5k, CIFAR-10/100, synthetic) live on the training
device as uint8 tensors with batched on-device augmentation; ImageNet streams
from ImageFolder trees through DataLoader workers. Both yield normalized
float32 NCHW batches and int64 labels on the device.
"""

from trainers.data._augment import crop_at, random_crop, random_flip
from trainers.data._base import Dataset
from trainers.data._bundled import SPLIT_SEED
from trainers.data._errors import DatasetNotFoundError
from trainers.data._registry import (
    DATA_DIR_ENV,
    DATASET_NAMES,
    check_dataset_name,
    dataset_options,
    load_dataset,
    resolve_data_dir,
)

__all__ = [
    "DATASET_NAMES",
    "DATA_DIR_ENV",
    "SPLIT_SEED",
    "Dataset",
    "DatasetNotFoundError",
    "check_dataset_name",
    "crop_at",
    "dataset_options",
    "load_dataset",
    "random_crop",
    "random_flip",
    "resolve_data_dir",
]

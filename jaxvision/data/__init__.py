"""Data: data sets (digits, image folders, CIFAR-10), transforms and the batch loader."""

from jaxvision.data.datasets import ArrayDataset, DatasetError, FolderDataset, load_dataset
from jaxvision.data.loader import (
    AUGMENTATIONS,
    BatchLoader,
    ClassificationSource,
    Source,
    epoch_order,
    steps_per_epoch,
)
from jaxvision.data.transforms import eval_transform, random_resized_crop_box, train_transform

__all__ = [
    "AUGMENTATIONS",
    "ArrayDataset",
    "BatchLoader",
    "ClassificationSource",
    "DatasetError",
    "FolderDataset",
    "Source",
    "epoch_order",
    "eval_transform",
    "load_dataset",
    "random_resized_crop_box",
    "steps_per_epoch",
    "train_transform",
]

"""Data: classification data sets (digits, image folders, CIFAR-10), detection data sets (the
generated shapes, the YOLO format on disk), transforms, letterboxing and the batch loader."""

from jaxvision.data.datasets import ArrayDataset, DatasetError, FolderDataset, load_dataset
from jaxvision.data.letterbox import Letterbox, letterbox
from jaxvision.data.loader import (
    AUGMENTATIONS,
    BatchLoader,
    ClassificationSource,
    Source,
    epoch_order,
    steps_per_epoch,
)
from jaxvision.data.shapes import ShapesDataset, export_yolo
from jaxvision.data.transforms import eval_transform, random_resized_crop_box, train_transform
from jaxvision.data.yolo import (
    Annotations,
    Augmentation,
    DetectionSource,
    YoloDataset,
    read_data_yaml,
    write_data_yaml,
)

__all__ = [
    "Annotations",
    "Augmentation",
    "DetectionSource",
    "Letterbox",
    "ShapesDataset",
    "YoloDataset",
    "export_yolo",
    "letterbox",
    "read_data_yaml",
    "write_data_yaml",
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

"""Data: classification data sets (digits, image folders, CIFAR-10), detection data sets (the
generated shapes, the YOLO format on disk), OmniVec's five modalities (generated, or read from
folders of WAV / point-cloud / video files and JSON-lines text), transforms, letterboxing, the
batch loader and the mixture of sources for multi-task runs."""

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
from jaxvision.data.mixture import MixedSource
from jaxvision.data.modalities import (
    MODALITIES,
    ModalityData,
    ModalitySource,
    load_modality,
    synthetic,
    text_baselines,
)
from jaxvision.data.shapes import ShapesDataset, export_yolo
from jaxvision.data.text import Vocabulary, tokenize
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
    "MODALITIES",
    "MixedSource",
    "ModalityData",
    "ModalitySource",
    "Vocabulary",
    "load_modality",
    "synthetic",
    "text_baselines",
    "tokenize",
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

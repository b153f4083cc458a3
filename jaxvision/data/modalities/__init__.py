"""Data for the multimodal model (OmniVec): images, videos, audio clips, point clouds and text.

Each split of each modality is a :class:`ModalityData` in memory; :class:`ModalitySource` serves
its examples to the :class:`~jaxvision.data.loader.BatchLoader` under per-modality keys
(``image``/``image_label``, ``video``/``video_label``, ``audio``/``audio_label``,
``points``/``points_label``, ``text``/``summary``), so one batch can hold every modality.

:func:`load_modality` reads a split: ``"synthetic"`` gives generated data that needs no download,
trains on a CPU in minutes and is the same on every machine for a seed
(:mod:`~jaxvision.data.modalities.synthetic` describes each generator); a path reads the user's
files (:mod:`~jaxvision.data.modalities.files` describes the layouts).

Default shapes: image (32, 32, 3), video (8, 32, 32, 1), audio (8000,) at 8 kHz, points (256, 3),
all float32 and images/videos normalised to [-1, 1]; text (64,) document and (12,) summary int32
token ids of a word-level :class:`~jaxvision.data.text.Vocabulary`, padded with 0, the summary
ending in ``<eos>``.
"""

from jaxvision.constants import CLASSIFIED_MODALITIES, MODALITIES
from jaxvision.data.modalities.base import (
    DEFAULT_SIZES,
    SPLITS,
    ModalityData,
)
from jaxvision.data.modalities.files import load_modality, read_off, read_wav, sample_frames
from jaxvision.data.modalities.source import ModalitySource, augment_example
from jaxvision.data.modalities.synthetic import (
    AUDIO_CLASSES,
    POINT_CLASSES,
    VIDEO_CLASSES,
    make_document,
    surface_points,
    synthetic,
    text_baselines,
    text_vocabulary,
)

__all__ = [
    "AUDIO_CLASSES",
    "CLASSIFIED_MODALITIES",
    "DEFAULT_SIZES",
    "MODALITIES",
    "POINT_CLASSES",
    "SPLITS",
    "VIDEO_CLASSES",
    "ModalityData",
    "ModalitySource",
    "augment_example",
    "load_modality",
    "make_document",
    "read_off",
    "read_wav",
    "sample_frames",
    "surface_points",
    "synthetic",
    "text_baselines",
    "text_vocabulary",
]

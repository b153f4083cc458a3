"""A :class:`~jaxvision.data.loader.Source` over a :class:`ModalityData`, with light,
label-preserving augmentation."""

from __future__ import annotations

import numpy as np

from jaxvision.data.modalities.base import ModalityData

IMAGE_SHIFT = 2  # pixels, each way
AUDIO_GAIN = (0.8, 1.2)
POINT_JITTER = 0.01
BLACK = -1.0  # a pixel of value 0 after the (x - 0.5) / 0.5 normalisation


def shift_image(image: np.ndarray, dx: int, dy: int, fill: float = BLACK) -> np.ndarray:
    """(H, W, C) moved right by ``dx`` and down by ``dy`` pixels; uncovered pixels are ``fill``."""
    h, w = image.shape[:2]
    out = np.full_like(image, fill)
    if abs(dx) >= w or abs(dy) >= h:
        return out
    src_y, dst_y = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
    src_x, dst_x = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
    out[dst_y, dst_x] = image[src_y, src_x]
    return out


def augment_example(modality: str, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A randomly changed copy of input ``x`` of ``modality``, every random number from ``rng``.

    image: a translation by up to 2 pixels each way, black fill (pixel value 0, -1 after
    normalisation); audio: a gain of 0.8-1.2 and a circular shift by any number of samples;
    points: a rotation about the z axis and Gaussian jitter (std 0.01); video and text: none.
    """
    if modality == "image":
        dx, dy = rng.integers(-IMAGE_SHIFT, IMAGE_SHIFT + 1, size=2)
        return shift_image(x, int(dx), int(dy))
    if modality == "audio":
        gain = rng.uniform(*AUDIO_GAIN)
        return (gain * np.roll(x, int(rng.integers(len(x))))).astype(np.float32)
    if modality == "points":
        angle = rng.uniform(0, 2 * np.pi)
        c, s = np.cos(angle), np.sin(angle)
        rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        out = x @ rotation.T + rng.normal(0.0, POINT_JITTER, x.shape)
        return out.astype(np.float32)
    return x


class ModalitySource:
    """Examples of one modality for the :class:`~jaxvision.data.loader.BatchLoader`.

    Classification modalities give ``{modality: inputs[i] (float32), f"{modality}_label": int32
    scalar}`` (keys named by the modality, so a batch can hold several modalities at once); text
    gives ``{"text": (document_length,) int32, "summary": (summary_length,) int32}``. With
    ``augment=True`` training examples go through :func:`augment_example`.
    """

    def __init__(self, data: ModalityData, *, augment: bool = False):
        self.data = data
        self.modality = data.modality
        self.augment = augment

    def __len__(self) -> int:
        return len(self.data)

    def _example(self, index: int, x: np.ndarray) -> dict[str, np.ndarray]:
        if self.modality == "text":
            return {
                "text": np.asarray(x, np.int32),
                "summary": np.asarray(self.data.summaries[index], np.int32),
            }
        return {
            self.modality: np.asarray(x, np.float32),
            f"{self.modality}_label": np.asarray(self.data.labels[index], np.int32),
        }

    def train_example(self, index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        x = self.data.inputs[index]
        if self.augment:
            x = augment_example(self.modality, x, rng)
        return self._example(index, x)

    def eval_example(self, index: int) -> dict[str, np.ndarray]:
        return self._example(index, self.data.inputs[index])

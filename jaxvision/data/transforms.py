"""Train augmentation and the evaluation pipeline, on pillow images, returning float32 HWC arrays.

Evaluation mirrors the reference preprocessing of each family (``Preprocessing`` in the
registry): resize the shorter side to ``size / crop_fraction`` with the reference interpolation,
centre-crop ``size``, scale to [0, 1], normalise with the reference mean and std. Training uses
the Inception-style random resized crop (Szegedy et al. 2014, as torchvision implements it) and an
optional horizontal flip. Randomness comes from a ``numpy.random.Generator`` handed in, so a
batch's augmentation depends only on (seed, epoch, batch index) and a resumed run repeats it.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from jaxvision.registry import Preprocessing

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


def _resample(name: str) -> Image.Resampling:
    try:
        return _RESAMPLE[name]
    except KeyError:
        raise ValueError(
            f"interpolation must be one of {sorted(_RESAMPLE)}, got {name!r}"
        ) from None


def normalize(img: Image.Image, pre: Preprocessing) -> np.ndarray:
    """uint8 RGB image -> float32 (H, W, 3), ``(x / 255 - mean) / std``."""
    x = np.asarray(img.convert("RGB"), np.float32) / 255.0
    return (x - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)


def eval_transform(
    img: Image.Image, size: int, pre: Preprocessing, *, centre_crop: bool = True
) -> np.ndarray:
    """The reference evaluation pipeline; ``centre_crop=False`` resizes the whole image to
    ``size`` x ``size`` (for small, already-framed images such as digits and CIFAR)."""
    resample = _resample(pre.interpolation)
    if not centre_crop:
        return normalize(img.resize((size, size), resample), pre)
    w, h = img.size
    short = math.floor(size / pre.crop_fraction)
    if w <= h:
        new_w, new_h = short, int(short * h / w)
    else:
        new_w, new_h = int(short * w / h), short
    img = img.resize((new_w, new_h), resample)
    left = int(round((new_w - size) / 2.0))
    top = int(round((new_h - size) / 2.0))
    return normalize(img.crop((left, top, left + size, top + size)), pre)


def random_resized_crop_box(
    width: int,
    height: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(left, top, crop width, crop height) as torchvision's RandomResizedCrop samples it."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    # Fallback: the largest centred crop with an aspect ratio inside the range.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def train_transform(
    img: Image.Image,
    size: int,
    pre: Preprocessing,
    rng: np.random.Generator,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    flip: bool = True,
) -> np.ndarray:
    """Random resized crop to ``size`` x ``size``, optional horizontal flip, normalisation."""
    left, top, w, h = random_resized_crop_box(img.size[0], img.size[1], rng, scale)
    img = img.resize((size, size), _resample(pre.interpolation), box=(left, top, left + w, top + h))
    if flip and rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return normalize(img, pre)

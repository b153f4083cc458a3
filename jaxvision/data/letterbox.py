"""Letterboxing: fit an image into a square without distorting it, as YOLO does for evaluation.

The image is scaled by ``min(size / h, size / w)`` (up or down), so its longer side fills the
square, and the shorter side is padded evenly with gray 114. This mirrors ultralytics'
``LetterBox(auto=False, scaleup=True, center=True)`` (``ultralytics/data/augment.py``): the same
scale, the same resized size ``max(round(w * scale), 1)`` x ``max(round(h * scale), 1)`` and the
same split of the padding (``left = round(dw / 2 - 0.1)``, ``right = round(dw / 2 + 0.1)``, so an
odd padding puts the extra pixel on the right / bottom). One difference: pillow's bilinear resize
filters with a wider kernel when it shrinks an image (anti-aliasing) where OpenCV's
``INTER_LINEAR`` does not, so downscaled pixels differ slightly; geometry is identical.

Coordinates are continuous pixel coordinates: pixel ``(col, row)`` covers
``[col, col + 1) x [row, row + 1)``, so an image of width ``w`` spans ``[0, w]``. Like ultralytics,
boxes are mapped with the scale factor itself (``x * scale + pad``), not with the rounded resized
size: the two differ by under half a pixel.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

PAD_VALUE = 114  # ultralytics LetterBox padding_value (and the Mosaic / RandomPerspective border)


@dataclasses.dataclass(frozen=True)
class Letterbox:
    """Where an original image of ``width`` x ``height`` landed in the letterboxed square:
    ``letterboxed = original * scale + (pad_x, pad_y)``."""

    scale: float
    pad_x: int
    pad_y: int
    width: int
    height: int

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 affine map from original to letterboxed pixel coordinates."""
        return np.array(
            [[self.scale, 0.0, self.pad_x], [0.0, self.scale, self.pad_y], [0.0, 0.0, 1.0]]
        )

    def boxes_to_letterbox(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) xyxy boxes in original pixels -> letterboxed pixels (float64)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        offset = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], np.float64)
        return boxes * self.scale + offset

    def boxes_to_original(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) xyxy boxes in letterboxed pixels (e.g. predictions) -> original pixels (float64),
        clipped to the original image; the exact inverse of :meth:`boxes_to_letterbox` for boxes
        inside the image."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        offset = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], np.float64)
        original = (boxes - offset) / self.scale
        upper = np.array([self.width, self.height, self.width, self.height], np.float64)
        return np.clip(original, 0.0, upper)


def letterbox_geometry(width: int, height: int, size: int) -> tuple[Letterbox, tuple[int, int]]:
    """The :class:`Letterbox` of a ``width`` x ``height`` image in a ``size`` square, and the
    (width, height) the image is resized to."""
    scale = min(size / height, size / width)
    # At least one pixel, so a 1 x 3000 image stays an image (ultralytics does the same).
    new_w, new_h = max(round(width * scale), 1), max(round(height * scale), 1)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    # The -0.1 breaks the tie of an odd padding: the extra pixel goes right / bottom.
    left, top = round(dw - 0.1), round(dh - 0.1)
    return Letterbox(scale, left, top, width, height), (new_w, new_h)


def letterbox(image: Image.Image, size: int) -> tuple[np.ndarray, Letterbox]:
    """``image`` scaled to fit a ``size`` x ``size`` square and padded with gray 114.

    Returns the uint8 (size, size, 3) RGB array and the :class:`Letterbox` that maps boxes
    between the original and the letterboxed image.
    """
    box, (new_w, new_h) = letterbox_geometry(image.width, image.height, size)
    image = image.convert("RGB")
    if (new_w, new_h) != image.size:
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    out = np.full((size, size, 3), PAD_VALUE, np.uint8)
    out[box.pad_y : box.pad_y + new_h, box.pad_x : box.pad_x + new_w] = np.asarray(image)
    return out, box


__all__ = ["PAD_VALUE", "Letterbox", "letterbox", "letterbox_geometry"]

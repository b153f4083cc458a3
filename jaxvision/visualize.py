"""Drawing predictions on images with pillow: boxes, class names and scores, instance masks."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

MASK_ALPHA = 0.45  # how strongly a mask tints the pixels under it


def class_colour(index: int) -> tuple[int, int, int]:
    """A distinct, saturated colour per class (golden-ratio hues)."""
    r, g, b = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(
    image: Image.Image,
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    names: Sequence[str],
    *,
    masks: np.ndarray | None = None,
) -> Image.Image:
    """A copy of ``image`` with each detection drawn: its mask (if given, (N, H, W) booleans of
    the image's size) tinted in its class colour, its box, and ``"name score"`` above the box.
    ``boxes`` are (N, 4) xyxy in the image's pixels."""
    canvas = np.asarray(image.convert("RGB"), np.float32)
    if masks is not None:
        for mask, c in zip(masks, classes, strict=True):
            colour = np.asarray(class_colour(int(c)), np.float32)
            canvas[mask] = (1 - MASK_ALPHA) * canvas[mask] + MASK_ALPHA * colour
    out = Image.fromarray(canvas.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    width = max(1, round(max(out.size) / 200))
    for box, score, c in zip(boxes, scores, classes, strict=True):
        colour = class_colour(int(c))
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        label = f"{names[int(c)]} {float(score):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), label)
        ty = y1 - (bottom - top) - 2 if y1 - (bottom - top) - 2 >= 0 else y1
        draw.rectangle((x1, ty, x1 + right - left + 2, ty + bottom - top + 2), fill=colour)
        draw.text((x1 + 1, ty), label, fill=(0, 0, 0))
    return out


__all__ = ["class_colour", "draw_detections"]

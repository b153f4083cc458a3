"""Solutions to the exercises of tutorials/02_yolov8.ipynb.

Tested by tests/test_tutorial_solutions.py.
"""

from __future__ import annotations

import numpy as np


def c2f_params(in_features: int, out_features: int, repeats: int) -> int:
    """Exercise 1: parameters of a C2f block (convolutions without bias, BatchNorm scale + bias).

    Hidden width c = out / 2: ``conv_split`` 1x1 in -> 2c, ``repeats`` bottlenecks of two 3x3
    c -> c convolutions, ``conv_merge`` 1x1 (2 + repeats) c -> out. The shortcut adds nothing.
    """
    c = int(out_features * 0.5)
    conv_bn = lambda k, cin, cout: k * k * cin * cout + 2 * cout
    split = conv_bn(1, in_features, 2 * c)
    bottlenecks = repeats * 2 * conv_bn(3, c, c)
    merge = conv_bn(1, (2 + repeats) * c, out_features)
    return split + bottlenecks + merge


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Exercise 2: class-agnostic greedy NMS of (K, 4) xyxy ``boxes``; a (K,) boolean keep mask.

    Boxes are visited from the highest score down (ties: lower index first); a box is kept unless
    a box already kept overlaps it with IoU greater than ``iou_threshold``.
    """
    boxes = np.asarray(boxes, np.float64)
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep = np.zeros(len(boxes), bool)
    kept: list[int] = []
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        if kept:
            k = np.asarray(kept)
            lt = np.maximum(boxes[k, :2], boxes[i, :2])
            rb = np.minimum(boxes[k, 2:], boxes[i, 2:])
            inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
            iou = inter / (area[k] + area[i] - inter)
            if np.any(iou > iou_threshold):
                continue
        keep[i] = True
        kept.append(int(i))
    return keep


def dfl_target(distance: np.ndarray, reg_max: int = 16) -> np.ndarray:
    """Exercise 3: the two-bin DFL target of each distance, shape (..., reg_max).

    A distance d (clipped to [0, reg_max - 1.01]) between bins i = floor(d) and i + 1 puts
    weight (i + 1 - d) on bin i and (d - i) on bin i + 1, so the expectation is d.
    """
    d = np.clip(np.asarray(distance, np.float64), 0, reg_max - 1.01)
    left = np.floor(d).astype(int)
    target = np.zeros((*d.shape, reg_max))
    np.put_along_axis(target, left[..., None], (left + 1 - d)[..., None], axis=-1)
    np.put_along_axis(target, (left + 1)[..., None], (d - left)[..., None], axis=-1)
    return target

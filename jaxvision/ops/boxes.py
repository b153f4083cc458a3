"""Boxes: formats, overlaps and YOLOv8's anchor-point / distance encoding, in JAX.

Boxes are ``xyxy`` (left, top, right, bottom) in pixels unless a name says otherwise; ``xywh`` is
(centre x, centre y, width, height). Every function works on any leading shape ``(..., 4)``.

YOLOv8 is *anchor-free*: every cell of the P3/P4/P5 feature maps is an **anchor point** at the
cell's centre, and the box of an object is predicted there as its four distances (left, top,
right, bottom) from the point, in units of the map's stride (:func:`make_anchors`,
:func:`dist_to_box`, :func:`box_to_dist`). Each distance is itself a *distribution* over
``reg_max = 16`` bins 0..15 (Distribution Focal Loss, Li et al., "Generalized Focal Loss",
arXiv 2006.04388); the distance is its expectation (:func:`dfl_decode`).

Overlaps: :func:`box_iou` (all pairs) and :func:`ciou` (element-wise Complete IoU, Zheng et al.,
arXiv 1911.08287), written as ultralytics' ``bbox_iou(..., CIoU=True)`` computes it - the same
epsilons, and the aspect-ratio weight ``alpha`` treated as a constant (no gradient), so losses
match the reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

EPS = 1e-7  # ultralytics.utils.metrics.bbox_iou


def xyxy_to_xywh(boxes: jax.Array) -> jax.Array:
    x1, y1, x2, y2 = jnp.split(boxes, 4, axis=-1)
    return jnp.concatenate([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=-1)


def xywh_to_xyxy(boxes: jax.Array) -> jax.Array:
    cx, cy, w, h = jnp.split(boxes, 4, axis=-1)
    return jnp.concatenate([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def box_area(boxes: jax.Array) -> jax.Array:
    return jnp.clip(boxes[..., 2] - boxes[..., 0], 0) * jnp.clip(boxes[..., 3] - boxes[..., 1], 0)


def box_iou(a: jax.Array, b: jax.Array, eps: float = EPS) -> jax.Array:
    """IoU of every box of ``a`` (..., N, 4) with every box of ``b`` (..., M, 4): (..., N, M)."""
    lt = jnp.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = jnp.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = jnp.prod(jnp.clip(rb - lt, 0), axis=-1)
    union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
    return inter / (union + eps)


def ciou(box1: jax.Array, box2: jax.Array, eps: float = EPS) -> jax.Array:
    """Complete IoU of corresponding boxes (..., 4) -> (...): IoU minus the normalised squared
    centre distance minus an aspect-ratio consistency term.

    ``CIoU = IoU - rho^2 / c^2 - alpha v``, with rho the distance between centres, c the diagonal
    of the smallest enclosing box, ``v = 4 / pi^2 (atan(w2/h2) - atan(w1/h1))^2`` and
    ``alpha = v / (1 - IoU + v)`` held constant in the gradient (as the paper and ultralytics do).
    Identical boxes give 1; it can fall below 0 (down to -1) for far-apart boxes.
    """
    b1x1, b1y1, b1x2, b1y2 = jnp.moveaxis(box1, -1, 0)
    b2x1, b2y1, b2x2, b2y2 = jnp.moveaxis(box2, -1, 0)
    w1, h1 = b1x2 - b1x1, b1y2 - b1y1 + eps
    w2, h2 = b2x2 - b2x1, b2y2 - b2y1 + eps
    inter = jnp.clip(jnp.minimum(b1x2, b2x2) - jnp.maximum(b1x1, b2x1), 0) * jnp.clip(
        jnp.minimum(b1y2, b2y2) - jnp.maximum(b1y1, b2y1), 0
    )
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = jnp.maximum(b1x2, b2x2) - jnp.minimum(b1x1, b2x1)  # enclosing box width
    ch = jnp.maximum(b1y2, b2y2) - jnp.minimum(b1y1, b2y1)  # and height
    c2 = cw**2 + ch**2 + eps  # enclosing diagonal squared
    rho2 = ((b2x1 + b2x2 - b1x1 - b1x2) ** 2 + (b2y1 + b2y2 - b1y1 - b1y2) ** 2) / 4
    v = (4 / math.pi**2) * (jnp.arctan(w2 / h2) - jnp.arctan(w1 / h1)) ** 2
    alpha = jax.lax.stop_gradient(v / (1 - iou + v + eps))
    return iou - (rho2 / c2 + v * alpha)


def feature_sizes(
    height: int, width: int, strides: Sequence[int] = (8, 16, 32)
) -> list[tuple[int, int]]:
    """(h, w) of each detection level for an input of ``height`` x ``width`` pixels: the
    stride-2 convolutions with symmetric padding give ``ceil(H / s)``."""
    return [(-(-height // s), -(-width // s)) for s in strides]


def make_anchors(
    sizes: Sequence[tuple[int, int]], strides: Sequence[int], offset: float = 0.5
) -> tuple[jax.Array, jax.Array]:
    """Anchor points (A, 2) as (x, y) in *grid units* of their level, and their strides (A, 1).

    Levels are concatenated in order, each flattened row by row (``(h, w)`` row-major), which is
    the order of a (B, h, w, C) map reshaped to (B, h*w, C) - and of ultralytics' ``make_anchors``.
    """
    points, stride_of = [], []
    for (h, w), s in zip(sizes, strides, strict=True):
        ys, xs = jnp.meshgrid(jnp.arange(h) + offset, jnp.arange(w) + offset, indexing="ij")
        points.append(jnp.stack([xs, ys], axis=-1).reshape(-1, 2))
        stride_of.append(jnp.full((h * w, 1), float(s)))
    return jnp.concatenate(points).astype(jnp.float32), jnp.concatenate(stride_of)


def dist_to_box(distances: jax.Array, points: jax.Array) -> jax.Array:
    """(left, top, right, bottom) distances from ``points`` -> xyxy boxes (same units)."""
    lt, rb = jnp.split(distances, 2, axis=-1)
    return jnp.concatenate([points - lt, points + rb], axis=-1)


def box_to_dist(points: jax.Array, boxes: jax.Array, reg_max: int | None = None) -> jax.Array:
    """xyxy boxes -> distances (left, top, right, bottom) from ``points``; clipped to
    ``[0, reg_max - 0.01]`` when ``reg_max`` is given (ultralytics' ``bbox2dist(reg_max - 1)``
    passes 15 here, and DFL clips to 14.99)."""
    x1y1, x2y2 = jnp.split(boxes, 2, axis=-1)
    dist = jnp.concatenate([points - x1y1, x2y2 - points], axis=-1)
    return dist if reg_max is None else jnp.clip(dist, 0, reg_max - 0.01)


def dfl_decode(logits: jax.Array, reg_max: int = 16) -> jax.Array:
    """Distances from DFL logits (..., 4 * reg_max) laid out side-major (4 sides x reg_max bins):
    the expectation ``sum_i i * softmax(logits)_i`` of each side's distribution -> (..., 4)."""
    probs = jax.nn.softmax(logits.reshape(*logits.shape[:-1], 4, reg_max).astype(jnp.float32))
    return probs @ jnp.arange(reg_max, dtype=jnp.float32)


__all__ = [
    "box_area",
    "box_iou",
    "box_to_dist",
    "ciou",
    "dfl_decode",
    "dist_to_box",
    "feature_sizes",
    "make_anchors",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
]

"""The task-aligned assigner of YOLOv8 (TOOD, Feng et al., arXiv 2108.07755), over padded objects.

Which anchor points learn which object? For every object, the candidates are the anchor points
inside its box; each candidate gets the *alignment* ``t = s^alpha * u^beta`` of the predicted
score ``s`` of the object's class and the CIoU ``u`` of its predicted box with the object's box.
The ``topk`` best-aligned candidates of each object become its positives; an anchor claimed by
several objects keeps the one its predicted box overlaps most. A positive's classification target
is not 1 but its alignment, normalised so that each object's best anchor gets that object's best
IoU: the score is trained to predict localisation quality.

Written over a fixed maximum of M objects per image with a validity mask, so shapes are static
and the whole assignment is jittable and batched. It reproduces ultralytics 8.4's
``TaskAlignedAssigner`` (ultralytics/utils/tal.py) as ``v8DetectionLoss`` builds it (topk 10,
alpha 0.5, beta 6), including 8.4's enlargement of object boxes with a side below the middle
stride (16 px) to that size when looking for candidates - 8.3 has no such step. A test compares
the targets with the reference on random scenes.

Shape legend: B images, M objects per image (padded), A anchor points, C classes.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvision.ops.boxes import ciou, xywh_to_xyxy, xyxy_to_xywh


class Assignment(NamedTuple):
    labels: jax.Array  # (B, A) int32: class of the assigned object (0 where not foreground)
    boxes: jax.Array  # (B, A, 4): box of the assigned object, in the units given
    scores: jax.Array  # (B, A, C): soft classification targets (0 off the foreground)
    foreground: jax.Array  # (B, A) bool
    object_index: jax.Array  # (B, A) int32: which of the M objects (0 where not foreground)


def assign(
    pred_scores: jax.Array,
    pred_boxes: jax.Array,
    points: jax.Array,
    gt_labels: jax.Array,
    gt_boxes: jax.Array,
    gt_mask: jax.Array,
    *,
    num_classes: int,
    topk: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
    min_side: float = 16.0,
    eps: float = 1e-9,
) -> Assignment:
    """Targets for every anchor point.

    ``pred_scores`` (B, A, C) probabilities, ``pred_boxes`` (B, A, 4) xyxy and ``points`` (A, 2)
    in pixels; ``gt_labels`` (B, M), ``gt_boxes`` (B, M, 4) xyxy pixels and ``gt_mask`` (B, M)
    (True for a real object). No gradient flows through the assignment.
    """
    pred_scores, pred_boxes = jax.lax.stop_gradient((pred_scores, pred_boxes))
    b, a, _ = pred_scores.shape
    m = gt_boxes.shape[1]
    valid = gt_mask.astype(bool)[:, :, None]  # (B, M, 1)

    # Candidates: anchor points strictly inside the object's box (small boxes enlarged).
    xywh = xyxy_to_xywh(gt_boxes)
    small = (xywh[..., 2:] < min_side) & valid
    xywh = xywh.at[..., 2:].set(jnp.where(small, min_side, xywh[..., 2:]))
    grown = xywh_to_xyxy(xywh)
    lt, rb = grown[:, :, None, :2], grown[:, :, None, 2:]  # (B, M, 1, 2)
    inside = jnp.all((points - lt > eps) & (rb - points > eps), axis=-1)  # (B, M, A)
    candidate = inside & valid

    # Alignment of each candidate: score of the object's class^alpha x CIoU^beta.
    labels = jnp.clip(gt_labels, 0, num_classes - 1).astype(jnp.int32)
    scores = jnp.take_along_axis(
        jnp.swapaxes(pred_scores, 1, 2), labels[:, :, None], axis=1
    )  # (B, C, A) -> (B, M, A)
    overlaps = jnp.clip(ciou(gt_boxes[:, :, None, :], pred_boxes[:, None, :, :]), 0)  # (B, M, A)
    overlaps = jnp.where(candidate, overlaps, 0.0)
    align = jnp.where(candidate, scores**alpha * overlaps**beta, 0.0)

    # The topk best-aligned anchors of each object (an anchor listed twice counts for none).
    _, top = jax.lax.top_k(align, topk)  # (B, M, topk)
    top = jnp.where(valid, top, 0)
    bi = jnp.arange(b)[:, None, None]
    mi = jnp.arange(m)[None, :, None]
    count = jnp.zeros((b, m, a), jnp.int32).at[bi, mi, top].add(1)
    positive = (count == 1) & candidate  # (B, M, A)

    # An anchor claimed by several objects keeps the one its box overlaps most.
    claimed = jnp.sum(positive, axis=1, keepdims=True)  # (B, 1, A)
    best = jax.nn.one_hot(jnp.argmax(overlaps, axis=1), m, axis=1, dtype=bool)  # (B, M, A)
    positive = jnp.where(claimed > 1, best, positive)
    foreground = jnp.any(positive, axis=1)  # (B, A)
    index = jnp.argmax(positive, axis=1).astype(jnp.int32)  # (B, A)

    # Targets of the assigned objects.
    target_labels = jnp.take_along_axis(labels, index, axis=1)
    target_boxes = jnp.take_along_axis(gt_boxes, index[..., None], axis=1)
    one_hot = jax.nn.one_hot(target_labels, num_classes) * foreground[..., None]

    # Soft targets: alignment rescaled so each object's best anchor gets its best IoU.
    align = align * positive
    overlaps = overlaps * positive
    norm = align * jnp.max(overlaps, -1, keepdims=True) / (jnp.max(align, -1, keepdims=True) + eps)
    target_scores = one_hot * jnp.max(norm, axis=1)[..., None]  # (B, A, C)
    return Assignment(
        labels=jnp.where(foreground, target_labels, 0),
        boxes=target_boxes,
        scores=target_scores,
        foreground=foreground,
        object_index=jnp.where(foreground, index, 0),
    )


__all__ = ["Assignment", "assign"]

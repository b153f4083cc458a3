"""Non-maximum suppression inside ``jit``: static shapes, exact greedy semantics at any IoU.

Greedy NMS visits the boxes from the highest score down and keeps a box unless a box already kept
(of the same class, for class-aware NMS) overlaps it with IoU *greater* than the threshold - the
definition ``torchvision.ops.nms`` / ``batched_nms`` implement. Because a suppressed box cannot
suppress others, the result depends on the order of decisions; shortcuts that suppress with every
higher-scoring box (kept or not) or iterate a fixed number of rounds are only right when chains of
overlaps cannot occur, e.g. at high thresholds. Here the decisions are made one box at a time by
a ``lax.fori_loop`` over the candidates, each an O(K) vector operation on a precomputed K x K IoU
matrix: exact for any threshold, jittable, and fast for the K <= a few thousand candidates a
detector keeps after its confidence threshold.

Shapes stay static: the outputs are padded to ``max_det`` detections per image with a ``valid``
mask (False for padding).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvision.ops.boxes import box_iou


def nms_keep(
    boxes: jax.Array,
    scores: jax.Array,
    iou_threshold: float,
    *,
    classes: jax.Array | None = None,
    valid: jax.Array | None = None,
) -> jax.Array:
    """Which of ``boxes`` (K, 4) greedy NMS keeps: a (K,) boolean mask.

    ``scores`` (K,) need not be sorted. With ``classes`` (K,) boxes only suppress boxes of their
    own class (torchvision's ``batched_nms``). ``valid`` (K,) marks candidates (padding: False).
    """
    k = boxes.shape[0]
    order = jnp.argsort(-scores, stable=True)
    boxes, valid_sorted = boxes[order], (jnp.ones(k, bool) if valid is None else valid[order])
    overlaps = box_iou(boxes, boxes) > iou_threshold  # (K, K)
    if classes is not None:
        cls = classes[order]
        overlaps &= cls[:, None] == cls[None, :]
    earlier = jnp.arange(k)

    def decide(i: jax.Array, keep: jax.Array) -> jax.Array:
        # Box i survives unless a box kept before it overlaps it too much.
        suppressed = jnp.any(keep & overlaps[:, i] & (earlier < i))
        return keep.at[i].set(valid_sorted[i] & ~suppressed)

    keep_sorted = jax.lax.fori_loop(0, k, decide, jnp.zeros(k, bool))
    return jnp.zeros(k, bool).at[order].set(keep_sorted)


def non_max_suppression(
    boxes: jax.Array,
    scores: jax.Array,
    *,
    conf_threshold: float = 0.25,
    iou_threshold: float = 0.7,
    max_candidates: int = 1000,
    max_det: int = 300,
    class_aware: bool = True,
) -> dict[str, jax.Array]:
    """Detections of a batch from per-anchor ``boxes`` (B, A, 4) xyxy and class ``scores``
    (B, A, C) (probabilities).

    Per image: each anchor's best class and score; anchors below ``conf_threshold`` dropped; the
    ``max_candidates`` best kept (ultralytics' ``max_nms``, there 30000); greedy NMS at
    ``iou_threshold`` within each class (all classes together with ``class_aware=False``); the
    ``max_det`` best survivors. Returns padded arrays ``boxes`` (B, D, 4), ``scores`` (B, D),
    ``classes`` (B, D) int32, ``index`` (B, D) (the anchor of each detection, e.g. to gather mask
    coefficients) and ``valid`` (B, D) bool, D = ``max_det``, sorted by score.
    """

    def one_image(boxes: jax.Array, scores: jax.Array) -> dict[str, jax.Array]:
        best = jnp.max(scores, axis=-1)  # (A,)
        classes = jnp.argmax(scores, axis=-1).astype(jnp.int32)
        k = min(max_candidates, best.shape[0])
        top_scores, top = jax.lax.top_k(jnp.where(best > conf_threshold, best, -1.0), k)
        candidates = top_scores > conf_threshold
        keep = nms_keep(
            boxes[top],
            top_scores,
            iou_threshold,
            classes=classes[top] if class_aware else None,
            valid=candidates,
        )
        # Kept candidates first, in score order (top_k sorted them), then padding.
        d = min(max_det, k)
        chosen = jnp.argsort(~keep, stable=True)[:d]
        out = {
            "boxes": boxes[top][chosen],
            "scores": top_scores[chosen],
            "classes": classes[top][chosen],
            "index": top[chosen],
            "valid": keep[chosen],
        }
        out["scores"] = jnp.where(out["valid"], out["scores"], 0.0)
        if d < max_det:  # fewer anchors than max_det: pad
            out = {
                name: jnp.concatenate([x, jnp.zeros((max_det - d, *x.shape[1:]), x.dtype)])
                for name, x in out.items()
            }
        return out

    return jax.vmap(one_image)(boxes.astype(jnp.float32), scores.astype(jnp.float32))


__all__ = ["nms_keep", "non_max_suppression"]

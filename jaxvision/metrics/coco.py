"""COCO-style mean average precision (mAP) for detection and instance segmentation, in numpy.

This module re-derives, step by step, the number that ``pycocotools``' ``COCOeval`` prints as
``Average Precision (AP) @[ IoU=0.50:0.95 | area=all | maxDets=100 ]`` (``stats[0]``, "mAP")
and ``@[ IoU=0.50 ]`` (``stats[1]``, "mAP50"), and agrees with it to rounding (the tests compare
the two on synthetic scenes). pycocotools is not needed at run time.

1. Overlap: intersection over union
-----------------------------------
A detection and a ground-truth object overlap by their *intersection over union*,
``IoU = |A ∩ B| / |A ∪ B|``, a number in [0, 1]. For boxes (``iou_type="bbox"``, see
:func:`box_iou`) the sets are rectangles in continuous coordinates: a box ``(x1, y1, x2, y2)``
has area ``(x2 - x1) * (y2 - y1)``, with no "+1" pixel convention (COCOeval works on
``(x, y, w, h)`` boxes and computes ``w * h``, the same thing). For instance masks
(``iou_type="segm"``, see :func:`mask_iou`) the sets are the pixels of two binary masks.
A pair whose union is empty has IoU 0.

2. Matching, greedily by score
------------------------------
Evaluation is done per image and per class; classes never match each other. The detections of one
class in one image are sorted by score, highest first (a *stable* sort, so equal scores keep
their input order), and only the first ``max_dets`` (100, COCOeval's default for mAP) are kept.
Then, for an IoU threshold ``t``, each detection in turn takes the ground-truth object with the
highest IoU among those not yet taken, provided that IoU is ``>= t``: the detection is then a
*true positive* (TP), otherwise a *false positive* (FP). Being greedy, a high-scoring detection
can take an object that a later detection overlaps better. A second detection of an object that
is already taken (a duplicate) is a false positive. Ground-truth objects never taken are *misses*
(false negatives). If several free objects share the highest IoU, COCOeval takes the last of them
in input order; so does :func:`match_detections`.

This is done for ten thresholds, ``t = 0.50, 0.55, ..., 0.95`` (:data:`IOU_THRESHOLDS`): a
loose one that counts any reasonable localisation, up to a strict one that asks for an almost
exact outline.

3. Precision, recall and average precision (AP)
-----------------------------------------------
For one class and one threshold, the detections of *all* images are pooled and sorted by score
(stable again, images in the order they were added). Walking down that list, i.e. lowering a
confidence cut-off one detection at a time, gives after the first ``k`` detections

* precision ``p_k = TP_k / (TP_k + FP_k)``: what fraction of what was reported is right,
* recall ``r_k = TP_k / G``: what fraction of the ``G`` ground-truth objects was found.

Recall only grows along the list; precision zig-zags. AP summarises the precision-recall curve
in one number, COCO's way (the *101-point interpolated* AP):

a. make precision monotonically decreasing, replacing each ``p_k`` by ``max_{j >= k} p_j``
   (the best precision obtainable at this recall or more);
b. sample it at the 101 recall levels ``R = 0, 0.01, ..., 1`` (:data:`RECALL_THRESHOLDS`): at
   level ``r`` take the precision of the first point of the list whose recall is ``>= r``
   (``np.searchsorted(recall, R, side="left")``), and 0 where recall never gets that far;
c. AP is the mean of these 101 samples.

A perfect detector (every object found before any false positive) scores 1 (to within 1e-16:
COCOeval divides by ``TP + FP + eps``, and so does this module); missed objects cap the curve at
their recall level and score 0 above it. :func:`average_precision` does (a)-(c).

4. Averaging: mAP
-----------------
``mAP50`` (``"map50"``) is the AP at IoU 0.50 averaged over classes. ``mAP`` (``"map"``, the
COCO "AP") is the AP averaged over the ten thresholds and the classes. A class with no
ground-truth object in any image has no recall, so it has no AP and is left out of the averages,
as COCOeval does (its precision is -1 there, and means skip -1); its detections are simply
ignored. If no class has ground truth, the result is -1, COCOeval's value too.

What is not supported
---------------------
* Crowd annotations (``iscrowd=1``: regions that may hold many objects, where any number of
  detections can match without counting as false positives) and "ignore" flags: every ground
  truth object here is an ordinary one.
* Area ranges (small / medium / large objects): only COCO's "all" range, which is what mAP uses.
* Average recall (AR) and maxDets 1 / 10.

One COCOeval detail to know: its ``max_dets`` limit is per image *and per class* (it keeps the
100 best detections of each class in each image), not 100 per image over all classes. A model
whose post-processing keeps at most 300 boxes per image is therefore not cut further here
unless more than ``max_dets`` of them share a class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: IoU thresholds 0.50:0.05:0.95, the same floats as pycocotools (``np.linspace``, not ``arange``).
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
#: Recall levels 0:0.01:1 at which the interpolated precision is sampled (101 points).
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)


# ----------------------------------------------------------------------------------------------
# 1. IoU
# ----------------------------------------------------------------------------------------------


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), both ``(x1, y1, x2, y2)``.

    Returns an (N, M) float64 array; a pair whose union has zero area has IoU 0.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=(inter > 0) & (union > 0))


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every binary mask of ``a`` (N, H, W) with every mask of ``b`` (M, H, W).

    Nonzero pixels are "in". Returns an (N, M) float64 array; two empty masks have IoU 0.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"masks of different sizes: {a.shape[1:]} and {b.shape[1:]}")
    pixels = int(np.prod(a.shape[1:]))
    # Pixel counts by one matrix product; float32 sums of 0/1 are exact below 2**24 pixels.
    dtype = np.float32 if pixels < 2**24 else np.float64
    fa = (a.reshape(len(a), pixels) != 0).astype(dtype)
    fb = (b.reshape(len(b), pixels) != 0).astype(dtype)
    inter = (fa @ fb.T).astype(np.float64)
    union = fa.sum(1, dtype=np.float64)[:, None] + fb.sum(1, dtype=np.float64)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


# ----------------------------------------------------------------------------------------------
# 2. Matching
# ----------------------------------------------------------------------------------------------


def sort_by_score(scores: np.ndarray, max_dets: int | None = None) -> np.ndarray:
    """Indices of ``scores`` from highest to lowest (stable: ties keep input order), at most
    ``max_dets`` of them."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    return order if max_dets is None else order[:max_dets]


def match_detections(ious: np.ndarray, iou_thresholds: np.ndarray = IOU_THRESHOLDS) -> np.ndarray:
    """Greedy matching of one image and one class, at every IoU threshold.

    ``ious`` is (D, G): the detections (rows) already sorted by score, highest first, against
    the ground-truth objects (columns). Returns a (T, D) bool array, True where detection ``d``
    is a true positive at threshold ``t``: it took the free object of highest IoU, an IoU
    ``>= t`` (ties go to the last such object, as in COCOeval).
    """
    ious = np.asarray(ious, dtype=np.float64)
    num_dets, num_gt = ious.shape
    matched = np.zeros((len(iou_thresholds), num_dets), dtype=bool)
    if num_dets == 0 or num_gt == 0:
        return matched
    for t, threshold in enumerate(iou_thresholds):
        threshold = min(threshold, 1 - 1e-10)  # COCOeval's guard, so that t = 1 can still match
        taken = np.zeros(num_gt, dtype=bool)
        for d in range(num_dets):
            candidates = np.where(taken, -np.inf, ious[d])
            best = candidates.max()
            if best < threshold:
                continue  # a false positive at this threshold
            g = num_gt - 1 - int(np.argmax(candidates[::-1]))  # the last object with the best IoU
            taken[g] = True
            matched[t, d] = True
    return matched


# ----------------------------------------------------------------------------------------------
# 3. Precision, recall, AP
# ----------------------------------------------------------------------------------------------


def interpolated_precision(
    recall: np.ndarray, precision: np.ndarray, recall_thresholds: np.ndarray = RECALL_THRESHOLDS
) -> np.ndarray:
    """The precision-recall curve sampled at ``recall_thresholds`` (101 points by default).

    ``recall`` and ``precision`` are the values after each detection of the score-sorted list.
    Precision is first made monotonically decreasing (each value replaced by the maximum at this
    point or later); each recall level then takes the precision of the first point whose recall
    reaches it, or 0 if recall never does.
    """
    precision = np.maximum.accumulate(np.asarray(precision, dtype=np.float64)[::-1])[::-1]
    index = np.searchsorted(recall, recall_thresholds, side="left")
    reached = index < len(precision)
    sampled = np.zeros(len(recall_thresholds))
    sampled[reached] = precision[index[reached]]
    return sampled


def average_precision(
    scores: np.ndarray,
    matched: np.ndarray,
    num_gt: int,
    recall_thresholds: np.ndarray = RECALL_THRESHOLDS,
) -> np.ndarray:
    """101-point interpolated AP of one class, per IoU threshold: a (T,) array.

    ``scores`` (D,) are the class's detections pooled over all images (each image's list cut to
    ``max_dets``), ``matched`` (T, D) their true-positive flags from :func:`match_detections`,
    ``num_gt`` the class's ground-truth objects in all images (must be > 0).
    """
    if num_gt <= 0:
        raise ValueError("AP is undefined for a class without ground truth")
    if len(scores) == 0:  # objects but no detection: nothing recalled, AP 0 (as COCOeval)
        return np.zeros(np.shape(matched)[0] if np.ndim(matched) == 2 else len(IOU_THRESHOLDS))
    matched = np.asarray(matched, dtype=bool).reshape(-1, len(scores))
    order = sort_by_score(scores)  # stable: ties keep image order, as COCOeval's mergesort
    tp = np.cumsum(matched[:, order], axis=1, dtype=np.float64)
    fp = np.cumsum(~matched[:, order], axis=1, dtype=np.float64)
    recall = tp / num_gt
    precision = tp / (tp + fp + np.spacing(1))  # COCOeval's epsilon, kept for exact agreement
    return np.array(
        [
            interpolated_precision(r, p, recall_thresholds).mean()
            for r, p in zip(recall, precision, strict=True)
        ]
    )


# ----------------------------------------------------------------------------------------------
# 4. The evaluator
# ----------------------------------------------------------------------------------------------


class COCOEvaluator:
    """Accumulates images one at a time, then reports COCO mAP50 and mAP.

    >>> ev = COCOEvaluator(num_classes=3)
    >>> ev.add_image(pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes)  # doctest: +SKIP
    >>> ev.result()  # doctest: +SKIP
    {'map50': 1.0, 'map': 0.87}

    ``iou_type="bbox"`` compares boxes (``xyxy``); ``iou_type="segm"`` compares binary masks and
    names its results ``mask_map50`` / ``mask_map``. Classes are integers ``0 .. num_classes-1``.
    Only per-detection match flags and scores are kept, never masks, so memory stays small.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        iou_type: str = "bbox",
        max_dets: int = 100,
        class_names: Sequence[str] | None = None,
    ):
        if iou_type not in ("bbox", "segm"):
            raise ValueError(f"iou_type must be 'bbox' or 'segm', not {iou_type!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, not {num_classes}")
        if max_dets < 1:
            raise ValueError(f"max_dets must be >= 1, not {max_dets}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.iou_type = iou_type
        self.max_dets = int(max_dets)
        self.class_names = list(class_names) if class_names is not None else None
        self.iou_thresholds = IOU_THRESHOLDS
        self.recall_thresholds = RECALL_THRESHOLDS
        self.reset()

    def reset(self) -> None:
        """Forget every image added so far."""
        self.num_images = 0
        self._scores: list[list[np.ndarray]] = [[] for _ in range(self.num_classes)]
        self._matched: list[list[np.ndarray]] = [[] for _ in range(self.num_classes)]
        self._num_gt = np.zeros(self.num_classes, dtype=np.int64)

    # -- adding images ------------------------------------------------------------------------

    def _classes(self, classes: Any, what: str) -> np.ndarray:
        classes = np.asarray(classes).reshape(-1)
        as_int = classes.astype(np.int64)
        if np.any(as_int != classes) or np.any(as_int < 0) or np.any(as_int >= self.num_classes):
            raise ValueError(f"{what} must be integers in [0, {self.num_classes}), got {classes}")
        return as_int

    def add_image(
        self,
        pred_boxes: Any,
        pred_scores: Any,
        pred_classes: Any,
        gt_boxes: Any,
        gt_classes: Any,
        *,
        pred_masks: Any = None,
        gt_masks: Any = None,
    ) -> None:
        """Adds one image: K detections (boxes ``xyxy``, scores, classes) and G ground-truth
        objects (boxes, classes); K or G may be 0. For ``iou_type="segm"`` also ``pred_masks``
        (K, H, W) and ``gt_masks`` (G, H, W), binary; the boxes are then not used."""
        scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
        classes = self._classes(pred_classes, "pred_classes")
        targets = self._classes(gt_classes, "gt_classes")
        if self.iou_type == "bbox":
            dets = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
            gts = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
            iou_fn = box_iou
        else:
            if pred_masks is None or gt_masks is None:
                raise ValueError("iou_type='segm' needs pred_masks and gt_masks")
            dets, gts = np.asarray(pred_masks), np.asarray(gt_masks)
            iou_fn = mask_iou
        if not len(dets) == len(scores) == len(classes):
            raise ValueError(
                f"{len(dets)} detections, {len(scores)} scores and {len(classes)} classes"
            )
        if len(gts) != len(targets):
            raise ValueError(f"{len(gts)} ground-truth objects and {len(targets)} classes")

        for c in np.union1d(classes, targets):
            det_index = np.flatnonzero(classes == c)
            det_index = det_index[sort_by_score(scores[det_index], self.max_dets)]
            gt_index = np.flatnonzero(targets == c)
            ious = iou_fn(dets[det_index], gts[gt_index])
            self._scores[c].append(scores[det_index])
            self._matched[c].append(match_detections(ious, self.iou_thresholds))
            self._num_gt[c] += len(gt_index)
        self.num_images += 1

    def update(self, predictions: Mapping[str, Any], batch: Mapping[str, Any]) -> None:
        """The engine's hook: adds every real image (``batch["mask"] == 1``) of a padded batch.

        ``predictions``: ``boxes`` (B, D, 4), ``scores`` (B, D), ``classes`` (B, D), ``valid``
        (B, D) and, for ``segm``, ``masks`` (B, D, H, W). ``batch``: ``boxes`` (B, M, 4),
        ``classes`` (B, M), ``box_mask`` (B, M) (1 for a real object), ``mask`` (B,) and, for
        ``segm``, ``masks`` (B, M, H, W). Only valid detections and real objects are used.
        """
        segm = self.iou_type == "segm"
        p_keys = ("boxes", "scores", "classes", "valid") + (("masks",) if segm else ())
        b_keys = ("boxes", "classes", "box_mask", "mask") + (("masks",) if segm else ())
        for name, source, keys in (("predictions", predictions, p_keys), ("batch", batch, b_keys)):
            missing = [k for k in keys if k not in source]
            if missing:
                raise KeyError(f"{name} lacks {missing} (has {sorted(source)})")
        pred = {k: np.asarray(predictions[k]) for k in p_keys}
        true = {k: np.asarray(batch[k]) for k in b_keys}
        for i in np.flatnonzero(true["mask"].reshape(-1) != 0):
            keep = pred["valid"][i] != 0
            real = true["box_mask"][i] != 0
            self.add_image(
                pred["boxes"][i][keep],
                pred["scores"][i][keep],
                pred["classes"][i][keep],
                true["boxes"][i][real],
                true["classes"][i][real],
                pred_masks=pred["masks"][i][keep] if segm else None,
                gt_masks=true["masks"][i][real] if segm else None,
            )

    # -- results ------------------------------------------------------------------------------

    def class_ap(self) -> dict[int, np.ndarray]:
        """``{class index: AP per IoU threshold (T,)}`` for every class with ground truth."""
        out = {}
        for c in range(self.num_classes):
            if self._num_gt[c] == 0:
                continue  # no recall without ground truth: left out, as in COCOeval
            t = len(self.iou_thresholds)
            scores = np.concatenate(self._scores[c]) if self._scores[c] else np.zeros(0)
            matched = (
                np.concatenate(self._matched[c], axis=1) if self._matched[c] else np.zeros((t, 0))
            )
            out[c] = average_precision(
                scores, matched, int(self._num_gt[c]), self.recall_thresholds
            )
        return out

    def per_class(self) -> dict[str | int, tuple[float, float]]:
        """``{class name (or index): (AP50, AP@[.5:.95])}`` for every class with ground truth."""
        names = self.class_names
        return {
            (names[c] if names else c): (float(ap[0]), float(ap.mean()))
            for c, ap in self.class_ap().items()
        }

    def result(self) -> dict[str, float]:
        """``{"map50", "map"}`` (``{"mask_map50", "mask_map"}`` for segm), floats; -1 if no class
        has ground truth."""
        aps = list(self.class_ap().values())
        prefix = "mask_" if self.iou_type == "segm" else ""
        if not aps:
            return {f"{prefix}map50": -1.0, f"{prefix}map": -1.0}
        aps = np.stack(aps)  # (classes with gt, T)
        return {f"{prefix}map50": float(aps[:, 0].mean()), f"{prefix}map": float(aps.mean())}


__all__ = [
    "COCOEvaluator",
    "IOU_THRESHOLDS",
    "RECALL_THRESHOLDS",
    "average_precision",
    "box_iou",
    "interpolated_precision",
    "mask_iou",
    "match_detections",
    "sort_by_score",
]

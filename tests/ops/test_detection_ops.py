"""Box ops, DFL decoding, NMS and the task-aligned assigner: by hand, and against torchvision's
NMS and ultralytics' CIoU and TaskAlignedAssigner."""

from __future__ import annotations

import math
import os

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxvision.ops.assigner import assign
from jaxvision.ops.boxes import (
    box_iou,
    box_to_dist,
    ciou,
    dfl_decode,
    dist_to_box,
    feature_sizes,
    make_anchors,
)
from jaxvision.ops.nms import nms_keep, non_max_suppression


def test_dfl_decoding_of_known_distributions():
    r = 16
    logits = np.full((4, r), -1e9, np.float32)
    logits[0, 3] = 0  # all mass on bin 3 -> 3
    logits[1, [2, 5]] = 0  # half on 2, half on 5 -> 3.5
    logits[2] = 0  # uniform -> 7.5
    logits[3, 15] = 0  # the last bin -> 15
    np.testing.assert_allclose(dfl_decode(logits.reshape(1, 4 * r)), [[3.0, 3.5, 7.5, 15.0]])


def test_ciou_by_hand():
    a = np.array([0.0, 0.0, 10.0, 10.0], np.float32)
    assert float(ciou(a, a)) == pytest.approx(1.0, abs=1e-6)  # identical
    # Disjoint, same shape: IoU 0, centres 20 apart, enclosing box 30 x 10 -> -400 / 1000.
    b = np.array([20.0, 0.0, 30.0, 10.0], np.float32)
    assert float(ciou(a, b)) == pytest.approx(-400 / 1000, abs=1e-5)
    # Nested, same centre and aspect: IoU 25/100, no distance or aspect penalty.
    c = np.array([2.5, 2.5, 7.5, 7.5], np.float32)
    assert float(ciou(a, c)) == pytest.approx(0.25, abs=1e-5)
    # Partly overlapping, different aspect: the formula term by term.
    d = np.array([5.0, 0.0, 15.0, 20.0], np.float32)
    iou = 50 / (100 + 200 - 50)
    rho2, c2 = (5**2 + 5**2), (15**2 + 20**2)
    v = 4 / math.pi**2 * (math.atan(10 / 20) - math.atan(10 / 10)) ** 2
    expected = iou - rho2 / c2 - v * v / (1 - iou + v)
    assert float(ciou(a, d)) == pytest.approx(expected, abs=1e-5)


@given(
    st.floats(0, 100),
    st.floats(0, 100),
    st.floats(1, 50),
    st.floats(1, 50),
    st.floats(0.5, 5),
    st.floats(0.5, 5),
)
def test_box_distance_round_trip(x, y, w, h, px, py):
    box = np.array([x, y, x + w, y + h], np.float32)
    point = np.array([x + w * px / 6, y + h * py / 6], np.float32)  # a point inside the box
    np.testing.assert_allclose(dist_to_box(box_to_dist(point, box), point), box, atol=1e-4)


def test_anchor_points_are_cell_centres_level_by_level():
    sizes = feature_sizes(64, 96)
    assert sizes == [(8, 12), (4, 6), (2, 3)]
    points, strides = make_anchors(sizes, (8, 16, 32))
    assert points.shape == (8 * 12 + 4 * 6 + 2 * 3, 2)
    np.testing.assert_array_equal(points[:2], [[0.5, 0.5], [1.5, 0.5]])  # row by row
    np.testing.assert_array_equal(points[12], [0.5, 1.5])
    assert float(strides[96, 0]) == 16 and float(strides[-1, 0]) == 32


def test_nms_keeps_a_chain_correctly():
    # b overlaps a (suppressed); c overlaps b but not a: c survives because b was suppressed.
    boxes = np.array([[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    keep = nms_keep(boxes, scores, 0.3)
    np.testing.assert_array_equal(keep, [True, False, True])
    # Another class does not suppress.
    keep = nms_keep(boxes, scores, 0.3, classes=np.array([0, 1, 1]))
    np.testing.assert_array_equal(keep, [True, True, False])


def test_non_max_suppression_pads_to_max_det():
    boxes = np.array([[[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]]], np.float32)
    scores = np.array([[[0.9, 0.1], [0.8, 0.05], [0.2, 0.6]]], np.float32)
    out = non_max_suppression(boxes, scores, conf_threshold=0.25, iou_threshold=0.5, max_det=5)
    assert out["boxes"].shape == (1, 5, 4) and out["valid"].shape == (1, 5)
    np.testing.assert_array_equal(out["valid"][0], [True, True, False, False, False])
    np.testing.assert_array_equal(out["classes"][0, :2], [0, 1])
    np.testing.assert_array_equal(out["index"][0, :2], [0, 2])
    np.testing.assert_allclose(out["scores"][0, :2], [0.9, 0.6])


@pytest.mark.reference
@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
def test_nms_equals_torchvision_batched_nms(iou_threshold):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    rng = np.random.default_rng(0)
    fn = jax.jit(nms_keep, static_argnums=2)
    for _ in range(10):
        xy = rng.uniform(0, 100, (300, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (300, 2))], 1).astype(np.float32)
        scores = rng.uniform(0, 1, 300).astype(np.float32)
        classes = rng.integers(0, 3, 300)
        ref = torchvision.ops.batched_nms(
            torch.tensor(boxes), torch.tensor(scores), torch.tensor(classes), iou_threshold
        ).numpy()
        ours = np.flatnonzero(fn(boxes, scores, iou_threshold, classes=classes))
        np.testing.assert_array_equal(ours[np.argsort(-scores[ours])], ref)


@pytest.fixture(scope="module")
def ultralytics():
    os.environ.setdefault("YOLO_OFFLINE", "1")
    pytest.importorskip("torch")
    return pytest.importorskip("ultralytics")


@pytest.mark.reference
def test_ciou_equals_ultralytics(ultralytics):
    import torch
    from ultralytics.utils.metrics import bbox_iou

    rng = np.random.default_rng(1)
    a, b = (rng.uniform(0, 50, (500, 2)) for _ in range(2))
    a = np.concatenate([a, a + rng.uniform(1, 30, (500, 2))], 1).astype(np.float32)
    b = np.concatenate([b, b + rng.uniform(1, 30, (500, 2))], 1).astype(np.float32)
    ref = bbox_iou(torch.tensor(a), torch.tensor(b), xywh=False, CIoU=True).squeeze(-1).numpy()
    np.testing.assert_allclose(ciou(a, b), ref, atol=1e-6)
    np.testing.assert_allclose(box_iou(a[:5], a[:5]).diagonal(), 1.0, atol=1e-6)


def _scene(rng, points, batch=3, max_objects=6, num_classes=5, size=(128, 96)):
    """Random objects (some in overlapping twins) and predictions near them. Every candidate
    anchor gets a positive alignment, so the reference's choice among tied zero metrics (which
    torch.topk leaves unspecified) never matters."""
    height, width = size
    gt = np.zeros((batch, max_objects, 4), np.float32)
    labels = np.zeros((batch, max_objects), np.int32)
    mask = np.zeros((batch, max_objects), bool)
    for b in range(batch):
        j = 0
        for _ in range(rng.integers(0, 4)):
            xy = rng.uniform(0, [width - 30, height - 30])
            wh = rng.uniform(20, 60, 2)
            box = np.array([*xy, min(xy[0] + wh[0], width), min(xy[1] + wh[1], height)])
            for _ in range(rng.integers(1, 3)):  # an object and maybe an overlapping twin
                if j < max_objects:
                    gt[b, j] = box + rng.uniform(-3, 3, 4)
                    labels[b, j], mask[b, j] = rng.integers(0, num_classes), True
                    j += 1
    wh = rng.uniform(5, 40, (batch, len(points), 2))
    pred = np.concatenate([points - wh / 2, points + wh / 2], -1)
    for b, j in zip(*np.nonzero(mask), strict=True):
        x1, y1, x2, y2 = gt[b, j]
        inside = (
            (points[:, 0] > x1) & (points[:, 0] < x2) & (points[:, 1] > y1) & (points[:, 1] < y2)
        )
        pred[b, inside] = gt[b, j] + rng.uniform(-4, 4, (inside.sum(), 4))
    scores = rng.uniform(0.05, 0.95, (batch, len(points), num_classes))
    return scores.astype(np.float32), pred.astype(np.float32), labels, gt, mask


@pytest.mark.reference
def test_assigner_equals_ultralytics_task_aligned_assigner(ultralytics):
    import torch
    from ultralytics.utils.tal import TaskAlignedAssigner

    points, strides = make_anchors(feature_sizes(128, 96), (8, 16, 32))
    points = np.asarray(points * strides)
    ref_assigner = TaskAlignedAssigner(
        topk=10, num_classes=5, alpha=0.5, beta=6.0, stride=[8.0, 16.0, 32.0]
    )
    fn = jax.jit(assign, static_argnames=("num_classes",))
    rng = np.random.default_rng(0)
    for _ in range(10):
        scores, pred, labels, gt, mask = _scene(rng, points)
        ref = ref_assigner(
            torch.tensor(scores),
            torch.tensor(pred),
            torch.tensor(points),
            torch.tensor(labels[..., None]).float(),
            torch.tensor(gt),
            torch.tensor(mask[..., None]).float(),
        )
        ours = fn(scores, pred, points, labels, gt, mask, num_classes=5)
        fg = ref[3].numpy()
        np.testing.assert_array_equal(ours.foreground, fg)
        np.testing.assert_allclose(ours.scores, ref[2].numpy(), atol=1e-5)
        np.testing.assert_array_equal(np.asarray(ours.object_index)[fg], ref[4].numpy()[fg])
        np.testing.assert_array_equal(np.asarray(ours.labels)[fg], ref[0].numpy()[fg])
        np.testing.assert_allclose(np.asarray(ours.boxes)[fg], ref[1].numpy()[fg])

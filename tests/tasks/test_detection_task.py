"""The detection / segmentation task: its losses equal ultralytics' v8DetectionLoss and
v8SegmentationLoss; padding images change nothing; predictions and evaluation are well formed."""

from __future__ import annotations

import contextlib
import io
import os
import types

import jax
import numpy as np
import pytest

from jaxvision.ops.boxes import dfl_decode, feature_sizes
from jaxvision.tasks import DetectionTask
from jaxvision.tasks.detection import detection_loss

C, S, M = 3, 128, 5


def _scene(rng, counts, batch=None):
    """Random raw outputs of a 128 px, 3-class model and padded objects (with box masks)."""
    b = len(counts)
    a = sum(h * w for h, w in feature_sizes(S, S))
    box_logits = rng.normal(0, 2, (b, a, 64)).astype(np.float32)
    outputs = {
        "boxes": box_logits,
        "distances": np.asarray(dfl_decode(box_logits)),
        "scores": rng.normal(-2, 2, (b, a, C)).astype(np.float32),
        "mask_coefficients": rng.normal(0, 1, (b, a, 32)).astype(np.float32),
        "proto": rng.normal(0, 1, (b, S // 4, S // 4, 32)).astype(np.float32),
    }
    boxes = np.zeros((b, M, 4), np.float32)
    classes = np.zeros((b, M), np.int32)
    box_mask = np.zeros((b, M), np.float32)
    masks = np.zeros((b, M, S // 4, S // 4), np.uint8)
    for i, n in enumerate(counts):
        for j in range(n):
            xy = rng.uniform(0, S - 40, 2)
            boxes[i, j] = [*xy, *(xy + rng.uniform(6, 40, 2))]
            classes[i, j], box_mask[i, j] = rng.integers(0, C), 1
            x1, y1, x2, y2 = (boxes[i, j] / 4).astype(int)
            masks[i, j, y1 : y2 + 1, x1 : x2 + 1] = (
                rng.uniform(size=(y2 - y1 + 1, x2 - x1 + 1)) < 0.8
            )
    batch = {
        "image": np.zeros((b, S, S, 3), np.float32),
        "boxes": boxes,
        "classes": classes,
        "box_mask": box_mask,
        "masks": masks,
        "mask": np.ones(b, np.float32),
    }
    return outputs, batch


@pytest.fixture(scope="module")
def reference():
    os.environ.setdefault("YOLO_OFFLINE", "1")
    torch = pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel
    from ultralytics.utils.loss import v8DetectionLoss, v8SegmentationLoss

    losses = {}
    for seg, cls, yaml, loss in (
        (False, DetectionModel, "yolov8n.yaml", v8DetectionLoss),
        (True, SegmentationModel, "yolov8n-seg.yaml", v8SegmentationLoss),
    ):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            model = cls(yaml, nc=C, verbose=False)
        model.args = types.SimpleNamespace(box=7.5, cls=0.5, dfl=1.5, overlap_mask=False)
        losses[seg] = loss(model)
    return torch, losses


def _reference_loss(torch, criterion, outputs, batch, seg):
    feats = [torch.zeros(len(batch["mask"]), 1, h, w) for h, w in feature_sizes(S, S)]
    t = lambda x: torch.tensor(np.asarray(x))
    preds = {
        "boxes": t(outputs["boxes"]).permute(0, 2, 1),
        "scores": t(outputs["scores"]).permute(0, 2, 1),
        "feats": feats,
    }
    if seg:
        preds["mask_coefficient"] = t(outputs["mask_coefficients"]).permute(0, 2, 1)
        preds["proto"] = t(outputs["proto"]).permute(0, 3, 1, 2)
    real = np.argwhere(batch["box_mask"] > 0)
    boxes = batch["boxes"][real[:, 0], real[:, 1]]
    xywh = np.stack(
        [
            (boxes[:, 0] + boxes[:, 2]) / 2 / S,
            (boxes[:, 1] + boxes[:, 3]) / 2 / S,
            (boxes[:, 2] - boxes[:, 0]) / S,
            (boxes[:, 3] - boxes[:, 1]) / S,
        ],
        -1,
    ).reshape(-1, 4)
    ref_batch = {
        "batch_idx": t(real[:, 0]).float(),
        "cls": t(batch["classes"][real[:, 0], real[:, 1]]).float()[:, None],
        "bboxes": t(xywh).float(),
    }
    if seg:
        ref_batch["masks"] = t(batch["masks"][real[:, 0], real[:, 1]]).float()
    total, _ = criterion(preds, ref_batch)
    return float(total.sum())


@pytest.mark.reference
@pytest.mark.parametrize("seg", [False, True], ids=["detection", "segmentation"])
def test_losses_equal_ultralytics(reference, seg):
    torch, losses = reference
    rng = np.random.default_rng(0)
    fn = jax.jit(lambda o, b: detection_loss(o, b, num_classes=C, segmentation=seg)[0])
    for counts in ([3, 1], [0, 2], [5, 5], [1, 0], [0, 0]):  # incl. images with no objects
        outputs, batch = _scene(rng, counts)
        ours = float(fn(outputs, batch))
        ref = _reference_loss(torch, losses[seg], outputs, batch, seg)
        assert ours == pytest.approx(ref, rel=1e-4, abs=1e-5), counts


def test_padding_images_change_nothing():
    rng = np.random.default_rng(1)
    outputs, batch = _scene(rng, [2, 3])
    task = DetectionTask(num_classes=C, image_size=S, max_objects=M, segmentation=True)
    loss = jax.jit(task.loss)
    _, metrics = loss(outputs, batch)
    padded_out, padded = _scene(np.random.default_rng(2), [2, 3, 4])
    padded_out = {k: np.concatenate([v, padded_out[k][2:]]) for k, v in outputs.items()}
    padded = {k: np.concatenate([v, padded[k][2:]]) for k, v in batch.items()}
    padded["mask"][2] = 0  # the third image is padding
    padded["box_mask"][2] = 0  # whose objects the loader zeroes too
    _, padded_metrics = loss(padded_out, padded)
    mean = lambda m, name: float(m[name][0] / m[name][1])
    for name in ("box", "cls", "dfl", "seg", "loss"):
        assert mean(padded_metrics, name) == pytest.approx(mean(metrics, name), rel=1e-5), name


def test_predictions_are_padded_detections_and_masks():
    rng = np.random.default_rng(3)
    outputs, batch = _scene(rng, [2, 1])
    outputs["scores"][0, 7, 1] = 8.0  # one confident anchor
    task = DetectionTask(num_classes=C, image_size=S, max_objects=M, segmentation=True, max_det=20)
    out = jax.jit(task.predict)(outputs, batch)
    assert out["boxes"].shape == (2, 20, 4) and out["masks"].shape == (2, 20, S // 4, S // 4)
    assert bool(out["valid"][0, 0]) and int(out["classes"][0, 0]) == 1
    assert int(out["index"][0, 0]) == 7
    assert not np.any(np.asarray(out["masks"])[~np.asarray(out["valid"])])
    evaluator = task.evaluator()
    evaluator.update(jax.device_get(out), batch)
    result = evaluator.result()
    assert set(result) == {"map50", "map", "mask_map50", "mask_map"}
    assert all(0 <= v <= 1 for v in result.values())

"""Object detection and instance segmentation with YOLOv8's losses, NMS and COCO mAP.

A batch holds letterboxed square images and a fixed maximum of M objects per image, padded, with
a mask (static shapes for jit and sharding)::

    image     (B, S, S, 3) float32 in [0, 1]      boxes     (B, M, 4) xyxy pixels
    classes   (B, M) int32                        box_mask  (B, M) 1 for a real object
    masks     (B, M, S/4, S/4) uint8 (segmentation only)
    mask      (B,) 1 for a real image, 0 for the padding of a last evaluation batch

The model (:class:`jaxvision.models.yolov8_detect.YOLOv8Detector`) returns per-anchor outputs;
the loss is ultralytics' ``v8DetectionLoss`` / ``v8SegmentationLoss`` (ultralytics 8.4), written
over the padded objects:

1. the task-aligned assigner (:mod:`jaxvision.ops.assigner`: topk 10, alpha 0.5, beta 6) picks
   each object's anchor points and soft class targets;
2. **cls**: binary cross-entropy of every anchor's class logits against the soft targets, summed
   and divided by the sum of the targets (the number of "effective" positives);
3. **box**: ``1 - CIoU`` of each positive's decoded box with its object's box, weighted by the
   positive's target score;
4. **dfl**: Distribution Focal Loss - cross-entropy of each side's 16-bin distribution against
   the two bins around the true distance, linearly weighted (Li et al., arXiv 2006.04388);
5. **seg** (segmentation): for each positive, the per-pixel BCE of its mask (coefficients x
   prototypes) against its object's mask, inside the object's box, divided by the box's area
   (as a fraction of the image), averaged over positives - ultralytics with ``overlap_mask=False``
   (one mask per object; ultralytics' default merges them into one index map per image, which
   only differs where objects overlap).

Gains box 7.5, cls 0.5, dfl 1.5 (and seg = box gain), as ultralytics' default hyperparameters;
the optimised scalar is their sum times the batch size, exactly what ultralytics back-propagates
(so its learning rates and gradient clipping at 10 carry over). Images of the padding (``mask`` 0)
contribute nothing.

Evaluation: predictions are decoded, filtered by ``conf_threshold`` (0.001, as ultralytics
validates) and reduced by class-aware greedy NMS at ``iou_threshold`` (0.7) inside ``jit`` to at
most ``max_det`` (300) per image; a host-side COCO evaluator reports ``map50`` and ``map`` (box)
and, for segmentation, ``mask_map50`` and ``mask_map`` (masks compared at 1/4 resolution, where
the data set's masks are).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvision.data import DatasetError, DetectionSource, ShapesDataset, YoloDataset
from jaxvision.errors import ConfigError
from jaxvision.metrics import COCOEvaluator
from jaxvision.models.yolov8_detect import REG_MAX, anchors_for
from jaxvision.ops.assigner import assign
from jaxvision.ops.boxes import box_to_dist, ciou, dist_to_box
from jaxvision.ops.nms import non_max_suppression
from jaxvision.tasks.base import Batch, Metrics, Task

BOX_GAIN, CLS_GAIN, DFL_GAIN = 7.5, 0.5, 1.5  # ultralytics/cfg/default.yaml: box, cls, dfl
MASK_RATIO = 4  # prototypes and data-set masks at 1/4 of the input
TOPK = 10  # v8DetectionLoss: TaskAlignedAssigner(topk=10, ...)
OPTIONS = ("max_objects", "augment", "mosaic", "close_mosaic", "conf_threshold", "iou_threshold")


# ------------------------------------------------------------------------------------- losses


def _dfl(logits: jax.Array, target: jax.Array, reg_max: int) -> jax.Array:
    """Distribution Focal Loss per anchor: (B, A, 4R) logits, (B, A, 4) distances -> (B, A)."""
    target = jnp.clip(target, 0, reg_max - 1 - 0.01)
    left = jnp.floor(target).astype(jnp.int32)
    w_left = left + 1 - target
    logp = jax.nn.log_softmax(logits.reshape(*logits.shape[:2], 4, reg_max), axis=-1)
    take = lambda i: jnp.take_along_axis(logp, i[..., None], axis=-1)[..., 0]
    return -jnp.mean(take(left) * w_left + take(left + 1) * (1 - w_left), axis=-1)


def _crop(loss: jax.Array, boxes: jax.Array) -> jax.Array:
    """Zero ``loss`` (..., h, w) outside ``boxes`` (..., 4) xyxy in its pixel units (as
    ultralytics' ``crop_mask``: columns x1 <= c < x2, rows y1 <= r < y2)."""
    h, w = loss.shape[-2:]
    cols, rows = jnp.arange(w, dtype=jnp.float32), jnp.arange(h, dtype=jnp.float32)
    x1, y1, x2, y2 = (boxes[..., i, None] for i in range(4))
    inside_x = (cols >= x1) & (cols < x2)  # (..., w)
    inside_y = (rows >= y1) & (rows < y2)  # (..., h)
    return loss * inside_y[..., :, None] * inside_x[..., None, :]


def detection_loss(
    outputs: dict[str, jax.Array],
    batch: Batch,
    *,
    num_classes: int,
    reg_max: int = REG_MAX,
    segmentation: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(scalar to minimise, {"box", "cls", "dfl"[, "seg"]} gained components) of a batch; the
    scalar is the components' sum times the number of images, as ultralytics'."""
    images = batch["image"]
    height, width = images.shape[1:3]
    image_mask = batch["mask"].astype(jnp.float32)
    points, strides = anchors_for(height, width)  # (A, 2), (A, 1): stride units
    scores = outputs["scores"].astype(jnp.float32)  # (B, A, K) logits
    pred_boxes = dist_to_box(outputs["distances"], points)  # (B, A, 4) stride units
    gt_mask = (batch["box_mask"] > 0) & (image_mask[:, None] > 0)
    targets = assign(
        jax.nn.sigmoid(scores),
        pred_boxes * strides,
        points * strides,
        batch["classes"],
        batch["boxes"].astype(jnp.float32),
        gt_mask,
        num_classes=num_classes,
        topk=TOPK,
    )
    target_sum = jnp.maximum(jnp.sum(targets.scores), 1.0)
    bce = optax.sigmoid_binary_cross_entropy(scores, targets.scores)
    cls = jnp.sum(bce * image_mask[:, None, None]) / target_sum

    weight = jnp.sum(targets.scores, axis=-1) * targets.foreground  # (B, A)
    target_boxes = targets.boxes / strides  # stride units
    box = jnp.sum((1.0 - ciou(pred_boxes, target_boxes)) * weight) / target_sum
    dist = box_to_dist(points, target_boxes, reg_max - 1)
    dfl = jnp.sum(_dfl(outputs["boxes"].astype(jnp.float32), dist, reg_max) * weight) / target_sum
    parts = {"box": box * BOX_GAIN, "cls": cls * CLS_GAIN, "dfl": dfl * DFL_GAIN}
    if segmentation:
        parts["seg"] = _mask_loss(outputs, batch, targets, height, width) * BOX_GAIN
    return sum(parts.values()) * images.shape[0], parts


def _mask_loss(outputs, batch, targets, height: int, width: int) -> jax.Array:
    """Mean over positive anchors of the box-cropped mask BCE divided by the box's area."""
    proto = outputs["proto"]  # (B, h, w, P)
    masks = batch["masks"].astype(jnp.float32)  # (B, M, mh, mw)
    mh, mw = masks.shape[-2:]
    if proto.shape[1:3] != (mh, mw):  # ultralytics 8.4 resamples the prototypes to the masks
        proto = jax.image.resize(proto, (proto.shape[0], mh, mw, proto.shape[-1]), "bilinear")
    # Positives, at most TOPK per object: gather them into a static (B, K) list.
    k = batch["boxes"].shape[1] * TOPK
    index = jax.vmap(lambda fg: jnp.nonzero(fg, size=k, fill_value=0)[0])(targets.foreground)
    valid = jnp.take_along_axis(targets.foreground, index, axis=1)  # (B, K)
    coefficients = jnp.take_along_axis(outputs["mask_coefficients"], index[..., None], axis=1)
    logits = jnp.einsum("bkp,bhwp->bkhw", coefficients, proto)  # (B, K, mh, mw)
    objects = jnp.take_along_axis(targets.object_index, index, axis=1)  # (B, K)
    gt = jnp.take_along_axis(masks, objects[:, :, None, None], axis=1)  # (B, K, mh, mw)
    boxes = jnp.take_along_axis(targets.boxes, index[..., None], axis=1)  # (B, K, 4) pixels
    normalised = boxes / jnp.array([width, height, width, height], jnp.float32)
    area = (normalised[..., 2] - normalised[..., 0]) * (normalised[..., 3] - normalised[..., 1])
    in_mask_units = normalised * jnp.array([mw, mh, mw, mh], jnp.float32)
    loss = _crop(optax.sigmoid_binary_cross_entropy(logits, gt), in_mask_units)
    per_anchor = jnp.mean(loss, axis=(-2, -1)) / jnp.where(valid, area, 1.0)
    count = jnp.sum(targets.foreground)
    return jnp.where(count > 0, jnp.sum(per_anchor * valid) / jnp.maximum(count, 1), 0.0)


# --------------------------------------------------------------------------------------- task


class _Evaluators:
    """Box mAP, and mask mAP for segmentation, as one host-side evaluator."""

    def __init__(self, evaluators: list[COCOEvaluator]):
        self.evaluators = evaluators

    def update(self, predictions: Any, batch: Batch) -> None:
        for e in self.evaluators:
            e.update(predictions, batch)

    def result(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for e in self.evaluators:
            out.update(e.result())
        return out

    def report(self) -> list[str]:
        """Per-class AP as a small table (``jaxvision eval`` prints it to stderr)."""
        lines = []
        for e in self.evaluators:
            kind = "mask" if e.iou_type == "segm" else "box"
            lines.append(f"{'class':<16} {kind} AP50   {kind} AP50-95")
            for name, (ap50, ap) in e.per_class().items():
                lines.append(f"{name!s:<16} {ap50:9.4f}   {ap:12.4f}")
        return lines


@dataclasses.dataclass(frozen=True)
class DetectionTask(Task):
    """YOLOv8 detection (``segmentation=False``) or instance segmentation of square images."""

    num_classes: int
    image_size: int
    max_objects: int = 32
    segmentation: bool = False
    class_names: tuple[str, ...] | None = None
    conf_threshold: float = 0.001  # ultralytics' validation setting; 0.25 for predictions
    iou_threshold: float = 0.7
    max_det: int = 300

    progress_metrics = ("loss",)
    metrics_order = ("map50", "map", "mask_map50", "mask_map", "loss", "box", "cls", "dfl", "seg")

    def example_batch(self, batch_size: int = 1) -> Batch:
        s, m = self.image_size, self.max_objects
        batch = {
            "image": np.zeros((batch_size, s, s, 3), np.float32),
            "boxes": np.zeros((batch_size, m, 4), np.float32),
            "classes": np.zeros((batch_size, m), np.int32),
            "box_mask": np.zeros((batch_size, m), np.float32),
            "mask": np.ones((batch_size,), np.float32),
        }
        if self.segmentation:
            batch["masks"] = np.zeros((batch_size, m, s // MASK_RATIO, s // MASK_RATIO), np.uint8)
        return batch

    def loss(self, outputs: dict[str, jax.Array], batch: Batch) -> tuple[jax.Array, Metrics]:
        total, parts = detection_loss(
            outputs, batch, num_classes=self.num_classes, segmentation=self.segmentation
        )
        images = jnp.sum(batch["mask"].astype(jnp.float32))
        # Batch-level losses, weighted by the batch's real images when averaged over batches.
        metrics = {name: (value * images, images) for name, value in parts.items()}
        metrics["loss"] = (sum(parts.values()) * images, images)
        return total, metrics

    def predict(self, outputs: dict[str, jax.Array], batch: Batch) -> dict[str, jax.Array]:
        """Detections after NMS: ``boxes`` (B, D, 4) xyxy pixels of the letterboxed image,
        ``scores``, ``classes``, ``valid`` (B, D) and for segmentation ``masks`` (B, D, S/4, S/4)
        booleans (sigmoid > 0.5, cropped to the box)."""
        from jaxvision.models.yolov8_detect import decode

        height, width = batch["image"].shape[1:3]
        boxes, probs = decode(outputs, height, width)
        out = non_max_suppression(
            boxes,
            probs,
            conf_threshold=self.conf_threshold,
            iou_threshold=self.iou_threshold,
            max_det=self.max_det,
        )
        if self.segmentation:
            proto = outputs["proto"]  # (B, h, w, P)
            h, w = proto.shape[1:3]
            coefficients = jnp.take_along_axis(
                outputs["mask_coefficients"], out["index"][..., None], axis=1
            )
            logits = jnp.einsum("bdp,bhwp->bdhw", coefficients, proto)
            scale = jnp.array([w / width, h / height, w / width, h / height], jnp.float32)
            masks = _crop(jax.nn.sigmoid(logits), out["boxes"] * scale) > 0.5
            out["masks"] = masks & out["valid"][..., None, None]
        return out

    def evaluator(self) -> _Evaluators:
        names = self.class_names
        evaluators = [COCOEvaluator(self.num_classes, iou_type="bbox", class_names=names)]
        if self.segmentation:
            evaluators.append(COCOEvaluator(self.num_classes, iou_type="segm", class_names=names))
        return _Evaluators(evaluators)

    def model_args(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes}

    def header(self) -> dict[str, Any]:
        return {
            "task": "segmentation" if self.segmentation else "detection",
            "num_classes": self.num_classes,
            "class_names": list(self.class_names) if self.class_names else None,
            "max_objects": self.max_objects,
        }


# ------------------------------------------------------------------------------------- data


def load_detection_dataset(spec: str, split: str, *, skip_bad_images: bool = False):
    """``shapes`` (generated) or ``yolo:PATH/data.yaml``; split ``train`` or ``test`` (= val)."""
    kind, _, path = spec.partition(":")
    split = "val" if split == "test" else split
    if kind == "shapes" and not path:
        return ShapesDataset(split)
    if kind == "yolo":
        if not path:
            raise DatasetError("yolo needs the data YAML: --data yolo:PATH/data.yaml")
        return YoloDataset(path, split, skip_bad_images=skip_bad_images)
    raise DatasetError(f"unknown detection data set {spec!r}; use shapes or yolo:PATH/data.yaml")


def _prepare(segmentation: bool):
    def prepare(config: Any, info: Any, image_size: int):
        args = dict(config.task_args or {})
        unknown = sorted(set(args) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"unknown detection option(s): {', '.join(unknown)}")
        if image_size % 32:
            raise ConfigError(f"--image-size must be a multiple of 32 for YOLOv8, got {image_size}")
        spec = config.data or "shapes"
        train_ds, val_ds = (
            load_detection_dataset(spec, s, skip_bad_images=config.skip_bad_images)
            for s in ("train", "test")
        )
        if segmentation and not (train_ds.has_masks and val_ds.has_masks):
            raise DatasetError(f"{spec} has no polygons: segmentation needs segment labels")
        for ds in (train_ds, val_ds):
            if getattr(ds, "skipped", 0):
                print(f"skipped {ds.skipped} undecodable image(s) in {spec}", file=sys.stderr)
        max_objects = int(args.get("max_objects", 32))
        common = {"image_size": image_size, "max_objects": max_objects, "masks": segmentation}
        train = DetectionSource(
            train_ds,
            augment=args.get("augment", True),
            mosaic=args.get("mosaic", True),
            close_mosaic=int(args.get("close_mosaic", 10)),
            epochs=config.epochs,
            **common,
        )
        held_out = DetectionSource(val_ds, augment=False, mosaic=False, **common)
        task = DetectionTask(
            num_classes=len(train_ds.class_names),
            image_size=image_size,
            max_objects=max_objects,
            segmentation=segmentation,
            class_names=tuple(train_ds.class_names),
            conf_threshold=float(args.get("conf_threshold", 0.001)),
            iou_threshold=float(args.get("iou_threshold", 0.7)),
        )
        return task, train, held_out

    return prepare


def _from_header(segmentation: bool):
    def from_header(header: dict[str, Any], image_size: int) -> DetectionTask:
        names = header.get("class_names")
        return DetectionTask(
            num_classes=int(header["num_classes"]),
            image_size=image_size,
            max_objects=int(header.get("max_objects", 32)),
            segmentation=segmentation,
            class_names=tuple(names) if names else None,
        )

    return from_header


def _eval_source(
    task: DetectionTask, spec: str | None, split: str, info: Any, *, skip_bad_images=False
):
    spec = spec or "shapes"
    ds = load_detection_dataset(spec, split, skip_bad_images=skip_bad_images)
    if len(ds.class_names) != task.num_classes:
        raise DatasetError(
            f"{spec} has {len(ds.class_names)} classes but the checkpoint was trained for "
            f"{task.num_classes}"
        )
    return DetectionSource(
        ds,
        image_size=task.image_size,
        max_objects=task.max_objects,
        augment=False,
        mosaic=False,
        masks=task.segmentation,
    )


class _Kind:
    """The constructors ``jaxvision.tasks`` looks up for one task name."""

    def __init__(self, segmentation: bool):
        self.prepare = _prepare(segmentation)
        self.from_header = _from_header(segmentation)
        self.eval_source = _eval_source


detection = _Kind(segmentation=False)
segmentation = _Kind(segmentation=True)

__all__ = ["DetectionTask", "detection_loss", "load_detection_dataset"]

"""Image classification: softmax cross-entropy with label smoothing, top-1 / top-5 accuracy.

A batch is ``{"image": (B, S, S, 3) float32, "label": (B,) int32, "mask": (B,) float32}``; the
model returns logits ``(B, K)``. The data sets are the ones :func:`jaxvision.data.load_dataset`
reads (``digits``, ``folder:PATH``, ``cifar10:PATH``), with the digits' own training defaults
(a milder crop and no flip: see :func:`prepare`).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvision.data import ClassificationSource, DatasetError, load_dataset
from jaxvision.errors import ConfigError
from jaxvision.tasks.base import Batch, Metrics, Task, masked_mean, masked_sum

# Digits are small, centred and not mirror-symmetric: a crop of less than 70% of the image cuts
# strokes off and changes the digit, and a flipped digit is another glyph.
DIGITS_AUGMENT = "crop"
DIGITS_CROP_MIN_SCALE = 0.7
# Photographs: Inception-style random resized crop (area 8-100%) and horizontal flips.
DEFAULT_AUGMENT = "crop-flip"
DEFAULT_CROP_MIN_SCALE = 0.08
# Options of this task that ``TrainConfig.task_args`` may set.
OPTIONS = ("label_smoothing", "augment", "crop_min_scale")


def cross_entropy(
    logits: jax.Array, labels: jax.Array, *, label_smoothing: float = 0.0
) -> jax.Array:
    """Per-example softmax cross-entropy against integer labels, with label smoothing.

    Smoothing spreads ``label_smoothing`` uniformly over all classes (the true one included), as
    in Szegedy et al. (arXiv 1512.00567) and ``torch.nn.CrossEntropyLoss(label_smoothing=...)``.
    Computed in float32 whatever the compute dtype.
    """
    logits = logits.astype(jnp.float32)
    targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """1.0 where the label is among the ``k`` highest logits (k capped at the class count).

    Ties are broken as ``jax.lax.top_k`` breaks them (lower index first).
    """
    k = min(k, logits.shape[-1])
    _, top = jax.lax.top_k(logits, k)  # (B, k)
    return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class ClassificationTask(Task):
    """``num_classes``-way classification of ``image_size`` x ``image_size`` RGB images.

    The training loss uses ``label_smoothing``; the reported ``loss`` is the same smoothed loss in
    training and the plain cross-entropy in evaluation (as timm's train/validate scripts report).
    """

    num_classes: int
    image_size: int
    label_smoothing: float = 0.0
    class_names: tuple[str, ...] | None = None

    progress_metrics = ("loss", "top1")
    metrics_order = ("top1", "top5", "loss")

    def example_batch(self, batch_size: int = 1) -> Batch:
        return {
            "image": np.zeros((batch_size, self.image_size, self.image_size, 3), np.float32),
            "label": np.zeros((batch_size,), np.int32),
            "mask": np.ones((batch_size,), np.float32),
        }

    def loss(self, outputs: jax.Array, batch: Batch) -> tuple[jax.Array, Metrics]:
        logits = outputs.astype(jnp.float32)
        labels, mask = batch["label"], batch["mask"]
        # Smoothing only where gradients flow: evaluation reports the plain cross-entropy.
        losses = cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        metrics = {
            "top1": masked_sum(topk_correct(logits, labels, 1), mask),
            "top5": masked_sum(topk_correct(logits, labels, 5), mask),
            "loss": masked_sum(losses, mask),
        }
        return masked_mean(losses, mask), metrics

    def predict(self, outputs: jax.Array, batch: Batch) -> jax.Array:
        """Class probabilities, the float32 softmax of the logits."""
        return jax.nn.softmax(outputs.astype(jnp.float32), axis=-1)

    def model_args(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes}

    def header(self) -> dict[str, Any]:
        names = list(self.class_names) if self.class_names else None
        return {"task": "classification", "num_classes": self.num_classes, "class_names": names}

    def for_evaluation(self) -> ClassificationTask:
        """The same task without label smoothing: what evaluation measures."""
        return dataclasses.replace(self, label_smoothing=0.0)


def from_header(header: dict[str, Any], image_size: int) -> ClassificationTask:
    """The task a checkpoint was trained for (evaluation and prediction)."""
    names = header.get("class_names")
    return ClassificationTask(
        num_classes=int(header["num_classes"]),
        image_size=image_size,
        class_names=tuple(names) if names else None,
    )


def prepare(config: Any, info: Any, image_size: int):
    """(task, train source, held-out source) for ``jaxvision train`` on ``config.data``
    (default ``digits``).

    ``config.task_args`` may set ``label_smoothing`` (default 0.1), ``augment`` (``none``,
    ``crop``, ``crop-flip``) and ``crop_min_scale``; without them digits get a crop of at least
    70% and no flip, other data sets torchvision's ImageNet defaults.
    """
    args = dict(config.task_args or {})
    unknown = sorted(set(args) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"unknown classification option(s): {', '.join(unknown)}")
    scale = args.get("crop_min_scale")
    if scale is not None and not 0 < scale <= 1:
        raise ConfigError(f"--crop-min-scale must be in (0, 1], got {scale}")
    smoothing = args.get("label_smoothing", 0.1)
    if not 0 <= smoothing < 1:
        raise ConfigError(f"--label-smoothing must be in [0, 1), got {smoothing}")
    spec = config.data or "digits"
    datasets = {
        split: load_dataset(spec, split, skip_bad_images=config.skip_bad_images)
        for split in ("train", "test")
    }
    digits = spec == "digits"
    augment = args.get("augment") or (DIGITS_AUGMENT if digits else DEFAULT_AUGMENT)
    scale = scale or (DIGITS_CROP_MIN_SCALE if digits else DEFAULT_CROP_MIN_SCALE)
    common = {"image_size": image_size, "preprocessing": info.preprocessing}
    train = ClassificationSource(
        datasets["train"], augment=augment, crop_scale=(scale, 1.0), **common
    )
    held_out = ClassificationSource(datasets["test"], augment="none", **common)
    for ds in datasets.values():
        if getattr(ds, "skipped", 0):
            print(f"skipped {ds.skipped} undecodable image(s) in {ds.name}", file=sys.stderr)
    task = ClassificationTask(
        num_classes=datasets["train"].num_classes,
        image_size=image_size,
        label_smoothing=smoothing,
        class_names=tuple(datasets["train"].class_names),
    )
    return task, train, held_out


def eval_source(
    task: ClassificationTask,
    spec: str | None,
    split: str,
    info: Any,
    *,
    skip_bad_images: bool = False,
) -> ClassificationSource:
    """The ``split`` of data set ``spec`` (default digits) for evaluating ``task``."""
    spec = spec or "digits"
    ds = load_dataset(spec, split, skip_bad_images=skip_bad_images)
    if ds.num_classes != task.num_classes:
        raise DatasetError(
            f"{spec} has {ds.num_classes} classes but the checkpoint was trained for "
            f"{task.num_classes}"
        )
    return ClassificationSource(
        ds, image_size=task.image_size, preprocessing=info.preprocessing, augment="none"
    )


__all__ = [
    "ClassificationTask",
    "cross_entropy",
    "eval_source",
    "from_header",
    "prepare",
    "topk_correct",
]

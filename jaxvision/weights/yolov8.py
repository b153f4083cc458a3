"""Ultralytics YOLOv8 checkpoints -> jaxvision YOLOv8 variables.

Detection and segmentation models (yolov8.yaml, yolov8-seg.yaml; ultralytics 8.4) number the
neck rows 10-21 and the head 22 (:data:`NECK_ROWS`): ``model.22.cv2.{level}`` is the box branch,
``cv3`` the class branch, ``cv4`` the mask-coefficient branch, ``dfl.conv.weight`` the DFL
projection and ``proto.cv1/upsample/cv2/cv3`` the prototype branch.

An ultralytics ``ClassificationModel`` names its layers by their row in the YAML: ``model.{i}``
for backbone row ``i`` and ``model.{len(backbone)}`` for the ``Classify`` head. Inside them:

    model.{i}.conv.weight, model.{i}.bn.*                          a Conv row (ConvBNAct)
    model.{i}.cv1.*, model.{i}.cv2.*, model.{i}.m.{j}.cv1/cv2.*    a C2f row
    model.{h}.conv.conv.weight, model.{h}.conv.bn.*                Classify's 1x1 Conv
    model.{h}.linear.weight / .bias                                Classify's Linear

The block helpers (:func:`conv_bn`, :func:`c2f`, :func:`sppf`) return ``(params, batch_stats)``
for one block so the detection converter can reuse them. ``load_state_dict`` reads an ultralytics
``.pt`` (a pickled model object) into the state dict expected here; it needs torch and ultralytics.
"""

from __future__ import annotations

from typing import Any

from jaxvision.models.yolov8 import (
    CLASSIFY_BACKBONE,
    DETECT_BACKBONE,
    YOLOv8Classifier,
    scale_repeats,
)
from jaxvision.models.yolov8_detect import NECK_REPEATS, STRIDES
from jaxvision.registry import create_model, model_info
from jaxvision.weights import register_converter
from jaxvision.weights.common import StateDictReader, WeightConversionError

Variables = tuple[dict[str, Any], dict[str, Any]]  # (params, batch_stats) of one block


def conv_bn(reader: StateDictReader, prefix: str) -> Variables:
    """An ultralytics ``Conv`` (conv + bn) at ``prefix`` as a :class:`ConvBNAct`."""
    bn_params, bn_stats = reader.batch_norm(f"{prefix}.bn")
    params = {"conv": {"kernel": reader.conv(f"{prefix}.conv.weight")}, "bn": bn_params}
    return params, {"bn": bn_stats}


def _blocks(reader: StateDictReader, names: dict[str, str]) -> Variables:
    """``{jaxvision name: ultralytics prefix}`` of ConvBNAct blocks -> one block's variables."""
    params, stats = {}, {}
    for ours, theirs in names.items():
        params[ours], stats[ours] = conv_bn(reader, theirs)
    return params, stats


def bottleneck(reader: StateDictReader, prefix: str) -> Variables:
    return _blocks(reader, {"conv1": f"{prefix}.cv1", "conv2": f"{prefix}.cv2"})


def c2f(reader: StateDictReader, prefix: str, repeats: int) -> Variables:
    """An ultralytics ``C2f`` with ``repeats`` bottlenecks at ``prefix`` as a :class:`C2f`."""
    params, stats = _blocks(reader, {"conv_split": f"{prefix}.cv1", "conv_merge": f"{prefix}.cv2"})
    for j in range(repeats):
        params[f"bottleneck{j}"], stats[f"bottleneck{j}"] = bottleneck(reader, f"{prefix}.m.{j}")
    return params, stats


def sppf(reader: StateDictReader, prefix: str) -> Variables:
    """An ultralytics ``SPPF`` at ``prefix`` as an :class:`SPPF`."""
    return _blocks(reader, {"conv_reduce": f"{prefix}.cv1", "conv_merge": f"{prefix}.cv2"})


# The neck rows of yolov8.yaml that hold parameters (the others upsample or concatenate), and the
# head's row: ultralytics layer index -> jaxvision name.
NECK_ROWS = {
    12: ("neck_p4_merge", "c2f"),
    15: ("neck_p3_out", "c2f"),
    16: ("neck_p3_down", "conv"),
    18: ("neck_p4_out", "c2f"),
    19: ("neck_p4_down", "conv"),
    21: ("neck_p5_out", "c2f"),
}
DETECT_ROW = 22


def _branch(reader: StateDictReader, prefix: str) -> Variables:
    """``nn.Sequential(Conv, Conv, nn.Conv2d)`` at ``prefix`` as a :class:`Branch`."""
    params, stats = _blocks(reader, {"conv1": f"{prefix}.0", "conv2": f"{prefix}.1"})
    params["predict"] = {
        "kernel": reader.conv(f"{prefix}.2.weight"),
        "bias": reader.get(f"{prefix}.2.bias"),
    }
    return params, stats


def _detector(name: str, reader: StateDictReader, overrides: dict[str, Any]) -> tuple[dict, dict]:
    """Variables of a YOLOv8Detector from an ultralytics DetectionModel / SegmentationModel."""
    head = f"model.{DETECT_ROW}"
    num_classes = int(reader.get(f"{head}.cv3.0.2.bias").shape[0])
    model = create_model(name, num_classes=num_classes, **overrides)
    segment = f"{head}.proto.cv1.conv.weight" in reader
    if bool(model.num_masks) != segment:
        kind = "a segmentation" if segment else "a detection"
        raise WeightConversionError(f"{name} cannot take the weights of {kind} model")
    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    neck_repeats = scale_repeats(NECK_REPEATS, model.depth)
    rows = [(i, layer.name, layer.block, layer.repeats) for i, layer in enumerate(DETECT_BACKBONE)]
    rows += [(i, n, block, NECK_REPEATS) for i, (n, block) in NECK_ROWS.items()]
    for i, ours, block, repeats in rows:
        if block == "conv":
            params[ours], stats[ours] = conv_bn(reader, f"model.{i}")
        elif block == "c2f":
            n = neck_repeats if ours.startswith("neck") else scale_repeats(repeats, model.depth)
            params[ours], stats[ours] = c2f(reader, f"model.{i}", n)
        else:  # sppf
            params[ours], stats[ours] = sppf(reader, f"model.{i}")
    detect_params: dict[str, Any] = {
        "dfl_projection": reader.get(f"{head}.dfl.conv.weight").ravel()
    }
    detect_stats: dict[str, Any] = {}
    branches = (("box", "cv2"), ("cls", "cv3")) + ((("mask", "cv4"),) if segment else ())
    for level in range(len(STRIDES)):
        for ours, theirs in branches:
            key = f"{ours}{level}"
            detect_params[key], detect_stats[key] = _branch(reader, f"{head}.{theirs}.{level}")
    params["detect"], stats["detect"] = detect_params, detect_stats
    if segment:
        proto = f"{head}.proto"
        p, st = _blocks(
            reader, {"conv1": f"{proto}.cv1", "conv2": f"{proto}.cv2", "conv3": f"{proto}.cv3"}
        )
        # ConvTranspose2d weight (in, out, kH, kW) -> (kH, kW, in, out)
        p["upsample_kernel"] = reader.get(f"{proto}.upsample.weight").transpose(2, 3, 0, 1)
        p["upsample_bias"] = reader.get(f"{proto}.upsample.bias")
        params["proto"], stats["proto"] = p, st
    return {"params": params, "batch_stats": stats}, {"num_classes": num_classes}


@register_converter("yolov8", "ultralytics")
def from_ultralytics(name: str, reader: StateDictReader, **overrides: Any) -> tuple[dict, dict]:
    """Variables of ``create_model(name)`` from an ultralytics ClassificationModel,
    DetectionModel or SegmentationModel state dict."""
    if model_info(name).task in ("detection", "segmentation"):
        if f"model.{DETECT_ROW}.cv3.0.2.bias" not in reader:
            raise WeightConversionError(
                f"not an ultralytics YOLOv8 detection/segmentation state dict (no "
                f"model.{DETECT_ROW}.cv3.0.2.bias; first keys: {', '.join(reader.keys()[:5])})"
            )
        return _detector(name, reader, overrides)
    head = f"model.{len(CLASSIFY_BACKBONE)}"  # Classify follows the backbone rows
    classifier_key = f"{head}.linear.weight"
    if classifier_key not in reader:
        raise WeightConversionError(
            f"{classifier_key!r} not found: not an ultralytics YOLOv8 classification state dict "
            f"(first keys: {', '.join(reader.keys()[:5])})"
        )
    num_classes = int(reader.get(classifier_key).shape[0])
    # The variant's depth (overridable like any field) fixes how many bottlenecks each row holds.
    model = create_model(name, num_classes=num_classes, **overrides)
    if not isinstance(model, YOLOv8Classifier):
        raise WeightConversionError(f"{name} is not a YOLOv8 classifier")

    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    for i, layer in enumerate(CLASSIFY_BACKBONE):
        if layer.block == "conv":
            params[layer.name], stats[layer.name] = conv_bn(reader, f"model.{i}")
        elif layer.block == "c2f":
            repeats = scale_repeats(layer.repeats, model.depth)
            params[layer.name], stats[layer.name] = c2f(reader, f"model.{i}", repeats)
        else:
            raise WeightConversionError(f"no conversion for block {layer.block!r}")

    head_conv_params, head_conv_stats = conv_bn(reader, f"{head}.conv")
    params["head"] = {
        "conv": head_conv_params,
        "classifier": {
            "kernel": reader.linear(classifier_key),
            "bias": reader.get(f"{head}.linear.bias"),
        },
    }
    stats["head"] = {"conv": head_conv_stats}
    return {"params": params, "batch_stats": stats}, {"num_classes": num_classes}

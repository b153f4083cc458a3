"""Ultralytics YOLOv8 checkpoints -> jaxvision YOLOv8 variables.

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

from jaxvision.models.yolov8 import CLASSIFY_BACKBONE, YOLOv8Classifier, scale_repeats
from jaxvision.registry import create_model
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


@register_converter("yolov8", "ultralytics")
def from_ultralytics(name: str, reader: StateDictReader, **overrides: Any) -> tuple[dict, dict]:
    """Variables of ``create_model(name)`` from an ultralytics ClassificationModel state dict."""
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

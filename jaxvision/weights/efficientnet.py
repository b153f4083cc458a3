"""EfficientNet weights from timm and torchvision checkpoints.

Both references store the same layers under different names; the number of blocks per stage is
read from the checkpoint and the result is checked against the model built from the registered
name (so a B3 checkpoint converted as ``efficientnet_b0`` fails with a list of mismatches).

timm (``efficientnet_b*`` and ``tf_efficientnet_b*`` share names; the registered name decides the
padding and BatchNorm epsilon, and the state dict cannot tell them apart)::

    conv_stem, bn1                                        -> stem/conv, stem/bn
    blocks.{i}.{j} (stage 1: DepthwiseSeparableConv)
        conv_dw, bn1, se.conv_reduce, se.conv_expand, conv_pw, bn2
    blocks.{i}.{j} (stages 2-7: InvertedResidual)
        conv_pw, bn1, conv_dw, bn2, se.*, conv_pwl, bn3  -> stage{i+1}_block{j+1}/...
    conv_head, bn2, classifier                           -> head/conv, head/bn, classifier

torchvision (``efficientnet_b*``)::

    features.0.{0,1}                                     -> stem conv, BN
    features.{s}.{j}.block.{k} (s = 1..7; Conv2dNormActivation {0: conv, 1: BN} and
        SqueezeExcitation {fc1, fc2}, in block order: [expand,] depthwise, SE, project)
    features.8.{0,1}                                     -> head conv, BN
    classifier.1                                         -> classifier (classifier.0 is dropout)

torchvision's B5-B7 are ports of TensorFlow weights and use BatchNorm eps 1e-3 (momentum 0.01);
the converter returns those settings so ``create_model`` builds a matching network.
"""

from __future__ import annotations

from typing import Any

from jaxvision.weights import register_converter
from jaxvision.weights.common import StateDictReader, nest

NUM_STAGES = 7  # the MBConv stages of paper Table 1

# torchvision.models.efficientnet_b5/b6/b7 build BatchNorm with eps=0.001, momentum=0.01.
TORCHVISION_TF_PORTED = {"b5", "b6", "b7"}


def _put_conv(flat: dict[str, Any], reader: StateDictReader, key: str, target: str) -> None:
    flat[f"params/{target}/kernel"] = reader.conv(key)


def _put_conv_bias(flat: dict[str, Any], reader: StateDictReader, prefix: str, target: str) -> None:
    flat[f"params/{target}/kernel"] = reader.conv(f"{prefix}.weight")
    flat[f"params/{target}/bias"] = reader.get(f"{prefix}.bias")


def _put_bn(flat: dict[str, Any], reader: StateDictReader, prefix: str, target: str) -> None:
    params, stats = reader.batch_norm(prefix)
    for name, value in params.items():
        flat[f"params/{target}/{name}"] = value
    for name, value in stats.items():
        flat[f"batch_stats/{target}/{name}"] = value


def _put_classifier(flat: dict[str, Any], reader: StateDictReader, prefix: str) -> int:
    """The classifier, and the number of classes it gives (0 when absent: the reader then
    reports the key as missing, together with every other mismatch)."""
    kernel = reader.linear(f"{prefix}.weight")
    flat["params/classifier/kernel"] = kernel
    flat["params/classifier/bias"] = reader.get(f"{prefix}.bias")
    return int(kernel.shape[1]) if kernel.ndim == 2 else 0


def _count_blocks(reader: StateDictReader, stage_key: str) -> int:
    """How many blocks a stage has: 1 + the largest j of the keys ``{stage_key}.{j}.*``."""
    prefix = f"{stage_key}."
    indices = [
        int(head)
        for head in (
            key[len(prefix) :].split(".", 1)[0] for key in reader.keys() if key.startswith(prefix)
        )
        if head.isdigit()
    ]
    return max(indices, default=-1) + 1


def _variant(name: str) -> str:
    return name.rsplit("_", 1)[-1]


@register_converter("efficientnet", "timm")
def from_timm(name: str, reader: StateDictReader, **overrides: Any):
    flat: dict[str, Any] = {}
    _put_conv(flat, reader, "conv_stem.weight", "stem/conv")
    _put_bn(flat, reader, "bn1", "stem/bn")
    for i in range(NUM_STAGES):
        for j in range(_count_blocks(reader, f"blocks.{i}")):
            src, dst = f"blocks.{i}.{j}", f"stage{i + 1}_block{j + 1}"
            expanded = f"{src}.conv_pwl.weight" in reader  # InvertedResidual, else DS conv
            if expanded:
                _put_conv(flat, reader, f"{src}.conv_pw.weight", f"{dst}/conv_expand")
                _put_bn(flat, reader, f"{src}.bn1", f"{dst}/bn_expand")
            _put_conv(flat, reader, f"{src}.conv_dw.weight", f"{dst}/conv_dw")
            _put_bn(flat, reader, f"{src}.bn2" if expanded else f"{src}.bn1", f"{dst}/bn_dw")
            _put_conv_bias(flat, reader, f"{src}.se.conv_reduce", f"{dst}/se/conv_reduce")
            _put_conv_bias(flat, reader, f"{src}.se.conv_expand", f"{dst}/se/conv_expand")
            project = f"{src}.conv_pwl" if expanded else f"{src}.conv_pw"
            _put_conv(flat, reader, f"{project}.weight", f"{dst}/conv_project")
            _put_bn(flat, reader, f"{src}.bn3" if expanded else f"{src}.bn2", f"{dst}/bn_project")
    _put_conv(flat, reader, "conv_head.weight", "head/conv")
    _put_bn(flat, reader, "bn2", "head/bn")
    num_classes = _put_classifier(flat, reader, "classifier")
    return nest(flat), {"num_classes": num_classes}


@register_converter("efficientnet", "torchvision")
def from_torchvision(name: str, reader: StateDictReader, **overrides: Any):
    flat: dict[str, Any] = {}
    _put_conv(flat, reader, "features.0.0.weight", "stem/conv")
    _put_bn(flat, reader, "features.0.1", "stem/bn")
    for stage in range(1, NUM_STAGES + 1):
        for j in range(_count_blocks(reader, f"features.{stage}")):
            src, dst = f"features.{stage}.{j}.block", f"stage{stage}_block{j + 1}"
            # With expansion the block holds four children (expand, dw, SE, project), else three.
            expanded = f"{src}.3.0.weight" in reader
            k = 0
            if expanded:
                _put_conv(flat, reader, f"{src}.0.0.weight", f"{dst}/conv_expand")
                _put_bn(flat, reader, f"{src}.0.1", f"{dst}/bn_expand")
                k = 1
            _put_conv(flat, reader, f"{src}.{k}.0.weight", f"{dst}/conv_dw")
            _put_bn(flat, reader, f"{src}.{k}.1", f"{dst}/bn_dw")
            _put_conv_bias(flat, reader, f"{src}.{k + 1}.fc1", f"{dst}/se/conv_reduce")
            _put_conv_bias(flat, reader, f"{src}.{k + 1}.fc2", f"{dst}/se/conv_expand")
            _put_conv(flat, reader, f"{src}.{k + 2}.0.weight", f"{dst}/conv_project")
            _put_bn(flat, reader, f"{src}.{k + 2}.1", f"{dst}/bn_project")
    head = f"features.{NUM_STAGES + 1}"
    _put_conv(flat, reader, f"{head}.0.weight", "head/conv")
    _put_bn(flat, reader, f"{head}.1", "head/bn")
    num_classes = _put_classifier(flat, reader, "classifier.1")
    # torchvision pads symmetrically for every variant; its BatchNorm depends on the variant.
    kwargs: dict[str, Any] = {"num_classes": num_classes, "padding": "symmetric"}
    if _variant(name) in TORCHVISION_TF_PORTED:
        kwargs.update(bn_epsilon=1e-3, bn_momentum=0.99)
    else:
        kwargs.update(bn_epsilon=1e-5, bn_momentum=0.9)
    return nest(flat), kwargs

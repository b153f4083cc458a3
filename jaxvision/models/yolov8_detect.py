"""YOLOv8 object detection and instance segmentation (Ultralytics), written layer by layer.

Reference: Ultralytics YOLOv8 (Jocher, Chaurasia, Qiu, 2023; no paper),
``ultralytics/cfg/models/v8/yolov8.yaml`` and ``yolov8-seg.yaml``; the heads of
``ultralytics/nn/modules/head.py`` (``Detect``, ``Segment``) and ``block.py`` (``DFL``, ``Proto``).
The backbone, its blocks (ConvBNAct, C2f, SPPF) and the scaling rules are those of
:mod:`jaxvision.models.yolov8`.

Architecture at a glance, ``yolov8n_det`` at 640 x 640 (depth 0.33, width 0.25, 80 classes):

    part        layer            block                           output            ultralytics
    backbone    stem ... stage5  YOLOv8Backbone(DETECT_BACKBONE) P3 (B, 80, 80, 64)   model.0-9
                                 (C2f stages, SPPF at the end)   P4 (B, 40, 40, 128)
                                                                 P5 (B, 20, 20, 256)
    neck        top-down         upsample P5, concat P4, C2f     (B, 40, 40, 128)     model.10-12
    (PAN-FPN)   neck_p3_out      upsample, concat P3, C2f        N3 (B, 80, 80, 64)   model.13-15
                bottom-up        conv s2, concat, C2f            N4 (B, 40, 40, 128)  model.16-18
                                 conv s2, concat P5, C2f         N5 (B, 20, 20, 256)  model.19-21
    head        detect           per level: box branch (3x3, 3x3, 1x1 -> 4 x 16 bins),
                                 class branch (3x3, 3x3, 1x1 -> 80)                    model.22
    outputs     8400 anchor points = 80^2 + 40^2 + 20^2, one per cell of N3, N4, N5

The **neck** mixes scales both ways (a feature pyramid top-down, then a path aggregation
bottom-up), so every output level sees coarse semantics and fine detail. The **head** is
*decoupled* (separate box and class branches) and *anchor-free*: each cell predicts, at its
centre, the distances of an object's four sides in units of the level's stride, each as a
distribution over 16 bins whose expectation is the distance (Distribution Focal Loss: the fixed
``dfl_projection`` 0..15). Segmentation adds a **Proto** branch on N3 (32 prototype masks at 1/4
of the input) and 32 mask coefficients per anchor: an object's mask is the sigmoid of its
coefficients times the prototypes, cropped to its box.

Shape legend: B batch, H/W input height/width (multiples of 32), A anchor points, K classes,
R = reg_max (16) bins per box side, P prototypes (32).

Outputs (a dict; every array float32): ``boxes`` (B, A, 4R) the box distributions' logits,
``distances`` (B, A, 4) their expectations (left, top, right, bottom in stride units),
``scores`` (B, A, K) class logits, and for segmentation ``mask_coefficients`` (B, A, P) and
``proto`` (B, H/4, W/4, P). :func:`decode` turns them into image-space boxes and probabilities.
Anchors are ordered level by level (P3, P4, P5), each row by row, as ultralytics orders them.

Deliberate choices, and where the numbers come from:

* The class branch is YOLOv8's original ("legacy") one - two 3x3 ConvBNAct and a 1x1 conv -
  not the depthwise branch ultralytics 8.4 builds for newer heads; ``parse_model`` sets
  ``legacy=True`` for the v8 YAMLs, and these are the published 3.2M-68.2M parameter models.
* Branch widths, from ``Detect.__init__``: box ``max(16, C3 / 4, 4R)``, class
  ``max(C3, min(K, 100))``, mask coefficients ``max(C3 / 4, P)``, with C3 the channels of N3.
  Proto's hidden width is ``npr = 256`` scaled like any channel count (``parse_model``).
* ``dfl_projection`` is a parameter holding 0..15 that never trains (ultralytics' ``DFL.conv``,
  ``requires_grad=False``; here ``stop_gradient``), so the parameter counts equal the reference's.
* Bias initialisation as ``Detect.bias_init``: box logits 2.0, class logits
  ``log(5 / K / (640 / stride)^2)`` (a prior of ~5 objects per 640 px image).
* Proto's 2x upsampling is a 2x2 stride-2 transposed convolution, written as a matmul followed by
  a depth-to-space rearrangement (the same arithmetic; XLA runs it as one dot).
* BatchNorm: eps 1e-3, Flax momentum 0.97 (``initialize_weights``), as the detection checkpoints.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.layers.conv import Conv2d, ConvBNAct, Norm
from jaxvision.models.yolov8 import (
    C2F_EXPAND_RATIO,
    DETECT_BACKBONE,
    DETECT_BN_EPSILON,
    DETECT_BN_MOMENTUM,
    DETECT_SCALES,
    C2f,
    YOLOv8Backbone,
    scale_channels,
    scale_repeats,
)
from jaxvision.ops.boxes import dist_to_box, feature_sizes, make_anchors
from jaxvision.registry import Preprocessing, register_model

STRIDES = (8, 16, 32)  # N3, N4, N5
REG_MAX = 16  # DFL bins per box side (Detect(reg_max=16))
NUM_MASKS = 32  # Segment(nm=32): prototypes and mask coefficients per anchor
PROTO_FEATURES = 256  # Segment(npr=256) before width scaling
NECK_REPEATS = 3  # every neck C2f row of yolov8.yaml: [-1, 3, C2f, [...]]
BOX_BIAS = 2.0  # Detect.bias_init
PRIOR_OBJECTS, PRIOR_IMAGE_SIZE = 5, 640  # Detect.bias_init: log(5 / nc / (640 / s) ** 2)
MAX_CLASS_WIDTH = 100  # Detect: c3 = max(ch[0], min(nc, 100))


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------


def upsample2x(x: jax.Array) -> jax.Array:
    """Nearest-neighbour 2x upsampling (``nn.Upsample(None, 2, "nearest")``): (B, H, W, C) ->
    (B, 2H, 2W, C)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Branch(nn.Module):
    """One head branch at one level: two 3x3 ConvBNAct, then a 1x1 convolution with bias to
    ``outputs`` channels (ultralytics ``nn.Sequential(Conv(x, c, 3), Conv(c, c, 3), Conv2d(c,
    outputs, 1))``)."""

    hidden: int
    outputs: int
    bias: float = 0.0
    norm: Norm = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        conv = functools.partial(ConvBNAct, kernel_size=3, norm=self.norm, dtype=self.dtype)
        x = conv(self.hidden, name="conv1")(x, train=train)  # (B, h, w, C) -> (B, h, w, hidden)
        x = conv(self.hidden, name="conv2")(x, train=train)
        return Conv2d(
            self.outputs,
            1,
            use_bias=True,
            dtype=self.dtype,
            bias_init=nn.initializers.constant(self.bias),
            name="predict",
        )(x)  # -> (B, h, w, outputs)


class DetectHead(nn.Module):
    """Decoupled, anchor-free head over (N3, N4, N5); with ``num_masks`` also mask coefficients.

    Returns ``boxes`` (B, A, 4R) logits, ``distances`` (B, A, 4), ``scores`` (B, A, K) and, for
    segmentation, ``mask_coefficients`` (B, A, P), every level flattened row by row and the levels
    concatenated.
    """

    num_classes: int
    reg_max: int = REG_MAX
    num_masks: int = 0
    strides: tuple[int, ...] = STRIDES
    norm: Norm = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, levels: list[jax.Array], *, train: bool) -> dict[str, jax.Array]:
        c3 = levels[0].shape[-1]  # channels of N3 set every branch's width
        box_width = max(16, c3 // 4, 4 * self.reg_max)
        class_width = max(c3, min(self.num_classes, MAX_CLASS_WIDTH))
        mask_width = max(c3 // 4, self.num_masks)
        branch = functools.partial(Branch, norm=self.norm, dtype=self.dtype)
        flat = lambda y: y.reshape(y.shape[0], -1, y.shape[-1]).astype(jnp.float32)
        boxes, scores, coefficients = [], [], []
        for i, (x, stride) in enumerate(zip(levels, self.strides, strict=True)):
            prior = math.log(PRIOR_OBJECTS / self.num_classes / (PRIOR_IMAGE_SIZE / stride) ** 2)
            # Box branch: 4 sides x R bins, (B, h, w, C) -> (B, h*w, 4R)
            boxes.append(flat(branch(box_width, 4 * self.reg_max, BOX_BIAS, name=f"box{i}")(
                x, train=train
            )))  # fmt: skip
            # Class branch: one logit per class, (B, h, w, C) -> (B, h*w, K)
            scores.append(flat(branch(class_width, self.num_classes, prior, name=f"cls{i}")(
                x, train=train
            )))  # fmt: skip
            if self.num_masks:  # Mask coefficients: (B, h, w, C) -> (B, h*w, P)
                coefficients.append(flat(branch(mask_width, self.num_masks, name=f"mask{i}")(
                    x, train=train
                )))  # fmt: skip
        boxes = jnp.concatenate(boxes, axis=1)  # (B, A, 4R)

        # Distribution Focal Loss decoding: each side's distance is the expectation over bins.
        projection = self.param(
            "dfl_projection", lambda _: jnp.arange(self.reg_max, dtype=jnp.float32)
        )
        bins = boxes.reshape(*boxes.shape[:2], 4, self.reg_max)  # (B, A, 4, R)
        distances = jax.nn.softmax(bins, axis=-1) @ jax.lax.stop_gradient(projection)  # (B, A, 4)
        out = {"boxes": boxes, "distances": distances, "scores": jnp.concatenate(scores, axis=1)}
        if self.num_masks:
            out["mask_coefficients"] = jnp.concatenate(coefficients, axis=1)  # (B, A, P)
        return out


class Proto(nn.Module):
    """Prototype masks from N3: 3x3 ConvBNAct, 2x upsampling (a 2x2 stride-2 transposed
    convolution), 3x3 ConvBNAct, 1x1 ConvBNAct to ``num_masks`` maps at 1/4 of the input."""

    features: int
    num_masks: int = NUM_MASKS
    norm: Norm = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        conv = functools.partial(ConvBNAct, norm=self.norm, dtype=self.dtype)
        x = conv(self.features, 3, name="conv1")(x, train=train)  # (B, H/8, W/8, F)
        # Transposed convolution, kernel 2, stride 2: every input pixel paints a 2x2 block.
        c = x.shape[-1]
        kernel = self.param(
            "upsample_kernel", nn.initializers.lecun_normal(), (2, 2, c, self.features)
        )
        bias = self.param("upsample_bias", nn.initializers.zeros, (self.features,))
        b, h, w, _ = x.shape
        x = jnp.einsum("bhwc,ijcf->bhiwjf", x, kernel.astype(self.dtype))  # (B, h, 2, w, 2, F)
        x = x.reshape(b, 2 * h, 2 * w, self.features) + bias.astype(self.dtype)  # (B, H/4, W/4, F)
        x = conv(self.features, 3, name="conv2")(x, train=train)
        x = conv(self.num_masks, 1, name="conv3")(x, train=train)  # (B, H/4, W/4, P)
        return x.astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


class YOLOv8Detector(nn.Module):
    """YOLOv8 detection (``num_masks=0``) or segmentation (``num_masks=32``) model.

    ``__call__(x, *, train)`` takes (B, H, W, 3) images with H and W multiples of 32 and returns
    the dict of raw outputs described in the module docstring; :func:`decode` gives boxes in
    pixels and class probabilities. The backbone shares this module's scope (its rows keep their
    names: ``stem``, ``stage2_down``, ..., ``stage5_sppf``).
    """

    num_classes: int = 80
    depth: float = 0.33
    width: float = 0.25
    max_channels: int = 1024
    num_masks: int = 0
    reg_max: int = REG_MAX
    dtype: Any = jnp.float32
    bn_epsilon: float = DETECT_BN_EPSILON
    bn_momentum: float = DETECT_BN_MOMENTUM

    def setup(self) -> None:
        self.backbone = YOLOv8Backbone(
            DETECT_BACKBONE,
            depth=self.depth,
            width=self.width,
            max_channels=self.max_channels,
            dtype=self.dtype,
            bn_epsilon=self.bn_epsilon,
            bn_momentum=self.bn_momentum,
        )
        nn.share_scope(self, self.backbone)

    def forward_features(self, x: jax.Array, *, train: bool) -> dict[str, jax.Array]:
        """The backbone's stage maps, ``{"stage1": ..., ..., "stage5": ...}``."""
        return self.backbone.forward_features(x, train=train)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> dict[str, jax.Array]:
        if x.ndim == 4 and (x.shape[1] % STRIDES[-1] or x.shape[2] % STRIDES[-1]):
            raise ValueError(
                f"YOLOv8 detection needs an input whose height and width are multiples of 32, "
                f"got {x.shape[1]}x{x.shape[2]} (letterbox or resize the images)"
            )
        norm = functools.partial(
            nn.BatchNorm, epsilon=self.bn_epsilon, momentum=self.bn_momentum, dtype=self.dtype
        )
        channels = lambda c: scale_channels(c, self.width, self.max_channels)
        c2f = functools.partial(
            C2f,
            repeats=scale_repeats(NECK_REPEATS, self.depth),
            shortcut=False,
            expand_ratio=C2F_EXPAND_RATIO,
            norm=norm,
            dtype=self.dtype,
        )
        down = functools.partial(ConvBNAct, kernel_size=3, strides=2, norm=norm, dtype=self.dtype)

        features = self.forward_features(x, train=train)
        p3, p4, p5 = features["stage3"], features["stage4"], features["stage5"]

        # Top-down (feature pyramid): coarse semantics flow to the finer maps.
        y = jnp.concatenate([upsample2x(p5), p4], axis=-1)  # (B, H/16, W/16, C5 + C4)
        n4_top = c2f(channels(512), name="neck_p4_merge")(y, train=train)  # (B, H/16, W/16, C4)
        y = jnp.concatenate([upsample2x(n4_top), p3], axis=-1)  # (B, H/8, W/8, C4 + C3)
        n3 = c2f(channels(256), name="neck_p3_out")(y, train=train)  # N3 (B, H/8, W/8, C3)

        # Bottom-up (path aggregation): precise localisation flows back to the coarser maps.
        y = down(channels(256), name="neck_p3_down")(n3, train=train)  # (B, H/16, W/16, C3)
        y = jnp.concatenate([y, n4_top], axis=-1)
        n4 = c2f(channels(512), name="neck_p4_out")(y, train=train)  # N4 (B, H/16, W/16, C4)
        y = down(channels(512), name="neck_p4_down")(n4, train=train)  # (B, H/32, W/32, C4)
        y = jnp.concatenate([y, p5], axis=-1)
        n5 = c2f(channels(1024), name="neck_p5_out")(y, train=train)  # N5 (B, H/32, W/32, C5)

        out = DetectHead(
            self.num_classes,
            reg_max=self.reg_max,
            num_masks=self.num_masks,
            norm=norm,
            dtype=self.dtype,
            name="detect",
        )([n3, n4, n5], train=train)
        if self.num_masks:
            out["proto"] = Proto(
                channels(PROTO_FEATURES), self.num_masks, norm=norm, dtype=self.dtype, name="proto"
            )(n3, train=train)
        return out


def anchors_for(height: int, width: int) -> tuple[jax.Array, jax.Array]:
    """Anchor points (A, 2) in stride units and their strides (A, 1) for an input size."""
    return make_anchors(feature_sizes(height, width, STRIDES), STRIDES)


def decode(outputs: dict[str, jax.Array], height: int, width: int) -> tuple[jax.Array, jax.Array]:
    """(boxes (B, A, 4) xyxy in input pixels, class probabilities (B, A, K)) from the outputs of
    a ``height`` x ``width`` input: the expected distances from each anchor point, times its
    stride, and the sigmoid of the class logits (ultralytics' Detect inference path, in xyxy)."""
    points, strides = anchors_for(height, width)
    boxes = dist_to_box(outputs["distances"], points) * strides
    return boxes, jax.nn.sigmoid(outputs["scores"])


# ---------------------------------------------------------------------------------------------
# Registered variants
# ---------------------------------------------------------------------------------------------

# ultralytics detection: letterbox to the image size, pixels / 255, no mean/std.
ULTRALYTICS_DETECT_PREPROCESSING = Preprocessing(
    mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), crop_fraction=1.0, interpolation="bilinear"
)

for _scale, _s in DETECT_SCALES.items():
    _config = {"depth": _s.depth, "width": _s.width, "max_channels": _s.max_channels}
    for _kind, _masks, _yaml in (("det", 0, "yolov8"), ("seg", NUM_MASKS, "yolov8-seg")):
        register_model(
            f"yolov8{_scale}_{_kind}",
            family="yolov8",
            resolution=640,
            preprocessing=ULTRALYTICS_DETECT_PREPROCESSING,
            description=f"YOLOv8{_scale}-{_kind}: {_yaml}.yaml at scale {_scale}",
            task="detection" if _kind == "det" else "segmentation",
        )(functools.partial(YOLOv8Detector, num_masks=_masks, **_config))

"""YOLOv8 image classification (Ultralytics), written layer by layer.

Reference: Ultralytics YOLOv8 (Jocher, Chaurasia, Qiu, 2023; there is no paper),
https://github.com/ultralytics/ultralytics. This file implements the classification models built
from ``ultralytics/cfg/models/v8/yolov8-cls.yaml``: the YOLOv8 backbone (``Conv``, ``C2f``)
followed by the ``Classify`` head of ``ultralytics/nn/modules/head.py``. The backbone is a module
of its own, :class:`YOLOv8Backbone`, built from a table of rows: ``CLASSIFY_BACKBONE`` here, and
``DETECT_BACKBONE`` (the same rows and an ``SPPF`` at P5, from yolov8.yaml) for the detection and
segmentation models, whose neck takes P3, P4 and P5 from the backbone's return value.

Features: ``YOLOv8Backbone(...)`` returns ``{"stage1": P1, ..., "stage5": P5}`` (stage k at stride
2^k); from a classifier, ``model.apply(variables, x, train=False, method="forward_features")``
returns the same dict.

Architecture at a glance, ``yolov8n_cls`` at 224 x 224 (depth 0.33, width 0.25):

    layer               block                        output shape        stride
    input                                            (B, 224, 224, 3)
    stem                ConvBNAct 3x3 s2             (B, 112, 112, 16)   P1/2
    stage2_down         ConvBNAct 3x3 s2             (B, 56, 56, 32)     P2/4
    stage2_c2f          C2f, 1 bottleneck, residual  (B, 56, 56, 32)
    stage3_down         ConvBNAct 3x3 s2             (B, 28, 28, 64)     P3/8
    stage3_c2f          C2f, 2 bottlenecks           (B, 28, 28, 64)
    stage4_down         ConvBNAct 3x3 s2             (B, 14, 14, 128)    P4/16
    stage4_c2f          C2f, 2 bottlenecks           (B, 14, 14, 128)
    stage5_down         ConvBNAct 3x3 s2             (B, 7, 7, 256)      P5/32
    stage5_c2f          C2f, 1 bottleneck            (B, 7, 7, 256)
    head/conv           ConvBNAct 1x1                (B, 7, 7, 1280)
    (pool, dropout)     global average pool          (B, 1280)
    head/classifier     Dense                        (B, 1000)  logits

Shape legend: B batch, H/W height/width, C channels (NHWC throughout), c the hidden width of a
C2f block (half its output channels), n the number of bottlenecks in a C2f block.

Names. Ultralytics' terse attribute names are replaced by readable ones; the weight converter
(``jaxvision/weights/yolov8.py``) maps them back. Once, for reference:

    ultralytics                     jaxvision
    Conv                            ConvBNAct  (jaxvision.layers.conv; conv, bn: same names)
    model.0 ... model.8             the rows of CLASSIFY_BACKBONE (stem, stage2_down, ...)
    model.9 (SPPF, detection)       the last row of DETECT_BACKBONE, stage5_sppf
    C2f.cv1 / C2f.cv2               C2f conv_split / conv_merge
    C2f.m.{j}                       C2f bottleneck{j}
    Bottleneck.cv1 / .cv2           Bottleneck conv1 / conv2
    SPPF.cv1 / SPPF.cv2             SPPF conv_reduce / conv_merge
    model.9 (Classify).conv/.linear head/conv, head/classifier
    c1, c2, c_, n, e, k, s          in_features, features, hidden, repeats, expand_ratio, ...

Deviations and constants worth knowing:

* Padding is symmetric, ``(k - 1) // 2`` per side (ultralytics ``autopad``), not TF ``SAME``: the
  3x3 stride-2 convolutions give ``ceil(H / 2)`` at odd and even sizes alike.
* BatchNorm. Ultralytics' *detection* models run ``initialize_weights``, which sets every
  BatchNorm to eps 1e-3 and PyTorch momentum 0.03 (Flax 0.97); the blocks and
  :class:`YOLOv8Backbone` default to that.
  ``ClassificationModel`` never calls ``initialize_weights`` (ultralytics/nn/tasks.py, also
  ``ClassificationTrainer.get_model``), so the classification checkpoints were trained with
  PyTorch's defaults, eps 1e-5 and momentum 0.1 (Flax 0.9): :class:`YOLOv8Classifier` uses those.
* ``SPPF``: ultralytics 8.4 builds ``SPPF.cv1`` without activation (for YOLO26) and puts SiLU
  back for the older YAML rows (``parse_model``); YOLOv8's SPPF has SiLU on both convolutions.
* ``Classify`` returns ``(softmax, logits)`` in eval mode; this model returns only the logits.
* No grouped convolutions (ultralytics' ``g`` is 1 in every YOLOv8 row) and no dilation.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.layers.conv import ConvBNAct, Norm
from jaxvision.layers.inputs import check_images
from jaxvision.registry import Preprocessing, register_model

# BatchNorm constants (see the module docstring). Flax momentum = 1 - PyTorch momentum.
DETECT_BN_EPSILON = 1e-3  # ultralytics.utils.torch_utils.initialize_weights
DETECT_BN_MOMENTUM = 0.97  # PyTorch 0.03, same source
CLASSIFY_BN_EPSILON = 1e-5  # torch.nn.BatchNorm2d default, kept by ClassificationModel
CLASSIFY_BN_MOMENTUM = 0.9  # PyTorch 0.1, same source

HEAD_FEATURES = 1280  # ultralytics Classify: c_ = 1280 ("efficientnet_b0 size"), not width-scaled
CHANNEL_DIVISOR = 8  # parse_model: make_divisible(min(c2, max_channels) * width, 8)
C2F_EXPAND_RATIO = 0.5  # C2f(e=0.5): hidden width c = int(out * 0.5)
SPPF_POOL_SIZE = 5  # SPPF(k=5); three chained 5x5 pools see 5, 9 and 13 pixels (= SPP(5, 9, 13))
SPPF_POOLS = 3  # SPPF(n=3)

# The blocks' default normalisation: ultralytics' detection-model constants.
detect_batch_norm: Norm = functools.partial(
    nn.BatchNorm, epsilon=DETECT_BN_EPSILON, momentum=DETECT_BN_MOMENTUM
)


# ---------------------------------------------------------------------------------------------
# The backbone as data
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Layer:
    """One row of an ultralytics backbone table, before compound scaling.

    ``features`` and ``repeats`` are the YAML's values for the l model (depth = width = 1);
    :func:`scale_channels` and :func:`scale_repeats` turn them into a variant's. ``stage`` names
    the feature map the row contributes to; the last row of each stage gives that stage's output.
    """

    name: str
    stage: str
    block: str  # "conv" (ConvBNAct) | "c2f" (C2f) | "sppf" (SPPF; kernel_size is its pool size)
    features: int
    kernel_size: int = 1
    strides: int = 1
    repeats: int = 1
    shortcut: bool = False


# ultralytics/cfg/models/v8/yolov8-cls.yaml, "backbone"; the row index is ultralytics' layer index
# (model.0 ... model.8) and the Classify head follows as model.9.
CLASSIFY_BACKBONE: tuple[Layer, ...] = (
    Layer("stem", "stage1", "conv", 64, kernel_size=3, strides=2),  # 0-P1/2
    Layer("stage2_down", "stage2", "conv", 128, kernel_size=3, strides=2),  # 1-P2/4
    Layer("stage2_c2f", "stage2", "c2f", 128, repeats=3, shortcut=True),  # 2
    Layer("stage3_down", "stage3", "conv", 256, kernel_size=3, strides=2),  # 3-P3/8
    Layer("stage3_c2f", "stage3", "c2f", 256, repeats=6, shortcut=True),  # 4
    Layer("stage4_down", "stage4", "conv", 512, kernel_size=3, strides=2),  # 5-P4/16
    Layer("stage4_c2f", "stage4", "c2f", 512, repeats=6, shortcut=True),  # 6
    Layer("stage5_down", "stage5", "conv", 1024, kernel_size=3, strides=2),  # 7-P5/32
    Layer("stage5_c2f", "stage5", "c2f", 1024, repeats=3, shortcut=True),  # 8
)

# ultralytics/cfg/models/v8/yolov8.yaml, "backbone": the classification rows and SPPF (model.9),
# whose output is P5 for the neck.
DETECT_BACKBONE: tuple[Layer, ...] = (
    *CLASSIFY_BACKBONE,
    Layer("stage5_sppf", "stage5", "sppf", 1024, kernel_size=SPPF_POOL_SIZE),  # 9
)


@dataclasses.dataclass(frozen=True)
class Scale:
    """Compound scaling constants of one variant: ``[depth, width, max_channels]`` in the YAML."""

    depth: float
    width: float
    max_channels: int


# yolov8-cls.yaml, "scales".
CLASSIFY_SCALES: dict[str, Scale] = {
    "n": Scale(0.33, 0.25, 1024),
    "s": Scale(0.33, 0.50, 1024),
    "m": Scale(0.67, 0.75, 1024),
    "l": Scale(1.00, 1.00, 1024),
    "x": Scale(1.00, 1.25, 1024),
}

# yolov8.yaml, "scales": the same depths and widths, lower channel caps for m, l and x.
DETECT_SCALES: dict[str, Scale] = {
    "n": Scale(0.33, 0.25, 1024),
    "s": Scale(0.33, 0.50, 1024),
    "m": Scale(0.67, 0.75, 768),
    "l": Scale(1.00, 1.00, 512),
    "x": Scale(1.00, 1.25, 512),
}


# ---------------------------------------------------------------------------------------------
# Scaling rules
# ---------------------------------------------------------------------------------------------


def make_divisible(x: float, divisor: int = CHANNEL_DIVISOR) -> int:
    """The smallest multiple of ``divisor`` that is >= ``x`` (ultralytics.utils.ops.make_divisible).

    Unlike EfficientNet's rounding (nearest multiple, never below 90%), this always rounds *up*.
    """
    return int(math.ceil(x / divisor) * divisor)


def scale_channels(channels: int, width: float, max_channels: int) -> int:
    """A row's output channels in a scaled variant.

    The YAML's channels are first capped at ``max_channels``, then multiplied by ``width`` and
    rounded up to a multiple of 8. The classification scales all cap at 1024, so the x model's last
    stage reaches 1024 * 1.25 = 1280; the detection scales cap l and x at 512 before widening.
    """
    return make_divisible(min(channels, max_channels) * width, CHANNEL_DIVISOR)


def scale_repeats(repeats: int, depth: float) -> int:
    """A C2f row's number of bottlenecks in a scaled variant: ``max(round(repeats * depth), 1)``.

    Python's ``round`` rounds halves to even, as ultralytics does; a row never vanishes (>= 1).
    For depth 0.33 the YAML's 3 and 6 become 1 and 2; for depth 0.67 they become 2 and 4.
    """
    return max(round(repeats * depth), 1)


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------


class Bottleneck(nn.Module):
    """Two 3x3 ConvBNAct, plus the input when ``shortcut`` is set and the channels agree.

    C2f builds it with ``expand_ratio=1.0`` (ultralytics ``Bottleneck(c, c, shortcut, g,
    k=((3, 3), (3, 3)), e=1.0)``), so both convolutions keep the width.
    """

    features: int
    shortcut: bool = True
    expand_ratio: float = 1.0
    norm: Norm = detect_batch_norm
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        conv = functools.partial(ConvBNAct, kernel_size=3, norm=self.norm, dtype=self.dtype)
        hidden = int(self.features * self.expand_ratio)
        y = conv(hidden, name="conv1")(x, train=train)  # (B, H, W, C) -> (B, H, W, hidden)
        y = conv(self.features, name="conv2")(y, train=train)  # -> (B, H, W, features)
        # ultralytics: self.add = shortcut and c1 == c2
        if self.shortcut and x.shape[-1] == self.features:
            y = x + y
        return y


class C2f(nn.Module):
    """CSP bottleneck with two convolutions ("C2f"): split, a chain of bottlenecks, merge.

    Half of the features bypass the bottlenecks entirely (the cross-stage partial idea), and every
    bottleneck's output joins the merge, so the block sees features of every depth at once.
    """

    features: int
    repeats: int = 1
    shortcut: bool = False
    expand_ratio: float = C2F_EXPAND_RATIO
    norm: Norm = detect_batch_norm
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        conv = functools.partial(ConvBNAct, norm=self.norm, dtype=self.dtype)
        c = int(self.features * self.expand_ratio)  # hidden width

        # Split: one 1x1 conv to 2c channels, cut into two halves of c.
        y = conv(2 * c, name="conv_split")(x, train=train)  # (B, H, W, C_in) -> (B, H, W, 2c)
        pieces = list(jnp.split(y, 2, axis=-1))  # 2 x (B, H, W, c)

        # Bottleneck chain on the second half, keeping every intermediate output.
        for j in range(self.repeats):
            block = Bottleneck(
                c,
                self.shortcut,
                expand_ratio=1.0,
                norm=self.norm,
                dtype=self.dtype,
                name=f"bottleneck{j}",
            )
            pieces.append(block(pieces[-1], train=train))  # (B, H, W, c), now 2 + j + 1 pieces

        # Merge: concatenate all 2 + n pieces and mix them with a 1x1 conv.
        y = jnp.concatenate(pieces, axis=-1)  # (B, H, W, (2 + n) c)
        return conv(self.features, name="conv_merge")(y, train=train)  # -> (B, H, W, features)


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained 5x5 max pools instead of parallel 5/9/13 pools.

    Pooling a pooled map widens the window to 5, 9 and 13 pixels for the price of 5x5 pools; the
    concatenation gives the next layer every scale. Spatial size is unchanged.
    """

    features: int
    pool_size: int = SPPF_POOL_SIZE
    pools: int = SPPF_POOLS
    norm: Norm = detect_batch_norm
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        conv = functools.partial(ConvBNAct, norm=self.norm, dtype=self.dtype)
        hidden = x.shape[-1] // 2  # ultralytics: c_ = c1 // 2
        y = conv(hidden, name="conv_reduce")(x, train=train)  # (B, H, W, C) -> (B, H, W, C/2)
        pad = self.pool_size // 2
        pieces = [y]
        for _ in range(self.pools):
            # -inf padding, as PyTorch's MaxPool2d; stride 1 keeps (B, H, W, C/2)
            pieces.append(
                nn.max_pool(
                    pieces[-1],
                    (self.pool_size, self.pool_size),
                    strides=(1, 1),
                    padding=((pad, pad), (pad, pad)),
                )
            )
        y = jnp.concatenate(pieces, axis=-1)  # (B, H, W, (pools + 1) C/2)
        return conv(self.features, name="conv_merge")(y, train=train)  # -> (B, H, W, features)


class Classify(nn.Module):
    """Ultralytics' classification head: 1x1 ConvBNAct to 1280, average pool, dropout, Dense."""

    num_classes: int
    drop_rate: float = 0.0  # ultralytics Classify: nn.Dropout(p=0.0); the trainer may override
    norm: Norm = detect_batch_norm
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = ConvBNAct(HEAD_FEATURES, norm=self.norm, dtype=self.dtype, name="conv")(x, train=train)
        # (B, H, W, C) -> (B, 1280)
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)  # (B, 1280)
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(x)  # (B, num_classes)
        return x.astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


class YOLOv8Backbone(nn.Module):
    """The YOLOv8 backbone: the rows of ``layers`` scaled by ``depth``, ``width``, ``max_channels``.

    ``(B, H, W, 3)`` -> ``{"stage1": ..., ..., "stage5": ...}``, the output of each stage's last row
    in order: stage k is ultralytics' Pk, at stride 2^k (``ceil`` at odd sizes), stage1 the stem's
    output. The same maps are sown into ``"intermediates"`` under the stage names.
    ``layers=CLASSIFY_BACKBONE`` (the default) is yolov8-cls.yaml's backbone, ``DETECT_BACKBONE``
    yolov8.yaml's (with :data:`DETECT_SCALES`). The BatchNorm constants default to the detection
    models'; :class:`YOLOv8Classifier` passes the classification ones.
    """

    layers: tuple[Layer, ...] = CLASSIFY_BACKBONE
    depth: float = 0.33
    width: float = 0.25
    max_channels: int = 1024
    dtype: Any = jnp.float32
    bn_epsilon: float = DETECT_BN_EPSILON
    bn_momentum: float = DETECT_BN_MOMENTUM

    def __call__(self, x: jax.Array, *, train: bool) -> dict[str, jax.Array]:
        # The work is in forward_features, which a classifier sharing this scope calls directly.
        return self.forward_features(x, train=train)

    @nn.compact
    def forward_features(self, x: jax.Array, *, train: bool) -> dict[str, jax.Array]:
        check_images(x, model="YOLOv8")
        norm = functools.partial(
            nn.BatchNorm, epsilon=self.bn_epsilon, momentum=self.bn_momentum, dtype=self.dtype
        )
        features = {}
        for i, layer in enumerate(self.layers):
            out_features = scale_channels(layer.features, self.width, self.max_channels)
            if layer.block == "conv":
                # (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), C'): every downsampling row
                x = ConvBNAct(
                    out_features,
                    layer.kernel_size,
                    layer.strides,
                    norm=norm,
                    dtype=self.dtype,
                    name=layer.name,
                )(x, train=train)
            elif layer.block == "c2f":
                # (B, H, W, C) -> (B, H, W, C)
                x = C2f(
                    out_features,
                    scale_repeats(layer.repeats, self.depth),
                    layer.shortcut,
                    norm=norm,
                    dtype=self.dtype,
                    name=layer.name,
                )(x, train=train)
            elif layer.block == "sppf":
                # (B, H, W, C) -> (B, H, W, C)
                x = SPPF(
                    out_features,
                    layer.kernel_size,
                    norm=norm,
                    dtype=self.dtype,
                    name=layer.name,
                )(x, train=train)
            else:
                raise ValueError(f"unknown block {layer.block!r} in row {layer.name}")
            last_of_stage = i + 1 == len(self.layers) or self.layers[i + 1].stage != layer.stage
            if last_of_stage:
                self.sow("intermediates", layer.stage, x)
                features[layer.stage] = x
        return features


class YOLOv8Classifier(nn.Module):
    """YOLOv8 classification model: the scaled yolov8-cls backbone and the Classify head.

    Returns logits; apply ``jax.nn.softmax`` for the probabilities ultralytics' eval mode returns.
    Stage outputs are sown into the "intermediates" collection as ``stage1`` ... ``stage5``:
    stage k is ultralytics' Pk, at stride 2^k (stage1 is the stem's output). The backbone shares
    this module's scope, so its rows keep the top-level names (``stem``, ``stage2_down``, ...)
    beside ``head``; ``method="forward_features"`` returns its dict of stage maps.
    """

    num_classes: int = 1000
    depth: float = 0.33
    width: float = 0.25
    max_channels: int = 1024
    drop_rate: float = 0.0
    dtype: Any = jnp.float32
    bn_epsilon: float = CLASSIFY_BN_EPSILON
    bn_momentum: float = CLASSIFY_BN_MOMENTUM

    def setup(self) -> None:
        self.backbone = YOLOv8Backbone(
            CLASSIFY_BACKBONE,
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
        # The backbone's forward_features rather than its __call__: in a shared scope,
        # capture_intermediates would record the backbone's __call__ output as this model's own.
        return self.backbone.forward_features(x, train=train)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = self.forward_features(x, train=train)["stage5"]  # (B, H/32, W/32, C)
        norm = functools.partial(
            nn.BatchNorm, epsilon=self.bn_epsilon, momentum=self.bn_momentum, dtype=self.dtype
        )
        # (B, H/32, W/32, C) -> (B, num_classes)
        return Classify(self.num_classes, self.drop_rate, norm=norm, dtype=self.dtype, name="head")(
            x, train=train
        )


# ---------------------------------------------------------------------------------------------
# Registered variants: one register_model(name, ...)(partial(YOLOv8Classifier, **config)) per row.
# ---------------------------------------------------------------------------------------------

# ultralytics.data.augment.classify_transforms: DEFAULT_MEAN = (0, 0, 0), DEFAULT_STD = (1, 1, 1)
# (pixels only scaled to [0, 1]), bilinear resize of the shorter side to the crop size, then a
# centre crop of that size (crop fraction 1; the crop_fraction argument is deprecated).
ULTRALYTICS_CLASSIFY_PREPROCESSING = Preprocessing(
    mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), crop_fraction=1.0, interpolation="bilinear"
)


for _scale, _s in CLASSIFY_SCALES.items():
    register_model(
        f"yolov8{_scale}_cls",
        family="yolov8",
        resolution=224,
        preprocessing=ULTRALYTICS_CLASSIFY_PREPROCESSING,
        description=f"YOLOv8{_scale}-cls: yolov8-cls.yaml at scale {_scale}",
    )(
        functools.partial(
            YOLOv8Classifier, depth=_s.depth, width=_s.width, max_channels=_s.max_channels
        )
    )

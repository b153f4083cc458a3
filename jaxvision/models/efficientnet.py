"""EfficientNet B0-B7, layer by layer.

Paper: Mingxing Tan, Quoc V. Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", ICML 2019, arXiv 1905.11946. Implemented: the B0 baseline network (Table 1), compound
scaling of width, depth and resolution to B1-B7 (Section 3.3, Eq. 3, with the coefficients of the
reference implementation) and the dropout / stochastic-depth regularisation of Section 5.2.
Building blocks: the mobile inverted bottleneck MBConv (Sandler et al., MobileNetV2, arXiv
1801.04381) with squeeze-and-excitation (Hu et al., arXiv 1709.01507), SiLU ("swish") activations.

Architecture at a glance (B0 at 224 x 224; ours "stage i" is the paper's stage i + 1):

    part     operator                     output (H x W x C)    blocks
    stem     Conv3x3 s2, BN, SiLU         112 x 112 x 32        1
    stage1   MBConv1, k3x3                112 x 112 x 16        1
    stage2   MBConv6, k3x3, s2            56 x 56 x 24          2
    stage3   MBConv6, k5x5, s2            28 x 28 x 40          2
    stage4   MBConv6, k3x3, s2            14 x 14 x 80          3
    stage5   MBConv6, k5x5                14 x 14 x 112         3
    stage6   MBConv6, k5x5, s2            7 x 7 x 192           4
    stage7   MBConv6, k3x3                7 x 7 x 320           1
    head     Conv1x1, BN, SiLU, pool, FC  1280 -> num_classes   1

The stem and the stages are :class:`EfficientNetBackbone`, the head is the rest of
:class:`EfficientNet` (as timm splits ``forward_features`` from ``forward_head``). Features:
``EfficientNetBackbone(...)`` returns ``{"stem": ..., "stage1": ..., ..., "stage7": ...}``; from a
classifier, ``model.apply(variables, x, train=False, method="forward_features")`` returns the same.

Shape legend: B batch, H/W height/width, C channels (C_in entering a block, e*C_in expanded),
C_se the squeeze-excite bottleneck, K classes.

Deliberate choices and deviations:

* Padding: ``padding="symmetric"`` pads ``(k - 1) // 2`` on every side as PyTorch does (timm and
  torchvision weights, registered as ``efficientnet_b*``); ``padding="same"`` is TensorFlow's
  asymmetric SAME, needed by the weights timm ported from the TensorFlow reference
  (``tf_efficientnet_b*``). They differ at stride 2 whenever the padding total is odd.
* BatchNorm: ``efficientnet_b*`` use eps 1e-5 and Flax momentum 0.9 (PyTorch's defaults, momentum
  0.1 in PyTorch's convention), as timm and torchvision B0-B4 train them; ``tf_efficientnet_b*``
  use eps 1e-3 and momentum 0.99, the TensorFlow reference's values. torchvision's B5-B7 weights are
  ports of TensorFlow weights with eps 1e-3: the weight converter sets that.
* Squeeze-excite width is a quarter of the block's *input* channels (not of the expanded ones), as
  in the TensorFlow reference, timm and torchvision.
* Stochastic depth: the drop rate grows linearly with the block index,
  ``drop_path_rate * block_index / num_blocks`` (timm, torchvision), from 0 at the first block.
* Depthwise convolutions use :class:`~jaxvision.layers.depthwise.DepthwiseConv2d`, which picks
  the fast formulation for the backend (``depthwise_implementation``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.layers.conv import Conv2d, ConvBNAct, Norm
from jaxvision.layers.depthwise import DepthwiseConv2d
from jaxvision.layers.drop_path import DropPath
from jaxvision.layers.inputs import check_images
from jaxvision.layers.squeeze_excite import SqueezeExcite
from jaxvision.registry import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, register_model

# ---------------------------------------------------------------------------------------------
# The B0 baseline network (paper Table 1) as data.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Stage:
    """One row of Table 1: ``repeats`` MBConv blocks; only the first one strides."""

    expand_ratio: int  # the "6" of MBConv6: hidden channels = expand_ratio * input channels
    kernel_size: int  # depthwise kernel, k x k
    strides: int
    features: int  # output channels
    repeats: int


# Paper Table 1, stages 2-8 (stage 1 is the stem, stage 9 the head).
B0_STAGES: tuple[Stage, ...] = (
    Stage(expand_ratio=1, kernel_size=3, strides=1, features=16, repeats=1),
    Stage(expand_ratio=6, kernel_size=3, strides=2, features=24, repeats=2),
    Stage(expand_ratio=6, kernel_size=5, strides=2, features=40, repeats=2),
    Stage(expand_ratio=6, kernel_size=3, strides=2, features=80, repeats=3),
    Stage(expand_ratio=6, kernel_size=5, strides=1, features=112, repeats=3),
    Stage(expand_ratio=6, kernel_size=5, strides=2, features=192, repeats=4),
    Stage(expand_ratio=6, kernel_size=3, strides=1, features=320, repeats=1),
)
STEM_FEATURES = 32  # Table 1, stage 1: Conv3x3 with 32 channels
HEAD_FEATURES = 1280  # Table 1, stage 9: Conv1x1 to 1280 channels before pooling
SE_RATIO = 0.25  # squeeze-excite bottleneck relative to the block's input channels


@dataclasses.dataclass(frozen=True)
class Scaling:
    """Compound-scaling coefficients of one variant (Section 3.3)."""

    width: float  # channel multiplier
    depth: float  # repeats multiplier
    resolution: int  # input size the variant was trained at
    dropout_rate: float  # before the classifier


# The reference implementation's coefficients (tensorflow/tpu efficientnet_builder.py, as quoted in
# timm's _gen_efficientnet); B1-B7 follow from width 1.1^phi, depth 1.2^phi, rounded.
COMPOUND_SCALING: dict[str, Scaling] = {
    "b0": Scaling(width=1.0, depth=1.0, resolution=224, dropout_rate=0.2),
    "b1": Scaling(width=1.0, depth=1.1, resolution=240, dropout_rate=0.2),
    "b2": Scaling(width=1.1, depth=1.2, resolution=260, dropout_rate=0.3),
    "b3": Scaling(width=1.2, depth=1.4, resolution=300, dropout_rate=0.3),
    "b4": Scaling(width=1.4, depth=1.8, resolution=380, dropout_rate=0.4),
    "b5": Scaling(width=1.6, depth=2.2, resolution=456, dropout_rate=0.4),
    "b6": Scaling(width=1.8, depth=2.6, resolution=528, dropout_rate=0.5),
    "b7": Scaling(width=2.0, depth=3.1, resolution=600, dropout_rate=0.5),
}

# ---------------------------------------------------------------------------------------------
# Scaling rules.
# ---------------------------------------------------------------------------------------------

CHANNEL_DIVISOR = 8  # channel counts stay multiples of 8 (friendly to vector units)
MIN_CHANNEL_FRACTION = 0.9  # rounding may lose at most 10% of the scaled width


def round_channels(channels: int, width: float, divisor: int = CHANNEL_DIVISOR) -> int:
    """Scale ``channels`` by ``width`` and round to the nearest multiple of ``divisor``.

    Ties round up (``int(v + divisor / 2) // divisor * divisor``), the result is at least
    ``divisor``, and if rounding down would lose more than 10% of ``channels * width`` one more
    ``divisor`` is added. This is the TensorFlow reference's ``round_filters`` (also timm's
    ``make_divisible`` and torchvision's ``_make_divisible``), so the channel counts, and with
    them the parameter counts, match the published models exactly.
    """
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < MIN_CHANNEL_FRACTION * scaled:
        rounded += divisor
    return rounded


def round_repeats(repeats: int, depth: float) -> int:
    """Scale a stage's block count by ``depth``, rounding up.

    Ceil (not round) means any depth above 1.0 adds at least one block to every stage, and a
    stage never loses blocks: B1's depth 1.1 turns stage 1's single block into two.
    """
    return int(math.ceil(depth * repeats))


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One MBConv block of a scaled network, with everything the block needs to know."""

    name: str  # "stage{i}_block{j}", both counted from 1
    stage: int
    in_features: int
    out_features: int
    expand_ratio: int
    kernel_size: int
    strides: int
    se_features: int
    drop_path_fraction: float  # block_index / num_blocks; times drop_path_rate gives the rate


def block_specs(
    width: float, depth: float, stages: tuple[Stage, ...] = B0_STAGES
) -> list[BlockSpec]:
    """Every MBConv block of the network scaled by ``width`` and ``depth``, in order."""
    rows = []
    in_features = round_channels(STEM_FEATURES, width)
    for stage_index, stage in enumerate(stages, start=1):
        out_features = round_channels(stage.features, width)
        for block_index in range(round_repeats(stage.repeats, depth)):
            rows.append((stage_index, block_index, in_features, out_features, stage))
            in_features = out_features
    return [
        BlockSpec(
            name=f"stage{stage_index}_block{block_index + 1}",
            stage=stage_index,
            in_features=cin,
            out_features=cout,
            expand_ratio=stage.expand_ratio,
            kernel_size=stage.kernel_size,
            strides=stage.strides if block_index == 0 else 1,
            se_features=max(1, int(cin * SE_RATIO)),
            drop_path_fraction=position / len(rows),
        )
        for position, (stage_index, block_index, cin, cout, stage) in enumerate(rows)
    ]


# ---------------------------------------------------------------------------------------------
# Blocks.
# ---------------------------------------------------------------------------------------------


# The PyTorch-trained models' BatchNorm (eps 1e-5, PyTorch momentum 0.1 = Flax 0.9): the blocks'
# default; the network binds its own constants once and passes them on.
pytorch_batch_norm: Norm = functools.partial(nn.BatchNorm, epsilon=1e-5, momentum=0.9)


class MBConv(nn.Module):
    """Mobile inverted bottleneck: expand (1x1), filter (depthwise kxk), excite, project (1x1).

    The block is "inverted" because it is thin at its ends and wide in the middle; the
    projection is linear (no activation) so the thin residual stream is not squashed. With
    ``expand_ratio == 1`` (stage 1) the expansion is skipped (timm's DepthwiseSeparable block).
    """

    features: int
    expand_ratio: int
    kernel_size: int
    strides: int
    se_features: int
    drop_path_rate: float = 0.0
    padding: str = "symmetric"
    norm: Norm = pytorch_batch_norm
    dtype: Any = jnp.float32
    depthwise_implementation: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        def norm(x: jax.Array, name: str) -> jax.Array:
            return self.norm(name=name)(x, use_running_average=not train)

        in_features = x.shape[-1]
        shortcut = x

        # Point-wise expansion.
        if self.expand_ratio != 1:
            hidden = in_features * self.expand_ratio
            x = Conv2d(hidden, 1, dtype=self.dtype, name="conv_expand")(x)  # -> (B, H, W, e*C_in)
            x = nn.silu(norm(x, "bn_expand"))

        # Depth-wise convolution: spatial filtering, one filter per channel.
        x = DepthwiseConv2d(
            self.kernel_size,
            self.strides,
            padding=self.padding,
            dtype=self.dtype,
            implementation=self.depthwise_implementation,
            name="conv_dw",
        )(x)  # (B, H, W, e*C_in) -> (B, H/s, W/s, e*C_in)
        x = nn.silu(norm(x, "bn_dw"))

        # Squeeze-and-excitation: reweight channels from global context.
        x = SqueezeExcite(self.se_features, dtype=self.dtype, name="se")(x)

        # Point-wise linear projection (no activation).
        x = Conv2d(self.features, 1, dtype=self.dtype, name="conv_project")(
            x
        )  # -> (B, H/s, W/s, C)
        x = norm(x, "bn_project")

        # Stochastic depth and identity shortcut, only where shapes allow.
        if self.strides == 1 and in_features == self.features:
            x = DropPath(self.drop_path_rate, name="drop_path")(x, train=train)
            x = x + shortcut
        return x


# ---------------------------------------------------------------------------------------------
# The network.
# ---------------------------------------------------------------------------------------------


class EfficientNetBackbone(nn.Module):
    """The feature extractor: stem -> seven MBConv stages, ``(B, H, W, 3)`` -> a dict of maps.

    Returns ``{"stem": (B, H/2, W/2, 32 w), "stage1": ..., ..., "stage7": (B, H/32, W/32, 320 w)}``
    in that order (strides 2, 2, 4, 8, 16, 16, 32, 32; w the width multiplier; spatial sizes
    round up). The same maps are sown into ``"intermediates"`` as ``stem_output``, ``stage1`` ..
    ``stage7``. Fields as :class:`EfficientNet`'s.
    """

    width: float = 1.0
    depth: float = 1.0
    drop_path_rate: float = 0.2
    padding: str = "symmetric"
    bn_epsilon: float = 1e-5
    bn_momentum: float = 0.9
    dtype: Any = jnp.float32
    depthwise_implementation: str = "auto"

    def __call__(self, x: jax.Array, *, train: bool) -> dict[str, jax.Array]:
        # The work is in forward_features, which a classifier sharing this scope calls directly.
        return self.forward_features(x, train=train)

    @nn.compact
    def forward_features(self, x: jax.Array, *, train: bool) -> dict[str, jax.Array]:
        check_images(x, model="EfficientNet")
        norm = functools.partial(
            nn.BatchNorm, epsilon=self.bn_epsilon, momentum=self.bn_momentum, dtype=self.dtype
        )
        features = {}

        # Stem: (B, H, W, 3) -> (B, H/2, W/2, 32 w)
        x = ConvBNAct(
            round_channels(STEM_FEATURES, self.width),
            kernel_size=3,
            strides=2,
            padding=self.padding,
            norm=norm,
            dtype=self.dtype,
            name="stem",
        )(x, train=train)
        self.sow("intermediates", "stem_output", x)
        features["stem"] = x

        # MBConv stages: (B, H/2, W/2, 32 w) -> (B, H/32, W/32, 320 w)
        specs = block_specs(self.width, self.depth)
        for index, spec in enumerate(specs):
            x = MBConv(
                features=spec.out_features,
                expand_ratio=spec.expand_ratio,
                kernel_size=spec.kernel_size,
                strides=spec.strides,
                se_features=spec.se_features,
                drop_path_rate=self.drop_path_rate * spec.drop_path_fraction,
                padding=self.padding,
                norm=norm,
                dtype=self.dtype,
                depthwise_implementation=self.depthwise_implementation,
                name=spec.name,
            )(x, train=train)
            if index + 1 == len(specs) or specs[index + 1].stage != spec.stage:
                self.sow("intermediates", f"stage{spec.stage}", x)
                features[f"stage{spec.stage}"] = x
        return features


class EfficientNet(nn.Module):
    """EfficientNet classifier over NHWC images: :class:`EfficientNetBackbone`, then the head.

    ``width`` / ``depth`` are the compound-scaling multipliers (:data:`COMPOUND_SCALING`).
    Stage outputs are sown into the ``"intermediates"`` collection (``stem_output``, ``stage1``
    .. ``stage7``, ``head_output``). The backbone shares this module's scope, so its layers keep
    the top-level names of the published checkpoints (``stem``, ``stage1_block1``, ...) beside
    ``head`` and ``classifier``.

    Features without the head: ``model.apply(variables, x, train=False,
    method="forward_features")`` returns the backbone's dict of stage maps.
    """

    num_classes: int = 1000
    width: float = 1.0
    depth: float = 1.0
    dropout_rate: float = 0.2
    drop_path_rate: float = 0.2  # timm's default for training EfficientNet
    padding: str = "symmetric"
    bn_epsilon: float = 1e-5
    bn_momentum: float = 0.9
    dtype: Any = jnp.float32
    depthwise_implementation: str = "auto"

    def setup(self) -> None:
        self.backbone = EfficientNetBackbone(
            width=self.width,
            depth=self.depth,
            drop_path_rate=self.drop_path_rate,
            padding=self.padding,
            bn_epsilon=self.bn_epsilon,
            bn_momentum=self.bn_momentum,
            dtype=self.dtype,
            depthwise_implementation=self.depthwise_implementation,
        )
        nn.share_scope(self, self.backbone)

    def forward_features(self, x: jax.Array, *, train: bool) -> dict[str, jax.Array]:
        """The backbone's stage maps, ``{"stem": ..., "stage1": ..., ..., "stage7": ...}``."""
        # The backbone's forward_features rather than its __call__: in a shared scope,
        # capture_intermediates would record the backbone's __call__ output as this model's own.
        return self.backbone.forward_features(x, train=train)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = self.forward_features(x, train=train)["stage7"]  # (B, H/32, W/32, 320 w)

        # Head: 1x1 conv to 1280 * width, global average pooling, dropout, classifier.
        norm = functools.partial(
            nn.BatchNorm, epsilon=self.bn_epsilon, momentum=self.bn_momentum, dtype=self.dtype
        )
        x = ConvBNAct(
            round_channels(HEAD_FEATURES, self.width), norm=norm, dtype=self.dtype, name="head"
        )(x, train=train)  # (B, H/32, W/32, 320 w) -> (B, H/32, W/32, 1280 w)
        self.sow("intermediates", "head_output", x)
        x = jnp.mean(x, axis=(1, 2))  # (B, H/32, W/32, 1280 w) -> (B, 1280 w)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(x)  # -> (B, K)
        return x.astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# Registered variants: one register_model(name, ...)(partial(EfficientNet, **config)) per row.
# ---------------------------------------------------------------------------------------------

# Centre-crop fractions of timm's pretrained configurations for tf_efficientnet_b0..b7 (and
# timm's efficientnet_b0, b6, b7): about resolution / (resolution + 32), the TensorFlow
# reference's CROP_PADDING = 32. timm's efficientnet_b1..b5 checkpoints were trained at other
# resolutions than the paper's and carry other crops; at the paper's resolutions we use these.
CROP_FRACTION = {
    "b0": 0.875,
    "b1": 0.882,
    "b2": 0.890,
    "b3": 0.904,
    "b4": 0.922,
    "b5": 0.934,
    "b6": 0.942,
    "b7": 0.949,
}

PYTORCH_BATCH_NORM = {"bn_epsilon": 1e-5, "bn_momentum": 0.9}  # PyTorch defaults (eps, 1 - 0.1)
TENSORFLOW_BATCH_NORM = {"bn_epsilon": 1e-3, "bn_momentum": 0.99}  # TF reference (eps, decay)

# Two weight origins per variant: (name prefix, padding + BatchNorm, description suffix).
ORIGINS = (
    (
        "",
        {"padding": "symmetric", **PYTORCH_BATCH_NORM},
        "symmetric padding and BatchNorm eps 1e-5, for timm / torchvision weights",
    ),
    (
        "tf_",
        {"padding": "same", **TENSORFLOW_BATCH_NORM},
        "TensorFlow 'SAME' padding and BatchNorm eps 1e-3, for timm's TF-ported weights",
    ),
)

for _variant, _scaling in COMPOUND_SCALING.items():
    for _prefix, _origin_config, _origin in ORIGINS:
        register_model(
            f"{_prefix}efficientnet_{_variant}",
            family="efficientnet",
            resolution=_scaling.resolution,
            preprocessing=Preprocessing(
                mean=IMAGENET_MEAN,
                std=IMAGENET_STD,
                crop_fraction=CROP_FRACTION[_variant],
                interpolation="bicubic",
            ),
            description=(
                f"EfficientNet-{_variant.upper()} (width {_scaling.width}, depth "
                f"{_scaling.depth}, {_scaling.resolution}px); {_origin}"
            ),
        )(
            functools.partial(
                EfficientNet,
                width=_scaling.width,
                depth=_scaling.depth,
                dropout_rate=_scaling.dropout_rate,
                **_origin_config,
            )
        )

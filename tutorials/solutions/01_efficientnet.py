"""Solutions to the exercises of tutorials/01_efficientnet.ipynb.

Tested by tests/test_tutorial_solutions.py.
"""

from __future__ import annotations

import math

import jax

# EfficientNet paper, Table 1, stages 2-8: (output channels, repeats) of B0.
B0_TABLE = ((16, 1), (24, 2), (40, 2), (80, 3), (112, 3), (192, 4), (320, 1))


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Scale by ``width``, round to the nearest multiple of ``divisor`` (ties up, at least
    ``divisor``) and add one ``divisor`` if rounding lost more than 10%."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def scaled_stages(width: float, depth: float) -> list[tuple[int, int]]:
    """Exercise 1: ``(channels, repeats)`` of the seven MBConv stages of the scaled network."""
    return [(round_channels(c, width), math.ceil(depth * r)) for c, r in B0_TABLE]


def mbconv_params(
    in_features: int, out_features: int, expand_ratio: int, kernel_size: int, se_features: int
) -> int:
    """Exercise 2: parameters of one MBConv block (BatchNorm scale and bias included)."""
    hidden = in_features * expand_ratio
    total = 0
    if expand_ratio != 1:
        total += in_features * hidden + 2 * hidden  # 1x1 expansion (no bias) + BN
    total += kernel_size * kernel_size * hidden + 2 * hidden  # depthwise (no bias) + BN
    total += 2 * hidden * se_features + se_features + hidden  # SE: two 1x1 convs with bias
    total += hidden * out_features + 2 * out_features  # 1x1 projection (no bias) + BN
    return total


def depthwise_conv_grouped(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
    """Exercise 3: (B, H, W, C) * (k, k, 1, C) -> (B, H', W', C) as one grouped convolution.

    With ``feature_group_count = C`` each input channel is its own group of one, convolved with
    its own (k, k, 1, 1) slice of the HWIO kernel; padding (k - 1) // 2 on every side.
    """
    p = (kernel.shape[0] - 1) // 2
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride, stride),
        padding=((p, p), (p, p)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=x.shape[-1],
    )

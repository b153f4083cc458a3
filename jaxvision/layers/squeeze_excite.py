"""Squeeze-and-excitation (Hu et al., "Squeeze-and-Excitation Networks", arXiv 1709.01507).

Each channel is rescaled by a gate in (0, 1) computed from the whole image: global average
pooling ("squeeze") summarises every channel in one number, a two-layer bottleneck of 1x1 convs
mixes those numbers ("excitation") and a sigmoid turns them into per-channel gates.

``reduced_features`` is the bottleneck width. EfficientNet (and timm, torchvision) count it from the
MBConv block's *input* channels, ``in_channels * 0.25``, although the module is applied to the
expanded ones; the caller decides, so the rule lives in the model file. Parameter names follow timm
(``conv_reduce``, ``conv_expand``, both 1x1 convolutions with bias).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.layers.conv import Conv2d


class SqueezeExcite(nn.Module):
    reduced_features: int
    dtype: Any = jnp.float32
    activation: Callable[[jax.Array], jax.Array] = nn.silu  # EfficientNet's; the SE paper used ReLU

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        x = x.astype(self.dtype)
        # Squeeze: one descriptor per channel.
        s = jnp.mean(x, axis=(1, 2), keepdims=True)  # (B, H, W, C) -> (B, 1, 1, C)
        # Excitation: bottleneck, then a sigmoid gate per channel.
        s = Conv2d(self.reduced_features, 1, use_bias=True, dtype=self.dtype, name="conv_reduce")(s)
        s = self.activation(s)  # (B, 1, 1, C_reduced)
        s = Conv2d(channels, 1, use_bias=True, dtype=self.dtype, name="conv_expand")(s)
        gate = nn.sigmoid(s)  # (B, 1, 1, C), in (0, 1)
        return x * gate  # (B, H, W, C)

"""Convolution with explicit padding conventions, and a matmul fast path for 1x1 kernels.

Two padding conventions meet in this library:

* ``"symmetric"``: ``(k - 1) // 2`` zeros on every side, as PyTorch layers are built (timm,
  torchvision, ultralytics ``autopad``). Weights trained in PyTorch need it.
* ``"same"``: TensorFlow's ``SAME``, which pads ``max((ceil(H / s) - 1) * s + k - H, 0)`` in
  total and puts the odd pixel at the bottom/right. Flax's ``padding="SAME"`` is exactly this.
  Weights trained in TensorFlow (timm's ``tf_`` models) need it.

The two agree at stride 1 for odd kernels and differ at stride 2 whenever the padding is odd.

A 1x1 convolution is a matrix multiply over the channel axis. Measured on this project's CPUs
(DESIGN.md section 5), XLA:CPU runs it ~3.5x slower through ``lax.conv`` than as an ``einsum``, so
``implementation="auto"`` uses the einsum for 1x1 kernels (same parameters, same result).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

PADDINGS = ("symmetric", "same", "valid")
IMPLEMENTATIONS = ("auto", "xla", "matmul")

# PyTorch's default conv init (kaiming_uniform with a=sqrt(5)) is variance 1/(3 fan_in); we use
# the He-normal fan_out init of the EfficientNet/timm training recipes for convolutions.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv_padding(padding: str, kernel_size: int, dilation: int = 1) -> str | list[tuple[int, int]]:
    """The ``lax.conv_general_dilated`` padding argument for one of :data:`PADDINGS`."""
    if padding == "symmetric":
        p = dilation * (kernel_size - 1) // 2
        return [(p, p), (p, p)]
    if padding == "same":
        return "SAME"
    if padding == "valid":
        return "VALID"
    raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")


class Conv2d(nn.Module):
    """A 2-D convolution over NHWC inputs; parameters ``kernel`` (k, k, C_in, C_out), ``bias``.

    ``implementation``: ``"xla"`` always calls ``lax.conv_general_dilated``; ``"matmul"`` (1x1
    kernels only) subsamples by the stride and contracts channels with an einsum; ``"auto"``
    picks the matmul for 1x1 kernels.
    """

    features: int
    kernel_size: int = 1
    strides: int = 1
    padding: str = "symmetric"
    use_bias: bool = False
    dtype: Any = jnp.float32
    implementation: str = "auto"
    kernel_init: Any = conv_kernel_init
    bias_init: Any = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be one of {IMPLEMENTATIONS}, got {self.implementation!r}"
            )
        k, s = self.kernel_size, self.strides
        in_features = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (k, k, in_features, self.features))
        kernel = kernel.astype(self.dtype)
        x = x.astype(self.dtype)
        use_matmul = k == 1 and self.implementation in ("auto", "matmul")
        if self.implementation == "matmul" and k != 1:
            raise ValueError("implementation='matmul' needs kernel_size=1")
        if use_matmul:
            # A 1x1 kernel at stride s reads pixels (0, s, 2s, ...) under every padding convention
            # used here (the padding of a 1x1 kernel is zero on the leading side).
            x = x[:, ::s, ::s, :]  # (B, H, W, C) -> (B, ceil(H/s), ceil(W/s), C)
            y = jnp.einsum("bhwc,cd->bhwd", x, kernel[0, 0])  # (B, H, W, C_in) -> (..., C_out)
        else:
            y = jax.lax.conv_general_dilated(
                x,
                kernel,
                window_strides=(s, s),
                padding=conv_padding(self.padding, k),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,))
            y = y + bias.astype(self.dtype)
        return y

"""Convolution with explicit padding conventions, a matmul path for 1x1 kernels, and ConvBNAct.

Two padding conventions meet in this library:

* ``"symmetric"``: ``(k - 1) // 2`` zeros on every side, as PyTorch layers are built (timm,
  torchvision, ultralytics ``autopad``). Weights trained in PyTorch need it.
* ``"same"``: TensorFlow's ``SAME``, which pads ``max((ceil(H / s) - 1) * s + k - H, 0)`` in
  total and puts the odd pixel at the bottom/right. Flax's ``padding="SAME"`` is exactly this.
  Weights trained in TensorFlow (timm's ``tf_`` models) need it.

The two agree at stride 1 for odd kernels and differ at stride 2 whenever the padding is odd.

A 1x1 convolution is a matrix multiply over the channel axis: ``implementation="auto"`` writes it
as an ``einsum`` (same parameters, same result; the rule and its measurements:
:mod:`jaxvision.layers.implementation`).

:class:`ConvBNAct` is the unit of the convolutional networks: a convolution without bias, a
BatchNorm and an activation (ultralytics ``Conv``; EfficientNet's stem and head).

Shape legend: B batch, H/W height/width, C_in input channels, C output channels, s stride.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.layers.implementation import resolve_implementation

# A normalisation factory: ``norm(name=...)`` builds the layer, called as ``layer(x,
# use_running_average=...)``; networks bind its constants once (``partial(nn.BatchNorm, epsilon=...,
# momentum=..., dtype=...)``) and pass it down.
Norm = Callable[..., nn.Module]

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
    picks the matmul for 1x1 kernels and ``"xla"`` otherwise, on every backend.
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
        k, s = self.kernel_size, self.strides
        layer = "conv1x1" if k == 1 else "conv"
        implementation = resolve_implementation(layer, self.implementation, IMPLEMENTATIONS)
        if implementation == "matmul" and k != 1:
            raise ValueError("implementation='matmul' needs kernel_size=1")
        in_features = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (k, k, in_features, self.features))
        kernel = kernel.astype(self.dtype)
        x = x.astype(self.dtype)
        if implementation == "matmul":
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


class ConvBNAct(nn.Module):
    """Convolution (no bias), BatchNorm, activation: ``(B, H, W, C_in) -> (B, H/s, W/s, C)``.

    ``norm`` builds the BatchNorm (see :data:`Norm`): the network binds epsilon, momentum and dtype
    once and every block passes it on; the default is Flax's ``nn.BatchNorm`` as it comes.
    ``activation`` defaults to SiLU; ``None`` leaves the output un-activated (ultralytics
    ``act=False``). ``implementation`` is the convolution's (:class:`Conv2d`). Sub-layers ``conv``
    (parameter ``kernel``) and ``bn``, the names of ultralytics' ``Conv`` and timm's ``ConvBnAct``.
    """

    features: int
    kernel_size: int = 1
    strides: int = 1
    padding: str = "symmetric"
    activation: Callable[[jax.Array], jax.Array] | None = nn.silu
    norm: Norm = nn.BatchNorm
    dtype: Any = jnp.float32
    implementation: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = Conv2d(
            self.features,
            self.kernel_size,
            self.strides,
            padding=self.padding,
            use_bias=False,  # the BatchNorm's shift replaces it
            dtype=self.dtype,
            implementation=self.implementation,
            name="conv",
        )(x)  # (B, H, W, C_in) -> (B, H/s, W/s, C)
        x = self.norm(name="bn")(x, use_running_average=not train)
        return self.activation(x) if self.activation is not None else x

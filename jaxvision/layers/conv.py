"""Convolution with explicit padding conventions, a matmul path for 1x1 kernels, and ConvBNAct.

The padding conventions (``"symmetric"`` for PyTorch-trained weights, ``"same"`` for TensorFlow's,
``"valid"``) are those of :mod:`jaxvision.layers.padding`.

A 1x1 convolution is a matrix multiply over the channel axis: ``implementation="auto"`` writes it
as an ``einsum`` (same parameters, same result; the rule and its measurements:
:mod:`jaxvision.layers.implementation`).

The input gradient of a strided convolution (``implementation="taps"``, :func:`conv_taps_grad`):
JAX's transpose rule turns it into a convolution of the output gradient with ``lhs_dilation =
stride``, i.e. with zeros inserted between its pixels; XLA:CPU's YNNPACK rejects lhs-dilated
convolutions, so Eigen runs it, three quarters of its multiplies (stride 2) against those zeros.
"taps" keeps the forward convolution and computes the input gradient as every tap's
contribution instead: one matrix product of the output gradient (B*H'*W', C) with the kernel
(C, k*k*C_in), which YNNPACK runs, then the k*k slices added into the input at stride ``s`` (split
by phase, the rows ``s*m + r`` receiving taps ``r, r + s, ...``, as the depthwise layer's
hand-written gradient does). It does the same multiplies, none against zeros. The kernel gradient
is JAX's own. (A phase split into stride-1 convolutions, the other way to avoid the zeros, falls
back to Eigen as well: YNNPACK does not take a convolution whose padding makes its output larger
than its input, which the border phases need.) ``"auto"`` uses it for strided k x k
convolutions when ``$JAXVISION_CONV_STRIDED_GRAD`` is ``taps``; it is ``xla`` (JAX's transpose)
by default until the form is measured faster on an idle machine (benchmarks/README.md).

:class:`ConvBNAct` is the unit of the convolutional networks: a convolution without bias, a
BatchNorm and an activation (ultralytics ``Conv``; EfficientNet's stem and head).

Shape legend: B batch, H/W height/width, C_in input channels, C output channels, s stride.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.layers.implementation import resolve_implementation
from jaxvision.layers.padding import explicit_padding

# A normalisation factory: ``norm(name=...)`` builds the layer, called as ``layer(x,
# use_running_average=...)``; networks bind its constants once (``partial(nn.BatchNorm, epsilon=...,
# momentum=..., dtype=...)``) and pass it down.
Norm = Callable[..., nn.Module]

IMPLEMENTATIONS = ("auto", "xla", "matmul", "taps")
# What "auto" does with the input gradient of a strided k x k convolution: "xla" (JAX's
# transpose, an lhs-dilated convolution) or "taps" (conv_taps_grad). See the module docstring.
STRIDED_GRAD_ENV = "JAXVISION_CONV_STRIDED_GRAD"
STRIDED_GRAD_DEFAULT = "xla"
_DIMENSIONS = ("NHWC", "HWIO", "NHWC")

# PyTorch's default conv init (kaiming_uniform with a=sqrt(5)) is variance 1/(3 fan_in); we use
# the He-normal fan_out init of the EfficientNet/timm training recipes for convolutions.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def strided_grad_choice() -> str:
    """The input gradient ``"auto"`` gives a strided convolution: ``$JAXVISION_CONV_STRIDED_GRAD``
    (``taps`` or ``xla``), else :data:`STRIDED_GRAD_DEFAULT`. Read when the model is traced."""
    choice = os.environ.get(STRIDED_GRAD_ENV, "").strip().lower() or STRIDED_GRAD_DEFAULT
    if choice not in ("taps", "xla"):
        raise ValueError(f"{STRIDED_GRAD_ENV} must be 'taps' or 'xla', got {choice!r}")
    return choice


def _conv(x: jax.Array, kernel: jax.Array, stride: int, padding) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), padding, dimension_numbers=_DIMENSIONS
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_taps_grad(
    x: jax.Array,
    kernel: jax.Array,
    stride: int,
    padding: tuple[tuple[int, int], tuple[int, int]],
) -> jax.Array:
    """``lax.conv_general_dilated`` of NHWC ``x`` and an HWIO ``kernel`` at ``stride`` with explicit
    ``padding`` ((top, bottom), (left, right)), whose input gradient is computed tap by tap (one
    matrix product, then strided adds) instead of as an lhs-dilated convolution."""
    return _conv(x, kernel, stride, padding)


def _taps_fwd(x, kernel, stride, padding):
    return _conv(x, kernel, stride, padding), (x, kernel)


def _taps_bwd(stride, padding, residuals, grad):
    x, kernel = residuals
    s = stride
    k_h, k_w, c_in, _ = kernel.shape
    (top, bottom), (left, right) = padding
    b, out_h, out_w, _ = grad.shape
    grad = grad.astype(x.dtype)
    # Every tap's share of the input gradient in one product: (B, H', W', C) x (k, k, C_in, C)
    # contracted over C -> (B, H', W', k, k, C_in); the left operand contracts on its last axis.
    taps = jnp.einsum("bhwo,ijco->bhwijc", grad, kernel.astype(x.dtype))
    # Output pixel (m, n) read padded input pixel (s*m + i, s*n + j) through tap (i, j): split
    # the padded input by phase (r, q) = (index mod s); phase rows s*M + r receive taps
    # i = r + s*t from output rows M - t (likewise for columns), a shift by (t, u).
    rows = -(-(x.shape[1] + top + bottom) // s)  # phase lengths; rows - out_h >= ceil(k/s) - 1
    cols = -(-(x.shape[2] + left + right) // s)
    phase_rows = []
    for r in range(s):
        phase_cols = []
        for q in range(s):
            acc = jnp.zeros((b, rows, cols, c_in), x.dtype)
            for t, i in enumerate(range(r, k_h, s)):
                for u, j in enumerate(range(q, k_w, s)):
                    shift = ((0, 0), (t, rows - out_h - t), (u, cols - out_w - u), (0, 0))
                    acc = acc + jnp.pad(taps[:, :, :, i, j, :], shift)  # (B, M, N, C_in)
            phase_cols.append(acc)
        phase_rows.append(jnp.stack(phase_cols, axis=3))  # (B, M, N, s, C_in)
    grad_xp = jnp.stack(phase_rows, axis=2).reshape(b, rows * s, cols * s, c_in)  # interleave
    grad_x = grad_xp[:, top : top + x.shape[1], left : left + x.shape[2], :]  # drop the padding
    _, kernel_vjp = jax.vjp(lambda k: _conv(x, k, stride, padding), kernel)
    return grad_x, kernel_vjp(grad)[0]


conv_taps_grad.defvjp(_taps_fwd, _taps_bwd)


class Conv2d(nn.Module):
    """A 2-D convolution over NHWC inputs; parameters ``kernel`` (k, k, C_in, C_out), ``bias``.

    ``implementation``: ``"xla"`` always calls ``lax.conv_general_dilated``; ``"matmul"`` (1x1
    kernels only) subsamples by the stride and contracts channels with an einsum; ``"taps"`` is
    ``"xla"`` with the input gradient of a strided convolution computed tap by tap
    (:func:`conv_taps_grad`; at stride 1 it is ``"xla"``); ``"auto"`` picks the matmul for 1x1
    kernels and ``"xla"`` otherwise, on every backend, with the strided input gradient
    :func:`strided_grad_choice` names.
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
        if implementation == "xla" and self.implementation == "auto" and s > 1:
            implementation = strided_grad_choice()
        if implementation == "taps" and s > 1:
            pads = explicit_padding(self.padding, x.shape[1:3], k, s)
            y = conv_taps_grad(x, kernel, s, pads)
        elif implementation == "matmul":
            # A 1x1 kernel at stride s reads pixels (0, s, 2s, ...) under every padding convention
            # used here (the padding of a 1x1 kernel is zero on the leading side).
            x = x[:, ::s, ::s, :]  # (B, H, W, C) -> (B, ceil(H/s), ceil(W/s), C)
            y = jnp.einsum("bhwc,cd->bhwd", x, kernel[0, 0])  # (B, H, W, C_in) -> (..., C_out)
        else:
            y = jax.lax.conv_general_dilated(
                x,
                kernel,
                window_strides=(s, s),
                padding=explicit_padding(self.padding, x.shape[1:3], k, s),
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

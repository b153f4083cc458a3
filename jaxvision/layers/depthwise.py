"""Depthwise convolution: one k x k filter per channel, two interchangeable formulations.

A depthwise convolution (MobileNet, arXiv 1704.04861) filters every channel on its own:

    y[b, h, w, c] = sum_{i, j < k} x_pad[b, s*h + i, s*w + j, c] * kernel[i, j, 0, c]

``implementation="xla"`` hands this to ``lax.conv_general_dilated`` with
``feature_group_count = C``. ``implementation="shifted"`` writes the sum out literally: k*k strided
slices of the padded input, each multiplied by one tap of the kernel and accumulated. Both read the
same parameter ``kernel`` (k, k, 1, C) (Flax's depthwise layout; a PyTorch (C, 1, k, k) weight maps
with ``transpose(2, 3, 1, 0)``) and give the same result.

Why two: XLA:CPU lowers a grouped convolution to a slow generic loop, while the k*k multiply-adds
fuse into one vectorised loop over NHWC memory; on GPU/TPU the grouped convolution is a tuned
library call. ``implementation="auto"`` therefore picks "shifted" on CPU and "xla" elsewhere, the
rule of :mod:`jaxvision.layers.implementation` (the measurements are in benchmarks/README.md).

The shifted form has a hand-written backward pass (``jax.custom_vjp``) made of the same kind of
shifted multiply-adds, so the gradient is as cheap as the forward pass:

* kernel gradient: for every tap (i, j), the sum over batch and space of
  ``input slice (i, j) * output gradient`` (k*k reductions);
* input gradient: every output pixel sends ``gradient * tap`` back to the k*k input pixels it
  read. For stride s we split the padded input's rows (and columns) by their phase
  r = index mod s: the rows ``s*m + r`` receive taps ``i = r + s*t`` from output row ``m - t``.
  Each phase is then a small stride-1 correlation of the output gradient with a subset of the
  flipped taps, and the phases are interleaved back. Every tap is visited once, so the work is
  k*k multiply-adds per output pixel, as in the forward pass, with no multiplications by the
  zeros a dilated gradient would carry.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.layers import padding as _padding
from jaxvision.layers.implementation import resolve_implementation
from jaxvision.layers.padding import explicit_padding, padding_amounts

IMPLEMENTATIONS = ("auto", "xla", "shifted")
# The conventions of the two weight sources (PyTorch's symmetric, TensorFlow's SAME): the ones the
# hand-written gradient is tested for; "valid" is refused.
PADDINGS = tuple(p for p in _padding.PADDINGS if p != "valid")

# He-normal over a depthwise filter's own fan (k*k inputs per output), as timm's "goog" init
# (fan_out = k*k*C / groups); Flax's fan_out for a (k, k, 1, C) kernel would wrongly count all C.
depthwise_kernel_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def depthwise_conv_xla(x: jax.Array, kernel: jax.Array, stride: int, padding: str) -> jax.Array:
    """(B, H, W, C) * (k, k, 1, C) -> (B, H', W', C) as a grouped ``lax.conv``."""
    k = kernel.shape[0]
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride, stride),
        padding=explicit_padding(padding, x.shape[1:3], k, stride),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=x.shape[-1],
    )


def _shifted_taps(xp: jax.Array, kernel: jax.Array, stride: int, out_h: int, out_w: int):
    """sum over taps (i, j) of the strided window of ``xp`` starting at (i, j) times the tap."""
    k = kernel.shape[0]
    span_h, span_w = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
    y = None
    for i in range(k):
        for j in range(k):
            window = xp[:, i : i + span_h : stride, j : j + span_w : stride, :]  # (B, H', W', C)
            term = window * kernel[i, j, 0]
            y = term if y is None else y + term
    return y


def _pad_input(x: jax.Array, k: int, stride: int, padding: str):
    (top, bottom) = padding_amounts(padding, x.shape[1], k, stride)
    (left, right) = padding_amounts(padding, x.shape[2], k, stride)
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out_h = (xp.shape[1] - k) // stride + 1
    out_w = (xp.shape[2] - k) // stride + 1
    return xp, (top, left), out_h, out_w


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_conv_shifted(x: jax.Array, kernel: jax.Array, stride: int, padding: str) -> jax.Array:
    """(B, H, W, C) * (k, k, 1, C) -> (B, H', W', C) as k*k shifted multiply-adds."""
    xp, _, out_h, out_w = _pad_input(x, kernel.shape[0], stride, padding)
    return _shifted_taps(xp, kernel, stride, out_h, out_w)


def _shifted_fwd(x, kernel, stride, padding):
    return depthwise_conv_shifted(x, kernel, stride, padding), (x, kernel)


def _shifted_bwd(stride, padding, residuals, grad):
    x, kernel = residuals
    k, s = kernel.shape[0], stride
    xp, (top, left), out_h, out_w = _pad_input(x, k, s, padding)
    grad = grad.astype(x.dtype)  # (B, H', W', C)
    span_h, span_w = s * (out_h - 1) + 1, s * (out_w - 1) + 1

    # Kernel gradient: one reduction per tap over (B, H', W'), accumulated in float32.
    taps = [
        [
            jnp.sum(
                (xp[:, i : i + span_h : s, j : j + span_w : s, :] * grad).astype(jnp.float32),
                axis=(0, 1, 2),
            )
            for j in range(k)
        ]
        for i in range(k)
    ]
    grad_kernel = jnp.stack([jnp.stack(row) for row in taps])[:, :, None, :]  # (k, k, 1, C)

    # Input gradient, phase by phase: padded rows s*m + r receive taps i = r + s*t from output
    # rows m - t (t = 0 .. ceil((k - r) / s) - 1); likewise for columns.
    rows, cols = -(-xp.shape[1] // s), -(-xp.shape[2] // s)  # phase lengths M, N
    max_taps = -(-k // s)
    # Zeros before the gradient let index m - t go negative; zeros after cover phases longer than
    # the output.
    gpad = jnp.pad(
        grad,
        (
            (0, 0),
            (max_taps - 1, max(rows - out_h, 0)),
            (max_taps - 1, max(cols - out_w, 0)),
            (0, 0),
        ),
    )
    phase_rows = []
    for r in range(s):
        phase_cols = []
        for q in range(s):
            acc = jnp.zeros((x.shape[0], rows, cols, x.shape[3]), x.dtype)
            for t in range(len(range(r, k, s))):
                for u in range(len(range(q, k, s))):
                    start_h, start_w = max_taps - 1 - t, max_taps - 1 - u
                    window = gpad[:, start_h : start_h + rows, start_w : start_w + cols, :]
                    acc = acc + window * kernel[r + s * t, q + s * u, 0]  # (B, M, N, C)
            phase_cols.append(acc)
        phase_rows.append(jnp.stack(phase_cols, axis=3))  # (B, M, N, s, C)
    grad_xp = jnp.stack(phase_rows, axis=2)  # (B, M, s, N, s, C)
    grad_xp = grad_xp.reshape(x.shape[0], rows * s, cols * s, x.shape[3])  # interleave phases
    grad_x = grad_xp[:, top : top + x.shape[1], left : left + x.shape[2], :]  # drop the padding
    return grad_x, grad_kernel.astype(kernel.dtype)


depthwise_conv_shifted.defvjp(_shifted_fwd, _shifted_bwd)


def depthwise_conv(
    x: jax.Array,
    kernel: jax.Array,
    *,
    stride: int = 1,
    padding: str = "symmetric",
    implementation: str = "auto",
) -> jax.Array:
    """Functional depthwise convolution of NHWC ``x`` with a (k, k, 1, C) ``kernel``."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    if kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1] or kernel.shape[2] != 1:
        raise ValueError(f"depthwise kernel must have shape (k, k, 1, C), got {kernel.shape}")
    if x.shape[-1] != kernel.shape[-1]:
        raise ValueError(f"input has {x.shape[-1]} channels, kernel has {kernel.shape[-1]}")
    if resolve_implementation("depthwise", implementation, IMPLEMENTATIONS) == "xla":
        return depthwise_conv_xla(x, kernel, stride, padding)
    return depthwise_conv_shifted(x, kernel, stride, padding)


class DepthwiseConv2d(nn.Module):
    """Depthwise k x k convolution over NHWC inputs; parameter ``kernel`` (k, k, 1, C).

    ``implementation``: "xla" (grouped ``lax.conv``), "shifted" (k*k multiply-adds with a
    hand-written backward pass) or "auto" ("shifted" on CPU, "xla" on GPU/TPU).
    """

    kernel_size: int = 3
    strides: int = 1
    padding: str = "symmetric"
    use_bias: bool = False
    dtype: Any = jnp.float32
    implementation: str = "auto"
    kernel_init: Any = depthwise_kernel_init
    bias_init: Any = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        kernel = self.param(
            "kernel", self.kernel_init, (self.kernel_size, self.kernel_size, 1, channels)
        )
        y = depthwise_conv(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            stride=self.strides,
            padding=self.padding,
            implementation=self.implementation,
        )  # (B, H, W, C) -> (B, H/s, W/s, C)
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (channels,))
            y = y + bias.astype(self.dtype)
        return y

"""Patch embedding: cut the image into p x p patches and project each to a D-dimensional token.

The Vision Transformer (Dosovitskiy et al., arXiv 2010.11929, section 3.1) reshapes the image
``(H, W, C)`` into ``N = HW / p^2`` flattened patches of ``p * p * C`` pixels and maps each with one
trainable linear projection ``E``. Two ways to compute the same thing:

* ``"conv"``: a convolution with a ``p x p`` kernel at stride ``p`` (how timm and torchvision
  store it, so their weights load without reshaping);
* ``"dense"``: :func:`patchify` followed by one matrix multiply with the same kernel reshaped to
  ``(p * p * C, D)`` - the equation of the paper.

Both share the parameters ``kernel`` (p, p, C, D) and ``bias`` (D,). ``"auto"`` uses the dense
form, a plain matrix multiply, on every backend: the rule of :mod:`jaxvision.layers.implementation`
(the CPU measurement behind it is in benchmarks/README.md).

Shape legend: B batch, H/W image height/width, C channels, p patch size, N = HW/p^2 tokens,
D token width.
"""

from __future__ import annotations

from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.layers.implementation import resolve_implementation

IMPLEMENTATIONS = ("auto", "conv", "dense")


def _check_divisible(height: int, width: int, patch_size: int) -> None:
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"image size {height}x{width} is not divisible by the patch size {patch_size}; "
            f"resize or crop to a multiple of {patch_size}"
        )


def patchify(x: jax.Array, patch_size: int) -> jax.Array:
    """``(B, H, W, C) -> (B, N, p * p * C)``, patches in row-major order, pixels in (row, column,
    channel) order inside a patch (the order of a ``(p, p, C, D)`` convolution kernel)."""
    _, height, width, _ = x.shape
    _check_divisible(height, width, patch_size)
    return einops.rearrange(
        x, "b (h p1) (w p2) c -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size
    )


def unpatchify(tokens: jax.Array, patch_size: int, height: int, width: int) -> jax.Array:
    """The inverse of :func:`patchify`: ``(B, N, p * p * C) -> (B, H, W, C)``."""
    _check_divisible(height, width, patch_size)
    grid_h, grid_w = height // patch_size, width // patch_size
    if tokens.shape[1] != grid_h * grid_w:
        raise ValueError(
            f"{tokens.shape[1]} tokens do not tile a {height}x{width} image with "
            f"{patch_size}x{patch_size} patches ({grid_h * grid_w} expected)"
        )
    return einops.rearrange(
        tokens,
        "b (h w) (p1 p2 c) -> b (h p1) (w p2) c",
        h=grid_h,
        w=grid_w,
        p1=patch_size,
        p2=patch_size,
    )


class PatchEmbed(nn.Module):
    """``(B, H, W, C) -> (B, N, D)``: non-overlapping p x p patches, linearly projected.

    Parameters: ``kernel`` (p, p, C, D) and ``bias`` (D,), shared by both implementations.
    """

    features: int
    patch_size: int
    dtype: Any = jnp.float32
    implementation: str = "auto"
    # big_vision initialises the embedding with LeCun normal (fan-in) and a zero bias.
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        implementation = resolve_implementation("patch_embed", self.implementation, IMPLEMENTATIONS)
        p = self.patch_size
        _, height, width, channels = x.shape
        _check_divisible(height, width, p)
        kernel = self.param("kernel", self.kernel_init, (p, p, channels, self.features))
        bias = self.param("bias", self.bias_init, (self.features,))
        kernel, bias, x = kernel.astype(self.dtype), bias.astype(self.dtype), x.astype(self.dtype)

        if implementation == "conv":
            y = jax.lax.conv_general_dilated(
                x,
                kernel,
                window_strides=(p, p),
                padding="VALID",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )  # (B, H, W, C) -> (B, H/p, W/p, D)
            y = einops.rearrange(y, "b h w d -> b (h w) d")  # -> (B, N, D)
        else:
            patches = patchify(x, p)  # (B, H, W, C) -> (B, N, p*p*C)
            y = patches @ kernel.reshape(p * p * channels, self.features)  # -> (B, N, D)
        return y + bias

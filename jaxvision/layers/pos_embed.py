"""Learned position embedding, and its resizing to another token grid.

A ViT learns one embedding per position of the patch grid (plus the class token). A model trained
at one resolution and used at another has a different grid; the paper (arXiv 2010.11929, section
3.2) "performs 2D interpolation of the pre-trained position embeddings, according to their
location in the original image". How that interpolation is done differs between references, and
the logits of a converted model depend on it, so :func:`resize_pos_embed` reproduces PyTorch's
``F.interpolate(mode="bicubic")`` exactly, in each of the conventions the references use:

* timm ``resample_abs_pos_embed(..., antialias=False)``: ``align_corners=False, antialias=False``
  (the defaults here);
* timm ``checkpoint_filter_fn`` (loading a checkpoint into a model built at another size):
  ``align_corners=False, antialias=True``;
* torchvision ``interpolate_embeddings``: ``align_corners=True, antialias=False``.

PyTorch's plain bicubic uses Keys' cubic convolution with ``a = -0.75`` and clamps source indices
at the border; its antialiased bicubic is PIL's filter (``a = -0.5``) with weights renormalised
over the taps that fall inside the image, stretched by the scale when downsampling.
``jax.image.resize`` uses ``a = -0.5`` without clamping, which is none of these, so the
interpolation weights are written out here as a matrix per axis.

Shape legend: T tokens (prefix tokens + grid), D embedding width, h/w grid height/width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Keys' cubic convolution parameter: PyTorch's (and OpenCV's) plain bicubic uses -0.75; PIL's
# filter, which PyTorch's antialiased bicubic follows, uses -0.5.
TORCH_BICUBIC_A = -0.75
PIL_BICUBIC_A = -0.5


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel, zero outside ``|x| < 2``."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def bicubic_matrix(
    in_size: int, out_size: int, *, align_corners: bool = False, antialias: bool = False
) -> np.ndarray:
    """The ``(out_size, in_size)`` matrix of PyTorch's 1-D bicubic resampling weights (float64).

    Resampling a 2-D grid is separable: ``M_h @ grid @ M_w.T``, as PyTorch computes it.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
    matrix = np.zeros((out_size, in_size), np.float64)
    out_index = np.arange(out_size, dtype=np.float64)
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    else:
        scale = in_size / out_size

    if not antialias:
        # ATen upsample_bicubic2d: four taps around the source coordinate, indices clamped.
        src = scale * out_index if align_corners else scale * (out_index + 0.5) - 0.5
        floor = np.floor(src)
        t = src - floor
        for offset in (-1, 0, 1, 2):
            weight = _cubic(t - offset, TORCH_BICUBIC_A)
            index = np.clip(floor.astype(np.int64) + offset, 0, in_size - 1)
            np.add.at(matrix, (np.arange(out_size), index), weight)
        return matrix

    if align_corners:
        raise ValueError(
            "antialiased bicubic with align_corners=True is not supported (no reference uses it)"
        )
    # ATen _upsample_bicubic2d_aa: the filter support grows with the scale when downsampling,
    # taps outside the input are dropped and the remaining weights renormalised.
    support = 2.0 * scale if scale >= 1.0 else 2.0
    inv_scale = 1.0 / scale if scale >= 1.0 else 1.0
    for i in range(out_size):
        center = scale * (i + 0.5)
        first = max(int(center - support + 0.5), 0)
        last = min(int(center + support + 0.5), in_size)
        taps = np.arange(first, last)
        weight = _cubic((taps - center + 0.5) * inv_scale, PIL_BICUBIC_A)
        total = weight.sum()
        matrix[i, first:last] = weight / total if total != 0 else weight
    return matrix


def _as_grid(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def resize_pos_embed(
    pos_embed: Any,
    new_grid: int | Sequence[int],
    num_prefix_tokens: int = 1,
    *,
    old_grid: int | Sequence[int] | None = None,
    align_corners: bool = False,
    antialias: bool = False,
) -> Any:
    """Resize a ``(1, T, D)`` position embedding to a ``new_grid`` of patches (bicubic).

    The first ``num_prefix_tokens`` embeddings (class token) are kept as they are; the rest are
    read as a row-major ``old_grid`` (square when not given) and resampled. Matches timm's
    ``resample_abs_pos_embed(posemb, new_grid, num_prefix_tokens=..., antialias=antialias)``
    (``align_corners=False``) and torchvision's ``interpolate_embeddings``
    (``align_corners=True``) to float32 rounding. A numpy input gives numpy (computed in float64);
    a JAX array gives a JAX array (traceable).
    """
    is_numpy = isinstance(pos_embed, np.ndarray)
    xp = np if is_numpy else jnp
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"expected a (1, T, D) position embedding, got {pos_embed.shape}")
    num_grid_tokens = pos_embed.shape[1] - num_prefix_tokens
    if old_grid is None:
        side = math.isqrt(max(num_grid_tokens, 0))
        if side * side != num_grid_tokens:
            raise ValueError(
                f"{num_grid_tokens} position embeddings (after {num_prefix_tokens} prefix "
                "tokens) do not form a square grid; pass old_grid"
            )
        old_grid = side
    old_h, old_w = _as_grid(old_grid)
    new_h, new_w = _as_grid(new_grid)
    if old_h * old_w != num_grid_tokens:
        raise ValueError(f"old_grid {old_h}x{old_w} does not hold {num_grid_tokens} embeddings")
    if (old_h, old_w) == (new_h, new_w):
        return pos_embed

    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    grid = grid.reshape(1, old_h, old_w, -1)  # (1, T - prefix, D) -> (1, h, w, D)
    rows = bicubic_matrix(old_h, new_h, align_corners=align_corners, antialias=antialias)
    cols = bicubic_matrix(old_w, new_w, align_corners=align_corners, antialias=antialias)
    if is_numpy:
        resized = np.einsum("Hh,Ww,bhwd->bHWd", rows, cols, grid.astype(np.float64))
    else:
        resized = jnp.einsum(
            "Hh,Ww,bhwd->bHWd",
            rows.astype(np.float32),
            cols.astype(np.float32),
            grid.astype(jnp.float32),
            precision=jax.lax.Precision.HIGHEST,
        )  # (1, h, w, D) -> (1, new_h, new_w, D)
    resized = resized.reshape(1, new_h * new_w, -1).astype(pos_embed.dtype)
    return xp.concatenate([prefix, resized], axis=1)  # -> (1, prefix + new_h * new_w, D)


class PositionEmbedding(nn.Module):
    """Adds a learned embedding per token: ``(B, T, D) -> (B, T, D)``; parameter ``embedding``
    of shape (1, T, D), so the model's token count fixes its size."""

    # timm initialises position embeddings with a (truncated) normal of std 0.02.
    embedding_init: Any = nn.initializers.normal(stddev=0.02)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        embedding = self.param("embedding", self.embedding_init, (1, *x.shape[1:]))
        return x + embedding.astype(x.dtype)

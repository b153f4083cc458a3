"""Solutions to the exercises of tutorials/03_vision_transformer.ipynb.

Tested by tests/test_tutorial_solutions.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def vit_param_count(
    image_size: int,
    patch_size: int,
    hidden_size: int,
    num_layers: int,
    mlp_dim: int,
    num_classes: int,
    channels: int = 3,
) -> int:
    """Exercise 1: parameters of a ViT classifier, from its table row."""
    d, m = hidden_size, mlp_dim
    patches = (image_size // patch_size) ** 2
    embedding = patch_size * patch_size * channels * d + d  # kernel + bias
    tokens = d + (patches + 1) * d  # class token + position embedding
    block = (
        2 * 2 * d  # two LayerNorms (scale, bias)
        + 3 * d * d
        + 3 * d  # qkv
        + d * d
        + d  # attention output projection
        + d * m
        + m
        + m * d
        + d  # MLP
    )
    return embedding + tokens + num_layers * block + 2 * d + d * num_classes + num_classes


def mean_attention_distance(weights: jax.Array, grid_size: int, patch_size: int) -> np.ndarray:
    """Exercise 2: per head, the attention-weighted distance (pixels) between a query patch and the
    patches it attends to, averaged over query patches and the batch: (K,).

    ``weights`` (B, K, N + 1, N + 1) with the class token first; the class token's row and column
    are dropped and each patch row renormalised over the patches.
    """
    w = jnp.asarray(weights, jnp.float32)[:, :, 1:, 1:]  # (B, K, N, N) patch to patch
    w = w / w.sum(axis=-1, keepdims=True)
    rows, cols = jnp.divmod(jnp.arange(grid_size * grid_size), grid_size)
    distance = patch_size * jnp.hypot(rows[:, None] - rows[None], cols[:, None] - cols[None])
    per_query = jnp.sum(w * distance, axis=-1)  # (B, K, N)
    return np.asarray(per_query.mean(axis=(0, 2)))


def unpatchify(tokens: jax.Array, patch_size: int, height: int, width: int) -> jax.Array:
    """Exercise 3: (B, N, p * p * C) -> (B, H, W, C), the inverse of the notebook's patchify."""
    b, _, dim = tokens.shape
    p = patch_size
    gh, gw, c = height // p, width // p, dim // (p * p)
    x = tokens.reshape(b, gh, gw, p, p, c)  # (B, gh, gw, p, p, C)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # (B, gh, p, gw, p, C)
    return x.reshape(b, height, width, c)

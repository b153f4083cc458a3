"""The Transformer's position-wise MLP: Dense -> GELU -> dropout -> Dense -> dropout.

ViT (arXiv 2010.11929, eq. 3) uses two layers with a GELU between them; timm, torchvision and
big_vision all use the exact (erf) GELU, not the tanh approximation that is Flax's default, and
converted weights only reproduce the reference logits with the exact one.

Shape legend: B batch, N tokens, D width, M hidden width (``mlp_dim``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# big_vision's ViT MLP initialisation: Xavier-uniform kernels, near-zero normal biases.
mlp_kernel_init = nn.initializers.xavier_uniform()
mlp_bias_init = nn.initializers.normal(stddev=1e-6)


class Mlp(nn.Module):
    """``(B, N, D) -> (B, N, D)`` through a hidden width ``hidden_features``; parameters ``fc1``
    (D, M) and ``fc2`` (M, D) (timm's names)."""

    hidden_features: int
    out_features: int | None = None
    drop_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        out_features = self.out_features or x.shape[-1]
        dense = lambda features, name: nn.Dense(
            features,
            dtype=self.dtype,
            kernel_init=mlp_kernel_init,
            bias_init=mlp_bias_init,
            name=name,
        )
        x = dense(self.hidden_features, "fc1")(x)  # (B, N, D) -> (B, N, M)
        x = nn.gelu(x, approximate=False)
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        x = dense(out_features, "fc2")(x)  # (B, N, M) -> (B, N, D)
        return nn.Dropout(self.drop_rate, deterministic=not train)(x)

"""The Transformer's position-wise MLP: Dense -> GELU -> dropout -> Dense -> dropout.

ViT (arXiv 2010.11929, eq. 3) uses two layers with a GELU between them; timm, torchvision and
big_vision all use the exact (erf) GELU, not the tanh approximation that is Flax's default, and
converted weights only reproduce the reference logits with the exact one.

:func:`gelu_exact` is that GELU with a hand-written gradient, ``Phi(x) + x phi(x)`` recomputed
from ``x`` in the backward pass: the same forward values as ``nn.gelu(x, approximate=False)``
and the same gradient to float rounding, but XLA:CPU fuses it better than JAX's derivative of
``erf`` - the ViT-S/16 MLP's gradient (1576 x 384 -> 1536, the train step's shape at batch 8)
took 48 ms instead of 63 ms on this project's 2-core CPU (benchmarks/README.md, optimisation
log). Being a ``custom_vjp``, it supports reverse-mode differentiation (``grad``, ``vjp``) but
not forward mode (``jvp``, ``jacfwd``), like the depthwise convolution's shifted form.

Shape legend: B batch, N tokens, D width, M hidden width (``mlp_dim``).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# big_vision's ViT MLP initialisation: Xavier-uniform kernels, near-zero normal biases.
mlp_kernel_init = nn.initializers.xavier_uniform()
mlp_bias_init = nn.initializers.normal(stddev=1e-6)


@jax.custom_vjp
def gelu_exact(x: jax.Array) -> jax.Array:
    """The exact GELU, ``x * Phi(x)`` with ``Phi`` the standard normal CDF (via ``erf``)."""
    return nn.gelu(x, approximate=False)


def _gelu_exact_fwd(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return gelu_exact(x), x  # keep only x: the backward recomputes what it needs


def _gelu_exact_bwd(x: jax.Array, g: jax.Array) -> tuple[jax.Array]:
    cdf = 0.5 * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))  # Phi(x)
    pdf = jnp.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))  # phi(x)
    return ((g * (cdf + x * pdf)).astype(x.dtype),)


gelu_exact.defvjp(_gelu_exact_fwd, _gelu_exact_bwd)


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
        x = gelu_exact(x)
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        x = dense(out_features, "fc2")(x)  # (B, N, M) -> (B, N, D)
        return nn.Dropout(self.drop_rate, deterministic=not train)(x)

"""Stochastic depth ("drop path", Huang et al., arXiv 1603.09382).

In training each example's residual branch is dropped with probability ``rate`` and the kept ones
are scaled by ``1 / (1 - rate)`` so the expectation is unchanged; in evaluation it is the identity.
Randomness comes from the ``"drop_path"`` RNG stream (separate from ``"dropout"``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def drop_path(x: jax.Array, rate: float | jax.Array, rng: jax.Array) -> jax.Array:
    """Drop whole examples of ``x`` with probability ``rate``; ``rate`` may be traced (a scanned
    per-block rate), so it is not range-checked here."""
    keep = 1.0 - jnp.asarray(rate, jnp.float32)
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # one decision per example
    mask = jax.random.bernoulli(rng, keep, shape)
    return jnp.where(mask, x / keep.astype(x.dtype), jnp.zeros_like(x))


class DropPath(nn.Module):
    rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {self.rate}")
        if not train or self.rate == 0.0:
            return x
        return drop_path(x, self.rate, self.make_rng("drop_path"))

"""Stochastic depth ("drop path", Huang et al., arXiv 1603.09382).

In training each example's residual branch is dropped with probability ``rate`` and the kept ones
are scaled by ``1 / (1 - rate)`` so the expectation is unchanged; in evaluation it is the identity.
Randomness comes from the ``"drop_path"`` RNG stream (separate from ``"dropout"``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class DropPath(nn.Module):
    rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {self.rate}")
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # one decision per example
        mask = jax.random.bernoulli(self.make_rng("drop_path"), keep, shape)
        return jnp.where(mask, x / keep, jnp.zeros_like(x))

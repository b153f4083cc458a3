"""Solutions to the exercises of tutorials/00_jax_and_flax_for_vision.ipynb.

Tested by tests/test_tutorial_solutions.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float = 1e-6) -> jax.Array:
    """Exercise 1: normalise over the last axis, then scale and shift (``nn.LayerNorm``)."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # biased, as Flax
    return scale * (x - mean) / jnp.sqrt(var + epsilon) + bias


def per_example_grad_norms(
    loss_one: Callable[..., jax.Array], params: Any, xs: jax.Array, ys: jax.Array
) -> jax.Array:
    """Exercise 2: the global L2 norm of each example's own gradient, shape (B,).

    ``loss_one(params, x, y)`` is the loss of one example; ``vmap`` maps its gradient over the
    leading axis of ``xs`` and ``ys`` while sharing ``params``.
    """
    grads = jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(params, xs, ys)
    squares = [jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1) for g in jax.tree.leaves(grads)]
    return jnp.sqrt(sum(squares))


def fold_batch_norm(
    kernel: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    mean: jax.Array,
    var: jax.Array,
    epsilon: float,
) -> tuple[jax.Array, jax.Array]:
    """Exercise 3: ``(kernel', bias')`` with ``conv(x, kernel') + bias' == BN(conv(x, kernel))``.

    In evaluation mode BatchNorm is ``y = a * z + b`` per output channel with
    ``a = scale / sqrt(var + eps)`` and ``b = bias - a * mean``; ``z`` is linear in the kernel, so
    ``a`` scales the kernel's output-channel axis (the last one, HWIO) and ``b`` becomes the bias.
    """
    a = scale / jnp.sqrt(var + epsilon)
    return kernel * a, bias - a * mean

"""Loss and top-k accuracy as sums over (masked) examples, so batches add up exactly."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """1.0 where the label is among the ``k`` highest logits (k capped at the class count).

    Ties are broken as ``jax.lax.top_k`` breaks them (lower index first).
    """
    k = min(k, logits.shape[-1])
    _, top = jax.lax.top_k(logits, k)  # (B, k)
    return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def classification_metrics(
    logits: jax.Array, labels: jax.Array, losses: jax.Array, mask: jax.Array
) -> dict[str, jax.Array]:
    """Sums over the examples where ``mask`` is 1; divide by ``count`` to get means."""
    mask = mask.astype(jnp.float32)
    return {
        "loss_sum": jnp.sum(losses * mask),
        "top1_sum": jnp.sum(topk_correct(logits, labels, 1) * mask),
        "top5_sum": jnp.sum(topk_correct(logits, labels, 5) * mask),
        "count": jnp.sum(mask),
    }


def summarize(sums: dict[str, float]) -> dict[str, float]:
    """Means from accumulated sums: ``{"loss", "top1", "top5", "count"}``."""
    count = float(sums["count"])
    if count == 0:
        raise ValueError("no examples were evaluated")
    return {
        "loss": float(sums["loss_sum"]) / count,
        "top1": float(sums["top1_sum"]) / count,
        "top5": float(sums["top5_sum"]) / count,
        "count": int(count),
    }


def add_sums(a: dict[str, float] | None, b: dict[str, float]) -> dict[str, float]:
    if a is None:
        return {k: float(v) for k, v in b.items()}
    return {k: a[k] + float(b[k]) for k in a}

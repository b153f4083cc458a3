"""One pure train step and one eval step for every model.

Both take a batch ``{"image": (B, H, W, 3) float32, "label": (B,) int32, "mask": (B,) float32}``;
``mask`` marks real examples (0 for the padding of a last partial batch), so padding never
counts in the loss or the metrics. Jit them at the call site, donating the state::

    step = jax.jit(functools.partial(train_step, label_smoothing=0.1), donate_argnums=0)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxvision.train.losses import cross_entropy
from jaxvision.train.metrics import classification_metrics
from jaxvision.train.state import TrainState

Batch = dict[str, jax.Array]


def _mask(batch: Batch) -> jax.Array:
    mask = batch.get("mask")
    if mask is None:
        return jnp.ones(batch["label"].shape, jnp.float32)
    return mask.astype(jnp.float32)


def train_step(
    state: TrainState, batch: Batch, rng: jax.Array, *, label_smoothing: float = 0.0
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update on ``batch``; returns the new state and the batch's metric sums.

    The step number is folded into ``rng`` here, so the caller may pass the same key every step;
    "dropout" and "drop_path" get independent streams.
    """
    rng = jax.random.fold_in(rng, state.step)
    dropout_rng, drop_path_rng = jax.random.split(rng)
    mask = _mask(batch)

    def loss_fn(params: Any) -> tuple[jax.Array, tuple[Any, jax.Array, jax.Array]]:
        variables = {"params": params}
        mutable: list[str] | bool = False
        if state.batch_stats:
            variables["batch_stats"] = state.batch_stats
            mutable = ["batch_stats"]
        out = state.apply_fn(
            variables,
            batch["image"],
            train=True,
            rngs={"dropout": dropout_rng, "drop_path": drop_path_rng},
            mutable=mutable,
        )
        logits, updates = out if mutable else (out, {})
        logits = logits.astype(jnp.float32)
        losses = cross_entropy(logits, batch["label"], label_smoothing=label_smoothing)
        loss = jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0)
        return loss, (updates, logits, losses)

    (_, (updates, logits, losses)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads)
    if state.batch_stats:
        new_state = new_state.replace(batch_stats=updates["batch_stats"])
    metrics = classification_metrics(logits, batch["label"], losses, mask)
    metrics["grad_norm"] = jnp.sqrt(
        sum(jnp.sum(g.astype(jnp.float32) ** 2) for g in jax.tree.leaves(grads))
    )
    return new_state, metrics


def eval_step(state: TrainState, batch: Batch, *, use_ema: bool = False) -> dict[str, jax.Array]:
    """Metric sums of the model (or its EMA) on ``batch`` in inference mode; deterministic."""
    logits = state.apply_fn(state.variables(use_ema=use_ema), batch["image"], train=False)
    logits = logits.astype(jnp.float32)
    losses = cross_entropy(logits, batch["label"])
    return classification_metrics(logits, batch["label"], losses, _mask(batch))


def predict_step(state: TrainState, images: jax.Array, *, use_ema: bool = False) -> jax.Array:
    """Class probabilities (float32 softmax of the logits)."""
    logits = state.apply_fn(state.variables(use_ema=use_ema), images, train=False)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

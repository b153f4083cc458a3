"""One pure train step, one eval step and one predict step for every model and task.

A batch is a dict of arrays whose keys the :class:`~jaxvision.tasks.Task` defines, plus ``"mask"``
(1 for a real example, 0 for the padding of a last partial batch). The task says which entries
the model takes, computes the loss and the ``(sum, count)`` metric pairs and turns outputs into
predictions; nothing here knows what a label or a box is. Jit at the call site, with the task
bound and the state donated::

    step = jax.jit(functools.partial(train_step, task=task), donate_argnums=0)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxvision.tasks.base import Batch, Metrics, Task
from jaxvision.train.state import TrainState


def step_rngs(task: Task, rng: jax.Array) -> dict[str, jax.Array]:
    """One independent key per random stream the task's model draws from in training."""
    keys = jax.random.split(rng, len(task.rng_streams))
    return dict(zip(task.rng_streams, keys, strict=True))


def train_step(
    state: TrainState, batch: Batch, rng: jax.Array, *, task: Task
) -> tuple[TrainState, Metrics]:
    """One optimizer update on ``batch``; returns the new state and the batch's metric pairs,
    plus ``grad_norm`` (the global gradient norm before clipping, as a pair with count 1).

    The step number is folded into ``rng`` here, so the caller may pass the same key every step.
    """
    rngs = step_rngs(task, jax.random.fold_in(rng, state.step))

    def loss_fn(params: Any) -> tuple[jax.Array, tuple[Any, Metrics]]:
        variables = {"params": params}
        mutable: list[str] | bool = False
        if state.batch_stats:
            variables["batch_stats"] = state.batch_stats
            mutable = ["batch_stats"]
        out = state.apply_fn(
            variables, *task.model_inputs(batch), train=True, rngs=rngs, mutable=mutable
        )
        outputs, updates = out if mutable else (out, {})
        loss, metrics = task.loss(outputs, batch)
        return loss, (updates, metrics)

    (_, (updates, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads)
    if state.batch_stats:
        new_state = new_state.replace(batch_stats=updates["batch_stats"])
    grad_norm = optax.tree.norm(jax.tree.map(lambda g: g.astype(jnp.float32), grads))
    return new_state, {**metrics, "grad_norm": (grad_norm, jnp.ones((), jnp.float32))}


def _outputs(state: TrainState, batch: Batch, task: Task, use_ema: bool) -> Any:
    return state.apply_fn(state.variables(use_ema=use_ema), *task.model_inputs(batch), train=False)


def eval_step(
    state: TrainState, batch: Batch, *, task: Task, use_ema: bool = False
) -> tuple[Metrics, Any]:
    """The metric pairs of the model (or its EMA) on ``batch`` in inference mode, and the task's
    predictions (for a host-side evaluator); deterministic."""
    outputs = _outputs(state, batch, task, use_ema)
    _, metrics = task.loss(outputs, batch)
    return metrics, task.predict(outputs, batch)


def predict_step(state: TrainState, batch: Batch, *, task: Task, use_ema: bool = False) -> Any:
    """The task's predictions for ``batch`` (e.g. class probabilities) in inference mode."""
    return task.predict(_outputs(state, batch, task, use_ema), batch)

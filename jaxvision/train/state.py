"""The training state: parameters, BatchNorm statistics, optimizer state, an optional EMA."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state


class TrainState(train_state.TrainState):
    """``flax.training.train_state.TrainState`` plus BatchNorm statistics and an EMA.

    ``batch_stats`` is an empty dict for models without BatchNorm. ``ema_params`` is ``None``
    unless ``ema_decay > 0``; then it tracks ``decay * ema + (1 - decay) * params`` after every
    update (the EMA the EfficientNet and DeiT recipes evaluate with).
    """

    batch_stats: Any = struct.field(default_factory=dict)
    ema_params: Any = None
    ema_decay: float = struct.field(pytree_node=False, default=0.0)

    def apply_gradients(self, *, grads: Any, **kwargs: Any) -> TrainState:
        new = super().apply_gradients(grads=grads, **kwargs)
        if self.ema_params is None:
            return new
        decay = self.ema_decay
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, self.ema_params, new.params)
        return new.replace(ema_params=ema)

    def variables(self, *, use_ema: bool = False) -> dict[str, Any]:
        """The variables to hand to ``model.apply``."""
        params = self.ema_params if use_ema and self.ema_params is not None else self.params
        variables = {"params": params}
        if self.batch_stats:
            variables["batch_stats"] = self.batch_stats
        return variables


def init_variables(model: nn.Module, rng: jax.Array, inputs: tuple[Any, ...]) -> dict[str, Any]:
    """Initialise ``model`` on example ``inputs`` (``task.model_inputs(task.example_batch())``)."""
    return jax.jit(lambda key, inputs: model.init({"params": key}, *inputs, train=False))(
        rng, inputs
    )


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    *,
    rng: jax.Array,
    inputs: tuple[Any, ...] | None = None,
    ema_decay: float = 0.0,
    variables: dict[str, Any] | None = None,
) -> TrainState:
    """A fresh TrainState initialised on example ``inputs``, or one around given ``variables``
    (converted weights, a fine-tuning start)."""
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
    if variables is None:
        if inputs is None:
            raise ValueError("create_train_state needs example inputs or variables")
        variables = init_variables(model, rng, inputs)
    params = variables["params"]
    state = TrainState.create(
        apply_fn=model.apply,
        params=params,
        tx=tx,
        batch_stats=variables.get("batch_stats", {}),
        ema_params=jax.tree.map(jnp.array, params) if ema_decay > 0 else None,
        ema_decay=ema_decay,
    )
    # A concrete int32 step (not Python's weakly-typed 0) so the first jitted step does not
    # compile a second time when the step comes back as an array.
    return state.replace(step=jnp.zeros((), jnp.int32))

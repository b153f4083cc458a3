"""Optimizers, learning-rate schedules and weight-decay masks (optax)."""

from __future__ import annotations

from typing import Any

import optax
from flax import traverse_util

OPTIMIZERS = ("sgd", "adamw", "rmsprop")

# Parameters that are never decayed: biases, normalisation scales and the ViT token/position
# embeddings (timm's `no_weight_decay` and big_vision's recipes exclude the same).
NO_DECAY_NAMES = frozenset({"bias", "scale", "pos_embed", "cls_token", "class_token", "embedding"})


def weight_decay_mask(params: Any) -> Any:
    """A pytree of booleans: True where weight decay applies (kernels only)."""
    flat = traverse_util.flatten_dict(params)
    mask = {k: (k[-1] not in NO_DECAY_NAMES and getattr(v, "ndim", 0) > 1) for k, v in flat.items()}
    return traverse_util.unflatten_dict(mask)


def warmup_cosine_schedule(
    base_lr: float, total_steps: int, warmup_steps: int = 0, end_lr: float = 0.0
) -> optax.Schedule:
    """Linear warm-up from 0 to ``base_lr`` over ``warmup_steps``, then cosine decay to
    ``end_lr``."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    warmup_steps = min(max(warmup_steps, 0), total_steps - 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup_steps else base_lr,
        peak_value=base_lr,
        warmup_steps=warmup_steps,
        decay_steps=total_steps,
        end_value=end_lr,
    )


def make_optimizer(
    name: str,
    learning_rate: optax.ScalarOrSchedule,
    *,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = False,
    clip_norm: float | None = None,
) -> optax.GradientTransformation:
    """``sgd`` (momentum, optional Nesterov), ``adamw`` or ``rmsprop`` as EfficientNet used it.

    EfficientNet's RMSProp (TensorFlow's): decay 0.9, momentum 0.9, epsilon 1e-3 inside the square
    root. Weight decay skips biases, normalisation scales and embeddings
    (:func:`weight_decay_mask`);
    ``clip_norm`` clips the global gradient norm first.
    """
    mask = weight_decay_mask
    if name == "sgd":
        opt = optax.chain(
            optax.add_decayed_weights(weight_decay, mask=mask),
            optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov),
        )
    elif name == "adamw":
        opt = optax.adamw(learning_rate, b1=0.9, b2=0.999, weight_decay=weight_decay, mask=mask)
    elif name == "rmsprop":
        opt = optax.chain(
            optax.add_decayed_weights(weight_decay, mask=mask),
            optax.rmsprop(learning_rate, decay=0.9, eps=1e-3, momentum=momentum, eps_in_sqrt=True),
        )
    else:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    if clip_norm:
        opt = optax.chain(optax.clip_by_global_norm(clip_norm), opt)
    return opt

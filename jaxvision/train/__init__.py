"""The training engine: state, pure steps, losses, optimizers, metrics, loop, checkpoints."""

from jaxvision.train.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    restore_state,
    save_checkpoint,
)
from jaxvision.train.losses import cross_entropy
from jaxvision.train.metrics import classification_metrics, summarize, topk_correct
from jaxvision.train.optim import make_optimizer, warmup_cosine_schedule, weight_decay_mask
from jaxvision.train.state import TrainState, create_train_state, init_variables
from jaxvision.train.steps import eval_step, predict_step, train_step

__all__ = [
    "CheckpointError",
    "TrainState",
    "classification_metrics",
    "create_train_state",
    "cross_entropy",
    "eval_step",
    "init_variables",
    "latest_checkpoint",
    "make_optimizer",
    "predict_step",
    "restore_state",
    "save_checkpoint",
    "summarize",
    "topk_correct",
    "train_step",
    "warmup_cosine_schedule",
    "weight_decay_mask",
]

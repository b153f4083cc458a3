"""The training engine: state, pure steps, optimizers, loop, checkpoints, devices.

Nothing here knows what a label or a box is: a :class:`jaxvision.tasks.Task` says what a batch
holds, the loss, the metrics and the predictions.
"""

from jaxvision.train.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    restore_state,
    save_checkpoint,
)
from jaxvision.train.finetune import init_from, merge_matching
from jaxvision.train.optim import make_optimizer, warmup_cosine_schedule, weight_decay_mask
from jaxvision.train.state import TrainState, create_train_state, init_variables
from jaxvision.train.steps import eval_step, predict_step, train_step

__all__ = [
    "CheckpointError",
    "TrainState",
    "create_train_state",
    "eval_step",
    "init_from",
    "init_variables",
    "latest_checkpoint",
    "load_checkpoint",
    "make_optimizer",
    "merge_matching",
    "predict_step",
    "restore_state",
    "save_checkpoint",
    "train_step",
    "warmup_cosine_schedule",
    "weight_decay_mask",
]

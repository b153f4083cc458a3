"""Tasks: what a kind of work (classification, detection and segmentation, OmniVec's multimodal
tasks) asks of the engine.

``TASKS`` maps the task name a model is registered with (``model_info(name).task``) to what
provides its three constructors (the task's module, or an object with these attributes):

* ``prepare(config, info, image_size)`` -> (task, train source, held-out source), for training;
* ``from_header(header, image_size)`` -> the task a checkpoint was trained for;
* the task class itself, built with defaults by :func:`for_model` where no data are involved
  (``jaxvision summary``, the benchmark).
"""

from __future__ import annotations

from typing import Any

from jaxvision.tasks import classification, detection, omnivec
from jaxvision.tasks.base import Evaluator, Metrics, Task, masked_mean, masked_sum, summarize
from jaxvision.tasks.classification import ClassificationTask
from jaxvision.tasks.detection import DetectionTask
from jaxvision.tasks.omnivec import OmniVecTask

TASKS: dict[str, Any] = {
    "classification": classification,
    "detection": detection.detection,
    "segmentation": detection.segmentation,
    "omnivec": omnivec,
}


def _module(name: str) -> Any:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None


def prepare(config: Any, image_size: int):
    """(task, train source, held-out source) for training ``config.model`` on ``config.data``."""
    from jaxvision.registry import model_info

    info = model_info(config.model)
    return _module(info.task).prepare(config, info, image_size)


def from_header(header: dict[str, Any], image_size: int) -> Task:
    """The task recorded in a checkpoint's header (weights files: classification)."""
    return _module(header.get("task", "classification")).from_header(header, image_size)


def eval_source(task: Task, spec: str, split: str, *, info: Any, skip_bad_images: bool = False):
    """The ``split`` of data set ``spec`` as a source for evaluating ``task``."""
    module = _module(task.header().get("task", "classification"))
    return module.eval_source(task, spec, split, info, skip_bad_images=skip_bad_images)


def for_model(name: str, *, image_size: int, num_classes: int) -> Task:
    """The task of registered model ``name`` with default settings, needing no data."""
    from jaxvision.registry import model_info

    task = model_info(name).task
    return _module(task).from_header({"num_classes": num_classes, "model": name}, image_size)


__all__ = [
    "ClassificationTask",
    "DetectionTask",
    "Evaluator",
    "Metrics",
    "OmniVecTask",
    "TASKS",
    "Task",
    "eval_source",
    "for_model",
    "from_header",
    "masked_mean",
    "masked_sum",
    "prepare",
    "summarize",
]

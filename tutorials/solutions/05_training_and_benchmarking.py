"""Solutions to the exercises of tutorials/05_training_and_benchmarking.ipynb.

Tested by tests/test_tutorial_solutions.py.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Exercise 1: ``counts[true, predicted]``, (num_classes, num_classes) int."""
    index = np.asarray(labels) * num_classes + np.asarray(predictions)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def ema_update(ema_params: Any, params: Any, decay: float) -> Any:
    """Exercise 2: ``decay * ema + (1 - decay) * params``, leaf by leaf, for any pytree."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Exercise 3: the fraction of examples whose label is among the ``k`` highest logits."""
    logits = np.asarray(logits)
    k = min(k, logits.shape[-1])
    top = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == np.asarray(labels)[:, None], axis=-1)))

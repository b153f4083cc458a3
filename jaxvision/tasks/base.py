"""The Task interface: the one place where a kind of work differs from another.

The engine (:mod:`jaxvision.train`) has one train step, one evaluation loop, one checkpoint format
and one sharding path for every model. What differs between image classification, detection or a
multimodal model lives in a :class:`Task`:

* :meth:`Task.example_batch` - a batch of the right shapes and dtypes (zeros). It initialises the
  model, and ``jaxvision summary``, the FLOP count and the benchmark trace the model with it.
* :meth:`Task.model_inputs` - the positional inputs of ``model.apply`` taken from a batch.
* :meth:`Task.loss` - ``(loss, metrics)`` from the model's outputs and the batch. ``loss`` is the
  scalar to minimise; ``metrics`` maps a name to a ``(sum, count)`` pair, so an average over
  devices, batches and a resumed epoch is exact and padded examples (``batch["mask"] == 0``)
  never count. (The idea of scenic's ``(sum, normaliser)`` metric pairs.) Report a ``"loss"``
  pair: the loop watches it for NaN and shows it in the progress bar.
* :meth:`Task.predict` - a jittable function from outputs to predictions (probabilities, boxes).
* :meth:`Task.evaluator` - a host-side :class:`Evaluator` (``update`` per batch, ``result`` at the
  end) for metrics that cannot be summed on device, such as mAP or ROUGE; ``None`` if all
  metrics are sums.
* :meth:`Task.trainable` - which parameters a run may change (default: all); the rest is frozen.
* :attr:`Task.rng_streams` - the names of the random streams the model draws from in training
  (``dropout``, ``drop_path``; OmniVec's pre-training adds ``masking``); the step splits one key
  into them.

A task is a frozen dataclass: hashable and immutable, a constant of the jitted step. Data reach the
engine as a :class:`jaxvision.data.Source` of examples (dicts of numpy arrays) per split;
:func:`jaxvision.tasks.prepare` makes the task and its sources for a registered model from a
``TrainConfig``. Every batch carries ``"mask"`` (1 for a real example, 0 for padding).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Protocol

import jax
import jax.numpy as jnp

Batch = dict[str, Any]
Metrics = dict[str, tuple[jax.Array, jax.Array]]  # name -> (sum over examples, count)


class Evaluator(Protocol):
    """Host-side metrics: ``update`` with every evaluation batch, ``result`` once at the end.

    ``predictions`` are :meth:`Task.predict`'s outputs and ``batch`` the batch, both as numpy
    arrays of the whole global batch (padding included: use ``batch["mask"]``).
    """

    def update(self, predictions: Any, batch: Batch) -> None: ...

    def result(self) -> dict[str, float]: ...


class Task(abc.ABC):
    """What a kind of work needs from the engine; subclass as a frozen dataclass."""

    #: Random streams of the model in training, in the order one key is split into them.
    rng_streams: ClassVar[tuple[str, ...]] = ("dropout", "drop_path")
    #: Metrics shown in the progress bar (of those :meth:`loss` reports).
    progress_metrics: ClassVar[tuple[str, ...]] = ("loss",)
    #: The order metrics are reported in (logs, metrics.jsonl, the final JSON line); metrics not
    #: named here follow in alphabetical order.
    metrics_order: ClassVar[tuple[str, ...]] = ("loss",)

    @abc.abstractmethod
    def example_batch(self, batch_size: int = 1) -> Batch:
        """A batch of zeros with the shapes and dtypes of real batches, ``"mask"`` included."""

    def model_inputs(self, batch: Batch) -> tuple[Any, ...]:
        """The positional arguments of ``model.apply`` (after the variables) for ``batch``."""
        return (batch["image"],)

    @abc.abstractmethod
    def loss(self, outputs: Any, batch: Batch) -> tuple[jax.Array, Metrics]:
        """``(scalar loss over the real examples, {name: (sum, count)})``."""

    def predict(self, outputs: Any, batch: Batch) -> Any:
        """Predictions from the model's outputs (jittable); by default the outputs themselves."""
        return outputs

    def evaluator(self) -> Evaluator | None:
        """A fresh host-side evaluator, or ``None`` when every metric is a device-side sum."""
        return None

    def ordered(self, metrics: dict[str, float]) -> dict[str, float]:
        """``metrics`` in :attr:`metrics_order`."""
        rank = {k: i for i, k in enumerate(self.metrics_order)}
        return dict(sorted(metrics.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))

    def for_evaluation(self) -> Task:
        """The task evaluation measures with (e.g. without training-only label smoothing)."""
        return self

    def model_args(self) -> dict[str, Any]:
        """Arguments for ``create_model`` that the task decides (e.g. ``num_classes``)."""
        return {}

    def header(self) -> dict[str, Any]:
        """What a checkpoint must record to rebuild this task for evaluation and prediction."""
        return {}

    def trainable(self, params: Any) -> Any | None:
        """Which parameters training may change: a pytree shaped like ``params`` of booleans (or
        of learning-rate factors: 1.0 trains at the full rate, 0.1 at a tenth, 0.0 freezes), or
        ``None`` for all. The loop gives frozen parameters a zero update and no optimizer state
        (``optax.multi_transform``), so they stay bit for bit as they were."""
        return None


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of per-example ``values`` over the examples where ``mask`` is 1."""
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def masked_sum(values: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(sum of values over real examples, number of real examples)``: one metric pair."""
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask), jnp.sum(mask)


def summarize(sums: dict[str, Any]) -> dict[str, float]:
    """Means from accumulated ``{name: (sum, count)}`` pairs (host values)."""
    out = {}
    for name, (total, count) in sums.items():
        if float(count) == 0:
            raise ValueError(f"no examples were evaluated ({name!r} has a count of 0)")
        out[name] = float(total) / float(count)
    return out


__all__ = ["Batch", "Evaluator", "Metrics", "Task", "masked_mean", "masked_sum", "summarize"]

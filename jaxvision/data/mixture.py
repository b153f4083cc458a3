"""Several sources in one run, one kind per batch: multi-task and multi-modal training.

A model trained on several kinds of data at once (OmniVec's modalities, PolyViT's tasks) needs
batches that each hold ONE kind - a batch of audio clips and a batch of point clouds have
different shapes and go through different encoders. :class:`MixedSource` puts named sources
behind one :class:`~jaxvision.data.Source` and tells the :class:`~jaxvision.data.BatchLoader`
how to cut batches (``train_order`` and ``eval_groups``):

* each source's examples are shuffled on their own (seeded by (seed, epoch, source)) and cut into
  full batches; an epoch is every full batch of every source once;
* ``schedule="alternate"``: the batches take turns, source by source (a, b, c, a, b, c, ...; a
  source whose batches are used up drops out) - every kind every few steps, as OmniVec's
  pre-training alternates modalities;
* ``schedule="shuffle"``: the batches in a random order - a task sampled per step with
  probability proportional to its data (PolyViT's "task sampling" schedule, Likhosherstov et al.,
  arXiv 2111.12993, section 3.2, without replacement within an epoch);
* evaluation: each source's examples in order, in batches that never cross from one source to the
  next.

The jitted train step compiles once per kind of batch (its arrays differ) and reuses each.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from jaxvision.data.datasets import DatasetError
from jaxvision.data.loader import Source, epoch_order

SCHEDULES = ("alternate", "shuffle")


class MixedSource:
    """The sources ``sources`` (name -> source) behind one index range, in insertion order."""

    def __init__(self, sources: Mapping[str, Source], *, schedule: str = "alternate"):
        if not sources:
            raise DatasetError("a mixed source needs at least one source")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        self.sources = dict(sources)
        self.schedule = schedule
        sizes = [len(s) for s in self.sources.values()]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, index: int) -> tuple[Source, int]:
        k = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return list(self.sources.values())[k], int(index - self.offsets[k])

    def train_example(self, index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        source, i = self._locate(index)
        return source.train_example(i, rng)

    def eval_example(self, index: int) -> dict[str, np.ndarray]:
        source, i = self._locate(index)
        return source.eval_example(i)

    def set_epoch(self, epoch: int) -> None:
        for source in self.sources.values():
            if hasattr(source, "set_epoch"):
                source.set_epoch(epoch)

    def _batches(self, seed: int, epoch: int, batch_size: int) -> list[list[np.ndarray]]:
        out = []
        for k, (name, source) in enumerate(self.sources.items()):
            if len(source) < batch_size:
                raise DatasetError(
                    f"batch size {batch_size} is larger than source {name!r} "
                    f"({len(source)} examples)"
                )
            order = epoch_order(len(source), seed * 1000 + k, epoch) + self.offsets[k]
            n = len(source) // batch_size
            out.append([order[b * batch_size : (b + 1) * batch_size] for b in range(n)])
        return out

    def train_order(self, seed: int, epoch: int, batch_size: int) -> np.ndarray:
        """The epoch's indices; every consecutive ``batch_size`` of them come from one source."""
        per_source = self._batches(seed, epoch, batch_size)
        if self.schedule == "alternate":
            batches = [
                b[i] for i in range(max(map(len, per_source))) for b in per_source if i < len(b)
            ]
        else:
            flat = [b for source in per_source for b in source]
            rng = np.random.default_rng([seed, epoch, len(flat)])
            batches = [flat[i] for i in rng.permutation(len(flat))]
        return np.concatenate(batches)

    def eval_groups(self, batch_size: int) -> list[np.ndarray]:
        """Evaluation batches: each source's examples in order, never two sources in one."""
        groups = []
        for start, stop in zip(self.offsets[:-1], self.offsets[1:], strict=True):
            groups += [
                np.arange(s, min(s + batch_size, stop)) for s in range(start, stop, batch_size)
            ]
        return groups


__all__ = ["SCHEDULES", "MixedSource"]

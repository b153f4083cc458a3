"""Batches for training and evaluation.

A :class:`Source` gives single examples (dicts of numpy arrays) of one split; the
:class:`BatchLoader` stacks them into batches for any task. :class:`ClassificationSource` is the
source of the image-classification data sets.

Training: a permutation of the examples fixed by (seed, epoch), full batches only (the remainder
of an epoch is left to the next permutation, as PyTorch's ``drop_last=True``), augmentation seeded
by (seed, epoch, batch index). Evaluation: every example exactly once, in order; the last batch is
padded to full size and the padding carries ``mask = 0`` so it never counts.

Images are decoded and transformed on a small thread pool (pillow releases the GIL), and one batch
is prepared ahead while the accelerator works on the current one.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from typing import Protocol

import numpy as np

from jaxvision.data.datasets import ArrayDataset, DatasetError, FolderDataset
from jaxvision.data.transforms import eval_transform, train_transform
from jaxvision.registry import Preprocessing

Dataset = ArrayDataset | FolderDataset

AUGMENTATIONS = ("none", "crop", "crop-flip")


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    if batch_size < 1:
        raise DatasetError(f"batch size must be >= 1, got {batch_size}")
    if batch_size > num_examples:
        raise DatasetError(
            f"batch size {batch_size} is larger than the training set ({num_examples} examples)"
        )
    return num_examples // batch_size


class Source(Protocol):
    """Examples of one split, each a dict of numpy arrays of fixed shapes.

    ``train_example`` may augment, drawing only from the generator it is handed (seeded by
    (seed, epoch, batch, position)), so a resumed run sees the same examples; ``eval_example``
    is deterministic.
    """

    def __len__(self) -> int: ...

    def train_example(self, index: int, rng: np.random.Generator) -> dict[str, np.ndarray]: ...

    def eval_example(self, index: int) -> dict[str, np.ndarray]: ...


# A source may also define:
# * ``set_epoch(epoch)``: the loader calls it before making an epoch's training examples (e.g. to
#   switch mosaic augmentation off for the last epochs);
# * ``train_order(seed, epoch, batch_size) -> indices``: the epoch's example order, consecutive
#   slices of ``batch_size`` forming its batches (default: a permutation of all examples), and
#   ``eval_groups(batch_size) -> [indices, ...]``: the evaluation batches, each at most
#   ``batch_size`` examples (default: consecutive runs). A source of several kinds of examples
#   (:class:`jaxvision.data.mixture.MixedSource`) uses them so that no batch mixes two kinds.


def train_steps(source: Source, batch_size: int) -> int:
    """Batches in one training epoch of ``source`` (full batches only)."""
    if hasattr(source, "train_order"):
        steps_per_epoch(len(source), batch_size)  # the same checks
        return len(source.train_order(0, 0, batch_size)) // batch_size
    return steps_per_epoch(len(source), batch_size)


class ClassificationSource:
    """Examples ``{"image": (S, S, 3) float32, "label": int32}`` of an image-classification data
    set, with the reference evaluation preprocessing and a random-resized-crop augmentation."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        image_size: int,
        preprocessing: Preprocessing,
        augment: str = "crop-flip",
        crop_scale: tuple[float, float] = (0.08, 1.0),
    ):
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
        self.dataset = dataset
        self.image_size = image_size
        self.pre = preprocessing
        self.augment = augment
        self.crop_scale = crop_scale
        self._eval_cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def _label(self, index: int) -> np.ndarray:
        return np.asarray(self.dataset.labels[index], np.int32)

    def train_example(self, index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        if self.augment == "none":
            return self.eval_example(index)
        image = train_transform(
            self.dataset.image(index),
            self.image_size,
            self.pre,
            rng,
            scale=self.crop_scale,
            flip=self.augment == "crop-flip",
        )
        return {"image": image, "label": self._label(index)}

    def eval_example(self, index: int) -> dict[str, np.ndarray]:
        # In-memory data sets are small: keep their evaluation images once computed.
        image = self._eval_cache.get(index)
        if image is None:
            image = eval_transform(
                self.dataset.image(index),
                self.image_size,
                self.pre,
                centre_crop=self.dataset.centre_crop,
            )
            if isinstance(self.dataset, ArrayDataset):
                self._eval_cache[index] = image
        return {"image": image, "label": self._label(index)}


def _stack(examples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


class BatchLoader:
    """Makes numpy batches (the source's keys plus ``"mask"``) from a :class:`Source`."""

    def __init__(self, source: Source, *, workers: int = 2):
        self.source = source
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def train_batch(
        self, indices: np.ndarray, seed: int, epoch: int, batch: int, offset: int = 0
    ) -> dict[str, np.ndarray]:
        """Augmented examples ``indices``, the slice of global batch ``batch`` that starts at
        ``offset``. Each example's randomness is keyed by its place in the global batch, so a host
        that makes only a slice augments it exactly as a single process would."""
        rngs = [
            np.random.default_rng([seed, epoch, batch, offset + j]) for j in range(len(indices))
        ]
        examples = list(self._pool.map(self.source.train_example, indices, rngs))
        return {**_stack(examples), "mask": np.ones(len(indices), np.float32)}

    def eval_batch(self, indices: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
        """Examples ``indices`` padded with zeros to ``batch_size``; padding has ``mask`` 0."""
        if len(indices) == 0:  # a host whose slice of the last batch is empty
            template = self.source.eval_example(0)
            batch = {
                k: np.zeros((0, *np.shape(v)), np.asarray(v).dtype) for k, v in template.items()
            }
        else:
            batch = _stack(list(self._pool.map(self.source.eval_example, indices)))
        batch["mask"] = np.ones(len(indices), np.float32)
        pad = batch_size - len(indices)
        if pad:
            batch = {
                k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)])
                for k, v in batch.items()
            }
        return batch

    def train_epoch(
        self,
        seed: int,
        epoch: int,
        batch_size: int,
        start: int = 0,
        *,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[dict[str, np.ndarray]]:
        """Batches ``start, start + 1, ...`` of epoch ``epoch``; with ``shard=(i, n)`` this process
        makes only its slice ``i`` of ``n`` of each global batch (multi-host data loading)."""
        if hasattr(self.source, "train_order"):
            order = np.asarray(self.source.train_order(seed, epoch, batch_size))
            n = len(order) // batch_size
        else:
            n = steps_per_epoch(len(self.source), batch_size)
            order = epoch_order(len(self.source), seed, epoch)
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)
        index, count = shard
        local = batch_size // count

        def make(b: int) -> dict[str, np.ndarray]:
            idx = order[b * batch_size : (b + 1) * batch_size][index * local : (index + 1) * local]
            return self.train_batch(idx, seed, epoch, b, offset=index * local)

        yield from _prefetch(make, range(start, n))

    def eval_batches(
        self, batch_size: int, *, shard: tuple[int, int] = (0, 1)
    ) -> Iterator[dict[str, np.ndarray]]:
        n = len(self.source)
        index, count = shard
        local = batch_size // count

        if hasattr(self.source, "eval_groups"):
            groups = [np.asarray(g) for g in self.source.eval_groups(batch_size)]
        else:
            groups = [np.arange(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]

        def make(group: int) -> dict[str, np.ndarray]:
            return self.eval_batch(groups[group][index * local : (index + 1) * local], local)

        yield from _prefetch(make, range(len(groups)))


def _prefetch(make, keys) -> Iterator[dict[str, np.ndarray]]:
    """Yield ``make(k)`` for each key, preparing the next one on a background thread."""
    keys = list(keys)
    if not keys:
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ex:
        future = ex.submit(make, keys[0])
        for k in keys[1:]:
            current = future.result()
            future = ex.submit(make, k)
            yield current
        yield future.result()

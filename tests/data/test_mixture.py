"""MixedSource: several sources in one run, never two kinds in one batch."""

from __future__ import annotations

import numpy as np
import pytest

from jaxvision.data import BatchLoader, DatasetError
from jaxvision.data.loader import train_steps
from jaxvision.data.mixture import MixedSource


class Kind:
    """``n`` examples ``{name: [index], "kind_<name>": 1}``: a key per source, like modalities."""

    def __init__(self, name: str, n: int):
        self.name, self.n = name, n

    def __len__(self):
        return self.n

    def eval_example(self, i):
        return {self.name: np.array([i], np.int32)}

    def train_example(self, i, rng):
        return self.eval_example(i)


def _mixed(schedule, sizes=(10, 7, 4)):
    return MixedSource({f"k{j}": Kind(f"k{j}", n) for j, n in enumerate(sizes)}, schedule=schedule)


@pytest.mark.parametrize("schedule", ["alternate", "shuffle"])
def test_every_training_batch_holds_one_kind_and_every_full_batch_is_used(schedule):
    source = _mixed(schedule)
    batch = 3
    assert train_steps(source, batch) == 10 // 3 + 7 // 3 + 4 // 3
    loader = BatchLoader(source)
    seen = {}
    try:
        batches = list(loader.train_epoch(seed=0, epoch=0, batch_size=batch))
    finally:
        loader.close()
    assert len(batches) == train_steps(source, batch)
    for b in batches:
        (kind,) = [k for k in b if k != "mask"]
        seen.setdefault(kind, []).extend(b[kind][:, 0].tolist())
    for kind, n in (("k0", 10), ("k1", 7), ("k2", 4)):
        values = seen[kind]
        assert len(values) == n // batch * batch and len(set(values)) == len(values)
        assert set(values) <= set(range(n))


def test_alternate_takes_turns_and_shuffle_is_seeded():
    source = _mixed("alternate", sizes=(9, 9, 3))
    order = source.train_order(0, 0, 3)
    kinds = [int(np.searchsorted(source.offsets, i, side="right")) - 1 for i in order[::3]]
    assert kinds == [0, 1, 2, 0, 1, 0, 1]
    shuffled = _mixed("shuffle", sizes=(9, 9, 3))
    np.testing.assert_array_equal(shuffled.train_order(1, 2, 3), shuffled.train_order(1, 2, 3))
    assert not np.array_equal(shuffled.train_order(1, 2, 3), shuffled.train_order(1, 3, 3))


def test_evaluation_sees_every_example_once_in_batches_of_one_kind():
    source = _mixed("alternate")
    loader = BatchLoader(source)
    try:
        batches = list(loader.eval_batches(4))
    finally:
        loader.close()
    assert len(batches) == 3 + 2 + 1
    counted = {}
    for b in batches:
        (kind,) = [k for k in b if k != "mask"]
        assert b[kind].shape[0] == 4  # padded to the batch size
        real = b["mask"] > 0
        counted.setdefault(kind, []).extend(b[kind][real, 0].tolist())
    assert counted == {"k0": list(range(10)), "k1": list(range(7)), "k2": list(range(4))}


def test_bad_mixtures_are_refused():
    with pytest.raises(DatasetError, match="at least one"):
        MixedSource({})
    with pytest.raises(ValueError, match="schedule"):
        _mixed("random")
    with pytest.raises(DatasetError, match="larger than source 'k2'"):
        _mixed("alternate").train_order(0, 0, 5)

"""Atomic, checksummed checkpoints; fallback past a corrupt newest file; clear mismatch errors."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxvision import create_model
from jaxvision.tasks import ClassificationTask
from jaxvision.train import checkpoint as ckpt
from jaxvision.train import create_train_state, make_optimizer, steps

TASK = ClassificationTask(num_classes=10, image_size=16)


def train_step(state, batch, rng):
    return steps.train_step(state, batch, rng, task=TASK)


def _state(tiny, seed=0, features=16):
    model = create_model(tiny, num_classes=10, features=features)
    inputs = TASK.model_inputs(TASK.example_batch(1))
    tx = make_optimizer("adamw", 1e-3)
    return create_train_state(model, tx, rng=jax.random.key(seed), inputs=inputs, ema_decay=0.9)


def _batch():
    return {"image": np.ones((4, 16, 16, 3), np.float32), "label": np.arange(4), "mask": np.ones(4)}


def _equal(a, b):
    return all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_round_trip_restores_the_whole_state(tiny, tmp_path):
    state, _ = train_step(_state(tiny), _batch(), jax.random.key(0))
    path = ckpt.save_checkpoint(tmp_path, state, {"model": tiny, "epoch": 0, "batch": 1})
    restored, header = ckpt.restore_state(path, _state(tiny, seed=1), model=tiny)
    assert header["step"] == 1 and header["batch"] == 1
    for field in ("params", "batch_stats", "ema_params", "opt_state"):
        assert _equal(getattr(state, field), getattr(restored, field)), field
    assert int(restored.step) == 1


def test_keeps_only_the_newest(tiny, tmp_path):
    state = _state(tiny)
    for _ in range(4):
        state, _ = train_step(state, _batch(), jax.random.key(0))
        ckpt.save_checkpoint(tmp_path, state, {"model": tiny}, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [
        "ckpt_000000003",
        "ckpt_000000004",
    ]


def test_corrupt_newest_falls_back_to_previous(tiny, tmp_path):
    state = _state(tiny)
    paths = []
    for _ in range(2):
        state, _ = train_step(state, _batch(), jax.random.key(0))
        paths.append(ckpt.save_checkpoint(tmp_path, state, {"model": tiny}))
    shard = paths[1] / "shards-00000.msgpack"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF  # flip bits in the payload
    shard.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="checksum"):
        ckpt.load_checkpoint(paths[1])
    with pytest.warns(UserWarning, match="falling back"):
        assert ckpt.latest_checkpoint(tmp_path) == paths[0]


def test_incomplete_checkpoint_and_leftover_temporary_are_ignored(tiny, tmp_path):
    state = _state(tiny)
    good = ckpt.save_checkpoint(tmp_path, state, {"model": tiny})
    (tmp_path / ".tmp-ckpt_000000005").mkdir()  # a crash while the shards were being written
    (tmp_path / ".tmp-ckpt_000000005" / "shards-00000.msgpack").write_bytes(b"half")
    bad = tmp_path / "ckpt_000000009"  # a folder without its manifest
    bad.mkdir()
    (bad / "shards-00000.msgpack").write_bytes(b"x")
    with pytest.warns(UserWarning, match="no manifest.json"):
        assert ckpt.latest_checkpoint(tmp_path) == good
    ckpt.save_checkpoint(tmp_path, state, {"model": tiny})  # the next save clears temporaries
    assert not list(tmp_path.glob(".tmp-*"))


def test_weights_file_round_trip_and_random_bytes(tiny, tmp_path):
    state = _state(tiny)
    path = ckpt.save_variables(tmp_path / "w.jvc", state.variables(), {"model": tiny})
    header, saved = ckpt.load_checkpoint(path)
    assert header["model"] == tiny and _equal(saved["params"], state.params)
    (tmp_path / "junk.jvc").write_bytes(b"half a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match="not a jaxvision checkpoint"):
        ckpt.load_checkpoint(tmp_path / "junk.jvc")


def test_checkpoint_of_another_model_is_refused(tiny, tmp_path):
    path = ckpt.save_checkpoint(tmp_path, _state(tiny), {"model": "vit_ti16"})
    with pytest.raises(
        ckpt.CheckpointError, match="checkpoint of 'vit_ti16', not of 'tiny_test_cnn'"
    ):
        ckpt.restore_state(path, _state(tiny), model=tiny)


def test_mismatched_shapes_are_listed(tiny, tmp_path):
    path = ckpt.save_checkpoint(tmp_path, _state(tiny, features=8), {"model": tiny})
    with pytest.raises(
        ckpt.CheckpointError, match=r"stem/kernel: shape \(3, 3, 3, 8\) in checkpoint"
    ):
        ckpt.restore_state(path, _state(tiny), model=tiny)


def test_write_failure_leaves_no_partial_file(tiny, tmp_path, monkeypatch):
    state = _state(tiny)
    ckpt.save_checkpoint(tmp_path, state, {"model": tiny})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "replace", boom)
    state, _ = train_step(state, _batch(), jax.random.key(0))
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(tmp_path, state, {"model": tiny})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_000000000"]

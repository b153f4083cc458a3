"""Atomic, checksummed checkpoints; fallback past a corrupt newest file; clear mismatch errors."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxvision import create_model
from jaxvision.train import checkpoint as ckpt
from jaxvision.train import create_train_state, make_optimizer, train_step


def _state(tiny, seed=0, features=16):
    model = create_model(tiny, num_classes=10, features=features)
    return create_train_state(
        model, make_optimizer("adamw", 1e-3), rng=jax.random.key(seed), image_size=16, ema_decay=0.9
    )


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
        "ckpt_000000003.jvc",
        "ckpt_000000004.jvc",
    ]


def test_corrupt_newest_falls_back_to_previous(tiny, tmp_path):
    state = _state(tiny)
    paths = []
    for _ in range(2):
        state, _ = train_step(state, _batch(), jax.random.key(0))
        paths.append(ckpt.save_checkpoint(tmp_path, state, {"model": tiny}))
    data = bytearray(paths[1].read_bytes())
    data[-10] ^= 0xFF  # flip bits in the payload
    paths[1].write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="checksum"):
        ckpt.read_checkpoint(paths[1])
    with pytest.warns(UserWarning, match="falling back"):
        assert ckpt.latest_checkpoint(tmp_path) == paths[0]


def test_truncated_file_and_leftover_temporary_are_ignored(tiny, tmp_path):
    state = _state(tiny)
    good = ckpt.save_checkpoint(tmp_path, state, {"model": tiny})
    (tmp_path / ".tmp-ckpt-abc.partial").write_bytes(b"half a checkpoint")  # a crash mid-write
    bad = tmp_path / "ckpt_000000009.jvc"
    bad.write_bytes(good.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning):
        assert ckpt.latest_checkpoint(tmp_path) == good
    with pytest.raises(ckpt.CheckpointError, match="not a jaxvision checkpoint"):
        ckpt.read_checkpoint(tmp_path / ".tmp-ckpt-abc.partial")


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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_000000000.jvc"]

"""fit(): metrics, checkpoints and curves on disk; resume equals uninterrupted; NaN stops."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jaxvision.data import DatasetError
from jaxvision.train import checkpoint as ckpt
from jaxvision.train.loop import NonFiniteLossError, TrainConfig, fit


def _config(tiny, out, **kw):
    base = dict(
        model=tiny,
        data="digits",
        epochs=2,
        batch_size=256,
        image_size=16,
        lr=3e-3,
        output_dir=str(out),
        progress=False,
    )
    return TrainConfig(**{**base, **kw})


def _params(result):
    return jax.tree.leaves(jax.device_get(result["state"].params))


def test_fit_writes_metrics_checkpoints_and_curves(tiny, tmp_path):
    result = fit(_config(tiny, tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[-1]["eval_top1"] == pytest.approx(result["top1"])
    assert 0.0 <= result["top5"] <= 1.0 and result["top5"] >= result["top1"]
    assert (tmp_path / "curves.png").stat().st_size > 1000
    latest = ckpt.latest_checkpoint(tmp_path / "checkpoints")
    header = ckpt.read_header(latest)
    assert (header["epoch"], header["batch"], header["step"]) == (2, 0, 10)  # 1437 // 256 = 5 steps


def test_resume_mid_epoch_equals_uninterrupted(tiny, tmp_path):
    full = fit(_config(tiny, tmp_path / "full", checkpoint_every=2))
    fit(_config(tiny, tmp_path / "cut", checkpoint_every=2, max_steps=7))  # stops in epoch 2
    header = ckpt.read_header(ckpt.latest_checkpoint(tmp_path / "cut" / "checkpoints"))
    assert (header["epoch"], header["batch"]) == (1, 2)
    resumed = fit(_config(tiny, tmp_path / "cut", checkpoint_every=2, resume=True))
    for a, b in zip(_params(full), _params(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    assert (resumed["top1"], resumed["loss"]) == (full["top1"], full["loss"])
    rows = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert rows == (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny, tmp_path):
    cfg = _config(
        tiny,
        tmp_path,
        optimizer="sgd",
        lr=1e30,
        clip_norm=None,
        warmup_epochs=0,
        checkpoint_every=1,
        epochs=1,
    )
    with pytest.raises(NonFiniteLossError, match="loss became"):
        fit(cfg)
    latest = ckpt.latest_checkpoint(tmp_path / "checkpoints")
    assert latest is not None  # every saved checkpoint was written before the loss went bad
    params = ckpt.load_checkpoint(latest)[1]["params"]
    assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(params))


def test_bad_configuration_is_reported(tiny, tmp_path):
    with pytest.raises(DatasetError, match="batch size 5000 is larger than the training set"):
        fit(_config(tiny, tmp_path, batch_size=5000))
    with pytest.raises(ValueError, match="--resume needs --output-dir"):
        fit(TrainConfig(model=tiny, resume=True))
    with pytest.raises(ValueError, match="--epochs must be >= 1"):
        fit(_config(tiny, tmp_path, epochs=0))

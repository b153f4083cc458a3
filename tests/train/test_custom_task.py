"""A task that is not classification, defined outside the engine through the public API only
(tests/helpers/ink_task.py: regress each digit's mean ink, R^2 from a host-side evaluator), runs
through the one ``fit``: it learns, checkpoints, survives SIGKILL bit-identically, and 8 simulated
devices give what 1 device gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxvision.train import checkpoint as ckpt

HELPERS = Path(__file__).parents[1] / "helpers"
SCRIPT = str(HELPERS / "ink_task.py")
sys.path.insert(0, str(HELPERS))


def _env(devices=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}" if devices else ""
    return env


def _run(args, env):
    proc = subprocess.run(
        [sys.executable, SCRIPT, *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _params(out):
    return ckpt.load_checkpoint(ckpt.latest_checkpoint(out / "checkpoints"))[1]["params"]


def test_a_regression_task_learns_through_fit(tiny, tmp_path):
    import ink_task

    result = ink_task.train(epochs=6, output_dir=str(tmp_path))
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"eval_loss", "eval_mae", "eval_r2", "train_loss", "train_grad_norm"} <= set(rows[-1])
    assert rows[-1]["eval_loss"] < rows[0]["train_loss"] / 10
    # R^2 over the held-out digits, from the host-side evaluator (1 = perfect, 0 = the mean).
    assert result["r2"] > 0.5 and result["r2"] == rows[-1]["eval_r2"]
    assert (tmp_path / "curves.png").stat().st_size > 1000
    header = ckpt.read_header(ckpt.latest_checkpoint(tmp_path / "checkpoints"))
    assert header["model"] == tiny and header["epoch"] == 6


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    args = ["--epochs", "2", "--checkpoint-every", "1"]
    full = _run([*args, "--output-dir", str(tmp_path / "full")], _env())
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, SCRIPT, *args, "--output-dir", str(out)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # 22 steps per epoch: kill in epoch 2
        steps = [int(p.name[5:]) for p in ckpt.list_checkpoints(out / "checkpoints")]
        if steps and max(steps) >= 27:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = _run([*args, "--output-dir", str(out), "--resume"], _env())
    assert resumed == full
    for a, b in zip(
        jax.tree.leaves(_params(tmp_path / "full")), jax.tree.leaves(_params(out)), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert (out / "metrics.jsonl").read_text() == (tmp_path / "full" / "metrics.jsonl").read_text()


def test_eight_devices_equal_one(tmp_path):
    one = _run(["--epochs", "1", "--output-dir", str(tmp_path / "one")], _env())
    eight = _run(["--epochs", "1", "--output-dir", str(tmp_path / "eight")], _env(8))
    for key in ("loss", "mae", "r2"):
        assert eight[key] == pytest.approx(one[key], rel=1e-3, abs=1e-5), key
    for a, b in zip(
        jax.tree.leaves(_params(tmp_path / "one")),
        jax.tree.leaves(_params(tmp_path / "eight")),
        strict=True,
    ):
        assert np.abs(a - b).max() <= 2e-3 * np.abs(a).max()

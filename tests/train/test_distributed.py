"""Several devices and hosts, and surviving SIGKILL: each run is a separate process.

The 8 devices are XLA's host-platform devices (``--xla_force_host_platform_device_count=8``) and
the two hosts are two processes on this machine joined through ``jax.distributed`` with the
coordinator on loopback, so all of this runs on a plain CPU machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxvision.train import checkpoint as ckpt

SCRIPT = str(Path(__file__).parents[1] / "helpers" / "tiny_model.py")
# SGD: Adam's normalised update amplifies the last-bit differences of a reduction order that
# differs between device counts, where SGD passes them on unchanged.
BASE = "--data digits --image-size 16 --seed 0 --no-progress --optimizer sgd --lr 0.01".split()


def _env(devices: int | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}" if devices else ""
    env.update(extra)
    return env


def _train(args, env, timeout=600, model_script=True, stderr=None):
    cmd = (
        [sys.executable, SCRIPT, "train", "tiny_test_cnn"]
        if model_script
        else [sys.executable, "-m", "jaxvision", "train"]
    )
    proc = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if stderr is not None:
        stderr.append(proc.stderr)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.pop("seconds")
    return result


def _final_params(out: Path):
    return ckpt.load_checkpoint(ckpt.latest_checkpoint(out / "checkpoints"))[1]["params"]


def _assert_close_trees(a, b, tol=2e-3):
    """Every parameter tensor equal to ``tol`` of its own scale (max |x|): float32 sums taken in
    another order differ in the last bits, and a few SGD steps through BatchNorm amplify that to
    ~1e-4 of a small tensor such as a bias; a real difference (one device's statistics, a lost
    shard) is of the order of the tensor itself. ``tol=0`` demands bit-identical parameters."""
    import jax

    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert np.abs(x - y).max() <= tol * np.abs(x).max(), np.abs(x - y).max() / np.abs(x).max()


def _assert_same_result(a, b):
    """Same metrics up to float32 reduction order: the loss to 1e-4 relative; top-k to 1% of the
    360 held-out images, since an example whose k-th and (k+1)-th logits are within rounding of
    each other may change sides when the sums run in another order."""
    assert a["model"] == b["model"] and a["epochs"] == b["epochs"]
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    for k in ("top1", "top5"):
        assert a[k] == pytest.approx(b[k], abs=0.01), k


def test_eight_devices_and_fsdp_equal_one_device(tmp_path):
    args = [*BASE, "--epochs", "1", "--batch-size", "64", "--model-arg", "features=128"]
    one = _train([*args, "--output-dir", str(tmp_path / "one")], _env())
    eight = _train([*args, "--output-dir", str(tmp_path / "eight")], _env(8))
    log = []
    fsdp = _train([*args, "--fsdp", "--output-dir", str(tmp_path / "fsdp")], _env(8), stderr=log)
    # The 3x3x128x128 convolution (147,456 weights) really is split over the 8 devices.
    assert "fsdp: 1 of 8 parameter arrays sharded over 8 devices" in log[0]
    _assert_same_result(one, eight)
    _assert_same_result(one, fsdp)
    _assert_close_trees(_final_params(tmp_path / "one"), _final_params(tmp_path / "eight"))
    _assert_close_trees(_final_params(tmp_path / "one"), _final_params(tmp_path / "fsdp"))


def test_cli_prints_the_same_line_with_one_and_eight_devices(tmp_path):
    args = [
        "efficientnet_b0",
        "--data",
        "digits",
        "--image-size",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--seed",
        "0",
        "--no-progress",
        "--max-steps",
        "6",  # the compiles are the point; 6 steps of 22 keep the test at a minute a side
    ]
    one = _train(args, _env(), model_script=False)
    eight = _train(args, _env(8), model_script=False)
    _assert_same_result(one, eight)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path):
    args = [*BASE, "--epochs", "1", "--batch-size", "64", "--max-steps", "6"]
    single = _train([*args, "--output-dir", str(tmp_path / "single")], _env(2))
    port = _free_port()
    procs = []
    for pid in range(2):
        env = _env(
            1,
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(pid),
        )
        cmd = [
            sys.executable,
            SCRIPT,
            "train",
            "tiny_test_cnn",
            *args,
            "--distributed",
            "--output-dir",
            str(tmp_path / "multi"),
        ]
        procs.append(
            subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    for r in results:
        r.pop("seconds")
        _assert_same_result(single, r)
    _assert_close_trees(_final_params(tmp_path / "single"), _final_params(tmp_path / "multi"))


def _two_processes(args, out, devices_each):
    """Start ``tiny_model.py train`` as 2 processes joined by jax.distributed on loopback."""
    port = _free_port()
    procs = []
    for pid in range(2):
        env = _env(
            devices_each,
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(pid),
        )
        cmd = [sys.executable, SCRIPT, "train", "tiny_test_cnn", *args, "--distributed"]
        procs.append(
            subprocess.Popen(
                [*cmd, "--output-dir", str(out)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def _finish(procs):
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    for r in results:
        r.pop("seconds")
    assert results[0] == results[1]
    return results[0], outs[0][1]


def test_two_hosts_of_four_devices_with_fsdp_save_are_killed_and_resume(tmp_path):
    """Each process writes the FSDP shards its devices hold; SIGKILL of both mid-epoch, then
    --resume on the same topology ends bit-identical to an uninterrupted run."""
    args = [*BASE, "--epochs", "2", "--batch-size", "64", "--checkpoint-every", "4", "--fsdp",
            "--model-arg", "features=128"]  # fmt: skip
    full, log = _finish(_two_processes(args, tmp_path / "full", 4))
    assert "fsdp: 1 of 8 parameter arrays sharded over 8 devices" in log
    newest = ckpt.latest_checkpoint(tmp_path / "full" / "checkpoints")
    assert sorted(p.name for p in newest.glob("shards-*")) == [
        "shards-00000.msgpack",
        "shards-00001.msgpack",
    ]
    out = tmp_path / "killed"
    procs = _two_processes(args, out, 4)
    deadline = time.time() + 300
    # 1437 // 64 = 22 steps per epoch: kill both somewhere inside the second epoch.
    while time.time() < deadline and all(p.poll() is None for p in procs):
        steps = [int(p.name[5:14]) for p in ckpt.list_checkpoints(out / "checkpoints")]
        if steps and max(steps) >= 28:
            break
        time.sleep(0.05)
    assert all(p.poll() is None for p in procs), "the run finished before it could be killed"
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    resumed, log = _finish(_two_processes([*args, "--resume"], out, 4))
    assert "resumed from" in log
    assert resumed == full
    _assert_close_trees(_final_params(tmp_path / "full"), _final_params(out), tol=0)
    assert (out / "metrics.jsonl").read_text() == (tmp_path / "full" / "metrics.jsonl").read_text()


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    args = [*BASE, "--epochs", "2", "--batch-size", "128", "--checkpoint-every", "1"]
    full = _train([*args, "--output-dir", str(tmp_path / "full")], _env())
    out = tmp_path / "killed"
    cmd = [sys.executable, SCRIPT, "train", "tiny_test_cnn", *args, "--output-dir", str(out)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    # 1437 // 128 = 11 steps per epoch: kill somewhere inside the second epoch.
    while time.time() < deadline and proc.poll() is None:
        steps = [int(p.name[5:14]) for p in ckpt.list_checkpoints(out / "checkpoints")]
        if steps and max(steps) >= 14:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = _train([*args, "--output-dir", str(out), "--resume"], _env())
    assert resumed == full
    _assert_close_trees(_final_params(tmp_path / "full"), _final_params(out), tol=0)
    assert (out / "metrics.jsonl").read_text() == (tmp_path / "full" / "metrics.jsonl").read_text()


def test_corrupt_newest_checkpoint_resumes_from_the_previous(tmp_path):
    args = [*BASE, "--epochs", "1", "--batch-size", "128", "--checkpoint-every", "2"]
    full = _train([*args, "--output-dir", str(tmp_path / "full")], _env())
    out = tmp_path / "cut"
    _train([*args, "--output-dir", str(out), "--max-steps", "6"], _env())
    newest = ckpt.list_checkpoints(out / "checkpoints")[-1]
    shard = newest / "shards-00000.msgpack"
    shard.write_bytes(shard.read_bytes()[:-50])  # a damaged file in the newest checkpoint
    proc = subprocess.run(
        [
            sys.executable,
            SCRIPT,
            "train",
            "tiny_test_cnn",
            *args,
            "--output-dir",
            str(out),
            "--resume",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "falling back to the previous checkpoint" in proc.stderr
    assert "resumed from" in proc.stderr and "ckpt_000000004" in proc.stderr
    resumed = json.loads(proc.stdout.strip().splitlines()[-1])
    resumed.pop("seconds")
    assert resumed == full

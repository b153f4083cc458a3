"""Atomic checkpoints of the whole TrainState.

A checkpoint file holds a small JSON header (model name and configuration, step, epoch, position
in the epoch, a SHA-256 of the payload) followed by the msgpack-serialised state: params,
batch_stats, EMA, optimizer state and step. It is written to a temporary file in the same folder,
flushed to disk, then renamed into place, so a crash at any moment leaves either the previous
checkpoints or the new one - never a half-written file under a checkpoint name. Loading verifies
the checksum; :func:`latest_checkpoint` skips (with a warning) a newest file that fails it and
falls back to the one before.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
import warnings
from pathlib import Path
from typing import Any

from flax import serialization

MAGIC = b"JAXVISN1"
_NAME = re.compile(r"^ckpt_(\d{9})\.jvc$")


class CheckpointError(ValueError):
    """A checkpoint cannot be read, is corrupt, or does not fit the model being restored."""


def _state_dict(state: Any) -> dict[str, Any]:
    return serialization.to_state_dict(
        {
            "step": state.step,
            "params": state.params,
            "batch_stats": state.batch_stats,
            "ema_params": state.ema_params,
            "opt_state": state.opt_state,
        }
    )


def save_checkpoint(
    directory: str | Path, state: Any, header: dict[str, Any], *, keep: int = 3
) -> Path:
    """Write ``state`` with ``header`` atomically as ``directory/ckpt_<step>.jvc``; keep the newest
    ``keep`` files. Returns the path written."""
    import jax

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = serialization.msgpack_serialize(jax.device_get(_state_dict(state)))
    step = int(jax.device_get(state.step))
    final = directory / f"ckpt_{step:09d}.jvc"
    write_file(final, {**header, "step": step}, payload)
    for old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return final


def write_file(path: str | Path, header: dict[str, Any], payload: bytes) -> Path:
    """Write header + payload to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    header = {**header, "sha256": hashlib.sha256(payload).hexdigest(), "format": 1}
    head = json.dumps(header, sort_keys=True).encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-ckpt-", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + struct.pack("<Q", len(head)) + head + payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def save_variables(path: str | Path, variables: dict[str, Any], header: dict[str, Any]) -> Path:
    """Save model variables alone (converted weights, an exported model) in checkpoint format."""
    import jax

    path = Path(path)
    if path.parent and not path.parent.is_dir():
        raise CheckpointError(f"output folder does not exist: {path.parent}")
    payload = serialization.msgpack_serialize(
        jax.device_get(
            {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
        )
    )
    return write_file(path, {**header, "step": header.get("step", 0)}, payload)


def load_variables(
    path: str | Path, expected: dict[str, Any], *, model: str | None = None, use_ema: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(variables, header) from a training checkpoint or a weights file, checked against the
    shapes in ``expected`` (e.g. ``jax.eval_shape(model.init, ...)``)."""
    header, payload = read_checkpoint(path)
    return variables_from_checkpoint(
        header, payload, expected, model=model, use_ema=use_ema, path=path
    ), header


def variables_from_checkpoint(
    header: dict[str, Any],
    payload: bytes,
    expected: dict[str, Any],
    *,
    model: str | None = None,
    use_ema: bool = False,
    path: str | Path = "checkpoint",
) -> dict[str, Any]:
    """The model variables in an already-read checkpoint (``read_checkpoint``), checked against
    ``expected``; lets a caller that needed the header first read a large file only once."""
    if model is not None and header.get("model") != model:
        raise CheckpointError(
            f"{path} is a checkpoint of {header.get('model')!r}, not of {model!r}"
        )
    raw = serialization.msgpack_restore(payload)
    params = (
        raw.get("ema_params") if use_ema and raw.get("ema_params") is not None else raw["params"]
    )
    variables = {"params": params}
    if expected.get("batch_stats"):
        variables["batch_stats"] = raw.get("batch_stats") or {}
    want = {k: v for k, v in expected.items() if k in ("params", "batch_stats")}
    mismatches = _compare(variables, want)
    if mismatches:
        shown = "; ".join(mismatches[:8]) + (" ..." if len(mismatches) > 8 else "")
        raise CheckpointError(f"{path} does not match the model: {shown}")
    return variables


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files in ``directory``, oldest first (temporary files are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """(header, payload) of a checkpoint file, after verifying its checksum."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror}") from None
    if len(data) < 16 or data[:8] != MAGIC:
        raise CheckpointError(f"{path} is not a jaxvision checkpoint (bad magic)")
    (n,) = struct.unpack("<Q", data[8:16])
    try:
        header = json.loads(data[16 : 16 + n])
    except ValueError:
        raise CheckpointError(f"{path}: corrupt checkpoint header") from None
    payload = data[16 + n :]
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise CheckpointError(
            f"{path}: corrupt checkpoint (checksum mismatch; truncated or damaged)"
        )
    return header, payload


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest checkpoint in ``directory`` that reads back intact; corrupt newer ones are
    reported with a warning and skipped."""
    for path in reversed(list_checkpoints(directory)):
        try:
            read_checkpoint(path)
        except CheckpointError as e:
            warnings.warn(f"skipping {e}; falling back to the previous checkpoint", stacklevel=2)
            continue
        return path
    return None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file from a path that is a file, a checkpoints folder or a run's output dir."""
    path = Path(path)
    if path.is_file():
        return path
    for folder in (path / "checkpoints", path):
        found = latest_checkpoint(folder)
        if found is not None:
            return found
    if not path.exists():
        raise CheckpointError(f"checkpoint path does not exist: {path}")
    raise CheckpointError(f"no intact checkpoint found in {path}")


def restore_state(
    path: str | Path, target: Any, *, model: str | None = None
) -> tuple[Any, dict[str, Any]]:
    """Load the checkpoint at ``path`` into the structure of ``target`` (a TrainState).

    Raises :class:`CheckpointError` when it was saved for another model or its parameters do
    not match the target's structure and shapes.
    """
    import jax
    import numpy as np

    header, payload = read_checkpoint(path)
    if model is not None and header.get("model") != model:
        raise CheckpointError(
            f"{path} is a checkpoint of {header.get('model')!r}, not of {model!r}"
        )
    raw = serialization.msgpack_restore(payload)
    want = _state_dict(target)
    mismatches = _compare(raw, want)
    if mismatches:
        shown = "; ".join(mismatches[:8]) + (" ..." if len(mismatches) > 8 else "")
        raise CheckpointError(f"{path} does not match the model's state: {shown}")
    restored = serialization.from_state_dict(
        {
            "step": target.step,
            "params": target.params,
            "batch_stats": target.batch_stats,
            "ema_params": target.ema_params,
            "opt_state": target.opt_state,
        },
        raw,
    )
    restored = jax.tree.map(np.asarray, restored)
    state = target.replace(
        step=restored["step"],
        params=restored["params"],
        batch_stats=restored["batch_stats"],
        ema_params=restored["ema_params"],
        opt_state=restored["opt_state"],
    )
    return state, header


def _compare(got: Any, want: Any, prefix: str = "") -> list[str]:
    import numpy as np

    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [f"{prefix or '/'}: expected a mapping"]
        out = [f"{prefix}/{k}: missing" for k in want if k not in got]
        out += [f"{prefix}/{k}: unexpected" for k in got if k not in want]
        for k in want:
            if k in got:
                out += _compare(got[k], want[k], f"{prefix}/{k}")
        return out
    if want is None or got is None:
        return (
            [] if (want is None) == (got is None) else [f"{prefix}: presence differs (EMA on/off?)"]
        )
    gs, ws = np.shape(got), np.shape(want)
    return [] if gs == ws else [f"{prefix}: shape {gs} in checkpoint, {ws} in model"]

"""Checkpoints: atomic, checksummed, and written by every host for the shards it holds.

A **training checkpoint** is a folder ``ckpt_<step>/`` (step zero-padded to 9 digits):

    manifest.json            the header (model, configuration, step, epoch, position in the epoch,
                             the running train-metric sums), the shape and dtype of every array of
                             the state, and the SHA-256 of every shard file
    shards-<process>.msgpack each process's pieces of the state: for every array, the slices held
                             by this process's devices (one copy of each slice: replica 0 only)

So a run whose parameters are FSDP-sharded over several hosts saves without gathering the state
anywhere: each host writes what it holds. The folder is assembled as ``.tmp-ckpt_<step>/``, every
file written to a temporary name, flushed and renamed; after all processes are done (a barrier),
process 0 writes the manifest last and renames the folder into place. A crash at any moment leaves
the previous checkpoints intact and at most a ``.tmp-*`` folder, which is ignored and removed by the
next save. Loading verifies every checksum; :func:`latest_checkpoint` skips (with a warning) a
newest checkpoint that fails and falls back to the one before. Restoring builds each array with
the sharding of the target state (``jax.make_array_from_callback``), so a checkpoint restores onto
another number of devices or hosts too. Every host reads the folder: on several machines it must
live on a file system they share (as Orbax's checkpoints must).

Why not Orbax (which Flax installs)? This format is small enough to read in one sitting, keeps a
model's metadata and every file's checksum in one JSON manifest (the checksum fallback and
bit-identical resume are tested properties of this project), runs synchronously with no background
threads, and shares its reader with the single-file weights format below.

A **weights file** (``.jvc``, written by ``jaxvision convert``): one file, a magic number, a JSON
header and the msgpack-serialised ``params`` / ``batch_stats``, with the payload's SHA-256 in the
header. :func:`load_checkpoint` reads both kinds (and single-file training checkpoints of
jaxvision 0.1).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from flax import serialization, traverse_util

from jaxvision.errors import JaxvisionWarning, UserError

MAGIC = b"JAXVISN1"
FORMAT = 2  # 1: single-file checkpoints (jaxvision 0.1); 2: sharded folders
MANIFEST = "manifest.json"
_NAME = re.compile(r"^ckpt_(\d{9})$")
_SHARDS = "shards-{:05d}.msgpack"
SEP = "/"


class CheckpointError(UserError, ValueError):
    """A checkpoint cannot be read, is corrupt, or does not fit the model being restored."""


# ------------------------------------------------------------------------------ the state as arrays


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


def _flat(tree: Any) -> dict[str, Any]:
    """``{"params/stem/kernel": leaf, ...}``; empty mappings and ``None`` stay as structure."""
    if not isinstance(tree, dict):
        return {"": tree}
    return traverse_util.flatten_dict(tree, keep_empty_nodes=True, sep=SEP)


def _is_array(leaf: Any) -> bool:
    return hasattr(leaf, "shape") and hasattr(leaf, "dtype")


def _slices(index: tuple[slice, ...], shape: tuple[int, ...]) -> list[list[int]]:
    return [list(s.indices(n)[:2]) for s, n in zip(index, shape, strict=True)]


def _local_pieces(leaf: Any, process: int) -> list[dict[str, Any]]:
    """The slices of ``leaf`` this process writes: one copy of each, from replica 0."""
    import jax

    if isinstance(leaf, jax.Array):
        return [
            {"index": _slices(shard.index, leaf.shape), "data": np.asarray(shard.data)}
            for shard in leaf.addressable_shards
            if shard.replica_id == 0
        ]
    if process != 0:
        return []
    data = np.asarray(leaf)
    return [{"index": [[0, n] for n in data.shape], "data": data}]


def _barrier(name: str) -> None:
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# ------------------------------------------------------------------------------------- writing


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    directory: str | Path, state: Any, header: dict[str, Any], *, keep: int = 3
) -> Path:
    """Write ``state`` with ``header`` as ``directory/ckpt_<step>/``; keep the newest ``keep``.

    Every process of a multi-host run must call it (each writes its own shards); returns the
    checkpoint's path once all of them are done.
    """
    import jax

    directory = Path(directory)
    process, processes = jax.process_index(), jax.process_count()
    step = int(np.asarray(jax.device_get(state.step)))
    name = f"ckpt_{step:09d}"
    tmp, final = directory / f".tmp-{name}", directory / name
    if process == 0:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob(".tmp-*"):  # left by a crash; this run is the only writer
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink()
        tmp.mkdir()
    _barrier(f"jaxvision-ckpt-{step}-start")

    try:
        flat = {k: v for k, v in _flat(_state_dict(state)).items() if _is_array(v)}
        payload = serialization.msgpack_serialize(
            {k: _local_pieces(v, process) for k, v in flat.items()}
        )
        shard_file = tmp / _SHARDS.format(process)
        _write_atomic(shard_file, payload)
        _write_atomic(
            shard_file.with_suffix(".sha256"), hashlib.sha256(payload).hexdigest().encode()
        )
        _barrier(f"jaxvision-ckpt-{step}-written")

        if process == 0:
            files = {}
            for p in range(processes):
                shard = tmp / _SHARDS.format(p)
                files[shard.name] = shard.with_suffix(".sha256").read_text().strip()
                shard.with_suffix(".sha256").unlink()
            arrays = {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in flat.items()}
            manifest = {
                **header,
                "step": step,
                "format": FORMAT,
                "processes": processes,
                "files": files,
                "arrays": arrays,
            }
            _write_atomic(tmp / MANIFEST, json.dumps(manifest, sort_keys=True).encode())
            _fsync_dir(tmp)
            old = directory / f".tmp-old-{name}"
            if (
                final.exists()
            ):  # the same step saved again (a resumed run past a corrupt checkpoint)
                os.replace(final, old)
            os.replace(tmp, final)
            _fsync_dir(directory)
            shutil.rmtree(old, ignore_errors=True)
            for stale in list_checkpoints(directory)[:-keep] if keep > 0 else []:
                shutil.rmtree(stale, ignore_errors=True)
    except BaseException:
        if processes == 1:  # several processes: the next save removes the folder
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    _barrier(f"jaxvision-ckpt-{step}-done")
    return final


def write_file(path: str | Path, header: dict[str, Any], payload: bytes) -> Path:
    """Write a single-file checkpoint (header + payload) to ``path`` atomically."""
    path = Path(path)
    header = {**header, "sha256": hashlib.sha256(payload).hexdigest(), "format": 1}
    head = json.dumps(header, sort_keys=True).encode()
    _write_atomic(path, MAGIC + struct.pack("<Q", len(head)) + head + payload)
    _fsync_dir(path.parent)
    return path


def save_variables(path: str | Path, variables: dict[str, Any], header: dict[str, Any]) -> Path:
    """Save model variables alone (converted weights, an exported model) as one ``.jvc`` file."""
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


# ------------------------------------------------------------------------------------- reading


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Training checkpoints in ``directory``, oldest first (temporary folders are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name) and p.is_dir())


def _read_file(path: Path) -> tuple[dict[str, Any], bytes]:
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


def _read_folder(path: Path) -> tuple[dict[str, Any], list[bytes]]:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no {MANIFEST} (an incomplete checkpoint)") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt {MANIFEST} ({e})") from None
    payloads = []
    for name, digest in sorted(manifest.get("files", {}).items()):
        try:
            payload = (path / name).read_bytes()
        except OSError as e:
            raise CheckpointError(f"cannot read {path / name}: {e.strerror}") from None
        if hashlib.sha256(payload).hexdigest() != digest:
            raise CheckpointError(
                f"{path / name}: corrupt checkpoint (checksum mismatch; truncated or damaged)"
            )
        payloads.append(payload)
    return manifest, payloads


def read_header(path: str | Path) -> dict[str, Any]:
    """The header of the checkpoint at ``path`` (folder or file), after verifying its checksums."""
    path = Path(path)
    return _read_folder(path)[0] if path.is_dir() else _read_file(path)[0]


def _assemble(pieces: list[dict[str, Any]], shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    out = np.zeros(shape, dtype)
    for piece in pieces:
        out[tuple(slice(a, b) for a, b in piece["index"])] = piece["data"]
    return out


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, state) of a checkpoint folder or file, every array whole, as numpy.

    ``state`` is the nested dict of what was saved: ``params``, ``batch_stats`` and, for a
    training checkpoint, ``step``, ``ema_params`` and ``opt_state``.
    """
    path = Path(path)
    if not path.is_dir():
        header, payload = _read_file(path)
        return header, serialization.msgpack_restore(payload)
    manifest, payloads = _read_folder(path)
    pieces: dict[str, list[dict[str, Any]]] = {}
    for payload in payloads:
        for key, found in serialization.msgpack_restore(payload).items():
            pieces.setdefault(key, []).extend(found)
    flat = {}
    for key, spec in manifest["arrays"].items():
        flat[key] = _assemble(pieces.get(key, []), tuple(spec["shape"]), np.dtype(spec["dtype"]))
    return manifest, traverse_util.unflatten_dict(flat, sep=SEP)


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest checkpoint in ``directory`` that reads back intact; corrupt newer ones are
    reported with a warning and skipped."""
    for path in reversed(list_checkpoints(directory)):
        try:
            read_header(path)
        except CheckpointError as e:
            warnings.warn(
                f"skipping {e}; falling back to the previous checkpoint",
                JaxvisionWarning,
                stacklevel=2,
            )
            continue
        return path
    return None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint from a path that is a weights file, a checkpoint folder, a checkpoints
    folder or a run's output folder (the newest intact checkpoint in the last two)."""
    path = Path(path)
    if path.is_file() or (path / MANIFEST).is_file():
        return path
    for folder in (path / "checkpoints", path):
        found = latest_checkpoint(folder)
        if found is not None:
            return found
    if not path.exists():
        raise CheckpointError(f"checkpoint path does not exist: {path}")
    raise CheckpointError(f"no intact checkpoint found in {path}")


def check_model(header: dict[str, Any], model: str | None, path: str | Path) -> None:
    """Refuse a checkpoint saved for another model than ``model`` (``None`` checks nothing)."""
    if model is not None and header.get("model") != model:
        raise CheckpointError(
            f"{path} is a checkpoint of {header.get('model')!r}, not of {model!r}"
        )


def _mismatches(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """Paths missing, unexpected or of another shape; ``got`` and ``want`` map path -> shape."""
    out = [f"/{k}: missing" for k in want if k not in got]
    out += [f"/{k}: unexpected" for k in got if k not in want]
    out += [
        f"/{k}: shape {tuple(got[k])} in checkpoint, {tuple(want[k])} in model"
        for k in want
        if k in got and tuple(got[k]) != tuple(want[k])
    ]
    return out


def _raise_mismatches(path: Any, what: str, mismatches: list[str]) -> None:
    if mismatches:
        shown = "; ".join(mismatches[:8]) + (" ..." if len(mismatches) > 8 else "")
        raise CheckpointError(f"{path} does not match {what}: {shown}")


def variables_from_checkpoint(
    header: dict[str, Any],
    state: dict[str, Any],
    expected: dict[str, Any],
    *,
    model: str | None = None,
    use_ema: bool = False,
    path: str | Path = "checkpoint",
) -> dict[str, Any]:
    """The model variables in a loaded checkpoint (:func:`load_checkpoint`), checked against the
    shapes in ``expected`` (e.g. ``jax.eval_shape(model.init, ...)``)."""
    check_model(header, model, path)
    ema = state.get("ema_params")
    params = ema if use_ema and ema else state.get("params", {})
    variables = {"params": params}
    if expected.get("batch_stats"):
        variables["batch_stats"] = state.get("batch_stats") or {}
    want = {k: v for k, v in expected.items() if k in ("params", "batch_stats")}
    shapes = lambda tree: {k: np.shape(v) for k, v in _flat(tree).items() if _is_array(v)}
    _raise_mismatches(path, "the model", _mismatches(shapes(variables), shapes(want)))
    return variables


def restore_state(
    path: str | Path, target: Any, *, model: str | None = None
) -> tuple[Any, dict[str, Any]]:
    """Load the training checkpoint at ``path`` into the structure of ``target`` (a TrainState).

    Each array is built with the sharding of ``target``'s leaf, so the state comes back placed
    exactly as the target is (replicated, FSDP-sharded, on one host or several). Raises
    :class:`CheckpointError` when it was saved for another model or does not match the target's
    structure and shapes.
    """
    import jax

    header, saved = load_checkpoint(path)
    check_model(header, model, path)
    target_flat = _flat(_state_dict(target))
    saved_flat = {k: v for k, v in _flat(saved).items() if _is_array(v)}
    want = {k: np.shape(v) for k, v in target_flat.items() if _is_array(v)}
    has_ema = lambda keys: any(k.startswith("ema_params" + SEP) for k in keys)
    if has_ema(saved_flat) != has_ema(want):
        raise CheckpointError(f"{path}: presence of the EMA differs (--ema-decay on/off?)")
    _raise_mismatches(
        path,
        "the model's state",
        _mismatches({k: np.shape(v) for k, v in saved_flat.items()}, want),
    )

    def place(key: str, leaf: Any) -> Any:
        if not _is_array(leaf):
            return leaf
        value = saved_flat[key].astype(leaf.dtype)
        if isinstance(leaf, jax.Array):
            return jax.make_array_from_callback(value.shape, leaf.sharding, lambda i: value[i])
        return value

    restored = traverse_util.unflatten_dict(
        {k: place(k, v) for k, v in target_flat.items()}, sep=SEP
    )
    fields = {
        "step": target.step,
        "params": target.params,
        "batch_stats": target.batch_stats,
        "ema_params": target.ema_params,
        "opt_state": target.opt_state,
    }
    restored = serialization.from_state_dict(fields, restored)
    return target.replace(**restored), header

"""Fine-tuning: start from a checkpoint's parameters where they fit, re-initialise the rest.

``jaxvision train --init-from PATH`` (a ``.jvc`` weights file from ``jaxvision convert``, a
training checkpoint, or a run folder) loads every parameter and BatchNorm statistic whose path and
shape match the new model and keeps the fresh initialisation of the others - typically a
classifier for another number of classes - the way timm's ``--initial-checkpoint`` and
``--pretrained`` with a new ``--num-classes`` do. What was loaded and what was not is reported.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util

from jaxvision.train import checkpoint as ckpt

SEP = "/"


@dataclasses.dataclass
class InitReport:
    """What :func:`merge_matching` took from the checkpoint and what it left fresh (and why)."""

    loaded: list[str]
    reinitialised: dict[str, str]  # path -> reason
    unused: list[str]  # in the checkpoint, not in the model
    source: str = ""

    def lines(self) -> list[str]:
        """A human-readable account: loaded modules (with array counts), then every
        re-initialised and unused array by path."""
        groups: dict[str, int] = {}
        for path in self.loaded:
            parts = path.split(SEP)
            groups[SEP.join(parts[:2])] = groups.get(SEP.join(parts[:2]), 0) + 1
        listed = ", ".join(f"{g} ({n})" for g, n in groups.items())
        out = [f"init-from {self.source}: loaded {len(self.loaded)} arrays: {listed}"]
        if self.reinitialised:
            out.append(f"re-initialised {len(self.reinitialised)} arrays:")
            out += [f"  {path} ({why})" for path, why in self.reinitialised.items()]
        else:
            out.append("re-initialised: none")
        if self.unused:
            out.append(f"not used from the checkpoint: {', '.join(self.unused)}")
        return out


def merge_matching(
    fresh: dict[str, Any], source: dict[str, Any]
) -> tuple[dict[str, Any], InitReport]:
    """``fresh`` variables with every array of ``source`` whose path and shape match put in."""
    want = traverse_util.flatten_dict(fresh, sep=SEP)
    have = {
        k: v for k, v in traverse_util.flatten_dict(source, sep=SEP).items() if hasattr(v, "shape")
    }
    merged, loaded, reinit = {}, [], {}
    for path, leaf in want.items():
        theirs = have.get(path)
        if theirs is None:
            merged[path], reinit[path] = leaf, "not in the checkpoint"
        elif tuple(theirs.shape) != tuple(np.shape(leaf)):
            merged[path] = leaf
            reinit[path] = f"shape {tuple(theirs.shape)} in the checkpoint, {np.shape(leaf)} here"
        else:
            merged[path] = np.asarray(theirs).astype(np.asarray(leaf).dtype)
            loaded.append(path)
    unused = [k for k in have if k not in want]
    return traverse_util.unflatten_dict(merged, sep=SEP), InitReport(loaded, reinit, unused)


def init_from(
    path: str | Path, variables: dict[str, Any], *, model: str
) -> tuple[dict[str, Any], InitReport]:
    """``variables`` (a fresh initialisation of ``model``) with the matching arrays of the
    checkpoint at ``path`` loaded. A checkpoint of another model, or one of which no array fits,
    is a :class:`~jaxvision.train.checkpoint.CheckpointError`."""
    found = ckpt.resolve_checkpoint(path)
    header, saved = ckpt.load_checkpoint(found)
    ckpt.check_model(header, model, found)
    source = {"params": saved.get("params") or {}, "batch_stats": saved.get("batch_stats") or {}}
    merged, report = merge_matching(variables, source)
    if not report.loaded:
        raise ckpt.CheckpointError(f"{found}: no array of the checkpoint fits {model}")
    report.source = str(found)
    return merged, report


__all__ = ["InitReport", "init_from", "merge_matching"]

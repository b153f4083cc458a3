"""Shared machinery for converting reference (PyTorch) state dicts into Flax variables.

A converter reads tensors by their reference names through :class:`StateDictReader`, which
records what it consumed, converts layouts (PyTorch OIHW -> Flax HWIO, Linear (out, in) ->
Dense (in, out)) and, at the end, reports every key that was never read. The converted tree is
then compared against the model's own parameter shapes (:func:`check_variables`), so a missing,
unexpected or mis-shaped key is an error that lists them all rather than a silent mismatch.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from jaxvision.errors import UserError


class WeightConversionError(UserError, ValueError):
    """A state dict does not fit the model: the message lists what is missing or wrong."""


def to_numpy(value: Any) -> np.ndarray:
    """A numpy copy of a numpy array or a torch tensor (torch is never imported here)."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


class StateDictReader:
    """Reads a reference state dict key by key, remembering what was used."""

    def __init__(self, state_dict: Mapping[str, Any], *, ignore: Iterable[str] = ()):
        if not isinstance(state_dict, Mapping):
            raise WeightConversionError(
                f"expected a mapping of parameter names to arrays, got {type(state_dict).__name__}"
            )
        self._state = dict(state_dict)
        self._used: set[str] = set()
        self._missing: list[str] = []
        self._ignore = tuple(ignore)

    def __contains__(self, key: str) -> bool:
        return key in self._state

    def keys(self) -> list[str]:
        return list(self._state)

    def get(self, key: str) -> np.ndarray:
        """The array stored under ``key`` as float32 numpy (recorded as missing if absent)."""
        if key not in self._state:
            self._missing.append(key)
            return np.zeros((0,), np.float32)
        self._used.add(key)
        return to_numpy(self._state[key]).astype(np.float32)

    def conv(self, key: str) -> np.ndarray:
        """A PyTorch conv weight (O, I/groups, kH, kW) as a Flax kernel (kH, kW, I/groups, O)."""
        w = self.get(key)
        return w.transpose(2, 3, 1, 0) if w.ndim == 4 else w

    def linear(self, key: str) -> np.ndarray:
        """A PyTorch Linear weight (out, in) as a Flax Dense kernel (in, out)."""
        w = self.get(key)
        return w.T if w.ndim == 2 else w

    def batch_norm(self, prefix: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(params, batch_stats) of a BatchNorm stored under ``prefix`` (its num_batches_tracked
        counter has no Flax counterpart and is ignored)."""
        params = {"scale": self.get(f"{prefix}.weight"), "bias": self.get(f"{prefix}.bias")}
        stats = {
            "mean": self.get(f"{prefix}.running_mean"),
            "var": self.get(f"{prefix}.running_var"),
        }
        if f"{prefix}.num_batches_tracked" in self._state:
            self._used.add(f"{prefix}.num_batches_tracked")
        return params, stats

    def layer_norm(self, prefix: str) -> dict[str, np.ndarray]:
        return {"scale": self.get(f"{prefix}.weight"), "bias": self.get(f"{prefix}.bias")}

    def finish(self) -> None:
        """Raise if any key was asked for but absent, or present but never read."""
        unexpected = [
            k
            for k in self._state
            if k not in self._used and not any(fnmatch.fnmatch(k, p) for p in self._ignore)
        ]
        if self._missing or unexpected:
            raise WeightConversionError(
                _listing("missing keys", self._missing) + _listing("unexpected keys", unexpected)
            )


def _listing(title: str, keys: list[str], limit: int = 20) -> str:
    if not keys:
        return ""
    shown = ", ".join(keys[:limit]) + (
        f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    )
    return f"{title} ({len(keys)}): {shown}\n"


def check_variables(converted: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Compare converted variables with the model's (shape-only) variables; raise on any
    mismatch."""
    got = {"/".join(k): np.shape(v) for k, v in traverse_util.flatten_dict(dict(converted)).items()}
    want = {
        "/".join(k): tuple(v.shape)
        for k, v in traverse_util.flatten_dict(jax.tree.map(lambda a: a, dict(expected))).items()
    }
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    misshaped = [
        f"{k}: got {got[k]}, model has {want[k]}"
        for k in sorted(set(got) & set(want))
        if got[k] != want[k]
    ]
    if missing or unexpected or misshaped:
        raise WeightConversionError(
            "converted weights do not fit the model:\n"
            + _listing("missing", missing)
            + _listing("unexpected", unexpected)
            + _listing("mis-shaped", misshaped)
        )


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a/b/c": x}`` -> ``{"a": {"b": {"c": x}}}``."""
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})

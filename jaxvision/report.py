"""The one JSON line a command ends with: every command (``train``, ``eval``, ``predict``,
``omnivec``, ``env``) prints its result through :func:`print_json_line`, so every figure is
rounded the same way, wherever it sits in the object."""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

DIGITS = 6  # decimals kept of every float: metrics are fractions, losses a few units


def rounded(value: Any, digits: int = DIGITS) -> Any:
    """``value`` with every float in it (numpy scalars included) rounded to ``digits`` decimals;
    dicts, lists and tuples are walked, anything else is kept."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float | np.floating):
        return round(float(value), digits)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, digits) for v in value]
    if isinstance(value, np.ndarray | np.generic) or hasattr(value, "__array__"):
        return rounded(np.asarray(value).tolist(), digits)
    return value


def print_json_line(obj: dict[str, Any]) -> None:
    """``obj`` as one JSON line on stdout, floats rounded (:func:`rounded`)."""
    print(json.dumps(rounded(obj)), file=sys.stdout, flush=True)


__all__ = ["DIGITS", "print_json_line", "rounded"]

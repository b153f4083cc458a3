"""Weight import from reference checkpoints (timm, torchvision, ultralytics).

``convert(name, state_dict, *, source)`` turns a reference state dict (names -> numpy arrays or
torch tensors) into the Flax variables of ``jaxvision.create_model(name, ...)``. Each family
registers its converters with :func:`register_converter`; model files never import this package.

``load_state_dict(path)`` reads ``.safetensors`` (no torch needed) and ``.pth`` / ``.pt`` /
``.bin`` (torch imported lazily).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxvision.analysis import abstract_variables
from jaxvision.registry import create_model, model_info
from jaxvision.weights.common import (
    StateDictReader,
    WeightConversionError,
    check_variables,
    to_numpy,
)

__all__ = [
    "convert",
    "load_state_dict",
    "register_converter",
    "StateDictReader",
    "WeightConversionError",
    "to_numpy",
]

_CONVERTER_MODULES = (
    "jaxvision.weights.efficientnet",
    "jaxvision.weights.vit",
    "jaxvision.weights.yolov8",
)

# (family, source) -> fn(name, reader, **overrides) -> (variables, create_model kwargs)
Converter = Callable[..., tuple[dict[str, Any], dict[str, Any]]]
_CONVERTERS: dict[tuple[str, str], Converter] = {}


def register_converter(family: str, source: str) -> Callable[[Converter], Converter]:
    def wrap(fn: Converter) -> Converter:
        _CONVERTERS[(family, source)] = fn
        return fn

    return wrap


@functools.cache
def _load_converters() -> None:
    for module in _CONVERTER_MODULES:
        importlib.import_module(module)


def sources(name: str) -> list[str]:
    """The reference sources whose checkpoints ``name`` can be converted from."""
    _load_converters()
    family = model_info(name).family
    return sorted(s for f, s in _CONVERTERS if f == family)


def convert(
    name: str, state_dict: Mapping[str, Any], *, source: str, **overrides: Any
) -> dict[str, Any]:
    """Flax variables for ``create_model(name, ...)`` from a reference ``state_dict``.

    ``overrides`` are passed to the family converter and to ``create_model`` (for example
    ``image_size=384`` for a ViT, whose position embedding is then resized). The number of classes
    is read from the checkpoint. Raises :class:`WeightConversionError` listing missing, unexpected
    or mis-shaped keys.
    """
    _load_converters()
    family = model_info(name).family
    fn = _CONVERTERS.get((family, source))
    if fn is None:
        raise WeightConversionError(
            f"no converter from {source!r} for {name} (family {family}); "
            f"available sources: {', '.join(sources(name)) or 'none'}"
        )
    reader = StateDictReader(state_dict)
    variables, model_kwargs = fn(name, reader, **overrides)
    reader.finish()
    model = create_model(name, **{**model_kwargs, **overrides})
    size = overrides.get("image_size", model_info(name).resolution)
    expected = abstract_variables(model, size)
    check_variables(variables, expected)
    return jax.tree.map(jnp.asarray, variables)


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file into ``{name: numpy array}``.

    ``.safetensors`` needs only the ``safetensors`` package; ``.pth``/``.pt``/``.bin`` need torch.
    A checkpoint holding a whole pickled model (ultralytics ``.pt``) is unwrapped to its state
    dict, which needs ultralytics installed for unpickling.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightConversionError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError as e:
            raise WeightConversionError(
                "reading .safetensors files needs safetensors: pip install 'jaxvision[safetensors]'"
            ) from e

        return dict(load_file(str(path)))
    if path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            import torch
        except ImportError as e:
            raise WeightConversionError(
                f"reading {path.suffix} files needs torch: pip install 'jaxvision[reference]'"
            ) from e
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
        if isinstance(obj, Mapping):
            for key in ("ema", "model", "state_dict"):
                inner = obj.get(key)
                if inner is not None and not isinstance(inner, (int, float, str)):
                    obj = inner
                    break
        if hasattr(obj, "state_dict"):
            obj = obj.float().state_dict() if hasattr(obj, "float") else obj.state_dict()
        if not isinstance(obj, Mapping):
            raise WeightConversionError(f"{path}: no state dict found (got {type(obj).__name__})")
        return {k: to_numpy(v) for k, v in obj.items() if hasattr(v, "shape")}
    raise WeightConversionError(
        f"unsupported checkpoint format {path.suffix!r} ({path}); "
        "use .safetensors, .pth, .pt or .bin"
    )

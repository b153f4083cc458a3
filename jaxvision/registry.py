"""Model registry: name -> constructor + metadata.

Every model file ends with `register_model(...)` calls. The registry stores, per name, the
constructor, its family, the default input resolution, the evaluation preprocessing of the
reference weights, and the reference figures (parameter count, FLOPs, documented accuracy) copied
from the reference implementations into ``reference_models.json`` beside this file.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn

from jaxvision.errors import ConfigError, UserError

# Model families live in these modules; importing one registers its variants.
_MODEL_MODULES = (
    "jaxvision.models.efficientnet",
    "jaxvision.models.vit",
    "jaxvision.models.yolov8",
    "jaxvision.models.yolov8_detect",
    "jaxvision.models.omnivec",
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """The evaluation pipeline the reference weights expect.

    Resize the shorter side to ``resolution / crop_fraction`` with ``interpolation``, centre-crop
    ``resolution`` x ``resolution``, scale to [0, 1], then ``(x - mean) / std`` per channel.
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_fraction: float = 0.875
    interpolation: str = "bicubic"  # "bilinear" | "bicubic" | "nearest"


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    resolution: int
    preprocessing: Preprocessing
    reference_params: int | None
    reference_flops: int | None
    top1: float | None
    top5: float | None
    source: str | None
    accuracy_source: str | None
    description: str
    task: str = "classification"


@dataclasses.dataclass(frozen=True)
class _Entry:
    constructor: Callable[..., nn.Module]
    family: str
    resolution: int
    preprocessing: Preprocessing
    description: str
    task: str


_REGISTRY: dict[str, _Entry] = {}


class UnknownModelError(UserError, KeyError):
    """Raised for a model name that is not registered; the message lists close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable.
        return str(self.args[0])


@functools.cache
def reference_figures() -> dict[str, dict[str, Any]]:
    """Reference parameter counts, FLOPs and accuracies (copied from the reference packages)."""
    with open(Path(__file__).with_name("reference_models.json")) as f:
        data = json.load(f)
    data.pop("_about", None)
    return data


def register_model(
    name: str,
    *,
    family: str,
    resolution: int,
    preprocessing: Preprocessing,
    description: str = "",
    task: str = "classification",
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``constructor(*, num_classes, **overrides) -> nn.Module`` as ``name``.

    ``task`` names the kind of work the model does (a key of ``jaxvision.tasks.TASKS``): it
    decides what a batch holds, the loss and the metrics ``jaxvision train`` uses.
    """

    def wrap(constructor: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = _Entry(constructor, family, resolution, preprocessing, description, task)
        return constructor

    return wrap


@functools.cache
def _load_model_modules() -> None:
    for module in _MODEL_MODULES:
        importlib.import_module(module)


def _entry(name: str) -> _Entry:
    _load_model_modules()
    if not isinstance(name, str) or name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}{hint} (`jaxvision models` lists all {len(_REGISTRY)})"
        )
    return _REGISTRY[name]


def list_models(family: str | None = None) -> list[str]:
    """Names of every registered model (optionally one family), sorted."""
    _load_model_modules()
    return sorted(n for n, e in _REGISTRY.items() if family is None or e.family == family)


class ModelArgumentError(ConfigError, TypeError):
    """A model argument (``--model-arg``) that is not a field of the model."""


def create_model(name: str, *, num_classes: int | None = None, **overrides: Any) -> nn.Module:
    """Build a registered model. ``overrides`` replace fields of its configuration.

    ``num_classes`` defaults to the model's own (1000 for the ImageNet classifiers, 80 for the
    COCO detectors). The returned Flax module takes NHWC float images:
    ``model.apply(variables, x, train=...)``.
    """
    entry = _entry(name)
    if num_classes is not None:
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
        overrides["num_classes"] = num_classes
    try:
        return entry.constructor(**overrides)
    except TypeError as e:
        raise ModelArgumentError(f"create_model({name!r}): bad override: {e}") from None


def parse_model_args(items: list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    """``["patch_size=4", "implementation=xla"]`` -> ``{"patch_size": 4, "implementation": "xla"}``.

    Values are Python literals where they parse as one, bare strings otherwise; ``true``,
    ``false`` and ``none`` in any case are the Python constants (as a shell user would write
    them: as a string, "false" would be truthy and switch a flag on).
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"--model-arg expects KEY=VALUE, got {item!r}")
        constant = {"true": True, "false": False, "none": None}.get(raw.strip().lower(), raw)
        if constant is not raw:
            out[key] = constant
            continue
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw  # a bare string such as implementation=shifted
    return out


def build_model(
    name: str,
    *,
    num_classes: int | None = None,
    image_size: int | None = None,
    dtype: str = "float32",
    model_args: dict[str, Any] | None = None,
) -> tuple[nn.Module, int]:
    """(model, input size): ``create_model`` at ``image_size`` (default: the registered
    resolution) with compute ``dtype`` and the ``--model-arg`` overrides. The one place the
    command line, the training loop and the benchmark build a model.

    A model with an ``image_size`` field (the ViT: its position embedding has one row per patch)
    is built for that size unless ``model_args`` sets it.
    """
    import jax.numpy as jnp

    if dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"dtype must be float32 or bfloat16, got {dtype!r}")
    overrides = dict(model_args or {})
    num_classes = overrides.pop("num_classes", num_classes)
    if dtype != "float32":
        overrides["dtype"] = jnp.dtype(dtype)
    model = create_model(name, num_classes=num_classes, **overrides)
    size = image_size or overrides.get("image_size") or model_info(name).resolution
    fields = {f.name for f in dataclasses.fields(model)}
    if "image_size" in fields and "image_size" not in overrides and model.image_size != size:
        model = model.clone(image_size=size)
    return model, size


def model_info(name: str) -> ModelInfo:
    """Family, default resolution, eval preprocessing and the reference figures of ``name``."""
    entry = _entry(name)
    ref = reference_figures().get(name, {})
    return ModelInfo(
        name=name,
        family=entry.family,
        resolution=entry.resolution,
        preprocessing=entry.preprocessing,
        reference_params=ref.get("params"),
        reference_flops=ref.get("flops"),
        top1=ref.get("top1"),
        top5=ref.get("top5"),
        source=ref.get("source"),
        accuracy_source=ref.get("accuracy_source"),
        description=entry.description,
        task=entry.task,
    )

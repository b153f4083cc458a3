"""jaxvision: landmark vision architectures in JAX/Flax, built to be read, trained and measured.

>>> import jaxvision
>>> model = jaxvision.create_model("vit_ti16", num_classes=10)
>>> jaxvision.list_models()[:3]
"""

from jaxvision.registry import (
    ModelInfo,
    Preprocessing,
    UnknownModelError,
    create_model,
    list_models,
    model_info,
)

__version__ = "0.1.0"

__all__ = [
    "ModelInfo",
    "Preprocessing",
    "UnknownModelError",
    "create_model",
    "list_models",
    "model_info",
    "__version__",
]

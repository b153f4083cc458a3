"""A tiny CNN registered as ``tiny_test_cnn`` for fast tests of the engine and the CLI.

It has everything the engine must handle - BatchNorm statistics, dropout and drop path - in a
few thousand parameters. Run as a script it registers itself and calls the CLI, so subprocess
tests (SIGKILL, multi-process) can train it: ``python tiny_model.py train tiny_test_cnn ...``.
"""

from __future__ import annotations

import sys

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.layers.conv import Conv2d
from jaxvision.layers.drop_path import DropPath
from jaxvision.layers.inputs import check_images
from jaxvision.registry import _REGISTRY, Preprocessing, register_model

NAME = "tiny_test_cnn"


class TinyCNN(nn.Module):
    num_classes: int = 10
    features: int = 16
    drop_rate: float = 0.1
    drop_path_rate: float = 0.1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        check_images(x, model=NAME)
        norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9, name=name)  # noqa: E731
        x = Conv2d(self.features, 3, strides=2, dtype=self.dtype, name="stem")(x)
        x = nn.relu(norm("bn_stem")(x))
        y = Conv2d(self.features, 3, dtype=self.dtype, name="conv")(x)
        y = nn.relu(norm("bn")(y))
        x = x + DropPath(self.drop_path_rate)(y, train=train)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)


def _constructor(*, num_classes: int = 1000, **overrides):
    return TinyCNN(num_classes=num_classes, **overrides)


def register() -> None:
    from jaxvision.registry import _load_model_modules

    _load_model_modules()
    if NAME not in _REGISTRY:
        register_model(
            NAME,
            family="test",
            resolution=16,
            preprocessing=Preprocessing(
                mean=(0.5,) * 3, std=(0.5,) * 3, crop_fraction=1.0, interpolation="bilinear"
            ),
        )(_constructor)


def unregister() -> None:
    _REGISTRY.pop(NAME, None)


if __name__ == "__main__":
    register()
    from jaxvision.cli import main

    sys.exit(main(sys.argv[1:]))

"""Validation of the images handed to a model, so mistakes fail with a readable message."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def check_images(x: jax.Array, *, model: str, channels: int = 3) -> None:
    """Raise ``ValueError`` unless ``x`` is a float NHWC batch with ``channels`` channels.

    Runs at trace time (shapes and dtypes only), so it costs nothing inside ``jit``.
    """
    shape = tuple(getattr(x, "shape", ()))
    dtype = getattr(x, "dtype", None)
    if len(shape) != 4:
        raise ValueError(
            f"{model} expects a batch of NHWC images (B, H, W, {channels}), got shape {shape} "
            f"(rank {len(shape)}); add a batch axis with x[None] for a single image"
        )
    if shape[-1] != channels:
        if shape[1] == channels:
            hint = "; it looks like NCHW - transpose with x.transpose(0, 2, 3, 1)"
        elif shape[-1] == 1:
            hint = f"; grayscale images need replicating to {channels} channels"
        else:
            hint = ""
        raise ValueError(
            f"{model} expects NHWC images with {channels} channels, got shape {shape}{hint}"
        )
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"{model} expects floating-point images (normalised float32), got dtype {dtype}; "
            "convert uint8 images with the model's preprocessing first"
        )

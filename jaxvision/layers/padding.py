"""The padding conventions of every convolution in the library, in one place.

* ``"symmetric"``: ``(k - 1) // 2`` zeros on every side, as PyTorch layers are built (timm,
  torchvision, ultralytics ``autopad``). Weights trained in PyTorch need it.
* ``"same"``: TensorFlow's ``SAME``, ``max((ceil(n / s) - 1) * s + k - n, 0)`` zeros in total
  along an axis of length ``n``, the odd one after (bottom / right). Flax's ``padding="SAME"``
  is exactly this. Weights trained in TensorFlow (timm's ``tf_`` models) need it.
* ``"valid"``: none.

"symmetric" and "same" agree at stride 1 for odd kernels and differ at stride 2 whenever the total
padding is odd.
"""

from __future__ import annotations

import math

PADDINGS = ("symmetric", "same", "valid")


def padding_amounts(padding: str, size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """Zeros added (before, after) one spatial axis of length ``size``."""
    if padding == "symmetric":
        p = (kernel_size - 1) // 2
        return p, p
    if padding == "same":
        total = max((math.ceil(size / stride) - 1) * stride + kernel_size - size, 0)
        return total // 2, total - total // 2
    if padding == "valid":
        return 0, 0
    raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")


def explicit_padding(
    padding: str, size: tuple[int, int], kernel_size: int, stride: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(before, after) zeros of both spatial axes of an (H, W) input: the ``padding`` argument of
    ``lax.conv_general_dilated`` for every convention."""
    height, width = size
    return (
        padding_amounts(padding, height, kernel_size, stride),
        padding_amounts(padding, width, kernel_size, stride),
    )


__all__ = ["PADDINGS", "explicit_padding", "padding_amounts"]

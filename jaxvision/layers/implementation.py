"""What ``implementation="auto"`` means: one rule for every layer, decided by the backend.

Some layers can compute their function in more than one way. The ways share the parameters, give
the same result (each layer's tests check that) and differ only in speed, which depends on the
backend. ``"auto"`` picks one by ``jax.default_backend()``:

    layer                          on CPU        on GPU / TPU
    Conv2d, 1x1 kernel             "matmul"      "matmul"
    Conv2d, larger kernels         "xla"         "xla"
    DepthwiseConv2d                "shifted"     "xla"
    PatchEmbed                     "dense"       "dense"
    MultiHeadSelfAttention         "explicit"    "fused" (1)

The rule:

* On GPU / TPU, hand the operation to the library kernel made for it: a grouped convolution for a
  depthwise convolution, ``jax.nn.dot_product_attention`` for attention.
* On CPU, use the formulation measured faster on XLA:CPU (the figures, and how they were measured,
  are in benchmarks/README.md, "Layer formulations and why 'auto' picks them"): k*k shifted
  multiply-adds instead of a grouped convolution, the attention equations written out as einsums.
* A contraction that is a matrix multiply (a 1x1 convolution, a patch embedding) is written as one
  on every backend: a matrix multiply is what every backend does fastest.

(1) ``"fused"`` computes no attention weights, so ``"auto"`` stays ``"explicit"`` where the weights
are needed: when they are sown (``sow_attention=True``) or attention dropout applies (training
with ``attention_drop_rate > 0``).

A layer given an explicit name (``"xla"``, ``"shifted"``, ...) uses it on every backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

# layer -> (formulation on CPU, formulation on GPU / TPU); see the module docstring.
AUTO: dict[str, tuple[str, str]] = {
    "conv1x1": ("matmul", "matmul"),
    "conv": ("xla", "xla"),
    "depthwise": ("shifted", "xla"),
    "patch_embed": ("dense", "dense"),
    "attention": ("explicit", "fused"),
}


def backend() -> str:
    """The platform ``"auto"`` decides for: ``"cpu"``, ``"gpu"`` or ``"tpu"``."""
    return jax.default_backend()


def resolve_implementation(layer: str, implementation: str, choices: Sequence[str]) -> str:
    """The formulation ``layer`` runs: ``implementation`` itself, or the rule's pick for "auto".

    ``choices`` are the names the layer accepts ("auto" among them); anything else is an error.
    """
    if implementation not in choices:
        raise ValueError(f"implementation must be one of {tuple(choices)}, got {implementation!r}")
    if implementation != "auto":
        return implementation
    on_cpu, on_accelerator = AUTO[layer]
    return on_cpu if backend() == "cpu" else on_accelerator

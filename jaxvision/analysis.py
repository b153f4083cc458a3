"""Counting a model without running it: parameters, per-layer output shapes, FLOPs.

Everything here works on abstract values (``jax.eval_shape`` / ``jax.make_jaxpr``), so it costs no
memory or compile time even for EfficientNet-B7 or ViT-H.

FLOPs follow the reference figures' convention (``torch.utils.flop_counter``): convolutions and
matrix multiplies only, a multiply-add counted as 2 FLOPs, one image. They are counted from the
jaxpr, so they describe what the model really computes; a depthwise convolution written as k*k
shifted multiply-adds (a ``custom_vjp`` of an NHWC input and a (k, k, 1, C) kernel, see
:mod:`jaxvision.layers.depthwise`) is counted as the convolution it is.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.extend
import numpy as np
from flax import traverse_util

Example = int | tuple[Any, ...] | Any  # an image size, a tuple of model inputs, or a Task


def example_inputs(example: Example, batch: int = 1) -> tuple[Any, ...]:
    """Abstract model inputs: from a :class:`~jaxvision.tasks.Task` (its example batch), from a
    tuple of arrays or shapes, or - shorthand for image classifiers - from an image size ``S``
    (one ``(batch, S, S, 3)`` float32 image batch, as the classification task makes it)."""
    if isinstance(example, int):
        from jaxvision.tasks import ClassificationTask

        example = ClassificationTask(num_classes=1, image_size=example)
    if hasattr(example, "example_batch"):
        example = example.model_inputs(example.example_batch(batch))
    # Inputs may be pytrees (OmniVec takes a dict of modalities).
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tuple(example))


def abstract_variables(model: nn.Module, example: Example, batch: int = 1) -> dict[str, Any]:
    """The shapes of ``model``'s variables, from abstract inputs (no memory, no compile)."""
    inputs = example_inputs(example, batch)
    return jax.eval_shape(
        lambda *x: model.init({"params": jax.random.key(0)}, *x, train=False), *inputs
    )


def count_params(tree: Any) -> int:
    return int(sum(math.prod(np.shape(leaf)) for leaf in jax.tree.leaves(tree)))


def _jaxpr_flops(jaxpr: Any) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        own = _eqn_flops(eqn)
        total += own
        if own and eqn.primitive.name == "custom_vjp_call":
            continue  # a depthwise convolution, counted as such, not as its multiply-adds
        inner = sum(_jaxpr_flops(sub) for sub in jax.extend.core.jaxprs_in_params(eqn.params))
        # A scan runs its body `length` times (e.g. ViT's scanned encoder blocks).
        total += inner * int(eqn.params.get("length", 1)) if eqn.primitive.name == "scan" else inner
    return total


def _depthwise_flops(eqn: Any) -> int:
    """FLOPs of a depthwise convolution computed as shifted multiply-adds under a custom VJP:
    inputs (B, H, W, C) and (k, k, 1, C), output (B, H', W', C)."""
    if eqn.primitive.name != "custom_vjp_call" or len(eqn.invars) != 2:
        return 0
    x, kernel = (v.aval.shape for v in eqn.invars)
    out = eqn.outvars[0].aval.shape
    if len(x) == 4 and len(kernel) == 4 and kernel[2] == 1 and kernel[3] == x[3] == out[-1]:
        return 2 * math.prod(out) * kernel[0] * kernel[1]
    return 0


def _eqn_flops(eqn: Any) -> int:
    name = eqn.primitive.name
    if name == "custom_vjp_call":
        return _depthwise_flops(eqn)
    if name == "dot_general":
        (lc, _), (lb, _) = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        out = eqn.outvars[0].aval.shape
        contracted = math.prod(lhs[d] for d in lc)
        return 2 * math.prod(out) * contracted
    if name == "conv_general_dilated":
        rhs = eqn.invars[1].aval.shape
        out = eqn.outvars[0].aval.shape
        spec = eqn.params["dimension_numbers"]
        rhs_spec = spec.rhs_spec  # (out feature dim, in feature dim, spatial...)
        kernel_spatial = math.prod(rhs[d] for d in rhs_spec[2:])
        in_per_group = rhs[rhs_spec[1]]
        return 2 * math.prod(out) * in_per_group * kernel_spatial
    return 0


def count_flops(fn: Any, *args: Any) -> int:
    """Conv + matmul FLOPs (multiply-add = 2) of ``fn(*args)``, from its jaxpr."""
    return _jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def model_flops(model: nn.Module, example: Example) -> int:
    """FLOPs of one example through ``model`` in inference mode."""
    inputs = example_inputs(example)
    variables = abstract_variables(model, inputs)
    return count_flops(lambda v, *x: model.apply(v, *x, train=False), variables, *inputs)


def layer_table(model: nn.Module, example: Example, depth: int = 2) -> list[tuple[str, str, int]]:
    """(module path, output shape, parameters) for every module down to ``depth`` levels, in the
    order the modules run (stem, stages, head, classifier), as Keras' and torchinfo's summaries
    list them."""
    inputs = example_inputs(example)
    variables = abstract_variables(model, inputs)
    order: list[str] = []

    def record(next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        if context.method_name == "__call__":
            path = "/".join(context.module.path)
            if path not in order:
                order.append(path)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        _, state = jax.eval_shape(
            lambda v, *x: model.apply(
                v, *x, train=False, capture_intermediates=True, mutable=["intermediates"]
            ),
            variables,
            *inputs,
        )
    outputs = {
        "/".join(k[:-1]): v
        for k, v in traverse_util.flatten_dict(state.get("intermediates", {})).items()
        if k[-1] == "__call__"
    }
    params = traverse_util.flatten_dict(variables["params"])
    rows = []
    for path in sorted(outputs, key=lambda p: order.index(p) if p in order else len(order)):
        parts = path.split("/") if path else []
        if len(parts) > depth:
            continue
        n = sum(math.prod(v.shape) for k, v in params.items() if list(k[: len(parts)]) == parts)
        rows.append((path or "(model)", _shape_str(outputs[path]), n))
    return rows


def _shape_str(out: Any) -> str:
    leaves = jax.tree.leaves(out)
    if len(leaves) == 1:
        return str(tuple(leaves[0].shape))
    return ", ".join(str(tuple(leaf.shape)) for leaf in leaves[:3]) + (
        " ..." if len(leaves) > 3 else ""
    )

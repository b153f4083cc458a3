"""Conv2d's two 1x1 formulations agree; ConvBNAct's names, norm factory and activation."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.layers.conv import Conv2d, ConvBNAct


@pytest.mark.parametrize("strides,size", [(1, 7), (2, 7), (2, 8)])
def test_pointwise_matmul_equals_the_convolution(strides, size):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, size, size, 5)), jnp.float32)
    layer = Conv2d(6, 1, strides, use_bias=True, implementation="xla")
    variables = layer.init(jax.random.key(0), x)
    conv = layer.apply(variables, x)
    matmul = layer.clone(implementation="matmul").apply(variables, x)
    assert conv.shape == (2, -(-size // strides), -(-size // strides), 6)
    np.testing.assert_allclose(matmul, conv, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="kernel_size=1"):
        Conv2d(6, 3, implementation="matmul").init(jax.random.key(0), x)


def test_conv_bn_act_names_norm_factory_and_activation():
    norm = functools.partial(nn.BatchNorm, epsilon=1e-3, momentum=0.97)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 9, 9, 3)), jnp.float32)
    layer = ConvBNAct(8, kernel_size=3, strides=2, norm=norm)
    variables = layer.init(jax.random.key(0), x, train=False)
    shapes = jax.tree.map(jnp.shape, variables)
    assert shapes["params"] == {
        "conv": {"kernel": (3, 3, 3, 8)},
        "bn": {"scale": (8,), "bias": (8,)},
    }
    assert shapes["batch_stats"] == {"bn": {"mean": (8,), "var": (8,)}}

    # Train mode normalises with the batch and moves the running statistics by 1 - momentum.
    y, updates = layer.apply(variables, x, train=True, mutable=["batch_stats"])
    assert y.shape == (2, 5, 5, 8)  # symmetric padding: ceil(9 / 2)
    pre = Conv2d(8, 3, 2).apply({"params": variables["params"]["conv"]}, x)
    np.testing.assert_allclose(
        updates["batch_stats"]["bn"]["mean"], 0.03 * pre.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6
    )
    # Eval mode with identity statistics: SiLU of the convolution, eps 1e-3 included.
    np.testing.assert_allclose(
        layer.apply(variables, x, train=False), nn.silu(pre / np.sqrt(1 + 1e-3)), atol=1e-5
    )
    linear = layer.clone(activation=None).apply(variables, x, train=False)
    np.testing.assert_allclose(linear, pre / np.sqrt(1 + 1e-3), atol=1e-5)

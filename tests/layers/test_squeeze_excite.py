"""Squeeze-and-excitation keeps the shape and rescales each channel by a gate in (0, 1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxvision.layers.squeeze_excite import SqueezeExcite


def _variables(layer, x, seed):
    """Random parameters (biases included) at a scale that keeps the gate away from 0 and 1."""
    shapes = jax.eval_shape(lambda: layer.init(jax.random.key(0), x))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.3, s.shape), jnp.float32), shapes)


@given(
    batch=st.integers(1, 3),
    height=st.integers(1, 7),
    width=st.integers(1, 7),
    channels=st.integers(1, 12),
    reduced=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_shape_kept_and_gate_in_unit_interval(batch, height, width, channels, reduced, seed):
    rng = np.random.default_rng(seed)
    # Positive inputs, so the gate can be read back as output / input.
    x = jnp.asarray(rng.uniform(0.1, 2.0, size=(batch, height, width, channels)), jnp.float32)
    layer = SqueezeExcite(reduced)
    variables = _variables(layer, x, seed)
    y = jax.jit(layer.apply)(variables, x)
    assert y.shape == x.shape and y.dtype == x.dtype
    gate = np.asarray(y) / np.asarray(x)
    assert np.all(gate > 0.0) and np.all(gate < 1.0)
    # One gate per (image, channel): it does not vary over space.
    spread = gate.max(axis=(1, 2)) - gate.min(axis=(1, 2))
    assert np.all(spread < 1e-5)


def test_parameter_shapes():
    layer = SqueezeExcite(4)
    variables = jax.eval_shape(layer.init, jax.random.key(0), jnp.zeros((1, 5, 5, 16)))
    assert jax.tree.map(jnp.shape, variables["params"]) == {
        "conv_reduce": {"kernel": (1, 1, 16, 4), "bias": (4,)},
        "conv_expand": {"kernel": (1, 1, 4, 16), "bias": (16,)},
    }


def test_gate_depends_on_global_average_only():
    """Permuting pixels permutes the output the same way (the squeeze is a global mean)."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(2, 4, 5, 6)), jnp.float32)
    layer = SqueezeExcite(3)
    variables = _variables(layer, x, 3)
    perm = rng.permutation(20)
    shuffled = x.reshape(2, 20, 6)[:, perm].reshape(2, 4, 5, 6)
    y = jax.jit(layer.apply)(variables, x)
    y_shuffled = jax.jit(layer.apply)(variables, shuffled)
    np.testing.assert_allclose(
        y_shuffled, y.reshape(2, 20, 6)[:, perm].reshape(2, 4, 5, 6), rtol=1e-5, atol=1e-6
    )


@pytest.mark.reference
def test_matches_timm_squeeze_excite():
    torch = pytest.importorskip("torch")
    timm_blocks = pytest.importorskip("timm.models._efficientnet_blocks")
    torch.manual_seed(0)
    torch.set_num_threads(2)
    ref = timm_blocks.SqueezeExcite(24, rd_channels=6, act_layer=torch.nn.SiLU).eval()
    x = torch.randn(2, 24, 5, 7)
    with torch.no_grad():
        want = ref(x).numpy().transpose(0, 2, 3, 1)
    variables = {
        "params": {
            name: {
                "kernel": jnp.asarray(conv.weight.detach().numpy().transpose(2, 3, 1, 0)),
                "bias": jnp.asarray(conv.bias.detach().numpy()),
            }
            for name, conv in (("conv_reduce", ref.conv_reduce), ("conv_expand", ref.conv_expand))
        }
    }
    got = jax.jit(SqueezeExcite(6).apply)(variables, jnp.asarray(x.numpy().transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)

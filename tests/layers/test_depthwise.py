"""Depthwise convolution: the grouped-conv and shifted formulations agree, values and gradients."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxvision.layers.depthwise import IMPLEMENTATIONS, DepthwiseConv2d, depthwise_conv
from jaxvision.layers.implementation import resolve_implementation
from jaxvision.layers.padding import padding_amounts

FAST = settings(max_examples=15, deadline=None)

# One compilation per call signature instead of one per primitive in eager mode.
conv = jax.jit(depthwise_conv, static_argnames=("stride", "padding", "implementation"))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _both(x, kernel, cotangent, stride, padding):
    """Outputs and (input, kernel) gradients of both formulations for one cotangent."""
    results = []
    for impl in ("xla", "shifted"):
        y, vjp = jax.vjp(
            lambda x, k, impl=impl: depthwise_conv(
                x, k, stride=stride, padding=padding, implementation=impl
            ),
            x,
            kernel,
        )
        results.append((y, *vjp(cotangent)))
    return results


def _expected_out(size, k, stride, padding):
    before, after = padding_amounts(padding, size, k, stride)
    return (size + before + after - k) // stride + 1


@FAST
@given(
    k=st.sampled_from([1, 3, 5, 7]),
    stride=st.sampled_from([1, 2]),
    padding=st.sampled_from(["symmetric", "same"]),
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    channels=st.integers(1, 5),
    batch=st.integers(1, 2),
    seed=st.integers(0, 2**16),
)
def test_formulations_agree_in_output_and_gradients(
    k, stride, padding, height, width, channels, batch, seed
):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(batch, height, width, channels)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(k, k, 1, channels)), jnp.float32)
    out_h, out_w = (_expected_out(n, k, stride, padding) for n in (height, width))
    cotangent = jnp.asarray(rng.normal(size=(batch, out_h, out_w, channels)), jnp.float32)
    (y_xla, dx_xla, dk_xla), (y_sh, dx_sh, dk_sh) = _both(x, kernel, cotangent, stride, padding)
    assert y_xla.shape == y_sh.shape == (batch, out_h, out_w, channels)
    np.testing.assert_allclose(y_sh, y_xla, rtol=1e-5, atol=1e-5)
    assert dx_sh.shape == x.shape and dk_sh.shape == kernel.shape
    np.testing.assert_allclose(dx_sh, dx_xla, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dk_sh, dk_xla, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("padding", ["symmetric", "same"])
@pytest.mark.parametrize("size", [7, 8])
def test_stride_two_output_size(padding, size):
    """Both conventions give ceil(size / 2) outputs for odd kernels; they differ in placement."""
    x = jnp.zeros((1, size, size, 2))
    y = jax.eval_shape(
        lambda x: depthwise_conv(x, jnp.zeros((3, 3, 1, 2)), stride=2, padding=padding), x
    )
    assert y.shape == (1, -(-size // 2), -(-size // 2), 2)


def test_same_and_symmetric_differ_at_even_stride_two():
    """TensorFlow's SAME puts the odd padding pixel after; PyTorch's pads both sides."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(1, 8, 8, 2)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 1, 2)), jnp.float32)
    same = conv(x, kernel, stride=2, padding="same")
    symmetric = conv(x, kernel, stride=2, padding="symmetric")
    assert not np.allclose(same, symmetric)
    assert padding_amounts("same", 8, 3, 2) == (0, 1)
    assert padding_amounts("symmetric", 8, 3, 2) == (1, 1)


def test_module_parameters_and_implementations():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 9, 9, 6)), jnp.float32)
    layer = DepthwiseConv2d(5, 2, padding="same", use_bias=True, implementation="xla")
    variables = layer.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, variables["params"]) == {"kernel": (5, 5, 1, 6), "bias": (6,)}
    y_xla = jax.jit(layer.apply)(variables, x)
    y_shifted = jax.jit(layer.clone(implementation="shifted").apply)(variables, x)
    assert y_xla.shape == (2, 5, 5, 6)
    np.testing.assert_allclose(y_shifted, y_xla, rtol=1e-5, atol=1e-5)


def test_auto_picks_shifted_on_cpu_and_rejects_unknown():
    expected = "shifted" if jax.default_backend() == "cpu" else "xla"
    assert resolve_implementation("depthwise", "auto", IMPLEMENTATIONS) == expected
    with pytest.raises(ValueError, match="implementation"):
        depthwise_conv(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1)), implementation="winograd")
    with pytest.raises(ValueError, match="padding"):
        depthwise_conv(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1)), padding="valid")
    with pytest.raises(ValueError, match="channels"):
        depthwise_conv(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 1, 3)))


def test_bfloat16_compute():
    x = jnp.ones((1, 6, 6, 4), jnp.float32)
    layer = DepthwiseConv2d(3, dtype=jnp.bfloat16)
    variables = layer.init(jax.random.key(0), x)
    assert variables["params"]["kernel"].dtype == jnp.float32
    assert jax.eval_shape(layer.apply, variables, x).dtype == jnp.bfloat16

    def loss(v):
        return jnp.sum(layer.apply(v, x).astype(jnp.float32))

    grads = jax.jit(jax.grad(loss))(variables)
    assert grads["params"]["kernel"].dtype == jnp.float32


@pytest.mark.reference
@pytest.mark.parametrize(("k", "stride", "size"), [(3, 1, 9), (3, 2, 10), (5, 2, 9)])
def test_matches_torch_depthwise_conv(k, stride, size):
    """The Flax layout (k, k, 1, C) is PyTorch's (C, 1, k, k) transposed by (2, 3, 1, 0)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    torch.set_num_threads(2)
    channels = 4
    x = torch.randn(2, channels, size, size)
    weight = torch.randn(channels, 1, k, k)
    want = torch.nn.functional.conv2d(
        x, weight, stride=stride, padding=(k - 1) // 2, groups=channels
    )
    kernel = jnp.asarray(weight.numpy().transpose(2, 3, 1, 0))
    got = conv(
        jnp.asarray(x.numpy().transpose(0, 2, 3, 1)),
        kernel,
        stride=stride,
        implementation="shifted",
    )
    np.testing.assert_allclose(np.asarray(got), want.numpy().transpose(0, 2, 3, 1), atol=1e-5)

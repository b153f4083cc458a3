"""The tap-by-tap input gradient of strided convolutions (Conv2d ``implementation="taps"``): the
same forward pass and gradients as ``lax.conv_general_dilated``, and no Eigen fallback left."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import xla_ops
from jaxvision.layers import conv as conv_module
from jaxvision.layers.conv import Conv2d, conv_taps_grad
from jaxvision.layers.padding import explicit_padding

DIMS = ("NHWC", "HWIO", "NHWC")


def _plain(x, kernel, stride, padding):
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), padding, dimension_numbers=DIMS
    )


def _inputs(shape, k, c_out, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(k, k, shape[-1], c_out)) / k, jnp.float32)
    cotangent = jnp.asarray(rng.normal(size=(shape[0], 64, 64, c_out)), jnp.float32)
    return x, kernel, cotangent


PADDINGS = [
    (8, 8, "SAME"),  # even sizes
    (9, 7, "SAME"),  # odd, and not square
    (8, 9, "VALID"),
    (7, 7, "VALID"),
    (8, 6, ((1, 1), (1, 1))),  # PyTorch's symmetric padding
    (9, 8, ((0, 2), (2, 1))),  # explicit, uneven
]
CASES = [(3, 2, *p) for p in PADDINGS] + [(1, 2, *p) for p in PADDINGS]
CASES += [(5, 2, *PADDINGS[1]), (5, 2, *PADDINGS[5]), (3, 3, *PADDINGS[1]), (3, 3, *PADDINGS[3])]


@pytest.mark.parametrize(("k", "stride", "height", "width", "padding"), CASES)
def test_forward_and_gradients_equal_the_plain_convolution(k, stride, height, width, padding):
    x, kernel, cotangent = _inputs((2, height, width, 5), k, 6)
    if isinstance(padding, str):  # the same amounts, as conv_taps_grad takes them
        padding = tuple(jax.lax.padtype_to_pads((height, width), (k, k), (stride,) * 2, padding))

    @jax.jit
    def both(x, kernel):
        out = []
        for conv in (_plain, conv_taps_grad):
            y, vjp = jax.vjp(lambda x, w, conv=conv: conv(x, w, stride, padding), x, kernel)
            out.append((y, *vjp(cotangent[:, : y.shape[1], : y.shape[2]])))
        return out

    (plain_y, plain_dx, plain_dw), (taps_y, taps_dx, taps_dw) = both(x, kernel)
    np.testing.assert_array_equal(taps_y, plain_y)  # the forward pass is the same call
    np.testing.assert_allclose(taps_dx, plain_dx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(taps_dw, plain_dw, rtol=1e-6, atol=1e-6)  # JAX's own gradient


@pytest.mark.parametrize(("padding", "size"), [("symmetric", 16), ("same", 15), ("valid", 16)])
def test_conv2d_taps_matches_xla_under_jit(padding, size):
    x, _, cotangent = _inputs((2, size, size + 1, 4), 3, 8, seed=1)
    layer = Conv2d(8, 3, 2, padding=padding, use_bias=True, implementation="xla")
    variables = layer.init(jax.random.key(0), x)
    taps = layer.clone(implementation="taps")

    @jax.jit
    def forward_and_gradients(variables, x):
        out = []
        for module in (layer, taps):

            def loss(variables, x, module=module):
                y = module.apply(variables, x)
                return jnp.sum(y * cotangent[:, : y.shape[1], : y.shape[2]])

            out.append((module.apply(variables, x), jax.grad(loss, argnums=(0, 1))(variables, x)))
        return out

    (want_y, want), (got_y, got) = forward_and_gradients(variables, x)
    np.testing.assert_array_equal(got_y, want_y)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, want)


def test_explicit_padding_matches_the_conventions():
    assert explicit_padding("symmetric", (9, 8), 3, 2) == ((1, 1), (1, 1))
    assert explicit_padding("valid", (9, 8), 3, 2) == ((0, 0), (0, 0))
    for size in ((9, 8), (8, 9), (7, 7)):
        want = tuple(jax.lax.padtype_to_pads(size, (3, 3), (2, 2), "SAME"))
        assert explicit_padding("same", size, 3, 2) == want


def _input_gradient_calls(implementation, env_choice, monkeypatch):
    if env_choice is None:
        monkeypatch.delenv(conv_module.STRIDED_GRAD_ENV, raising=False)
    else:
        monkeypatch.setenv(conv_module.STRIDED_GRAD_ENV, env_choice)
    x = jnp.ones((2, 32, 32, 32))
    layer = Conv2d(64, 3, 2, implementation=implementation)
    variables = layer.init(jax.random.key(0), x)
    grad = jax.jit(jax.grad(lambda v, x: jnp.sum(layer.apply(v, x) ** 2), argnums=(0, 1)))
    return xla_ops.library_calls(grad.lower(variables, x).compile())


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's library choices")
def test_the_taps_gradient_leaves_no_eigen_fallback(monkeypatch):
    """The plain gradient's lhs-dilated convolution runs on Eigen; the taps form has none: its
    input gradient is a YNNPACK dot. "auto" follows $JAXVISION_CONV_STRIDED_GRAD."""
    plain = _input_gradient_calls("xla", None, monkeypatch)
    assert [c.signature for c in xla_ops.fallbacks(plain) if "lhs_dilate=2x2" in c.signature]
    taps = _input_gradient_calls("taps", None, monkeypatch)
    assert xla_ops.fallbacks(taps) == []
    assert any(c.kind == "dot" and c.library == xla_ops.YNNPACK for c in taps)
    assert _input_gradient_calls("auto", "taps", monkeypatch) == taps
    default = _input_gradient_calls("auto", None, monkeypatch)
    assert conv_module.STRIDED_GRAD_DEFAULT == "xla" and default == plain
    with pytest.raises(ValueError, match=conv_module.STRIDED_GRAD_ENV):
        _input_gradient_calls("auto", "fast", monkeypatch)

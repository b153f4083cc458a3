"""ViT building blocks: patch embedding, position-embedding resizing, attention, MLP, drop path."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxvision.layers.attention import MultiHeadSelfAttention
from jaxvision.layers.drop_path import DropPath
from jaxvision.layers.mlp import Mlp, gelu_exact
from jaxvision.layers.patch_embed import PatchEmbed, patchify, unpatchify
from jaxvision.layers.pos_embed import PositionEmbedding, bicubic_matrix, resize_pos_embed

FAST = settings(max_examples=10, deadline=None)


def _random_variables(module, *args, seed=0, scale=0.5, **kwargs):
    """Random variables of ``module`` (biases included), shaped by ``eval_shape`` so that no
    initialiser is compiled: each new shape costs a compilation in eager mode."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs))
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(rng.normal(0.0, scale, s.shape).astype(np.float32)), shapes
    )


# --- Patch embedding -------------------------------------------------------------------------


@FAST
@given(
    patch=st.integers(1, 5),
    grid_h=st.integers(1, 4),
    grid_w=st.integers(1, 4),
    channels=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_patchify_unpatchify_round_trip(patch, grid_h, grid_w, channels, seed):
    height, width = grid_h * patch, grid_w * patch
    x = np.random.default_rng(seed).normal(size=(2, height, width, channels)).astype(np.float32)
    tokens = jax.jit(patchify, static_argnums=1)(jnp.asarray(x), patch)
    assert tokens.shape == (2, grid_h * grid_w, patch * patch * channels)
    # Token (i, j) is the (i, j) patch, row-major, flattened in (row, column, channel) order.
    i, j = grid_h - 1, grid_w // 2
    expected = x[:, i * patch : (i + 1) * patch, j * patch : (j + 1) * patch].reshape(2, -1)
    np.testing.assert_array_equal(np.asarray(tokens[:, i * grid_w + j]), expected)
    round_trip = jax.jit(unpatchify, static_argnums=(1, 2, 3))(tokens, patch, height, width)
    np.testing.assert_array_equal(np.asarray(round_trip), x)


@pytest.mark.parametrize("size", [(33, 32), (32, 30)])
def test_patch_embedding_rejects_sizes_not_divisible_by_the_patch(size):
    x = jnp.zeros((1, *size, 3))
    with pytest.raises(ValueError, match="not divisible by the patch size 8"):
        patchify(x, 8)
    with pytest.raises(ValueError, match="not divisible by the patch size 8"):
        PatchEmbed(4, 8).init(jax.random.key(0), x)


def test_unpatchify_rejects_a_token_count_that_does_not_tile_the_image():
    with pytest.raises(ValueError, match="do not tile"):
        unpatchify(jnp.zeros((1, 5, 12)), 2, 4, 4)


@settings(max_examples=4, deadline=None)  # each new shape is a new compilation
@given(
    patch=st.integers(1, 6),
    grid=st.integers(1, 3),
    features=st.sampled_from([1, 8]),
    seed=st.integers(0, 2**16),
)
def test_conv_and_dense_patch_embedding_agree(patch, grid, features, seed):
    x = jax.random.normal(jax.random.key(seed), (2, grid * patch, grid * patch + patch, 3))
    conv = PatchEmbed(features, patch, implementation="conv")
    dense = PatchEmbed(features, patch, implementation="dense")
    variables = _random_variables(conv, x, seed=seed)  # random bias: a lost bias cannot hide
    assert jax.tree.map(jnp.shape, _random_variables(dense, x)) == jax.tree.map(
        jnp.shape, variables
    )
    y_conv, y_dense = jax.jit(lambda v, x: (conv.apply(v, x), dense.apply(v, x)))(variables, x)
    assert y_conv.shape == (2, grid * (grid + 1), features)
    np.testing.assert_allclose(np.asarray(y_dense), np.asarray(y_conv), atol=1e-5, rtol=1e-5)


def test_patch_embedding_rejects_unknown_implementation():
    with pytest.raises(ValueError, match="implementation"):
        PatchEmbed(4, 2, implementation="fft").init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)))


# --- Position embedding ----------------------------------------------------------------------


def test_position_embedding_adds_one_learned_vector_per_token():
    x = jnp.ones((2, 5, 3))
    module = PositionEmbedding()
    variables = module.init(jax.random.key(0), x)
    assert variables["params"]["embedding"].shape == (1, 5, 3)
    expected = np.broadcast_to(1.0 + np.asarray(variables["params"]["embedding"]), x.shape)
    np.testing.assert_allclose(np.asarray(module.apply(variables, x)), expected)


def test_bicubic_matrix_rows_sum_to_one_and_identity_at_same_size():
    for antialias in (False, True):
        for n_in, n_out in [(7, 7), (14, 10), (5, 16)]:
            m = bicubic_matrix(n_in, n_out, antialias=antialias)
            np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)
        np.testing.assert_allclose(bicubic_matrix(6, 6, antialias=antialias), np.eye(6), atol=1e-12)


def test_resize_pos_embed_keeps_prefix_tokens_and_same_grid():
    pe = np.random.default_rng(0).normal(size=(1, 1 + 16, 4)).astype(np.float32)
    assert resize_pos_embed(pe, 4) is pe
    out = resize_pos_embed(pe, (3, 5))
    assert out.shape == (1, 1 + 15, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :1], pe[:, :1])
    with pytest.raises(ValueError, match="square"):
        resize_pos_embed(pe[:, :-1], 3)


def test_resize_pos_embed_traces_under_jit():
    pe = np.random.default_rng(1).normal(size=(1, 1 + 9, 4)).astype(np.float32)
    out = jax.jit(lambda p: resize_pos_embed(p, 5))(jnp.asarray(pe))
    np.testing.assert_allclose(np.asarray(out), resize_pos_embed(pe, 5), atol=1e-5)


@pytest.mark.reference
@pytest.mark.parametrize(
    ("align_corners", "antialias"), [(False, False), (False, True), (True, False)]
)
@pytest.mark.parametrize(("old", "new"), [(14, 10), (14, 24), (7, (5, 9)), (3, 1), (2, 11)])
def test_resize_pos_embed_matches_torch_bicubic(old, new, align_corners, antialias):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    new_h, new_w = (new, new) if isinstance(new, int) else new
    pe = torch.randn(1, 1 + old * old, 6)
    grid = pe[:, 1:].reshape(1, old, old, 6).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(
        grid, size=(new_h, new_w), mode="bicubic", align_corners=align_corners, antialias=antialias
    )
    expected = torch.cat([pe[:, :1], resized.permute(0, 2, 3, 1).reshape(1, -1, 6)], 1).numpy()
    for as_array in (np.asarray, jnp.asarray):
        got = resize_pos_embed(
            as_array(pe.numpy()), new, align_corners=align_corners, antialias=antialias
        )
        np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5, rtol=0)


@pytest.mark.reference
@pytest.mark.parametrize("antialias", [False, True])
def test_resize_pos_embed_matches_timm_resample_abs_pos_embed(antialias):
    torch = pytest.importorskip("torch")
    pos_embed_lib = pytest.importorskip("timm.layers.pos_embed")
    torch.manual_seed(1)
    pe = torch.randn(1, 1 + 14 * 14, 8) * 0.5
    for new in ([10, 10], [24, 24], [12, 20]):
        expected = pos_embed_lib.resample_abs_pos_embed(
            pe, new, num_prefix_tokens=1, antialias=antialias
        ).numpy()
        got = resize_pos_embed(pe.numpy(), tuple(new), antialias=antialias)
        np.testing.assert_allclose(got, expected, atol=3e-6, rtol=0)


# --- Attention -------------------------------------------------------------------------------


def _attention(num_heads, width, tokens, seed, **kwargs):
    module = MultiHeadSelfAttention(num_heads=num_heads, **kwargs)
    x = jnp.asarray(np.random.default_rng(seed).normal(size=(2, tokens, width)), jnp.float32)
    return module, _random_variables(module, x, seed=seed + 1, train=False), x


@jax.jit
def _two_heads(variables, x):
    return MultiHeadSelfAttention(num_heads=2).apply(variables, x, train=False)


@FAST
@given(seed=st.integers(0, 2**16))
def test_attention_is_permutation_equivariant_over_tokens(seed):
    # Fixed shapes (one compilation); hypothesis varies the weights, inputs and permutation.
    _, variables, x = _attention(2, 6, 7, seed)
    permutation = np.random.default_rng(seed).permutation(7)
    y, y_permuted = _two_heads(variables, x), _two_heads(variables, x[:, permutation])
    np.testing.assert_allclose(
        np.asarray(y_permuted), np.asarray(y[:, permutation]), atol=1e-5, rtol=1e-5
    )


@settings(max_examples=4, deadline=None)  # each new shape is a new compilation
@given(
    num_heads=st.sampled_from([1, 3]),
    head_width=st.sampled_from([1, 8]),
    tokens=st.sampled_from([1, 6, 17]),
    seed=st.integers(0, 2**16),
)
def test_explicit_and_fused_attention_agree(num_heads, head_width, tokens, seed):
    explicit, variables, x = _attention(
        num_heads, num_heads * head_width, tokens, seed, implementation="explicit"
    )
    fused = MultiHeadSelfAttention(num_heads=num_heads, implementation="fused")

    def both(v, x):
        return fused.apply(v, x, train=False), explicit.apply(v, x, train=False)

    y_fused, y_explicit = jax.jit(both)(variables, x)
    np.testing.assert_allclose(np.asarray(y_fused), np.asarray(y_explicit), atol=1e-5, rtol=1e-5)


def test_attention_matches_a_numpy_transcription_of_the_equations():
    num_heads, width, tokens = 2, 6, 5
    module, variables, x = _attention(num_heads, width, tokens, seed=3)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
    xn = np.asarray(x, np.float64)
    qkv = xn @ p["qkv"]["kernel"] + p["qkv"]["bias"]
    q, k, v = np.split(qkv, 3, axis=-1)  # [query | key | value]
    heads = []
    for h in range(num_heads):
        cols = slice(h * width // num_heads, (h + 1) * width // num_heads)
        scores = q[..., cols] @ k[..., cols].transpose(0, 2, 1) / math.sqrt(width // num_heads)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        heads.append(weights @ v[..., cols])
    expected = np.concatenate(heads, -1) @ p["output"]["kernel"] + p["output"]["bias"]
    got = module.apply(variables, x, train=False)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5, rtol=1e-5)


def test_attention_sows_softmax_weights_only_when_asked():
    module, variables, x = _attention(3, 6, 4, seed=0, sow_attention=True)
    _, state = module.apply(variables, x, train=False, mutable=["intermediates"])
    (weights,) = state["intermediates"]["attention"]
    assert weights.shape == (2, 3, 4, 4) and weights.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(weights.sum(-1)), 1.0, atol=1e-6)
    plain = MultiHeadSelfAttention(num_heads=3)
    _, state = plain.apply(variables, x, train=False, mutable=["intermediates"])
    assert not state.get("intermediates")


@pytest.mark.parametrize("masked", [False, True])
def test_attention_normalising_after_the_values_changes_nothing(masked):
    # Without weights to sow or drop, "explicit" divides by the softmax's sum after the weighted
    # sum of the values; sowing forces the textbook order. Outputs and gradients must agree.
    mask = jnp.tril(jnp.ones((7, 7), bool))[None, None] if masked else None
    late, variables, x = _attention(2, 8, 7, seed=5, implementation="explicit")
    early = MultiHeadSelfAttention(num_heads=2, implementation="explicit", sow_attention=True)

    def loss(module, v, x):
        y = module.apply(v, x, train=False, mask=mask, mutable=["intermediates"])[0]
        return jnp.sum(jnp.sin(3.0 * y))

    for f in (loss, jax.grad(loss, argnums=(1, 2))):
        a, b = f(late, variables, x), f(early, variables, x)
        for u, w in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_allclose(np.asarray(u), np.asarray(w), rtol=1e-5, atol=1e-5)


def test_fused_attention_refuses_what_it_cannot_compute():
    x = jnp.zeros((1, 4, 6))
    with pytest.raises(ValueError, match="fused"):
        MultiHeadSelfAttention(3, implementation="fused", sow_attention=True).init(
            jax.random.key(0), x, train=False
        )
    module = MultiHeadSelfAttention(3, attention_drop_rate=0.1, implementation="fused")
    variables = _random_variables(module, x, train=False)
    with pytest.raises(ValueError, match="dropout"):
        module.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})


def test_attention_dropout_only_in_training():
    module, variables, x = _attention(2, 4, 6, seed=0, attention_drop_rate=0.5)

    @jax.jit
    def outputs(v, x):
        rngs = {"dropout": jax.random.key(1)}
        no_dropout = MultiHeadSelfAttention(num_heads=2)
        return (
            module.apply(v, x, train=False),
            module.apply(v, x, train=True, rngs=rngs),
            no_dropout.apply(v, x, train=False),
        )

    eval_out, train_out, reference = outputs(variables, x)
    assert not np.allclose(np.asarray(train_out), np.asarray(eval_out))
    np.testing.assert_array_equal(np.asarray(eval_out), np.asarray(reference))


def test_attention_softmax_stays_float32_in_bfloat16():
    module, variables, x = _attention(2, 8, 5, seed=1, dtype=jnp.bfloat16, sow_attention=True)
    y, state = module.apply(variables, x, train=False, mutable=["intermediates"])
    assert y.dtype == jnp.bfloat16
    assert state["intermediates"]["attention"][0].dtype == jnp.float32


# --- MLP -------------------------------------------------------------------------------------


def test_mlp_uses_the_exact_erf_gelu():
    module = Mlp(hidden_features=7)
    x = jax.random.normal(jax.random.key(0), (2, 3, 4)) * 3.0
    variables = _random_variables(module, x, seed=1, train=False)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
    hidden = np.asarray(x, np.float64) @ p["fc1"]["kernel"] + p["fc1"]["bias"]
    erf = np.vectorize(math.erf)
    gelu = 0.5 * hidden * (1.0 + erf(hidden / math.sqrt(2.0)))
    expected = gelu @ p["fc2"]["kernel"] + p["fc2"]["bias"]
    got = np.asarray(module.apply(variables, x, train=False))
    assert got.shape == (2, 3, 4)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    tanh_gelu = jax.nn.gelu(jnp.asarray(hidden), approximate=True)
    approx = np.asarray(tanh_gelu) @ p["fc2"]["kernel"] + p["fc2"]["bias"]
    assert np.abs(approx - expected).max() > 1e-4  # the test can tell the two apart


def test_gelu_exact_gradient_is_the_derivative_of_the_exact_gelu():
    # Values from deep in both tails to around 0, where the derivative changes fastest.
    x = np.concatenate([np.linspace(-12.0, 12.0, 241), [-40.0, -1e-3, 0.0, 1e-3, 40.0]])
    # Forward: bit for bit jax's exact GELU.
    np.testing.assert_array_equal(gelu_exact(x), jax.nn.gelu(x, approximate=False))
    # Backward: the analytic derivative Phi(x) + x phi(x), in float64 ...
    erf = np.vectorize(math.erf)
    expected = 0.5 * (1.0 + erf(x / math.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / math.sqrt(
        2.0 * math.pi
    )
    got = jax.vmap(jax.grad(gelu_exact))(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(got, expected, atol=2e-7, rtol=1e-6)
    # ... and what JAX's own differentiation of the erf form gives, through a whole MLP.
    module = Mlp(hidden_features=16)
    h = jax.random.normal(jax.random.key(0), (2, 5, 8)) * 3.0
    variables = _random_variables(module, h, seed=1, train=False)

    def loss(params, x, act):
        hidden = x @ params["fc1"]["kernel"] + params["fc1"]["bias"]
        return jnp.sum(jnp.sin(act(hidden) @ params["fc2"]["kernel"]))

    reference = jax.grad(loss, (0, 1))(
        variables["params"], h, functools.partial(jax.nn.gelu, approximate=False)
    )
    ours = jax.grad(loss, (0, 1))(variables["params"], h, gelu_exact)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # bfloat16 in, bfloat16 gradient out.
    g = jax.grad(lambda v: jnp.sum(gelu_exact(v)))(jnp.ones((3,), jnp.bfloat16))
    assert g.dtype == jnp.bfloat16


# --- Drop path -------------------------------------------------------------------------------


@FAST
@given(rate=st.floats(0.05, 0.9), seed=st.integers(0, 2**16))
def test_drop_path_is_identity_in_eval_and_keeps_the_expectation_in_train(rate, seed):
    n = 20_000
    x = jnp.full((n, 2, 3), 2.0)
    module = DropPath(rate)
    np.testing.assert_array_equal(np.asarray(module.apply({}, x, train=False)), np.asarray(x))
    y = np.asarray(module.apply({}, x, train=True, rngs={"drop_path": jax.random.key(seed)}))
    per_example = y.reshape(n, -1)
    # One decision per example: an example is either all zero or all 2 / (1 - rate).
    kept = per_example[:, 0] != 0
    np.testing.assert_allclose(per_example[kept], 2.0 / (1.0 - rate), rtol=1e-6)
    assert np.all(per_example[~kept] == 0)
    # The sample mean of a Bernoulli(1 - rate) / (1 - rate) scaled value: 6 standard errors.
    tolerance = 6 * 2.0 * math.sqrt(rate / (1.0 - rate) / n)
    assert abs(per_example[:, 0].mean() - 2.0) < tolerance
    assert tolerance < 2.0 * rate  # an unscaled mask (mean 2 (1 - rate)) would fail

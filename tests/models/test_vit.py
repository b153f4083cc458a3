"""Vision Transformer: shapes, image sizes, scanned vs looped encoders, drop path, attention."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxvision.models import vit
from jaxvision.models.vit import (
    VisionTransformer,
    ViTEncoder,
    attention_rollout,
    collect_attention,
    drop_path_rates,
    loop_to_scan_params,
    scan_to_loop_params,
)
from jaxvision.registry import create_model

FAST = settings(max_examples=5, deadline=None)

# A ViT small enough to compile in a second: 16 px images, 4 px patches (16 patches + class).
TINY = dict(
    num_classes=5,
    image_size=16,
    patch_size=4,
    hidden_size=12,
    num_layers=3,
    num_heads=3,
    mlp_dim=24,
)


def _images(seed=0, batch=2, size=16):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(batch, size, size, 3)), jnp.float32)


def _random_params(model, x, seed):
    """Random parameters of ``model`` (LayerNorm scales around 1), shaped by eval_shape: compiling
    ``model.init`` costs far more than the tests themselves (one random generator per tensor)."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))["params"]
    rng = np.random.default_rng(seed)
    flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
    values = [
        (1.0 + rng.normal(0, 0.2, s.shape)) if "scale" in jax.tree_util.keystr(path)
        else rng.normal(0, 0.3, s.shape)
        for path, s in flat
    ]  # fmt: skip
    return jax.tree.unflatten(
        jax.tree.structure(shapes), [jnp.asarray(v, jnp.float32) for v in values]
    )


# --- Shapes and sizes ------------------------------------------------------------------------


def test_forward_shape_and_float32_logits_in_bfloat16():
    x = _images()
    for dtype in (jnp.float32, jnp.bfloat16):
        model = VisionTransformer(**TINY, dtype=dtype)
        shapes = jax.eval_shape(lambda x, m=model: m.init(jax.random.key(0), x, train=False), x)
        assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(shapes))
        variables = {"params": _random_params(model, x, 0)}
        logits = jax.jit(lambda v, x, m=model: m.apply(v, x, train=False))(variables, x)
        assert logits.shape == (2, 5) and logits.dtype == jnp.float32
        assert np.all(np.isfinite(np.asarray(logits)))


@pytest.mark.parametrize(
    ("name", "image_size", "tokens", "width"),
    [("vit_ti16", 224, 197, 192), ("vit_ti16", 160, 101, 192), ("vit_b32", 384, 145, 768),
     ("vit_h14", 224, 257, 1280)],
)  # fmt: skip
def test_position_embedding_is_sized_for_the_image_size(name, image_size, tokens, width):
    model = create_model(name, image_size=image_size)
    x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    assert shapes["params"]["pos_embed"]["embedding"].shape == (1, tokens, width)
    assert shapes["params"]["class_token"].shape == (1, 1, width)


def test_wrong_image_size_and_patch_size_fail_clearly():
    model = VisionTransformer(**TINY)
    with pytest.raises(ValueError, match="image_size"):
        model.init(jax.random.key(0), _images(size=20), train=False)
    bad = VisionTransformer(**{**TINY, "image_size": 18})
    with pytest.raises(ValueError, match="not divisible"):
        bad.init(jax.random.key(0), _images(size=18), train=False)
    with pytest.raises(ValueError, match="NCHW"):
        model.init(jax.random.key(0), jnp.zeros((1, 3, 16, 16)), train=False)


def test_unknown_override_is_a_type_error():
    with pytest.raises(TypeError):
        create_model("vit_ti16", num_classes=10, hidden_dim=5)


def test_variant_table_matches_the_papers():
    # ViT Table 1 and DeiT Table 1: (width, depth, heads, MLP width); heads are 64 wide (H: 80).
    expected = {
        "ti16": (192, 12, 3, 768), "s16": (384, 12, 6, 1536), "b16": (768, 12, 12, 3072),
        "b32": (768, 12, 12, 3072), "l16": (1024, 24, 16, 4096), "h14": (1280, 32, 16, 5120),
    }  # fmt: skip
    for key, (width, depth, heads, mlp) in expected.items():
        config = vit.VARIANTS[key]
        assert (config.hidden_size, config.num_layers, config.num_heads, config.mlp_dim) == (
            width, depth, heads, mlp,
        )  # fmt: skip
        assert config.patch_size == int(key[-2:])
        assert config.hidden_size // config.num_heads == (80 if key == "h14" else 64)


# --- Scanned vs looped encoders ---------------------------------------------------------------


_LOOPED = VisionTransformer(**TINY, sow_attention=True)
_SCANNED = VisionTransformer(**TINY, sow_attention=True, scan_blocks=True)


@jax.jit
def _run_looped_and_scanned(params, scanned_params, x):
    kwargs = dict(train=False, mutable=["intermediates"])
    return (
        _LOOPED.apply({"params": params}, x, **kwargs),
        _SCANNED.apply({"params": scanned_params}, x, **kwargs),
    )


@FAST
@given(seed=st.integers(0, 2**16))
def test_scanned_and_looped_encoders_agree(seed):
    x = _images(seed)
    params = _random_params(_LOOPED, x, seed)
    scanned_params = loop_to_scan_params(params)
    assert scanned_params["encoder_blocks"]["mlp"]["fc1"]["kernel"].shape == (3, 12, 24)
    (y_loop, state_loop), (y_scan, state_scan) = _run_looped_and_scanned(params, scanned_params, x)
    np.testing.assert_allclose(np.asarray(y_scan), np.asarray(y_loop), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(collect_attention(state_scan)),
        np.asarray(collect_attention(state_loop)),
        atol=1e-6,
    )
    # The two layouts convert back and forth exactly.
    round_trip = scan_to_loop_params(scanned_params)
    assert jax.tree.structure(round_trip) == jax.tree.structure(params)
    jax.tree.map(np.testing.assert_array_equal, round_trip, params)


def test_layout_helpers_accept_variables_and_reject_the_wrong_layout():
    model = VisionTransformer(**TINY)
    params = _random_params(model, _images(), 0)
    variables = loop_to_scan_params({"params": params})
    assert set(variables["params"]) >= {"encoder_blocks", "patch_embed", "head"}
    assert not any(k.startswith("encoder_block") and k[-1].isdigit() for k in variables["params"])
    assert set(scan_to_loop_params(variables)["params"]) == set(params)
    with pytest.raises(ValueError, match="already scanned"):
        loop_to_scan_params(variables)
    with pytest.raises(ValueError, match="already looped"):
        scan_to_loop_params(params)


# --- Drop path, dropout ----------------------------------------------------------------------


def test_drop_path_rates_increase_linearly_to_the_last_block():
    assert drop_path_rates(0.0, 3) == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(drop_path_rates(0.1, 5), [0.0, 0.025, 0.05, 0.075, 0.1])
    assert drop_path_rates(0.3, 1) == [0.0]


class _TracedDropPath(nn.Module):
    @nn.compact
    def __call__(self, x, rate):
        return vit._drop_path(self, x, rate, train=True)


@jax.jit
def _traced_drop_path(x, rate, key):
    return _TracedDropPath().apply({}, x, rate, rngs={"drop_path": key})


@FAST
@given(rate=st.floats(0.05, 0.9), seed=st.integers(0, 2**16))
def test_scannable_drop_path_keeps_the_expectation_with_a_traced_rate(rate, seed):
    n = 20_000
    x = jnp.full((n, 2, 3), 2.0)
    y = np.asarray(_traced_drop_path(x, jnp.float32(rate), jax.random.key(seed))).reshape(n, -1)
    kept = y[:, 0] != 0
    np.testing.assert_allclose(y[kept], 2.0 / (1.0 - rate), rtol=1e-5)
    assert np.all(y[~kept] == 0)
    tolerance = 6 * 2.0 * math.sqrt(rate / (1.0 - rate) / n)  # 6 standard errors of the mean
    assert abs(y[:, 0].mean() - 2.0) < tolerance < 2.0 * rate


@pytest.mark.parametrize("scan_blocks", [False, True])
def test_train_mode_is_stochastic_only_with_nonzero_rates(scan_blocks):
    x = _images()
    stochastic = VisionTransformer(**TINY, scan_blocks=scan_blocks, drop_path_rate=0.5)
    deterministic = VisionTransformer(**TINY, scan_blocks=scan_blocks)
    params = _random_params(stochastic, x, 0)

    @jax.jit
    def run(params, x):
        def train(model, seed):
            rngs = {"dropout": jax.random.key(seed), "drop_path": jax.random.key(seed + 1)}
            return model.apply({"params": params}, x, train=True, rngs=rngs)

        evaluated = stochastic.apply({"params": params}, x, train=False)
        return evaluated, train(stochastic, 0), train(stochastic, 7), train(deterministic, 0)

    evaluated, train_a, train_b, train_plain = run(params, x)
    assert not np.allclose(np.asarray(train_a), np.asarray(train_b))
    np.testing.assert_allclose(np.asarray(train_plain), np.asarray(evaluated), atol=1e-6)


# --- Attention maps, intermediates, gradients ------------------------------------------------


def _numpy_rollout(attentions):
    """Abnar & Zuidema's rule, written independently: A_l = 0.5 mean_heads(W_l) + 0.5 I."""
    attentions = np.asarray(attentions, np.float64)
    num_tokens = attentions.shape[-1]
    result = None
    for layer in attentions:
        joint = 0.5 * layer.mean(axis=1) + 0.5 * np.eye(num_tokens)
        joint /= joint.sum(-1, keepdims=True)
        result = joint if result is None else joint @ result
    return result


def test_sown_attention_and_rollout():
    model = VisionTransformer(**TINY, sow_attention=True)
    x = _images(3)
    params = _random_params(model, x, 3)
    _, state = jax.jit(
        lambda p, x: model.apply({"params": p}, x, train=False, mutable=["intermediates"])
    )(params, x)
    attentions = collect_attention(state)
    assert attentions.shape == (3, 2, 3, 17, 17)
    assert state["intermediates"]["embeddings"][0].shape == (2, 17, 12)
    assert state["intermediates"]["encoded"][0].shape == (2, 17, 12)
    rollout = attention_rollout(state)
    assert rollout.shape == (2, 17, 17)
    np.testing.assert_allclose(np.asarray(rollout), _numpy_rollout(attentions), atol=1e-5)
    np.testing.assert_allclose(np.asarray(rollout.sum(-1)), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(attention_rollout(list(attentions))), np.asarray(rollout), atol=1e-6
    )
    without_attention = {"intermediates": {"encoder_block0": {"tokens": (x,)}}}
    with pytest.raises(ValueError, match="sow_attention"):
        collect_attention(without_attention)


@pytest.mark.parametrize("scan_blocks", [False, True])
def test_encoder_returns_the_tokens_the_classifier_sows(scan_blocks):
    """forward_features = the standalone encoder on the classifier's parameters = ``encoded``."""
    model = VisionTransformer(**TINY, scan_blocks=scan_blocks)
    encoder_config = {k: v for k, v in TINY.items() if k != "num_classes"}
    encoder = ViTEncoder(**encoder_config, scan_blocks=scan_blocks)
    x = _images(4)
    params = _random_params(model, x, 4)

    @jax.jit
    def run(params, x):
        kwargs = {"train": False, "mutable": ["intermediates"]}
        logits, state = model.apply({"params": params}, x, **kwargs)
        tokens, _ = model.apply({"params": params}, x, method="forward_features", **kwargs)
        alone = encoder.apply({"params": params}, x, train=False)
        return logits, state["intermediates"], tokens, alone

    logits, sown, tokens, alone = run(params, x)
    assert tokens.shape == (2, (16 // 4) ** 2 + 1, 12)  # (B, N+1, D)
    np.testing.assert_array_equal(tokens, alone)
    np.testing.assert_array_equal(tokens, sown["encoded"][0])
    # The head reads the class token, row 0.
    head = params["head"]
    np.testing.assert_allclose(logits, tokens[:, 0] @ head["kernel"] + head["bias"], atol=1e-5)
    shapes = jax.eval_shape(lambda: encoder.init(jax.random.key(0), x, train=False))
    assert set(shapes["params"]) == set(params) - {"head"}


def test_every_parameter_gets_a_gradient_in_the_scanned_layout():
    model = VisionTransformer(**TINY, scan_blocks=True)
    x = _images(1)
    params = _random_params(model, x, 1)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply({"params": p}, x, train=False) ** 2)))(
        params
    )
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        g = np.asarray(g).reshape(g.shape[0], -1) if g.ndim > 1 else np.asarray(g)[None]
        # Scanned leaves: every block's slice must receive a gradient, not just one of them.
        blocks = "encoder_blocks" in jax.tree_util.keystr(path)
        per_row = np.abs(g).max(axis=-1) if blocks else np.abs(g).max(keepdims=True)
        assert np.all(per_row > 0), jax.tree_util.keystr(path)

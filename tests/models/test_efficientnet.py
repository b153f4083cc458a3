"""EfficientNet: scaling rules, the Table 1 block layout, MBConv wiring, shapes and state."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxvision.models import efficientnet
from jaxvision.models.efficientnet import (
    COMPOUND_SCALING,
    EfficientNetBackbone,
    MBConv,
    block_specs,
    round_channels,
    round_repeats,
)
from jaxvision.registry import create_model, model_info

# A narrow, shallow EfficientNet that keeps every block kind (MBConv1 and MBConv6, k3 and k5,
# stride 1 and 2, residual and not): depth 0.5 leaves 1, 1, 1, 2, 2, 2, 1 blocks per stage.
TINY = {"num_classes": 10, "width": 0.25, "depth": 0.5}


def _random_variables(model, x, seed=0):
    """Random variables (BatchNorm scales and variances around 1), shaped by ``eval_shape``:
    compiling ``model.init`` costs more than the tests."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    rng = np.random.default_rng(seed)
    flat, tree = jax.tree_util.tree_flatten_with_path(shapes)
    values = []
    for path, s in flat:
        name = jax.tree_util.keystr(path)
        if "'scale'" in name or "'var'" in name:
            values.append(rng.uniform(0.5, 1.5, s.shape))
        else:
            values.append(rng.normal(0, 0.3, s.shape))
    return jax.tree.unflatten(tree, [jnp.asarray(v, jnp.float32) for v in values])


# --- Scaling rules ---------------------------------------------------------------------------

widths = st.floats(0.1, 4.0, allow_nan=False)


@given(channels=st.integers(1, 2048), width=widths)
def test_round_channels_divisible_and_close(channels, width):
    rounded = round_channels(channels, width)
    scaled = channels * width
    assert rounded % 8 == 0
    assert rounded >= 0.9 * scaled
    assert rounded >= 8
    # Nearest multiple of 8 up to one bump: never more than 8 above the scaled value.
    assert rounded <= max(8, scaled + 8)


@given(channels=st.integers(1, 2048), width=widths, extra=st.floats(0.0, 2.0))
def test_round_channels_monotone_in_width(channels, width, extra):
    assert round_channels(channels, width) <= round_channels(channels, width + extra)


@given(repeats=st.integers(1, 10), depth=st.floats(1.0, 5.0), extra=st.floats(0.0, 2.0))
def test_round_repeats_is_ceil_and_never_fewer(repeats, depth, extra):
    scaled = round_repeats(repeats, depth)
    assert scaled == math.ceil(repeats * depth)
    assert scaled >= repeats
    assert round_repeats(repeats, depth + extra) >= scaled


@pytest.mark.reference
@given(channels=st.integers(1, 2048), width=widths)
def test_round_channels_matches_timm_and_torchvision(channels, width):
    timm_builder = pytest.importorskip("timm.models._efficientnet_builder")
    tv_utils = pytest.importorskip("torchvision.models._utils")
    assert round_channels(channels, width) == timm_builder.round_channels(channels, width)
    assert round_channels(channels, width) == tv_utils._make_divisible(channels * width, 8)


def test_known_scaled_widths():
    """Worked examples of the rounding: B4 (1.4) and B7 (2.0) stem and head widths."""
    assert round_channels(32, 1.4) == 48  # 44.8 rounds to 48
    assert round_channels(16, 1.1) == 16  # 17.6 rounds to 16 (>= 90% of 17.6)
    assert round_channels(40, 1.1) == 48  # 44 is a tie: half-way rounds up
    assert round_channels(1280, 2.0) == 2560
    assert round_repeats(1, 1.1) == 2 and round_repeats(4, 3.1) == 13


# --- Table 1 as built -----------------------------------------------------------------------


def test_b0_blocks_follow_table_1():
    # (stage, expand ratio, kernel, stride, in -> out channels) of every B0 block, written out
    # from paper Table 1: MBConv1 k3 16 x1, MBConv6 k3 24 x2, k5 40 x2, k3 80 x3, k5 112 x3,
    # k5 192 x4, k3 320 x1.
    expected = [
        (1, 1, 3, 1, 32, 16),
        (2, 6, 3, 2, 16, 24), (2, 6, 3, 1, 24, 24),
        (3, 6, 5, 2, 24, 40), (3, 6, 5, 1, 40, 40),
        (4, 6, 3, 2, 40, 80), (4, 6, 3, 1, 80, 80), (4, 6, 3, 1, 80, 80),
        (5, 6, 5, 1, 80, 112), (5, 6, 5, 1, 112, 112), (5, 6, 5, 1, 112, 112),
        (6, 6, 5, 2, 112, 192), (6, 6, 5, 1, 192, 192), (6, 6, 5, 1, 192, 192),
        (6, 6, 5, 1, 192, 192),
        (7, 6, 3, 1, 192, 320),
    ]  # fmt: skip
    specs = block_specs(1.0, 1.0)
    got = [
        (s.stage, s.expand_ratio, s.kernel_size, s.strides, s.in_features, s.out_features)
        for s in specs
    ]
    assert got == expected
    assert [s.se_features for s in specs] == [max(1, e[4] // 4) for e in expected]
    assert specs[0].name == "stage1_block1" and specs[-1].name == "stage7_block1"


@pytest.mark.parametrize("variant", list(COMPOUND_SCALING))
def test_block_counts_and_drop_path_schedule(variant):
    scaling = COMPOUND_SCALING[variant]
    specs = block_specs(scaling.width, scaling.depth)
    table = efficientnet.B0_STAGES
    assert len(specs) == sum(math.ceil(s.repeats * scaling.depth) for s in table)
    # Linear in the block index, from 0 at the first block (timm / torchvision).
    fractions = [s.drop_path_fraction for s in specs]
    np.testing.assert_allclose(fractions, np.arange(len(specs)) / len(specs))
    # Only the first block of a stage strides.
    for stage in range(1, 8):
        strides = [s.strides for s in specs if s.stage == stage]
        assert strides[1:] == [1] * (len(strides) - 1)
        assert strides[0] == table[stage - 1].strides


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b4", "tf_efficientnet_b7"])
def test_registry_configuration(name):
    info = model_info(name)
    scaling = COMPOUND_SCALING[name.rsplit("_", 1)[-1]]
    model = create_model(name)
    assert info.family == "efficientnet" and info.resolution == scaling.resolution
    assert (model.width, model.depth, model.dropout_rate) == (
        scaling.width,
        scaling.depth,
        scaling.dropout_rate,
    )
    if name.startswith("tf_"):
        assert (model.padding, model.bn_epsilon, model.bn_momentum) == ("same", 1e-3, 0.99)
    else:
        assert (model.padding, model.bn_epsilon, model.bn_momentum) == ("symmetric", 1e-5, 0.9)
    assert info.preprocessing.interpolation == "bicubic"
    with pytest.raises(TypeError):
        create_model(name, widht=2.0)


# --- MBConv wiring ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strides", "in_features", "features", "residual"),
    [(1, 16, 16, True), (2, 16, 16, False), (1, 16, 24, False)],
)
def test_mbconv_residual_only_when_shapes_match(strides, in_features, features, residual):
    """With the projection's BatchNorm zeroed the branch is 0: what is left is the shortcut."""
    block = MBConv(features, expand_ratio=6, kernel_size=3, strides=strides, se_features=4)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 7, 7, in_features)), jnp.float32)
    variables = _random_variables(block, x)
    params = dict(variables["params"])
    params["bn_project"] = jax.tree.map(jnp.zeros_like, params["bn_project"])
    y = jax.jit(lambda v, x: block.apply(v, x, train=False))({**variables, "params": params}, x)
    if residual:
        np.testing.assert_allclose(y, x, atol=1e-6)
    else:
        assert y.shape == (2, -(-7 // strides), -(-7 // strides), features)
        np.testing.assert_allclose(y, 0.0, atol=1e-6)


def test_mbconv_parameter_names():
    expanded = MBConv(24, expand_ratio=6, kernel_size=5, strides=2, se_features=4)
    plain = MBConv(16, expand_ratio=1, kernel_size=3, strides=1, se_features=8)
    x16, x32 = jnp.zeros((1, 8, 8, 16)), jnp.zeros((1, 8, 8, 32))
    p_expanded = jax.eval_shape(lambda: expanded.init(jax.random.key(0), x16, train=False))
    p_plain = jax.eval_shape(lambda: plain.init(jax.random.key(0), x32, train=False))
    shapes = jax.tree.map(lambda s: s.shape, p_expanded["params"])
    assert set(shapes) == {
        "conv_expand",
        "bn_expand",
        "conv_dw",
        "bn_dw",
        "se",
        "conv_project",
        "bn_project",
    }
    assert shapes["conv_expand"]["kernel"] == (1, 1, 16, 96)
    assert shapes["conv_dw"]["kernel"] == (5, 5, 1, 96)
    assert shapes["se"]["conv_reduce"]["kernel"] == (1, 1, 96, 4)
    assert shapes["conv_project"]["kernel"] == (1, 1, 96, 24)
    assert set(p_plain["params"]) == {"conv_dw", "bn_dw", "se", "conv_project", "bn_project"}
    assert set(p_expanded["batch_stats"]) == {"bn_expand", "bn_dw", "bn_project"}


# --- The network -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [33, 64])
def test_forward_shapes_and_stage_strides(size):
    model = create_model("efficientnet_b0", **TINY)
    x = jnp.asarray(np.random.default_rng(size).normal(size=(2, size, size, 3)), jnp.float32)
    variables = _random_variables(model, x)
    logits, state = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=["intermediates"]))(
        variables, x
    )
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))
    inter = {k: v[0].shape for k, v in state["intermediates"].items()}
    strides = {"stem_output": 2, "stage1": 2, "stage2": 4, "stage3": 8, "stage4": 16, "stage5": 16,
               "stage6": 32, "stage7": 32, "head_output": 32}  # fmt: skip
    for name, stride in strides.items():
        side = size
        for _ in range(int(math.log2(stride))):
            side = -(-side // 2)  # every stride-2 layer gives ceil(H / 2)
        assert inter[name][:3] == (2, side, side), name
    assert inter["stage7"][-1] == round_channels(320, 0.25)
    assert inter["head_output"][-1] == round_channels(1280, 0.25)


def test_backbone_returns_the_stage_maps_the_classifier_sows():
    """forward_features = the standalone backbone on the classifier's variables = the sown maps."""
    model = create_model("efficientnet_b0", **TINY)
    backbone = EfficientNetBackbone(width=TINY["width"], depth=TINY["depth"])
    x = jnp.asarray(np.random.default_rng(5).normal(size=(2, 64, 64, 3)), jnp.float32)
    variables = _random_variables(model, x)

    orders = []

    @jax.jit
    def run(variables, x):
        kwargs = {"train": False, "mutable": ["intermediates"]}
        _, state = model.apply(variables, x, **kwargs)
        features, _ = model.apply(variables, x, method="forward_features", **kwargs)
        alone = backbone.apply(variables, x, train=False)
        orders.extend([list(features), list(alone)])  # jit's outputs come back key-sorted
        return state["intermediates"], features, alone

    sown, features, alone = run(variables, x)
    names = ["stem", *(f"stage{i}" for i in range(1, 8))]
    assert orders == [names, names]
    strides = [2, 2, 4, 8, 16, 16, 32, 32]
    widths = [32, 16, 24, 40, 80, 112, 192, 320]
    for name, stride, width in zip(names, strides, widths, strict=True):
        side = 64 // stride
        assert features[name].shape == (2, side, side, round_channels(width, 0.25)), name
        np.testing.assert_array_equal(features[name], alone[name])
        np.testing.assert_array_equal(
            features[name], sown["stem_output" if name == "stem" else name][0]
        )
    # The backbone's own variables are the classifier's without the head.
    shapes = jax.eval_shape(lambda: backbone.init(jax.random.key(0), x, train=False))
    assert set(shapes["params"]) == set(variables["params"]) - {"head", "classifier"}
    assert set(shapes["batch_stats"]) == set(variables["batch_stats"]) - {"head"}


def test_parameter_tree_names():
    model = create_model("efficientnet_b1")
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    )
    top = set(shapes["params"])
    blocks = {s.name for s in block_specs(1.0, 1.1)}
    assert top == {"stem", "head", "classifier"} | blocks
    assert "stage1_block2" in blocks  # B1's depth 1.1 gives stage 1 a second block
    assert set(shapes["params"]["stem"]) == {"conv", "bn"}
    assert shapes["params"]["stem"]["conv"]["kernel"].shape == (3, 3, 3, 32)
    assert shapes["params"]["classifier"]["kernel"].shape == (1280, 1000)
    assert set(shapes["batch_stats"]) == top - {"classifier"}


def test_drop_path_rates_reach_blocks():
    """Each MBConv gets drop_path_rate * index / num_blocks, and the head dropout the rate."""
    model = create_model("efficientnet_b0", **TINY, drop_path_rate=0.3)
    seen = {}

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, MBConv) and context.method_name == "__call__":
            seen[context.module.name] = context.module.drop_path_rate
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(
            lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
        )
    specs = block_specs(0.25, 0.5)
    assert seen == {s.name: pytest.approx(0.3 * i / len(specs)) for i, s in enumerate(specs)}


def test_train_step_updates_batch_stats_and_eval_is_deterministic():
    model = create_model("efficientnet_b0", **TINY)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 32, 32, 3)), jnp.float32)
    variables = _random_variables(model, x)

    @jax.jit
    def run(variables, x, key):
        train_logits, updates = model.apply(
            variables,
            x,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": key, "drop_path": jax.random.fold_in(key, 1)},
        )
        eval_logits = model.apply(variables, x, train=False)
        return train_logits, updates["batch_stats"], eval_logits

    train_logits, stats, eval_logits = run(variables, x, jax.random.key(0))
    _, _, eval_again = run(variables, x, jax.random.key(1))
    np.testing.assert_array_equal(eval_logits, eval_again)
    assert not np.allclose(train_logits, eval_logits)
    # Every BatchNorm moved its running statistics; parameters are untouched by design.
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), variables["batch_stats"], stats)
    assert all(jax.tree.leaves(changed))


def test_depthwise_implementations_give_same_logits():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 35, 35, 3)), jnp.float32)
    models = [
        create_model("tf_efficientnet_b0", **TINY, depthwise_implementation=impl)
        for impl in ("xla", "shifted")
    ]
    variables = _random_variables(models[0], x)
    xla, shifted = (
        jax.jit(lambda v, x, m=m: m.apply(v, x, train=False))(variables, x) for m in models
    )
    np.testing.assert_allclose(shifted, xla, rtol=1e-4, atol=1e-4 * float(np.abs(xla).max()))


def test_bfloat16_compute_keeps_float32_parameters_and_logits():
    model = create_model("efficientnet_b0", **TINY, dtype=jnp.bfloat16)
    x = jnp.zeros((1, 32, 32, 3), jnp.float32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
    assert jax.eval_shape(lambda v: model.apply(v, x, train=False), shapes).dtype == jnp.float32


def test_rejects_nchw_input():
    model = create_model("efficientnet_b0", **TINY)
    with pytest.raises(ValueError, match="NCHW"):
        jax.eval_shape(
            lambda: model.init(jax.random.key(0), jnp.zeros((1, 3, 32, 32)), train=False)
        )

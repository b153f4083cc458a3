"""YOLOv8 classification: scaling rules, block bookkeeping, the backbone table, shapes."""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxvision.models import yolov8
from jaxvision.models.yolov8 import (
    SPPF,
    Bottleneck,
    C2f,
    make_divisible,
    scale_channels,
    scale_repeats,
)
from jaxvision.registry import create_model

FAST = settings(max_examples=25, deadline=None)


def _ultralytics(module):
    """Import an ultralytics module offline (its import otherwise probes DNS), or skip."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    return pytest.importorskip(module)


def _shapes(tree):
    return jax.tree.map(lambda a: tuple(a.shape), tree)


def _init_shapes(module, x_shape):
    """(variables, output) shapes of ``module`` on zeros of ``x_shape``, without computing."""
    x = jax.ShapeDtypeStruct(x_shape, jnp.float32)

    def run(x):
        variables = module.init(jax.random.key(0), x, train=False)
        return variables, module.apply(variables, x, train=False)

    variables, y = jax.eval_shape(run, x)
    return _shapes(variables), tuple(y.shape)


def _random_variables(module, x, seed=0):
    """Random variables for ``module`` (BatchNorm variances positive), without compiling init."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False), x)
    flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
    values = [
        rng.uniform(0.5, 2.0, s.shape) if "var" in jax.tree_util.keystr(path)
        else rng.normal(0.0, 0.5, s.shape)
        for path, s in flat
    ]  # fmt: skip
    return jax.tree.unflatten(jax.tree.structure(shapes), [v.astype(np.float32) for v in values])


# --- Scaling rules ---------------------------------------------------------------------------


@FAST
@given(
    channels=st.integers(1, 4096),
    width=st.floats(0.05, 2.0, allow_nan=False),
    max_channels=st.integers(8, 2048),
)
def test_scale_channels_rounds_up_to_multiple_of_8_after_the_cap(channels, width, max_channels):
    got = scale_channels(channels, width, max_channels)
    scaled = min(channels, max_channels) * width
    assert isinstance(got, int)
    assert got % 8 == 0
    assert got >= scaled - 1e-9
    assert got - scaled < 8  # the smallest such multiple
    assert got <= make_divisible(max_channels * width)
    assert scale_channels(channels + 1, width, max_channels) >= got  # monotone in channels


@FAST
@given(x=st.floats(0.0, 10_000.0, allow_nan=False), divisor=st.sampled_from([1, 2, 4, 8, 16, 32]))
def test_make_divisible_matches_ultralytics(x, divisor):
    ops = _ultralytics("ultralytics.utils.ops")
    assert make_divisible(x, divisor) == ops.make_divisible(x, divisor)


@FAST
@given(repeats=st.integers(1, 12), depth=st.floats(0.01, 2.0, allow_nan=False))
def test_scale_repeats_rule(repeats, depth):
    got = scale_repeats(repeats, depth)
    assert isinstance(got, int)
    assert got >= 1
    assert got == max(round(repeats * depth), 1)
    if repeats * depth >= 0.5:
        assert abs(got - repeats * depth) <= 0.5


def test_variant_depths_and_widths():
    # The yolov8-cls.yaml rows (3 and 6 bottlenecks, 64 ... 1024 channels) at each scale, computed
    # by hand: round(3 * 0.33) = 1, round(6 * 0.33) = 2, round(3 * 0.67) = 2, round(6 * 0.67) = 4;
    # 1024 * 1.25 = 1280.
    expected = {
        "n": ([1, 2, 2, 1], [16, 32, 64, 128, 256]),
        "s": ([1, 2, 2, 1], [32, 64, 128, 256, 512]),
        "m": ([2, 4, 4, 2], [48, 96, 192, 384, 768]),
        "l": ([3, 6, 6, 3], [64, 128, 256, 512, 1024]),
        "x": ([3, 6, 6, 3], [80, 160, 320, 640, 1280]),
    }
    for name, (repeats, widths) in expected.items():
        s = yolov8.CLASSIFY_SCALES[name]
        rows = yolov8.CLASSIFY_BACKBONE
        got_repeats = [scale_repeats(r.repeats, s.depth) for r in rows if r.block == "c2f"]
        got_widths = [
            scale_channels(r.features, s.width, s.max_channels) for r in rows if r.strides == 2
        ]
        assert (got_repeats, got_widths) == (repeats, widths), name


@pytest.mark.parametrize(
    "config,rows,scales",
    [
        ("yolov8n-cls.yaml", yolov8.CLASSIFY_BACKBONE, yolov8.CLASSIFY_SCALES),
        ("yolov8n.yaml", yolov8.DETECT_BACKBONE, yolov8.DETECT_SCALES),
    ],
)
def test_backbone_table_mirrors_ultralytics_yaml(config, rows, scales):
    tasks = _ultralytics("ultralytics.nn.tasks")
    cfg = tasks.yaml_model_load(config)
    assert {k: yolov8.Scale(*v) for k, v in cfg["scales"].items()} == scales
    assert len(cfg["backbone"]) == len(rows)
    for layer, (source, repeats, module, args) in zip(rows, cfg["backbone"], strict=True):
        assert source == -1
        if module == "Conv":
            assert layer.block == "conv"
            assert [layer.features, layer.kernel_size, layer.strides] == args
            assert repeats == 1
        elif module == "SPPF":
            assert layer.block == "sppf"
            assert [layer.features, layer.kernel_size] == args
            assert repeats == 1
        else:
            assert module == "C2f" and layer.block == "c2f"
            assert [layer.features, layer.shortcut] == args
            assert layer.repeats == repeats
    if config.endswith("-cls.yaml"):
        assert [h[2] for h in cfg["head"]] == ["Classify"]
    else:
        # The detection neck reads P4 (row 6) and P3 (row 4), and continues from P5 (row 9):
        # the last rows of stage4, stage3 and stage5.
        assert [h[0] for h in cfg["head"][:5]] == [-1, [-1, 6], -1, -1, [-1, 4]]
        assert rows[6].name == "stage4_c2f" and rows[4].name == "stage3_c2f"
        assert rows[9].name == "stage5_sppf"


# --- Blocks ----------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    in_features=st.integers(1, 48),
    features=st.integers(2, 48),
    repeats=st.integers(1, 4),
    shortcut=st.booleans(),
)
def test_c2f_split_merge_bookkeeping(in_features, features, repeats, shortcut):
    c = int(features * 0.5)
    variables, out = _init_shapes(C2f(features, repeats, shortcut), (2, 5, 7, in_features))
    assert out == (2, 5, 7, features)
    params = variables["params"]
    assert set(params) == {"conv_split", "conv_merge", *(f"bottleneck{j}" for j in range(repeats))}
    # Split: C_in -> 2c, halves of c each; merge: (2 + n) pieces of c -> features.
    assert params["conv_split"]["conv"]["kernel"] == (1, 1, in_features, 2 * c)
    assert params["conv_merge"]["conv"]["kernel"] == (1, 1, (2 + repeats) * c, features)
    for j in range(repeats):
        block = params[f"bottleneck{j}"]
        assert block["conv1"]["conv"]["kernel"] == (3, 3, c, c)
        assert block["conv2"]["conv"]["kernel"] == (3, 3, c, c)
    # Every ConvBNAct has a BatchNorm of its output width, in params and in batch_stats.
    assert variables["batch_stats"]["conv_merge"]["bn"]["mean"] == (features,)
    assert params["conv_split"]["bn"]["scale"] == (2 * c,)


@pytest.mark.parametrize("in_features,shortcut", [(8, True), (8, False), (6, True)])
def test_bottleneck_adds_the_input_only_when_shortcut_and_widths_agree(in_features, shortcut):
    x = np.random.default_rng(1).normal(size=(2, 5, 6, in_features)).astype(np.float32)
    with_shortcut = Bottleneck(8, shortcut=shortcut)
    plain = Bottleneck(8, shortcut=False)
    variables = _random_variables(with_shortcut, x)

    @jax.jit
    def run(variables, x):
        return with_shortcut.apply(variables, x, train=False), plain.apply(
            variables, x, train=False
        )

    y, branch = run(variables, x)
    expected = x + branch if shortcut and in_features == 8 else branch
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    assert not np.allclose(branch, 0.0)


@pytest.mark.parametrize("size", [(9, 9), (8, 11)])
def test_sppf_keeps_spatial_size_and_maps_channels(size):
    h, w = size
    variables, out = _init_shapes(SPPF(24), (2, h, w, 16))
    assert out == (2, h, w, 24)
    params = variables["params"]
    assert params["conv_reduce"]["conv"]["kernel"] == (1, 1, 16, 8)  # C -> C/2
    assert params["conv_merge"]["conv"]["kernel"] == (1, 1, 4 * 8, 24)  # 4 pieces of C/2


# --- The network ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 33])
def test_stage_outputs_and_strides(size):
    model = create_model("yolov8n_cls", num_classes=7)
    x = jnp.zeros((2, size, size, 3))

    def run(x):
        variables = model.init(jax.random.key(0), x, train=False)
        return model.apply(variables, x, train=False, mutable=["intermediates"])

    logits, state = jax.eval_shape(run, x)
    assert logits.shape == (2, 7) and logits.dtype == jnp.float32
    stages = {k: v[0].shape for k, v in state["intermediates"].items()}
    expected, h = {}, size
    for name, channels in zip(
        ["stage1", "stage2", "stage3", "stage4", "stage5"], [16, 32, 64, 128, 256], strict=True
    ):
        h = math.ceil(h / 2)  # symmetric padding: stride 2 gives ceil(H / 2) at odd sizes too
        expected[name] = (2, h, h, channels)
    assert stages == expected


def test_backbone_returns_the_stage_maps_the_classifier_sows():
    """forward_features = the standalone backbone on the classifier's variables = the sown maps."""
    model = create_model("yolov8n_cls", num_classes=7)
    backbone = yolov8.YOLOv8Backbone(
        depth=0.33,
        width=0.25,
        bn_epsilon=yolov8.CLASSIFY_BN_EPSILON,
        bn_momentum=yolov8.CLASSIFY_BN_MOMENTUM,
    )
    x = np.random.default_rng(2).normal(size=(2, 64, 64, 3)).astype(np.float32)
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
    names = [f"stage{k}" for k in range(1, 6)]
    assert orders == [names, names]
    for k, (name, channels) in enumerate(zip(names, [16, 32, 64, 128, 256], strict=True), 1):
        assert features[name].shape == (2, 64 // 2**k, 64 // 2**k, channels)  # stride 2^k
        np.testing.assert_array_equal(features[name], alone[name])
        np.testing.assert_array_equal(features[name], sown[name][0])
    shapes = jax.eval_shape(lambda: backbone.init(jax.random.key(0), x, train=False))
    assert set(shapes["params"]) == set(variables["params"]) - {"head"}


@pytest.mark.parametrize("scale", ["n", "m"])
def test_detection_backbone_reuses_the_module_with_its_own_table(scale):
    """DETECT_BACKBONE adds SPPF at P5; the detection scales cap m at 768 channels."""
    s = yolov8.DETECT_SCALES[scale]
    backbone = yolov8.YOLOv8Backbone(
        yolov8.DETECT_BACKBONE, depth=s.depth, width=s.width, max_channels=s.max_channels
    )
    variables, features = jax.eval_shape(
        lambda x: backbone.init_with_output(jax.random.key(0), x, train=False)[::-1],
        jax.ShapeDtypeStruct((1, 96, 96, 3), jnp.float32),
    )
    widths = [scale_channels(c, s.width, s.max_channels) for c in (64, 128, 256, 512, 1024)]
    assert {k: v.shape for k, v in features.items()} == {
        f"stage{k}": (1, 96 // 2**k, 96 // 2**k, widths[k - 1]) for k in range(1, 6)
    }
    assert set(variables["params"]) == {layer.name for layer in yolov8.DETECT_BACKBONE}
    sppf = variables["params"]["stage5_sppf"]["conv_merge"]["conv"]["kernel"]
    assert sppf.shape == (1, 1, 4 * widths[4] // 2, widths[4])
    if scale == "m":
        assert widths[4] == 576  # min(1024, 768) * 0.75, where the classifier has 768


def test_logits_float32_with_bfloat16_compute():
    model = create_model("yolov8n_cls", num_classes=3, dtype=jnp.bfloat16)
    x = jnp.zeros((1, 32, 32, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    logits = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
    assert logits.dtype == jnp.float32
    assert {a.dtype for a in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}


def test_rejects_unknown_override_and_nchw():
    with pytest.raises(TypeError):
        create_model("yolov8n_cls", num_classes=10, widht=0.5)
    model = create_model("yolov8n_cls", num_classes=10)
    with pytest.raises(ValueError, match="NCHW"):
        model.init(jax.random.key(0), jnp.zeros((1, 3, 32, 32)), train=False)


def test_batch_norm_constants_match_their_ultralytics_sources():
    nn = pytest.importorskip("torch.nn")
    tasks = _ultralytics("ultralytics.nn.tasks")
    torch_utils = _ultralytics("ultralytics.utils.torch_utils")
    # Classification: whatever BatchNorm the built ClassificationModel carries.
    head = tasks.ClassificationModel("yolov8n-cls.yaml", verbose=False).model[-1]
    model = yolov8.YOLOv8Classifier()
    assert model.bn_epsilon == head.conv.bn.eps
    assert model.bn_momentum == pytest.approx(1 - head.conv.bn.momentum)
    # Detection: what initialize_weights sets.
    bn = nn.Sequential(nn.BatchNorm2d(4))
    torch_utils.initialize_weights(bn)
    assert yolov8.DETECT_BN_EPSILON == bn[0].eps
    assert yolov8.DETECT_BN_MOMENTUM == pytest.approx(1 - bn[0].momentum)


def test_preprocessing_matches_ultralytics_classify_transforms():
    augment = _ultralytics("ultralytics.data.augment")
    pytest.importorskip("torchvision")
    tf = augment.classify_transforms(224).transforms
    names = [type(t).__name__ for t in tf]
    assert names == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
    resize, crop, _, normalize = tf
    info = yolov8.ULTRALYTICS_CLASSIFY_PREPROCESSING
    assert resize.size / min(crop.size) == 1 / info.crop_fraction  # resize to the crop: fraction 1
    assert resize.interpolation.value == info.interpolation
    assert tuple(normalize.mean.tolist()) == info.mean
    assert tuple(normalize.std.tolist()) == info.std

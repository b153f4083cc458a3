"""The solutions to the tutorials' exercises (tutorials/solutions/*.py), each checked against the
library or an independent computation."""

from __future__ import annotations

import functools
import importlib.util
import itertools
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvision
from jaxvision.analysis import abstract_variables, count_params

SOLUTIONS = Path(__file__).parents[1] / "tutorials" / "solutions"


def _load(stem: str):
    spec = importlib.util.spec_from_file_location(f"solutions_{stem}", SOLUTIONS / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


jax_flax = _load("00_jax_and_flax_for_vision")
efficientnet = _load("01_efficientnet")
yolov8 = _load("02_yolov8")
vit = _load("03_vision_transformer")
training = _load("05_training_and_benchmarking")


def _params(module, x, **kwargs):
    return module.init(jax.random.key(0), x, **kwargs)


def _random_stats(variables, seed=0):
    rng = np.random.default_rng(seed)
    leaves, tree = jax.tree.flatten(variables["batch_stats"])
    stats = [jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), jnp.float32) for leaf in leaves]
    return {**variables, "batch_stats": jax.tree.unflatten(tree, stats)}


# ------------------------------------------------------------------ 00 JAX and Flax for vision


@pytest.mark.parametrize("shape", [(4, 7), (2, 5, 5, 16)])
def test_layer_norm_equals_flax(shape):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(3.0, 2.0, shape), jnp.float32)
    scale = jnp.asarray(rng.uniform(0.5, 2.0, shape[-1]), jnp.float32)
    bias = jnp.asarray(rng.normal(size=shape[-1]), jnp.float32)
    expected = nn.LayerNorm(epsilon=1e-6).apply({"params": {"scale": scale, "bias": bias}}, x)
    np.testing.assert_allclose(jax_flax.layer_norm(x, scale, bias), expected, atol=1e-5)


def test_per_example_grad_norms_equal_a_loop():
    rng = np.random.default_rng(1)
    params = {
        "w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(2,)), jnp.float32),
    }
    xs = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    ys = jnp.asarray(rng.normal(size=(5, 2)), jnp.float32)

    def loss_one(params, x, y):
        return jnp.sum((jnp.tanh(x @ params["w"] + params["b"]) - y) ** 2)

    norms = jax_flax.per_example_grad_norms(loss_one, params, xs, ys)
    expected = []
    for x, y in zip(xs, ys, strict=True):
        g = jax.grad(loss_one)(params, x, y)
        expected.append(np.sqrt(sum(float(jnp.sum(v**2)) for v in jax.tree.leaves(g))))
    assert norms.shape == (5,)
    np.testing.assert_allclose(norms, expected, rtol=1e-5)
    assert len(set(np.round(np.asarray(norms), 4))) == 5  # really one norm per example


@pytest.mark.parametrize("stride, epsilon", [(1, 1e-5), (2, 1e-3)])
def test_fold_batch_norm_equals_conv_bn(stride, epsilon):
    from jaxvision.layers.conv import ConvBNAct

    x = jax.random.normal(jax.random.key(0), (2, 9, 9, 3))
    norm = functools.partial(nn.BatchNorm, epsilon=epsilon)
    layer = ConvBNAct(8, kernel_size=3, strides=stride, activation=None, norm=norm)
    variables = _random_stats(_params(layer, x, train=False))
    rng = np.random.default_rng(2)
    variables["params"]["bn"] = {
        "scale": jnp.asarray(rng.uniform(0.5, 2, 8), jnp.float32),
        "bias": jnp.asarray(rng.normal(size=8), jnp.float32),
    }
    bn, stats = variables["params"]["bn"], variables["batch_stats"]["bn"]
    kernel, bias = jax_flax.fold_batch_norm(
        variables["params"]["conv"]["kernel"],
        bn["scale"],
        bn["bias"],
        stats["mean"],
        stats["var"],
        epsilon,
    )
    folded = jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(folded + bias, layer.apply(variables, x, train=False), atol=1e-4)


# ------------------------------------------------------------------------------ 01 EfficientNet


def test_round_channels_equals_the_library():
    from jaxvision.models.efficientnet import round_channels

    for channels, width in itertools.product((16, 24, 32, 40, 80, 112, 192, 320), (1.0, 1.1, 1.8)):
        assert efficientnet.round_channels(channels, width) == round_channels(channels, width)


@pytest.mark.parametrize("variant", [f"b{i}" for i in range(8)])
def test_scaled_stages_equal_block_specs(variant):
    from jaxvision.models.efficientnet import COMPOUND_SCALING, block_specs

    s = COMPOUND_SCALING[variant]
    specs = block_specs(s.width, s.depth)
    expected = [
        (rows[0].out_features, len(rows))
        for rows in ([b for b in specs if b.stage == stage] for stage in range(1, 8))
    ]
    assert efficientnet.scaled_stages(s.width, s.depth) == expected


@pytest.mark.parametrize(
    "in_features, out_features, expand_ratio, kernel_size, strides, se_features",
    [(32, 16, 1, 3, 1, 8), (16, 24, 6, 3, 2, 4), (40, 40, 6, 5, 1, 10), (24, 40, 4, 7, 2, 3)],
)
def test_mbconv_params_equal_the_library(
    in_features, out_features, expand_ratio, kernel_size, strides, se_features
):
    from jaxvision.models.efficientnet import MBConv

    block = MBConv(out_features, expand_ratio, kernel_size, strides, se_features)
    x = jax.ShapeDtypeStruct((1, 8, 8, in_features), jnp.float32)
    variables = jax.eval_shape(lambda x: block.init(jax.random.key(0), x, train=False), x)
    expected = count_params(variables["params"])
    args = (in_features, out_features, expand_ratio, kernel_size, se_features)
    assert efficientnet.mbconv_params(*args) == expected


@pytest.mark.parametrize("kernel_size, stride, size", [(3, 1, 8), (3, 2, 9), (5, 2, 14), (5, 1, 7)])
def test_depthwise_conv_grouped_equals_the_library(kernel_size, stride, size):
    from jaxvision.layers.depthwise import DepthwiseConv2d

    x = jax.random.normal(jax.random.key(0), (2, size, size, 6))
    layer = DepthwiseConv2d(kernel_size, stride, implementation="shifted")
    variables = _params(layer, x)
    ours = efficientnet.depthwise_conv_grouped(x, variables["params"]["kernel"], stride)
    np.testing.assert_allclose(ours, layer.apply(variables, x), atol=1e-5)


# ----------------------------------------------------------------------------------- 02 YOLOv8


@pytest.mark.parametrize(
    "in_features, out_features, repeats", [(32, 64, 2), (48, 32, 1), (64, 64, 3)]
)
def test_c2f_params_equal_the_library(in_features, out_features, repeats):
    from jaxvision.models.yolov8 import C2f

    block = C2f(out_features, repeats, shortcut=True)
    x = jax.ShapeDtypeStruct((1, 8, 8, in_features), jnp.float32)
    variables = jax.eval_shape(lambda x: block.init(jax.random.key(0), x, train=False), x)
    assert yolov8.c2f_params(in_features, out_features, repeats) == count_params(
        variables["params"]
    )


@pytest.mark.parametrize("seed, threshold", [(0, 0.5), (1, 0.3), (2, 0.7), (3, 0.1)])
def test_greedy_nms_equals_nms_keep(seed, threshold):
    from jaxvision.ops.nms import nms_keep

    rng = np.random.default_rng(seed)
    centres = rng.uniform(20, 80, (60, 2))
    sizes = rng.uniform(5, 40, (60, 2))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, 60).astype(np.float32)
    keep = yolov8.greedy_nms(boxes, scores, threshold)
    expected = np.asarray(nms_keep(jnp.asarray(boxes), jnp.asarray(scores), threshold))
    np.testing.assert_array_equal(keep, expected)
    assert 0 < keep.sum() < len(boxes)  # the test suppresses something and keeps something


def test_dfl_target_decodes_to_the_distance():
    from jaxvision.ops.boxes import dfl_decode

    distances = np.array([[0.0, 5.3, 14.2, 20.0], [0.5, 7.0, 3.99, 15.0]])
    target = yolov8.dfl_target(distances)
    assert target.shape == (2, 4, 16)
    np.testing.assert_allclose(target.sum(-1), 1.0)
    assert np.all(target >= 0) and np.all((target > 0).sum(-1) <= 2)
    np.testing.assert_allclose(target[0, 1, 5:7], [0.7, 0.3], atol=1e-12)
    clipped = np.clip(distances, 0, 16 - 1.01)
    np.testing.assert_allclose(target @ np.arange(16), clipped, atol=1e-9)
    with np.errstate(divide="ignore"):
        logits = np.log(target).reshape(2, 64)  # log 0 = -inf: softmax gives exactly 0 there
    np.testing.assert_allclose(dfl_decode(jnp.asarray(logits, jnp.float32)), clipped, atol=1e-5)


# ---------------------------------------------------------------------- 03 Vision Transformer


@pytest.mark.parametrize("name", jaxvision.list_models("vit"))
def test_vit_param_count_equals_the_reference(name):
    model = jaxvision.create_model(name)
    args = (224, model.patch_size, model.hidden_size, model.num_layers, model.mlp_dim, 1000)
    assert vit.vit_param_count(*args) == jaxvision.model_info(name).reference_params


def test_vit_param_count_of_a_small_vit():
    model = jaxvision.create_model(
        "vit_ti16", num_classes=7, image_size=24, patch_size=4, hidden_size=32, num_layers=2,
        num_heads=2, mlp_dim=48,
    )  # fmt: skip
    expected = count_params(abstract_variables(model, 24)["params"])
    assert vit.vit_param_count(24, 4, 32, 2, 48, 7) == expected


def test_mean_attention_distance_equals_brute_force():
    grid, patch, heads = 3, 4, 2
    n = grid * grid + 1
    logits = jax.random.normal(jax.random.key(0), (2, heads, n, n))
    weights = np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)
    expected = np.zeros(heads)
    for b, h in itertools.product(range(2), range(heads)):
        for q in range(grid * grid):
            row = weights[b, h, q + 1, 1:]
            row = row / row.sum()
            qr, qc = divmod(q, grid)
            for k in range(grid * grid):
                kr, kc = divmod(k, grid)
                expected[h] += row[k] * patch * np.hypot(qr - kr, qc - kc)
    expected /= 2 * grid * grid
    np.testing.assert_allclose(
        vit.mean_attention_distance(weights, grid, patch), expected, rtol=1e-5
    )
    # Attending only to oneself is distance 0.
    own = np.broadcast_to(np.eye(n), (1, heads, n, n))
    np.testing.assert_allclose(vit.mean_attention_distance(own, grid, patch), 0.0, atol=1e-7)


@pytest.mark.parametrize("height, width, patch", [(8, 12, 2), (16, 16, 4)])
def test_unpatchify_inverts_patchify(height, width, patch):
    from jaxvision.layers.patch_embed import patchify, unpatchify

    x = jax.random.normal(jax.random.key(0), (2, height, width, 3))
    tokens = patchify(x, patch)
    np.testing.assert_array_equal(vit.unpatchify(tokens, patch, height, width), x)
    np.testing.assert_array_equal(
        vit.unpatchify(tokens, patch, height, width), unpatchify(tokens, patch, height, width)
    )


# --------------------------------------------------------------- 05 Training and benchmarking


def test_confusion_matrix_equals_sklearn():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 7, 200), rng.integers(0, 7, 200)
    predictions[:50] = labels[:50]
    expected = confusion_matrix(labels, predictions, labels=range(7))
    np.testing.assert_array_equal(training.confusion_matrix(labels, predictions, 7), expected)


def test_ema_update_equals_the_train_state():
    import optax

    from jaxvision.train import create_train_state

    class Tiny(nn.Module):
        @nn.compact
        def __call__(self, x, *, train):
            return nn.Dense(3)(x)

    model = Tiny()
    state = create_train_state(
        model, optax.sgd(0.1), rng=jax.random.key(0), inputs=(jnp.ones((1, 4)),), ema_decay=0.9
    )
    before = state.ema_params
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), state.params)
    state = state.apply_gradients(grads=grads)
    ours = training.ema_update(before, state.params, 0.9)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(state.ema_params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # And the EMA really moved (not equal to the old values, nor to the new parameters).
    assert not np.allclose(jax.tree.leaves(ours)[0], jax.tree.leaves(before)[0])


@pytest.mark.parametrize("k", [1, 5])
def test_top_k_accuracy_equals_the_task(k):
    from jaxvision.tasks import ClassificationTask

    rng = np.random.default_rng(k)
    logits = rng.normal(size=(100, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 100).astype(np.int32)
    task = ClassificationTask(num_classes=10, image_size=8)
    batch = {"label": labels, "mask": np.ones(100, np.float32)}
    _, metrics = task.loss(jnp.asarray(logits), batch)
    total, count = metrics[f"top{k}"]
    assert training.top_k_accuracy(logits, labels, k) == pytest.approx(float(total / count))
    assert 0 < training.top_k_accuracy(logits, labels, k) < 1

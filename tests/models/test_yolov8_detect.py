"""YOLOv8 detection / segmentation models: output shapes at non-square sizes, gradients reach
every parameter (but the fixed DFL projection), bias initialisation, decoding, input checks."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvision
from jaxvision.models.yolov8_detect import decode


def test_outputs_of_a_non_square_segmenter_and_every_gradient():
    model = jaxvision.create_model("yolov8n_seg", num_classes=3)
    x = jax.random.normal(jax.random.key(0), (2, 64, 96, 3))
    variables = jax.jit(lambda k: model.init({"params": k}, x[:1], train=False))(jax.random.key(1))
    out = jax.jit(lambda v: model.apply(v, x, train=False))(variables)
    anchors = 8 * 12 + 4 * 6 + 2 * 3  # P3, P4, P5 cells of a 64 x 96 input
    assert out["boxes"].shape == (2, anchors, 64) and out["scores"].shape == (2, anchors, 3)
    assert out["distances"].shape == (2, anchors, 4)
    assert out["mask_coefficients"].shape == (2, anchors, 32)
    assert out["proto"].shape == (2, 16, 24, 32)
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in out.values())

    params, rest = variables["params"], {"batch_stats": variables["batch_stats"]}

    def loss(p):
        o = model.apply({"params": p, **rest}, x, train=False)
        return sum(jnp.mean(jnp.sin(v)) for v in o.values())

    grads = jax.jit(jax.grad(loss))(params)
    flat = jax.tree_util.tree_leaves_with_path(grads)
    zero = [jax.tree_util.keystr(p) for p, g in flat if not np.any(np.asarray(g))]
    assert zero == ["['detect']['dfl_projection']"]  # fixed bins 0..15, like ultralytics' DFL


def test_head_bias_initialisation_follows_ultralytics():
    model = jaxvision.create_model("yolov8n_det", num_classes=4)
    x = jnp.zeros((1, 64, 64, 3))
    params = model.init({"params": jax.random.key(0)}, x, train=False)["params"]["detect"]
    for level, stride in enumerate((8, 16, 32)):
        np.testing.assert_allclose(params[f"box{level}"]["predict"]["bias"], 2.0)
        prior = math.log(5 / 4 / (640 / stride) ** 2)
        np.testing.assert_allclose(params[f"cls{level}"]["predict"]["bias"], prior, rtol=1e-6)
    np.testing.assert_array_equal(params["dfl_projection"], np.arange(16))


def test_decode_places_boxes_around_their_anchor_points():
    # 32 x 64 input: P3 4x8 = 32 anchors, P4 2x4 = 8, P5 1x2 = 2.
    distances = np.ones((1, 42, 4), np.float32)  # one stride on every side
    scores = np.zeros((1, 42, 2), np.float32)
    boxes, probs = decode({"distances": distances, "scores": scores}, 32, 64)
    np.testing.assert_allclose(boxes[0, 0], [-4, -4, 12, 12])  # P3 cell (0, 0), centre (4, 4)
    np.testing.assert_allclose(boxes[0, 9], [4, 4, 20, 20])  # P3 row 1, column 1
    np.testing.assert_allclose(boxes[0, 40], [-16, -16, 48, 48])  # P5 cell (0, 0), centre (16, 16)
    np.testing.assert_allclose(probs, 0.5)


def test_inputs_must_be_multiples_of_32():
    model = jaxvision.create_model("yolov8n_det")
    x = jax.ShapeDtypeStruct((1, 100, 96, 3), jnp.float32)
    with pytest.raises(ValueError, match="multiples of 32"):
        jax.eval_shape(lambda x: model.init({"params": jax.random.key(0)}, x, train=False), x)

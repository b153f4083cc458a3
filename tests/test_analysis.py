"""FLOP and parameter counting against the reference figures (torch.utils.flop_counter)."""

from __future__ import annotations

import pytest

import jaxvision
from jaxvision.analysis import layer_table, model_flops


@pytest.mark.parametrize(
    "name", ["efficientnet_b0", "tf_efficientnet_b0", "yolov8n_cls", "yolov8s_cls"]
)
def test_flops_equal_the_reference_count(name):
    info = jaxvision.model_info(name)
    assert model_flops(jaxvision.create_model(name), info.resolution) == info.reference_flops


def test_depthwise_flops_do_not_depend_on_the_formulation():
    shifted = jaxvision.create_model("efficientnet_b0", depthwise_implementation="shifted")
    xla = jaxvision.create_model("efficientnet_b0", depthwise_implementation="xla")
    assert model_flops(shifted, 64) == model_flops(xla, 64)


@pytest.mark.parametrize("name", ["vit_ti16", "vit_b32"])
def test_vit_flops_are_the_reference_plus_the_attention_products(name):
    # The reference counter sees only the projections; we also count QK^T and AV:
    # 2 products x 2 FLOPs x L layers x T^2 x D, with T = N + 1 tokens.
    info = jaxvision.model_info(name)
    model = jaxvision.create_model(name)
    tokens = (info.resolution // model.patch_size) ** 2 + 1
    attention = 2 * 2 * model.num_layers * tokens**2 * model.hidden_size
    assert model_flops(model, info.resolution) == info.reference_flops + attention


def test_layer_table_lists_modules_with_shapes_and_parameters():
    rows = layer_table(jaxvision.create_model("yolov8n_cls", num_classes=10), 64, depth=1)
    names = [r[0] for r in rows]
    assert names[0] == "(model)" and rows[0][1] == "(1, 10)"
    total = rows[0][2]
    assert total == sum(r[2] for r in rows[1:])  # top-level modules partition the parameters


def test_scanned_blocks_are_counted_once_per_block():
    looped = jaxvision.create_model("vit_ti16", image_size=32, patch_size=8)
    scanned = jaxvision.create_model("vit_ti16", image_size=32, patch_size=8, scan_blocks=True)
    assert model_flops(scanned, 32) == model_flops(looped, 32)

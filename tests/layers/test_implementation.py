"""implementation="auto": one backend rule for every layer, checked by faking the backend."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.layers import implementation
from jaxvision.layers.attention import MultiHeadSelfAttention
from jaxvision.layers.conv import Conv2d
from jaxvision.layers.depthwise import DepthwiseConv2d
from jaxvision.layers.implementation import AUTO, resolve_implementation
from jaxvision.layers.patch_embed import PatchEmbed
from jaxvision.registry import create_model


@pytest.fixture
def backend(monkeypatch):
    """``backend("gpu")`` makes the rule see that platform (the computation still runs here)."""

    def report(name):
        monkeypatch.setattr(implementation, "backend", lambda: name)

    return report


@pytest.fixture
def fused_calls(monkeypatch):
    """Counts the calls of ``jax.nn.dot_product_attention`` (the "fused" formulation)."""
    calls = []
    original = jax.nn.dot_product_attention

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
    return calls


@pytest.mark.parametrize(
    "platform,expected",
    [
        ("cpu", {"conv1x1": "matmul", "depthwise": "shifted", "attention": "explicit"}),
        ("gpu", {"conv1x1": "matmul", "depthwise": "xla", "attention": "fused"}),
        ("tpu", {"conv1x1": "matmul", "depthwise": "xla", "attention": "fused"}),
    ],
)
def test_the_rule_per_backend(backend, platform, expected):
    backend(platform)
    for layer, choice in expected.items():
        assert resolve_implementation(layer, "auto", ("auto", choice, "other")) == choice
    assert resolve_implementation("patch_embed", "auto", ("auto", "conv", "dense")) == "dense"
    assert resolve_implementation("conv", "auto", ("auto", "xla", "matmul")) == "xla"
    # An explicit choice is kept on every backend; an unknown one is an error.
    assert resolve_implementation("attention", "explicit", ("auto", "explicit")) == "explicit"
    with pytest.raises(ValueError, match="implementation must be one of"):
        resolve_implementation("attention", "flash", ("auto", "explicit", "fused"))


def test_every_layer_in_the_table_has_both_backends():
    assert set(AUTO) == {"conv1x1", "conv", "depthwise", "patch_embed", "attention"}
    assert all(len(choices) == 2 for choices in AUTO.values())


def test_the_rule_follows_the_platform_jax_reports(monkeypatch):
    # Through jax.default_backend itself (the fixture above fakes our own backend()): the rule
    # must ask JAX each time, not decide once at import or hard-code a platform.
    cases = (("cpu", "shifted"), ("gpu", "xla"), ("tpu", "xla"), ("cpu", "shifted"))
    for platform, expected in cases:
        monkeypatch.setattr(jax, "default_backend", lambda p=platform: p)
        assert implementation.backend() == platform
        assert resolve_implementation("depthwise", "auto", ("auto", "shifted", "xla")) == expected


def _attention_inputs():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 12)), jnp.float32)
    layer = MultiHeadSelfAttention(num_heads=3)
    return layer, x, layer.init(jax.random.key(0), x, train=False)


def test_attention_auto_is_explicit_on_cpu(backend, fused_calls):
    backend("cpu")
    layer, x, variables = _attention_inputs()
    layer.apply(variables, x, train=False)
    assert fused_calls == []


def test_attention_auto_is_fused_on_gpu_unless_weights_are_needed(backend, fused_calls):
    layer, x, variables = _attention_inputs()
    backend("cpu")
    explicit = layer.apply(variables, x, train=False)
    backend("gpu")
    fused = layer.apply(variables, x, train=False)
    assert len(fused_calls) == 1
    np.testing.assert_allclose(fused, explicit, rtol=1e-5, atol=1e-5)

    # Sown weights: "fused" has none, so "auto" computes them explicitly.
    _, state = layer.clone(sow_attention=True).apply(
        variables, x, train=False, mutable=["intermediates"]
    )
    assert state["intermediates"]["attention"][0].shape == (2, 3, 5, 5)
    # Attention dropout in training likewise; in evaluation it does not apply.
    dropout = layer.clone(attention_drop_rate=0.1)
    dropout.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
    assert len(fused_calls) == 1
    dropout.apply(variables, x, train=False)
    assert len(fused_calls) == 2


def test_a_vit_gives_the_same_logits_under_either_rule(backend, fused_calls):
    model = create_model(
        "vit_ti16",
        num_classes=4,
        image_size=16,
        patch_size=4,
        hidden_size=12,
        num_layers=2,
        num_heads=3,
        mlp_dim=24,
    )
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 16, 16, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), x, train=False)
    backend("cpu")
    on_cpu = model.apply(variables, x, train=False)
    backend("gpu")
    on_gpu = model.apply(variables, x, train=False)
    assert len(fused_calls) == 2  # one per encoder block
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-5, atol=1e-5)


def _primitives(fn, *args):
    return {eqn.primitive.name for eqn in jax.make_jaxpr(fn)(*args).eqns}


@pytest.mark.parametrize("platform", ["cpu", "gpu"])
def test_convolution_layers_follow_the_rule(backend, platform):
    backend(platform)
    x = jnp.ones((1, 8, 8, 4))
    depthwise = DepthwiseConv2d(3)
    variables = depthwise.init(jax.random.key(0), x)
    grouped = "conv_general_dilated" in _primitives(lambda v: depthwise.apply(v, x), variables)
    assert grouped == (platform == "gpu")  # "xla" on GPU, shifted multiply-adds on CPU
    # 1x1 convolutions and patch embeddings are matrix multiplies on every backend.
    pointwise = Conv2d(6, 1)
    variables = pointwise.init(jax.random.key(0), x)
    assert "conv_general_dilated" not in _primitives(lambda v: pointwise.apply(v, x), variables)
    embed = PatchEmbed(6, 4)
    variables = embed.init(jax.random.key(0), x[..., :3])
    assert "conv_general_dilated" not in _primitives(
        lambda v: embed.apply(v, x[..., :3]), variables
    )

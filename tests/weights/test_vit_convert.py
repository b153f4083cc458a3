"""ViT weight import: timm / torchvision state dicts -> the reference's logits, key checking,
position-embedding resizing, scanned conversion."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxvision.models.vit import VisionTransformer
from jaxvision.registry import create_model
from jaxvision.weights import WeightConversionError, convert

# A small configuration, passed to `convert` as overrides of vit_ti16 (no torch needed).
SMALL = dict(image_size=16, patch_size=4, hidden_size=8, num_layers=2, num_heads=2, mlp_dim=16)


def _timm_state_dict(*, classes=3, grid=4, seed=0, width=8, layers=2, mlp=16, patch=4):
    """Random arrays under timm's names and PyTorch layouts."""
    rng = np.random.default_rng(seed)
    r = lambda *shape: rng.normal(0.0, 0.3, shape).astype(np.float32)
    sd = {
        "cls_token": r(1, 1, width),
        "pos_embed": r(1, 1 + grid * grid, width),
        "patch_embed.proj.weight": r(width, 3, patch, patch),
        "patch_embed.proj.bias": r(width),
        "norm.weight": 1 + r(width),
        "norm.bias": r(width),
        "head.weight": r(classes, width),
        "head.bias": r(classes),
    }
    for i in range(layers):
        p = f"blocks.{i}"
        sd |= {
            f"{p}.norm1.weight": 1 + r(width), f"{p}.norm1.bias": r(width),
            f"{p}.attn.qkv.weight": r(3 * width, width), f"{p}.attn.qkv.bias": r(3 * width),
            f"{p}.attn.proj.weight": r(width, width), f"{p}.attn.proj.bias": r(width),
            f"{p}.norm2.weight": 1 + r(width), f"{p}.norm2.bias": r(width),
            f"{p}.mlp.fc1.weight": r(mlp, width), f"{p}.mlp.fc1.bias": r(mlp),
            f"{p}.mlp.fc2.weight": r(width, mlp), f"{p}.mlp.fc2.bias": r(width),
        }  # fmt: skip
    return sd


def _nhwc(x):
    return jnp.asarray(x.numpy().transpose(0, 2, 3, 1))


def _max_error_relative_to_logit_scale(ours, reference):
    ours, reference = np.asarray(ours), np.asarray(reference)
    assert ours.shape == reference.shape
    return np.abs(ours - reference).max() / np.abs(reference).max()


# --- Without torch: layouts, keys, scanned conversion -----------------------------------------


def test_timm_layouts_are_transposed_and_classes_read_from_the_head():
    sd = _timm_state_dict(classes=3)
    params = convert("vit_ti16", sd, source="timm", **SMALL)["params"]
    np.testing.assert_array_equal(
        params["patch_embed"]["kernel"], sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0)
    )
    block = params["encoder_block1"]
    np.testing.assert_array_equal(
        block["attention"]["qkv"]["kernel"], sd["blocks.1.attn.qkv.weight"].T
    )
    np.testing.assert_array_equal(block["mlp"]["fc2"]["kernel"], sd["blocks.1.mlp.fc2.weight"].T)
    np.testing.assert_array_equal(block["mlp_norm"]["scale"], sd["blocks.1.norm2.weight"])
    np.testing.assert_array_equal(params["pos_embed"]["embedding"], sd["pos_embed"])
    assert params["head"]["kernel"].shape == (8, 3)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda sd: sd.pop("blocks.1.norm2.weight"),
         r"missing keys \(1\): blocks\.1\.norm2\.weight"),
        (lambda sd: sd.update({"blocks.2.norm1.weight": np.ones(8, np.float32)}),
         r"unexpected keys \(1\): blocks\.2\.norm1\.weight"),
        (lambda sd: sd.update({"blocks.0.mlp.fc1.bias": np.ones(15, np.float32)}),
         r"mis-shaped keys \(1\): blocks\.0\.mlp\.fc1\.bias: got \(15,\), expected \(16,\)"),
        (lambda sd: sd.update({"blocks.0.attn.qkv.weight": np.ones((24, 7), np.float32)}),
         r"blocks\.0\.attn\.qkv\.weight: got \(24, 7\), expected \(24, 8\)"),
        (lambda sd: sd.update({"head.bias": np.ones(4, np.float32)}),
         r"head\.bias: got \(4,\), expected \(3,\)"),
        (lambda sd: sd.update({"pos_embed": np.ones((1, 16, 8), np.float32)}),
         r"pos_embed: got \(1, 16, 8\)"),
    ],
)  # fmt: skip
def test_missing_extra_or_misshaped_keys_are_named(edit, message):
    sd = _timm_state_dict()
    edit(sd)
    with pytest.raises(WeightConversionError, match=message):
        convert("vit_ti16", sd, source="timm", **SMALL)


def test_a_checkpoint_of_another_depth_is_refused():
    sd = _timm_state_dict(layers=3)
    with pytest.raises(WeightConversionError, match=r"unexpected keys \(12\): blocks\.2\."):
        convert("vit_ti16", sd, source="timm", **SMALL)


_LOOPED = VisionTransformer(num_classes=3, **SMALL)
_SCANNED = VisionTransformer(num_classes=3, scan_blocks=True, **SMALL)


@jax.jit
def _logits_both(looped, scanned, x):
    return _LOOPED.apply(looped, x, train=False), _SCANNED.apply(scanned, x, train=False)


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_scanned_and_looped_conversions_give_the_same_logits(seed):
    sd = _timm_state_dict(seed=seed)
    looped = convert("vit_ti16", sd, source="timm", **SMALL)
    scanned = convert("vit_ti16", sd, source="timm", scan_blocks=True, **SMALL)
    assert scanned["params"]["encoder_blocks"]["attention"]["qkv"]["kernel"].shape == (2, 8, 24)
    x = jnp.asarray(np.random.default_rng(seed).normal(size=(2, 16, 16, 3)), jnp.float32)
    y_loop, y_scan = _logits_both(looped, scanned, x)
    np.testing.assert_allclose(np.asarray(y_scan), np.asarray(y_loop), atol=1e-5, rtol=1e-5)


def test_conversion_to_another_image_size_resizes_the_position_embedding():
    sd = _timm_state_dict(grid=4)
    params = convert("vit_ti16", sd, source="timm", **{**SMALL, "image_size": 24})["params"]
    embedding = params["pos_embed"]["embedding"]
    assert embedding.shape == (1, 1 + 6 * 6, 8)
    np.testing.assert_array_equal(embedding[:, 0], sd["pos_embed"][:, 0])  # class token kept


# --- Against the references -------------------------------------------------------------------


def _randomise(model, torch, *, head_names=("head.weight", "heads.head.weight")):
    """Move every bias, LayerNorm and token parameter away from its initial value, so that a
    wrong mapping of any of them changes the logits (torchvision's head starts at zero), and make
    the position embedding large enough that a wrong interpolation shows."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in head_names:
                p.normal_(0.0, 0.1)
            elif name in ("pos_embed", "encoder.pos_embedding"):
                p.normal_(0.0, 0.5)
            elif p.ndim == 1 or name in ("cls_token", "class_token"):
                p.add_(torch.randn_like(p) * 0.1)
            parent = name.split(".")[-2] if "." in name else ""
            if parent.startswith(("norm", "ln")) and name.endswith("weight"):
                p.mul_(torch.rand_like(p) + 0.5)


@pytest.fixture(scope="module")
def timm_tiny():
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=11).eval()
    _randomise(model, torch)
    return torch, timm, model


@pytest.mark.reference
def test_timm_vit_tiny_gives_the_reference_logits(timm_tiny):
    torch, _, model = timm_tiny
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = model(x).numpy()
    variables = convert("vit_ti16", model.state_dict(), source="timm")
    ours = create_model("vit_ti16", num_classes=11)
    logits = jax.jit(lambda v, x: ours.apply(v, x, train=False))(variables, _nhwc(x))
    assert _max_error_relative_to_logit_scale(logits, expected) < 2e-5


@pytest.mark.reference
def test_timm_vit_tiny_at_another_resolution_matches_timms_own_resizing(timm_tiny):
    """timm loads a 224 px checkpoint into a 160 px model with ``checkpoint_filter_fn``
    (bicubic, antialiased); converting with ``image_size=160`` must give the same logits. The
    scanned layout is used here so the test also covers conversion into it."""
    torch, timm, model = timm_tiny
    from timm.models.vision_transformer import checkpoint_filter_fn

    at_160 = timm.create_model("vit_tiny_patch16_224", img_size=160, num_classes=11).eval()
    at_160.load_state_dict(checkpoint_filter_fn(model.state_dict(), at_160))
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        expected = at_160(x).numpy()
    variables = convert(
        "vit_ti16", model.state_dict(), source="timm", image_size=160, scan_blocks=True
    )
    assert variables["params"]["pos_embed"]["embedding"].shape == (1, 101, 192)
    ours = create_model("vit_ti16", num_classes=11, image_size=160, scan_blocks=True)
    logits = jax.jit(lambda v, x: ours.apply(v, x, train=False))(variables, _nhwc(x))
    assert _max_error_relative_to_logit_scale(logits, expected) < 2e-5


@pytest.mark.reference
def test_torchvision_vit_b16_gives_the_reference_logits():
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = torchvision.models.vit_b_16().eval()
    _randomise(model, torch)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = model(x).numpy()
    # Scanned: one block to compile instead of twelve, and the conversion into that layout.
    variables = convert("vit_b16", model.state_dict(), source="torchvision", scan_blocks=True)
    ours = create_model("vit_b16", scan_blocks=True)
    logits = jax.jit(lambda v, x: ours.apply(v, x, train=False))(variables, _nhwc(x))
    assert _max_error_relative_to_logit_scale(logits, expected) < 2e-5


@pytest.mark.reference
def test_torchvision_resizing_and_legacy_mlp_names():
    """torchvision's ``interpolate_embeddings`` (bicubic, align_corners=True) on a small
    torchvision ViT, and the pre-0.13 ``mlp.linear_1`` / ``linear_2`` names."""
    torch = pytest.importorskip("torch")
    vision_transformer = pytest.importorskip("torchvision.models.vision_transformer")
    torch.manual_seed(1)
    torch.set_num_threads(2)
    config = dict(patch_size=4, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16, num_classes=3)
    small = vision_transformer.VisionTransformer(image_size=16, **config).eval()
    _randomise(small, torch)
    state = small.state_dict()
    resized_state = vision_transformer.interpolate_embeddings(24, 4, state)
    at_24 = vision_transformer.VisionTransformer(image_size=24, **config).eval()
    at_24.load_state_dict(resized_state)
    x = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        expected = at_24(x).numpy()

    legacy = {k.replace("mlp.0.", "mlp.linear_1.").replace("mlp.3.", "mlp.linear_2."): v
              for k, v in state.items()}  # fmt: skip
    assert any("linear_1" in k for k in legacy)
    overrides = {**SMALL, "image_size": 24}
    ours = create_model("vit_ti16", num_classes=3, **overrides)
    for sd in (state, legacy):
        variables = convert("vit_ti16", sd, source="torchvision", **overrides)
        logits = ours.apply(variables, _nhwc(x), train=False)
        assert _max_error_relative_to_logit_scale(logits, expected) < 2e-5

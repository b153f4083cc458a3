"""OmniVec: one shared backbone under five encoders and their heads; masking; the ViT inside."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from hypothesis import given
from hypothesis import strategies as st
from omnivec_micro import MICRO, random_inputs

from jaxvision.models.omnivec import (
    MODALITIES,
    AudioEncoder,
    ImageEncoder,
    OmniVec,
    PointEncoder,
    SummaryDecoder,
    TextEncoder,
    VideoEncoder,
    count_parts,
    from_vit_params,
    masked_positions,
    random_keep,
)
from jaxvision.models.vit import VisionTransformer
from jaxvision.registry import create_model
from jaxvision.tasks.omnivec import reconstruction_loss
from jaxvision.train.finetune import merge_matching

RNGS = {"dropout": jax.random.key(1), "drop_path": jax.random.key(2), "masking": jax.random.key(3)}


def _micro(objective="tasks", **overrides):
    return create_model("omnivec_tiny", objective=objective, **{**MICRO, **overrides})


@functools.cache
def _initialised(objective="tasks"):
    model = _micro(objective)
    inputs = random_inputs(2)
    variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(inputs)
    return model, variables, inputs


@functools.cache
def _apply(objective: str, train: bool):
    """The jitted ``model.apply(variables, inputs, train=train)`` of a MICRO model."""
    model, _, _ = _initialised(objective)
    rngs = RNGS if train else None
    return jax.jit(lambda v, x, r=rngs: model.apply(v, x, train=train, rngs=r))


@functools.cache
def _pretrain_outputs():
    _, variables, inputs = _initialised("pretrain")
    return _apply("pretrain", True)(variables, inputs)


def _n(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


# --- one backbone for everything -------------------------------------------------------------


def test_every_task_depends_on_the_shared_backbone():
    model, variables, inputs = _initialised()
    apply = jax.jit(lambda v: model.apply(v, inputs, train=False))
    before = apply(variables)
    flat = traverse_util.flatten_dict(variables["params"], sep="/")
    key = "backbone/encoder_blocks/attention/qkv/kernel"  # one scalar of the first block
    flat[key] = flat[key].at[0, 0, 0].add(0.5)
    after = apply({"params": traverse_util.unflatten_dict(flat, sep="/")})
    for modality in MODALITIES:
        b, a = before[modality], after[modality]
        if modality == "text":
            b, a = b["logits"], a["logits"]
        assert not np.allclose(np.asarray(b), np.asarray(a)), modality


def _block_params(width: int, mlp: int) -> int:
    """A pre-LN ViT block counted by hand: two LayerNorms, qkv, output, the MLP's two layers."""
    return (
        2 * 2 * width
        + (width * 3 * width + 3 * width)
        + (width * width + width)
        + (width * mlp + mlp)
        + (mlp * width + width)
    )


def test_the_backbone_does_not_grow_with_tasks_or_modalities():
    model = _micro()
    want = MICRO["num_layers"] * _block_params(32, 64) + 2 * 32  # + the final LayerNorm
    seen = []
    for modalities in (("image",), ("image", "audio"), MODALITIES):
        inputs = random_inputs(1, modalities=modalities)
        shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), inputs)
        parts = count_parts(shapes["params"])
        assert parts["backbone"] == want
        seen.append(parts["encoders"] + parts["heads"])
    pre = jax.eval_shape(
        lambda x: _micro("pretrain").init(jax.random.key(0), x, train=False), random_inputs(1)
    )
    assert count_parts(pre["params"])["backbone"] == want
    assert seen[0] < seen[1] < seen[2]  # encoders and heads are what modalities add


def test_omnivec_base_backbone_is_exactly_vit_b16s_encoder():
    omni = create_model("omnivec_base")
    x = {"image": jnp.zeros((1, 224, 224, 3))}
    shapes = jax.eval_shape(lambda: omni.init(jax.random.key(0), x, train=False))["params"]
    vit = create_model("vit_b16", scan_blocks=True)
    vit_shapes = jax.eval_shape(lambda: vit.init(jax.random.key(0), x["image"], train=False))[
        "params"
    ]
    expected = from_vit_params(vit_shapes)
    same = lambda a, b: jax.tree.map(lambda u, v: u.shape == v.shape, a, b)
    assert all(jax.tree.leaves(same(shapes["backbone"], expected["backbone"])))
    assert _n(shapes["backbone"]) == 12 * _block_params(768, 3072) + 2 * 768


# --- the image path is a ViT ------------------------------------------------------------------


def _vit_into_omnivec(vit_variables, omni, image):
    fresh = jax.jit(lambda: omni.init(jax.random.key(0), {"image": image}, train=False))()
    merged, report = merge_matching(fresh, {"params": from_vit_params(vit_variables["params"])})
    assert not report.reinitialised and not report.unused
    return merged


def test_a_small_vit_loaded_into_the_image_path_gives_its_logits():
    config = dict(image_size=16, patch_size=8, hidden_size=32, num_layers=2, num_heads=2)
    vit = VisionTransformer(num_classes=7, mlp_dim=64, **config)
    image = jax.random.normal(jax.random.key(5), (3, 16, 16, 3))
    vit_vars = vit.init(jax.random.key(1), image, train=False)
    vit_vars = jax.tree.map(
        lambda p: p + 0.05 * jnp.sin(jnp.arange(p.size).reshape(p.shape)), vit_vars
    )
    omni = _micro(num_classes=7)
    merged = _vit_into_omnivec(vit_vars, omni, image)
    ours = jax.jit(lambda v: omni.apply(v, {"image": image}, train=False)["image"])(merged)
    theirs = jax.jit(lambda v: vit.apply(v, image, train=False))(vit_vars)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.reference
def test_omnivec_base_with_vit_b16_weights_from_timm_gives_vit_b16s_logits():
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    from jaxvision.weights import convert

    torch.manual_seed(0)
    reference = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    variables = convert("vit_b16", reference.state_dict(), source="timm")
    image = jax.random.normal(jax.random.key(0), (2, 224, 224, 3))
    vit_logits = jax.jit(lambda v, x: create_model("vit_b16").apply(v, x, train=False))(
        variables, image
    )
    omni = create_model("omnivec_base")
    merged = _vit_into_omnivec(variables, omni, image)
    ours = jax.jit(lambda v, x: omni.apply(v, {"image": x}, train=False)["image"])(merged, image)
    scale = float(np.max(np.abs(vit_logits)))
    assert float(np.max(np.abs(ours - vit_logits))) / scale < 1e-5
    with torch.no_grad():
        timm_logits = reference(torch.from_numpy(np.asarray(image).transpose(0, 3, 1, 2))).numpy()
    assert float(np.max(np.abs(ours - timm_logits))) / scale < 2e-5


# --- masked pre-training --------------------------------------------------------------------


@pytest.mark.parametrize("n, ratio, seed", [(1, 0.75, 0), (16, 0.75, 1), (33, 0.6, 2), (7, 0.0, 3)])
def test_random_keep_keeps_exactly_the_requested_number_of_distinct_tokens(n, ratio, seed):
    keep = np.asarray(random_keep(jax.random.key(seed), 3, n, ratio))
    expected = max(1, n - int(round(ratio * n)))
    assert keep.shape == (3, expected)
    for row in keep:
        assert len(set(row.tolist())) == expected and row.min() >= 0 and row.max() < n
    masked = np.asarray(masked_positions(jnp.asarray(keep), n))
    np.testing.assert_array_equal(masked.sum(axis=1), n - expected)
    for row, kept in zip(masked, keep, strict=True):
        assert not row[kept].any()


def test_pretraining_masks_the_configured_fraction_of_every_modality():
    model, _, _ = _initialised("pretrain")
    out = _pretrain_outputs()
    for modality, ratio in zip(MODALITIES, model.mask_ratios, strict=True):
        masked = np.asarray(out[modality]["masked"])
        n = masked.shape[1]
        np.testing.assert_array_equal(masked.sum(axis=1), n - max(1, n - round(ratio * n)))
        assert out[modality]["prediction"].shape[:2] == out[modality]["target"].shape[:2]


@pytest.mark.parametrize("modality", MODALITIES)
def test_the_reconstruction_loss_reads_only_the_masked_tokens(modality):
    out = _pretrain_outputs()[modality]
    visible = np.asarray(out["masked"]) == 0
    loss = np.asarray(reconstruction_loss(modality, out))
    rng = np.random.default_rng(0)

    def changed(where):
        prediction = np.array(out["prediction"])
        prediction[where] += rng.normal(size=prediction[where].shape).astype(np.float32)
        target = np.array(out["target"])
        if modality == "text":
            target[where] = rng.integers(4, 100, size=target[where].shape)
        else:
            target[where] += rng.normal(size=target[where].shape).astype(np.float32)
        edited = {**out, "prediction": jnp.asarray(prediction), "target": jnp.asarray(target)}
        return np.asarray(reconstruction_loss(modality, edited))

    np.testing.assert_array_equal(changed(visible), loss)  # visible tokens: no effect at all
    assert not np.allclose(changed(~visible), loss)  # masked tokens: they are the loss
    grad = jax.grad(lambda p: reconstruction_loss(modality, {**out, "prediction": p}).sum())(
        out["prediction"]
    )
    assert not np.asarray(grad)[visible].any()


def test_evaluation_masks_are_fixed_and_training_masks_follow_the_masking_stream():
    model, variables, inputs = _initialised("pretrain")
    inputs = {"image": inputs["image"]}
    ev = jax.jit(lambda: model.apply(variables, inputs, train=False)["image"]["masked"])
    np.testing.assert_array_equal(ev(), ev())
    tr = jax.jit(
        lambda k: model.apply(variables, inputs, train=True, rngs={**RNGS, "masking": k})["image"][
            "masked"
        ]
    )
    assert not np.array_equal(tr(jax.random.key(0)), tr(jax.random.key(1)))


# --- encoders: output shapes for input shapes (abstractly: no compilation) ----------------------


def _shape(module, x):
    out, _ = jax.eval_shape(lambda: module.init_with_output(jax.random.key(0), x, train=False))
    return out


@given(st.integers(1, 4), st.sampled_from([4, 8]), st.integers(1, 3), st.sampled_from([1, 3]))
def test_image_and_video_encoder_shapes(grid, patch, frames, channels):
    size = grid * patch
    image = jnp.zeros((2, size, size, channels))
    tokens = _shape(ImageEncoder(16, size, patch, channels=channels), image)
    assert tokens.tokens.shape == (2, 1 + grid * grid, 16)
    assert tokens.positions.shape == (2, grid * grid, 16)
    assert tokens.targets.shape == (2, grid * grid, patch * patch * channels)
    clips = jnp.zeros((2, 2 * frames, size, size, channels))
    video = VideoEncoder(16, 2 * frames, size, (2, patch), channels=channels)
    tokens = _shape(video, clips)
    assert tokens.tokens.shape == (2, 1 + frames * grid * grid, 16)
    assert tokens.targets.shape == (2, frames * grid * grid, 2 * patch * patch * channels)


@given(st.integers(400, 3000), st.sampled_from([64, 128]), st.sampled_from([8, 16]))
def test_audio_encoder_shapes(samples, hop, mels):
    frames = 32
    encoder = AudioEncoder(16, samples, 8000, 256, hop, mels, frames, 8)
    tokens = _shape(encoder, jnp.zeros((2, samples)))
    n = (frames // 8) * (mels // 8)
    assert tokens.tokens.shape == (2, 1 + n, 16) and tokens.targets.shape == (2, n, 64)


@given(st.integers(16, 80), st.integers(2, 8), st.integers(2, 8))
def test_point_and_text_encoder_shapes(points, groups, group_size):
    tokens = _shape(PointEncoder(16, points, groups, group_size), jnp.zeros((2, points, 3)))
    assert tokens.tokens.shape == (2, 1 + groups, 16)
    assert tokens.targets.shape == (2, groups, group_size * 3)
    ids = jnp.ones((2, points), jnp.int32)
    tokens = _shape(TextEncoder(16, 50, points), ids)
    assert tokens.tokens.shape == (2, 1 + points, 16) and tokens.key_mask.shape == (2, 1 + points)


# --- the summarisation head ------------------------------------------------------------------


def test_summary_decoding_is_causal_greedy_and_ignores_padding():
    model, variables, inputs = _initialised()
    text = {k: inputs[k] for k in ("text", "summary")}
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False)["text"])
    out = apply(variables, text)
    assert out["tokens"].shape == (2, MICRO["summary_length"]) and out["tokens"].dtype == jnp.int32
    assert out["logits"].shape == (2, MICRO["summary_length"], 512)
    # Teacher forcing: logits at position i depend only on summary tokens before i.
    edited = dict(text, summary=text["summary"].copy())
    edited["summary"][:, 3:] = 7
    again = apply(variables, edited)
    np.testing.assert_allclose(again["logits"][:, :4], out["logits"][:, :4], rtol=1e-5, atol=1e-6)
    assert not np.allclose(again["logits"][:, 4:], out["logits"][:, 4:])
    # Greedy decoding: each token is the argmax given the previous ones.
    tokens = np.asarray(out["tokens"])
    logits = apply(variables, dict(text, summary=tokens))["logits"]
    np.testing.assert_array_equal(np.argmax(logits, -1), tokens)
    # Padding is invisible: the second example's padded tail may hold any embedding.
    emb = variables["params"]["text_encoder"]["token_embed"]["embedding"]
    moved = jax.tree.map(lambda x: x, variables)
    moved["params"]["text_encoder"]["token_embed"]["embedding"] = emb.at[0].add(1.0)
    padded = apply(moved, text)["logits"]
    np.testing.assert_allclose(padded[1], out["logits"][1], rtol=1e-5, atol=1e-5)


def _decoder_outputs(copy: bool, gate_bias: float = 0.0):
    """A small summary decoder's log-probabilities on random memory and a document with padding
    (the last 3 positions), its gate bias set to ``gate_bias``; and the document's ids."""
    decoder = SummaryDecoder(
        vocab_size=40, summary_length=5, num_layers=1, num_heads=2, mlp_dim=32, copy=copy
    )
    rng = np.random.default_rng(0)
    memory = jnp.asarray(rng.normal(size=(2, 1 + 9, 16)), jnp.float32)
    ids = rng.integers(4, 12, size=(2, 9)).astype(np.int32)  # document words: ids 4..11 only
    ids[:, -3:] = 0
    mask = jnp.concatenate([jnp.ones((2, 1), bool), ids != 0], axis=1)
    previous = jnp.asarray(rng.integers(4, 40, size=(2, 5)), jnp.int32)
    params = decoder.init(jax.random.key(0), memory, mask, ids, previous, train=False)["params"]
    if copy:
        params["copy_gate"]["bias"] = jnp.full_like(params["copy_gate"]["bias"], gate_bias)
    out = decoder.apply({"params": params}, memory, mask, ids, previous, train=False)
    return np.asarray(out), ids


def test_summary_decoder_is_a_pointer_generator():
    # Either way the output is a log-probability distribution over the vocabulary.
    for copy in (False, True):
        logp, _ = _decoder_outputs(copy)
        np.testing.assert_allclose(jax.nn.logsumexp(logp, axis=-1), 0.0, atol=1e-5)
    # With the gate shut on the vocabulary, all the mass is on words of the document (not on its
    # padding), spread over them unevenly by the pointer's attention.
    logp, ids = _decoder_outputs(True, gate_bias=-30.0)
    p = np.exp(logp)
    for b in range(2):
        words = sorted(set(ids[b][ids[b] != 0].tolist()))
        np.testing.assert_allclose(p[b][:, words].sum(-1), 1.0, atol=1e-5)
        assert p[b][:, 0].max() < 1e-6
        assert np.ptp(p[b][:, words]) > 1e-3
    # With it open, the vocabulary's softmax alone: what copy=False computes from the same
    # parameters (the pointer's own are ignored).
    open_, _ = _decoder_outputs(True, gate_bias=30.0)
    plain, _ = _decoder_outputs(False)
    np.testing.assert_allclose(np.exp(open_), np.exp(plain), atol=1e-6)


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({"image": np.zeros((1, 32, 32, 3), np.float32)}, "built for images of shape"),
        ({"audio": np.zeros((1, 10), np.float32)}, "built for waveforms"),
        ({"sound": np.zeros((1, 10), np.float32)}, "unknown OmniVec inputs"),
        ({}, "none of the modalities"),
        ({"text": np.zeros((1, 64), np.float32)}, "integer token ids"),
    ],
)
def test_bad_inputs_are_named(inputs, message):
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(lambda: _micro().init(jax.random.key(0), inputs, train=False))


def test_objective_is_checked():
    with pytest.raises(ValueError, match="objective"):
        jax.eval_shape(
            lambda: OmniVec(objective="classify").init(
                jax.random.key(0), {"image": jnp.zeros((1, 224, 224, 3))}, train=False
            )
        )


def test_summary_copy_must_be_a_bool():
    # The command line parses "false" to False, but a string from Python code (or a config file)
    # would read as True.
    with pytest.raises(ValueError, match="summary_copy must be True or False"):
        jax.eval_shape(
            lambda: _micro(summary_copy="false").init(
                jax.random.key(0), random_inputs(1, modalities=("image",)), train=False
            )
        )

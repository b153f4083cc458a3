"""The solutions to the exercises of tutorials/04_omnivec.ipynb (tutorials/solutions/04_omnivec.py),
each checked against the library and an independent computation."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvision
from jaxvision.data.modalities import synthetic
from jaxvision.metrics.rouge import lcs_length as library_lcs_length
from jaxvision.metrics.rouge import rouge_l
from jaxvision.models.omnivec import VideoEncoder, masked_positions, random_keep
from jaxvision.tasks.omnivec import data_sizes, reconstruction_loss

SOLUTION = Path(__file__).parents[1] / "tutorials" / "solutions" / "04_omnivec.py"


def _load():
    spec = importlib.util.spec_from_file_location("solutions_04_omnivec", SOLUTION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


omnivec = _load()


# ------------------------------------------------------------------ 1. tokens of a video


def _encoder_tokens(num_frames, frame_size, tubelet, channels=1):
    """Tokens the library's VideoEncoder makes (class token excluded), traced abstractly."""
    encoder = VideoEncoder(
        hidden_size=32,
        num_frames=num_frames,
        frame_size=frame_size,
        tubelet=tubelet,
        channels=channels,
    )
    clips = jax.ShapeDtypeStruct((1, num_frames, frame_size, frame_size, channels), jnp.float32)
    variables = jax.eval_shape(lambda x: encoder.init(jax.random.key(0), x, train=False), clips)
    tokens = jax.eval_shape(lambda v, x: encoder.apply(v, x, train=False), variables, clips)
    return tokens.tokens.shape[1] - 1


@pytest.mark.parametrize("tubelet", [(2, 8), (4, 8), (2, 4), (8, 16), (1, 32), (4, 2)])
def test_video_tokens_equal_the_encoder(tubelet):
    assert omnivec.video_tokens(8, 32, tubelet) == _encoder_tokens(8, 32, tubelet)


def test_video_tokens_of_omnivec_base_and_tiny():
    base = jaxvision.create_model("omnivec_base")
    assert base.tubelet == (2, 16) and (base.video_frames, base.video_size) == (16, 224)
    assert omnivec.video_tokens(16, 224, (2, 16)) == 8 * 14 * 14 == 1568
    assert omnivec.video_tokens(16, 224, (4, 16)) == 4 * 14 * 14 == 784
    assert _encoder_tokens(16, 224, (4, 16), channels=3) == 784
    tiny = jaxvision.create_model("omnivec_tiny")
    n = omnivec.video_tokens(tiny.video_frames, tiny.video_size, tiny.tubelet)
    assert n == _encoder_tokens(tiny.video_frames, tiny.video_size, tiny.tubelet) == 64


def test_video_tokens_refuse_tubelets_that_do_not_tile():
    with pytest.raises(ValueError, match="do not tile"):
        omnivec.video_tokens(8, 32, (3, 8))
    with pytest.raises(ValueError, match="do not tile"):
        omnivec.video_tokens(8, 32, (2, 5))


# --------------------------------------------------------------------- 2. masked MSE


def _masked_batch(seed, batch=5, tokens=16, width=12, ratio=0.75):
    rng = np.random.default_rng(seed)
    prediction = rng.normal(size=(batch, tokens, width)).astype(np.float32)
    target = rng.normal(size=(batch, tokens, width)).astype(np.float32)
    keep = random_keep(jax.random.key(seed), batch, tokens, ratio)
    return prediction, target, np.asarray(masked_positions(keep, tokens)), np.asarray(keep)


@pytest.mark.parametrize("seed,ratio", [(0, 0.75), (1, 0.6), (2, 0.3), (3, 0.0)])
def test_masked_mse_equals_reconstruction_loss(seed, ratio):
    prediction, target, masked, _ = _masked_batch(seed, ratio=ratio)
    out = {"prediction": jnp.asarray(prediction), "target": jnp.asarray(target), "masked": masked}
    ours = omnivec.masked_mse(prediction, target, masked)
    assert ours.shape == (len(prediction),)
    np.testing.assert_allclose(ours, reconstruction_loss("image", out), rtol=1e-5)


def test_masked_mse_by_a_loop_and_only_masked_tokens_count():
    prediction, target, masked, keep = _masked_batch(4)
    expected = []
    for p, t, m in zip(prediction, target, masked, strict=True):
        errors = [np.mean((p[i] - t[i]) ** 2) for i in range(len(m)) if m[i]]
        expected.append(np.mean(errors))
    ours = omnivec.masked_mse(prediction, target, masked)
    np.testing.assert_allclose(ours, expected, rtol=1e-6)
    # Changing the prediction of visible tokens changes nothing.
    changed = prediction.copy()
    changed[np.arange(len(keep))[:, None], keep] += 10.0
    np.testing.assert_array_equal(omnivec.masked_mse(changed, target, masked), ours)
    # No masked token: 0, as the library's loss.
    none = np.zeros_like(masked)
    np.testing.assert_array_equal(omnivec.masked_mse(prediction, target, none), 0.0)
    out = {"prediction": prediction, "target": target, "masked": none}
    np.testing.assert_array_equal(reconstruction_loss("image", out), 0.0)


# ------------------------------------------------------------------------ 3. ROUGE-L


def _brute_force_lcs(a, b):
    """The longest subsequence of ``a`` that is also a subsequence of ``b``, by enumeration."""

    def is_subsequence(s, seq):
        it = iter(seq)
        return all(any(x == y for y in it) for x in s)

    for k in range(len(a), 0, -1):
        if any(is_subsequence(s, b) for s in itertools.combinations(a, k)):
            return k
    return 0


def test_lcs_length_equals_brute_force_and_the_library():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = rng.integers(0, 4, rng.integers(0, 8)).tolist()
        b = rng.integers(0, 4, rng.integers(0, 8)).tolist()
        ours = omnivec.lcs_length(a, b)
        assert ours == _brute_force_lcs(a, b) == library_lcs_length(a, b), (a, b)
    for _ in range(50):
        a = rng.integers(0, 6, rng.integers(0, 40)).tolist()
        b = rng.integers(0, 6, rng.integers(0, 40)).tolist()
        assert omnivec.lcs_length(a, b) == library_lcs_length(a, b)
    assert omnivec.lcs_length("the cat sat".split(), "the sat cat".split()) == 2


def test_rouge_l_f1_equals_the_library_on_documents_and_summaries():
    model = jaxvision.create_model("omnivec_tiny")
    data = synthetic("text", "val", num_examples=40, **data_sizes(model, "text"))
    decode = data.vocabulary.decode
    references = [decode(s) for s in data.summaries]
    documents = [decode(d) for d in data.inputs]
    pairs = [(r, r) for r in references[:3]]
    pairs += [
        (" ".join(d.split()[: len(r.split())]), r)
        for d, r in zip(documents, references, strict=True)
    ]
    pairs += [(references[i - 1], references[i]) for i in range(len(references))]
    scores = []
    for prediction, reference in pairs:
        ours = omnivec.rouge_l_f1(prediction, reference)
        assert ours == pytest.approx(rouge_l(prediction, reference)["fmeasure"], abs=1e-12)
        scores.append(ours)
    assert scores[:3] == [1.0, 1.0, 1.0]  # a summary against itself
    assert len(set(scores[3:])) >= 4 and max(scores[3:]) < 1.0  # partial overlaps, many values


@pytest.mark.parametrize(
    "prediction,reference",
    [
        ("", "anna found the key"),
        ("anna found the key", "..."),
        ("Anna FOUND the key!", "anna found, the key"),
        ("bob lost a hat", "anna found the key"),
        ("key the found anna", "anna found the key"),
        ("ä-b c1 2d", "b c1 d"),
    ],
)
def test_rouge_l_f1_edge_cases_equal_the_library(prediction, reference):
    expected = rouge_l(prediction, reference)["fmeasure"]
    assert omnivec.rouge_l_f1(prediction, reference) == pytest.approx(expected, abs=1e-12)

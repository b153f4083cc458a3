"""Multimodal data (jaxvision.data.modalities): the generators, the source, the file readers."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxvision.data import BatchLoader, DatasetError, load_dataset
from jaxvision.data.modalities import (
    MODALITIES,
    POINT_CLASSES,
    VIDEO_CLASSES,
    ModalityData,
    ModalitySource,
    augment_example,
    load_modality,
    read_off,
    sample_frames,
    surface_points,
    synthetic,
    text_vocabulary,
)
from jaxvision.data.modalities.source import shift_image
from jaxvision.data.modalities.synthetic import (
    ACTIONS,
    MAIN_CUES,
    NAMES,
    OPENERS,
    make_document,
)
from jaxvision.data.text import EOS, PAD, Vocabulary

SMALL = {"video": 120, "audio": 120, "points": 140, "text": 200}


@pytest.fixture(scope="module")
def val():
    """The default val split of every modality (generated once for the module)."""
    return {m: synthetic(m, "val") for m in MODALITIES}


# --------------------------------------------------------------------------------------------
# Generators: shapes, determinism, balance
# --------------------------------------------------------------------------------------------


def test_default_shapes_dtypes_and_labels(val):
    shapes = {
        "image": (360, 32, 32, 3),
        "video": (300, 8, 32, 32, 1),
        "audio": (300, 8000),
        "points": (300, 256, 3),
        "text": (300, 64),
    }
    classes = {"image": 10, "video": 6, "audio": 6, "points": 7}
    for m, shape in shapes.items():
        data = val[m]
        assert data.modality == m and data.inputs.shape == shape and len(data) == shape[0]
        if m == "text":
            assert data.inputs.dtype == np.int32 and data.labels is None
            assert data.class_names == [] and data.summaries.shape == (300, 12)
            assert data.summaries.dtype == np.int32 and data.vocabulary == text_vocabulary()
            continue
        assert data.inputs.dtype == np.float32 and np.all(np.isfinite(data.inputs))
        assert data.labels.dtype == np.int32 and data.labels.shape == (shape[0],)
        assert len(data.class_names) == classes[m] == data.num_classes
        assert data.labels.min() == 0 and data.labels.max() == classes[m] - 1
    for m in ("image", "video"):
        assert val[m].inputs.min() >= -1 and val[m].inputs.max() <= 1
        assert val[m].inputs.min() == -1  # black background
    assert np.allclose(np.abs(val["audio"].inputs).max(axis=1), 0.9)
    radii = np.linalg.norm(val["points"].inputs, axis=-1)
    assert np.allclose(radii.max(axis=1), 1, atol=1e-5)
    assert np.allclose(val["points"].inputs.mean(axis=1), 0, atol=1e-5)


def test_sizes_are_keyword_arguments():
    assert synthetic("image", "val", image_size=16).inputs.shape == (360, 16, 16, 3)
    video = synthetic("video", "val", num_examples=6, num_frames=5, frame_size=40, channels=3)
    assert video.inputs.shape == (6, 5, 40, 40, 3)
    assert np.array_equal(video.inputs[..., 0], video.inputs[..., 2])  # grey copied
    for size in (8, 16):  # the digit scales with the frame by default
        assert synthetic("video", "val", num_examples=6, frame_size=size).inputs.shape[2] == size
    audio = synthetic("audio", "val", num_examples=6, sample_rate=16000)
    assert audio.inputs.shape == (6, 16000)  # one second by default
    assert synthetic("audio", "val", num_examples=6, num_samples=4000).inputs.shape == (6, 4000)
    assert synthetic("points", "val", num_examples=7, num_points=100).inputs.shape == (7, 100, 3)
    text = synthetic("text", "val", num_examples=5, document_length=80, summary_length=9)
    assert text.inputs.shape == (5, 80) and text.summaries.shape == (5, 9)
    assert synthetic("image", "val", num_examples=50).inputs.shape == (50, 32, 32, 3)


def test_bad_options_raise():
    with pytest.raises(DatasetError, match="unknown size option.*'frame_size'"):
        synthetic("audio", "val", frame_size=3)
    with pytest.raises(DatasetError, match="split must be one of"):
        synthetic("audio", "training")
    with pytest.raises(DatasetError, match="unknown modality"):
        synthetic("smell", "train")
    with pytest.raises(DatasetError, match="positive integer"):
        synthetic("points", "val", num_points=0)
    with pytest.raises(DatasetError, match="document_length >= 57"):
        synthetic("text", "val", document_length=40)
    with pytest.raises(DatasetError, match="digit_size"):
        synthetic("video", "val", digit_size=30)
    with pytest.raises(DatasetError, match="360 images"):
        synthetic("image", "val", num_examples=400)


@pytest.mark.parametrize("modality", ["image", "video", "audio", "points", "text"])
def test_generators_are_deterministic_and_splits_differ(modality):
    n = None if modality == "image" else SMALL[modality]
    a = synthetic(modality, "val", seed=3, num_examples=n)
    b = synthetic(modality, "val", seed=3, num_examples=n)
    assert np.array_equal(a.inputs, b.inputs)
    assert a.labels is None or np.array_equal(a.labels, b.labels)
    assert a.summaries is None or np.array_equal(a.summaries, b.summaries)
    train = synthetic(modality, "train", seed=3, num_examples=n)
    other_seed = synthetic(modality, "val", seed=4, num_examples=n)
    # No example of val is in train (nor in val of another seed, for generated data).
    train_rows = {x.tobytes() for x in train.inputs}
    assert not any(x.tobytes() in train_rows for x in a.inputs)
    if modality != "image":  # the digits' held-out split is the same for every seed
        assert not np.array_equal(a.inputs, other_seed.inputs)


@pytest.mark.parametrize("modality", ["video", "audio", "points"])
def test_classes_are_balanced(modality):
    data = synthetic(modality, "train")
    counts = np.bincount(data.labels, minlength=data.num_classes)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 1200
    # and in no fixed order: the first 30 labels hold several classes
    assert len(set(data.labels[:30].tolist())) >= 4


# --------------------------------------------------------------------------------------------
# Generators: class-separating structure
# --------------------------------------------------------------------------------------------


def test_images_are_the_digits_upsampled(val):
    digits = load_dataset("digits", "test")
    data = val["image"]
    assert np.array_equal(data.labels, digits.labels) and data.class_names == digits.class_names
    original = digits.images[..., 0] / 255.0  # (N, 8, 8)
    x = (data.inputs + 1) / 2  # back to [0, 1]
    assert np.array_equal(x[..., 0], x[..., 2])
    # Bilinear 4x upsampling: the 4 output pixels over an input pixel sit at offsets
    # +-1/8, +-3/8 of a pixel; their mean is 3/4 of the pixel plus 1/8 of each neighbour
    # (edges replicated), along each axis.
    padded = np.pad(original, ((0, 0), (1, 1), (1, 1)), mode="edge")
    rows = 0.125 * padded[:, :-2] + 0.75 * padded[:, 1:-1] + 0.125 * padded[:, 2:]
    expected = 0.125 * rows[:, :, :-2] + 0.75 * rows[:, :, 1:-1] + 0.125 * rows[:, :, 2:]
    blocks = x[..., 0].reshape(-1, 8, 4, 8, 4).mean(axis=(2, 4))
    assert np.abs(blocks - expected).max() < 1e-4


def _centroids(video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (mass, (x, y) centre of mass) of a (T, H, W, 1) normalised clip."""
    x = (video[..., 0] + 1) / 2
    mass = x.sum(axis=(1, 2))
    ys, xs = np.mgrid[: x.shape[1], : x.shape[2]]
    centre = np.stack([(x * xs).sum((1, 2)), (x * ys).sum((1, 2))], -1) / mass[:, None]
    return mass, centre


def test_video_class_is_the_motion(val):
    data = val["video"]
    for video, label in zip(data.inputs, data.labels, strict=True):
        kind = VIDEO_CLASSES[label]
        mass, centre = _centroids(video)
        step = np.diff(centre, axis=0)  # (T - 1, 2) pixels per frame
        if kind == "zoom":
            assert np.all(mass[1:] >= 0.95 * mass[:-1]) and mass[-1] > 3 * mass[0]
            assert np.abs(centre - centre[0]).max() < 1.5
            continue
        assert np.allclose(mass, mass[0], rtol=1e-4)  # the whole digit stays in view
        if kind == "circle":
            cross = step[:-1, 0] * step[1:, 1] - step[:-1, 1] * step[1:, 0]
            assert np.all(cross > 0)  # turning clockwise on screen (y points down)
            continue
        axis, sign = {"right": (0, 1), "left": (0, -1), "down": (1, 1), "up": (1, -1)}[kind]
        assert np.all(sign * step[:, axis] > 1.0)  # at least a pixel a frame along the motion
        total = centre[-1] - centre[0]
        assert abs(total[1 - axis]) <= 0.26 * abs(total[axis])  # the sideways drift is small
        assert np.allclose(step, step[0], atol=1e-3)  # constant velocity


def _by_class(data: ModalityData, name: str) -> np.ndarray:
    return data.inputs[data.labels == data.class_names.index(name)]


def test_audio_tones_are_narrowband_and_chirps_sweep(val):
    data = val["audio"]

    def concentration(clip):  # fraction of the energy within 10 Hz of the spectral peak
        power = np.abs(np.fft.rfft(clip)) ** 2  # 1 Hz bins for 8000 samples at 8 kHz
        k = power.argmax()
        return power[max(0, k - 10) : k + 11].sum() / power.sum()

    assert min(concentration(c) for c in _by_class(data, "tone")) > 0.3
    assert max(concentration(c) for c in _by_class(data, "noise_burst")) < 0.05
    peaks = [np.abs(np.fft.rfft(c)).argmax() for c in _by_class(data, "tone")]
    assert 300 <= min(peaks) and max(peaks) <= 3000 and np.std(peaks) > 300  # random pitch

    def sweep(clip):  # slope (Hz per frame) of the dominant frequency over the loud frames
        frames = np.lib.stride_tricks.sliding_window_view(clip, 256)[::128]
        spectra = np.abs(np.fft.rfft(frames * np.hanning(256), axis=1))
        energy = (frames**2).sum(axis=1)
        loud = energy > 0.5 * energy.max()
        freqs = spectra[loud].argmax(axis=1) * 8000 / 256
        return np.polyfit(np.flatnonzero(loud), freqs, 1)[0]

    assert all(sweep(c) > 5 for c in _by_class(data, "chirp_up"))
    assert all(sweep(c) < -5 for c in _by_class(data, "chirp_down"))

    def kurtosis(clip):
        z = (clip - clip.mean()) / clip.std()
        return (z**4).mean()

    # A sine has kurtosis 1.5, one gated to a fraction d of the clip 1.5 / d <= 6 (d >= 0.25;
    # the noise only lowers it); clicks of ~2 ms at most 25 a second fill under 5% of the clip.
    assert max(kurtosis(c) for c in _by_class(data, "tone")) < 6
    assert min(kurtosis(c) for c in _by_class(data, "clicks")) > 20


def test_audio_event_onsets_and_lengths_vary(val):
    clips = _by_class(val["audio"], "noise_burst")
    # RMS over 25 ms frames: the burst's frames hold its power plus the noise's, the others the
    # noise alone, at most 1 / sqrt(1 + 10 ** 0.5) = 0.49 of a burst frame's at 5 dB SNR.
    rms = np.sqrt((clips.reshape(len(clips), 40, 200) ** 2).mean(axis=2))
    loud = rms > 0.7 * rms.max(axis=1, keepdims=True)
    onsets = loud.argmax(axis=1) * 0.025
    spans = (40 - loud[:, ::-1].argmax(axis=1) - loud.argmax(axis=1)) * 0.025
    assert onsets.min() < 0.15 and onsets.max() > 0.4
    assert spans.min() > 0.2 and spans.max() < 0.8 and spans.max() - spans.min() > 0.25


def test_surface_points_lie_on_their_surfaces():
    rng = np.random.default_rng(0)
    n = 20000

    def pts(shape):
        return surface_points(shape, rng, 1, n)[0]

    x = pts("sphere")
    assert np.allclose(np.linalg.norm(x, axis=1), 1)
    x = pts("cube")
    assert np.allclose(np.abs(x).max(axis=1), 1) and np.abs(x).max() <= 1
    face_axis = np.abs(x).argmax(axis=1)
    assert np.allclose(np.bincount(face_axis) / n, 1 / 3, atol=0.02)  # faces equally likely
    x = pts("cylinder")
    r = np.linalg.norm(x[:, :2], axis=1)
    side = np.isclose(r, 1)
    assert np.all(side | np.isclose(np.abs(x[:, 2]), 1)) and np.all(r <= 1 + 1e-9)
    assert abs(side.mean() - 2 / 3) < 0.02  # side area 4 pi of 6 pi
    x = pts("cone")
    r = np.linalg.norm(x[:, :2], axis=1)
    base = np.isclose(x[:, 2], -1) & (r <= 1)
    on_side = np.isclose(r, (1 - x[:, 2]) / 2)  # radius 1 at z = -1, 0 at the apex z = 1
    assert np.all(base | on_side)
    assert abs(base.mean() - 1 / (1 + np.sqrt(5))) < 0.02  # base pi of pi (1 + sqrt 5)
    # uniform on the slanted side: half the side area lies below the height where r = 1/sqrt 2
    side_r = r[~base]
    assert abs((side_r > 1 / np.sqrt(2)).mean() - 0.5) < 0.02
    x = pts("torus")
    ring = np.linalg.norm(x[:, :2], axis=1)
    assert np.allclose((ring - 1) ** 2 + x[:, 2] ** 2, 0.35**2)
    # area element (1 + 0.35 cos v): the outer half (ring > 1) holds (pi + 0.7) / (2 pi)
    assert abs((ring > 1).mean() - (np.pi + 0.7) / (2 * np.pi)) < 0.02
    x = pts("disc")
    assert np.all(x[:, 2] == 0) and np.linalg.norm(x[:, :2], axis=1).max() <= 1
    assert abs((np.linalg.norm(x[:, :2], axis=1) < 0.5).mean() - 0.25) < 0.02
    x = pts("pyramid")
    base = np.isclose(x[:, 2], -1)
    h = (1 - x[:, 2]) / 2  # half-width of the square section at height z
    assert np.all(base | np.isclose(np.abs(x[:, :2]).max(axis=1), h))
    assert abs(base.mean() - 4 / (4 + 4 * np.sqrt(5))) < 0.02
    with pytest.raises(ValueError, match="unknown shape"):
        surface_points("blob", rng, 1, 3)


def test_point_classes_keep_their_geometry_after_the_random_transforms(val):
    data = val["points"]
    assert data.class_names == list(POINT_CLASSES)

    def smallest_variance(cloud):
        return np.linalg.eigvalsh(np.cov(cloud.T))[0]

    # A disc stays flat whatever the stretch and rotation (only the 0.01 jitter is off-plane).
    assert max(smallest_variance(c) for c in _by_class(data, "disc")) < 1e-3
    assert min(smallest_variance(c) for c in _by_class(data, "sphere")) > 0.05
    # A sphere stretched by at most 1.25 / 0.8 along an axis: radii within that ratio of each
    # other (plus jitter).
    for cloud in _by_class(data, "sphere"):
        r = np.linalg.norm(cloud, axis=1)
        assert r.min() > 0.8 / 1.25 - 0.05
    # Random rotations: the directions of the discs' normals are spread over the sphere.
    normals = np.stack([np.linalg.eigh(np.cov(c.T))[1][:, 0] for c in _by_class(data, "disc")])
    assert np.abs(normals).mean(axis=0).min() > 0.3  # no axis favoured (uniform: 0.5)


def test_text_summary_is_the_flagged_event(val):
    data = val["text"]
    vocab = data.vocabulary
    positions, openers = [], 0
    for doc_ids, summary_ids in zip(data.inputs, data.summaries, strict=True):
        assert EOS in summary_ids.tolist()
        length = int((doc_ids > PAD).sum())
        assert length <= 57 and np.all(doc_ids[length:] == PAD)
        sentences = [s.rstrip(" .") for s in vocab.decode(doc_ids).split(" . ")]
        flagged = [
            (k, s[len(cue) + 3 :].split())
            for k, s in enumerate(sentences)
            for cue in MAIN_CUES
            if s.startswith(f"{cue} , ")
        ]
        assert len(flagged) == 1  # one main event
        k, words = flagged[0]  # name verb the adjective object in the place
        assert words[0] in NAMES and words[1] in ACTIONS and len(words) == 8
        assert (
            vocab.decode(summary_ids)
            == f"{words[0]} {words[1]} {words[3]} {words[4]} in {words[7]}"
        )
        positions.append(k)
        # Two or three other people act too, so the task is not "copy the only action".
        bare = [s.split(" , ")[-1].split() for s in sentences]
        assert sum(1 for t in bare if t[0] in NAMES and t[1] in ACTIONS) >= 3
        openers += sum(s.split(" , ")[0] in OPENERS for s in sentences if " , " in s)
    assert len(set(positions)) >= 5  # the answer is at no fixed place
    assert openers > len(data) / 2  # look-alike openers that flag nothing are common


def test_text_splits_share_the_vocabulary_and_no_documents():
    train = synthetic("text", "train", num_examples=400)
    val = synthetic("text", "val", num_examples=400)
    assert train.vocabulary == val.vocabulary and len(train.vocabulary) < 200
    assert not {d.tobytes() for d in train.inputs} & {d.tobytes() for d in val.inputs}
    rng = np.random.default_rng(0)
    assert make_document(rng) != make_document(rng)


def test_text_baselines_score_clearly_below_a_reader(val):
    rouge = pytest.importorskip("jaxvision.metrics.rouge")
    from jaxvision.data.modalities import text_baselines

    data = val["text"]
    scores = text_baselines(data)
    assert set(scores) == {"lead_k", "random_summary"}
    assert scores == text_baselines(data)  # deterministic
    # A reader that applies the rule scores 1; the content-blind baselines far less.
    reference = data.vocabulary.decode(data.summaries[0])
    assert rouge.rouge_l(reference, reference)["fmeasure"] == pytest.approx(1.0)
    assert scores["lead_k"] < 0.6 and scores["random_summary"] < 0.4
    assert scores["lead_k"] > 0.05 and scores["random_summary"] > 0.05  # they do overlap some
    with pytest.raises(DatasetError, match="text"):
        text_baselines(synthetic("points", "val", num_examples=7))


# --------------------------------------------------------------------------------------------
# Container and source
# --------------------------------------------------------------------------------------------


def test_subset_per_class(val):
    data = val["audio"]
    sub = data.subset_per_class(5, seed=1)
    assert len(sub) == 30 and np.all(np.bincount(sub.labels) == 5)
    again = data.subset_per_class(5, seed=1)
    assert np.array_equal(sub.inputs, again.inputs)
    assert not np.array_equal(sub.inputs, data.subset_per_class(5, seed=2).inputs)
    rows = {x.tobytes(): y for x, y in zip(data.inputs, data.labels, strict=True)}
    assert all(rows[x.tobytes()] == y for x, y in zip(sub.inputs, sub.labels, strict=True))
    assert sub.class_names == data.class_names
    with pytest.raises(DatasetError, match="class 'tone' has 50 examples, fewer than the 51"):
        data.subset_per_class(51, seed=0)
    with pytest.raises(DatasetError, match="no classes"):
        val["text"].subset_per_class(1, seed=0)


def test_container_validates():
    with pytest.raises(DatasetError, match="labels must be in"):
        ModalityData("audio", np.zeros((2, 4), np.float32), np.array([0, 2]), ["a", "b"])
    with pytest.raises(DatasetError, match="labels must be"):
        ModalityData("audio", np.zeros((2, 4), np.float32), np.array([0]), ["a"])
    with pytest.raises(DatasetError, match="summaries"):
        ModalityData("text", np.zeros((2, 4), np.int32), None, [])


def test_source_keys_dtypes_and_batches(val):
    for m in MODALITIES:
        source = ModalitySource(val[m])
        example = source.eval_example(3)
        if m == "text":
            assert set(example) == {"text", "summary"}
            assert example["text"].shape == (64,) and example["summary"].shape == (12,)
            assert example["text"].dtype == example["summary"].dtype == np.int32
        else:
            assert set(example) == {m, f"{m}_label"}
            assert example[m].dtype == np.float32 and example[m].shape == val[m].inputs.shape[1:]
            assert example[f"{m}_label"].dtype == np.int32 and example[f"{m}_label"].shape == ()
            assert example[f"{m}_label"] == val[m].labels[3]
        # without augment, training examples are the evaluation ones
        train = source.train_example(3, np.random.default_rng(0))
        assert all(np.array_equal(train[k], example[k]) for k in example)
    loader = BatchLoader(ModalitySource(val["points"], augment=True))
    batch = next(loader.train_epoch(seed=0, epoch=0, batch_size=16))
    loader.close()
    assert batch["points"].shape == (16, 256, 3) and batch["points_label"].shape == (16,)


@pytest.mark.parametrize("modality", ["image", "audio", "points", "video", "text"])
def test_augmentation_uses_only_the_given_rng(val, modality):
    data = val[modality].take(np.arange(8))
    source = ModalitySource(data, augment=True)
    a = source.train_example(2, np.random.default_rng(7))
    b = source.train_example(2, np.random.default_rng(7))
    c = source.train_example(2, np.random.default_rng(8))
    clean = source.eval_example(2)
    assert all(np.array_equal(a[k], b[k]) for k in a)  # same rng seed, same output
    for k in clean:
        assert a[k].shape == clean[k].shape and a[k].dtype == clean[k].dtype
        if k.endswith("_label") or k == "summary":
            assert np.array_equal(a[k], clean[k])
    key = "text" if modality == "text" else modality
    if modality in ("video", "text"):  # not augmented
        assert np.array_equal(a[key], clean[key])
    else:
        changed = [not np.array_equal(x[key], clean[key]) for x in (a, c)]
        assert any(changed)  # two draws: at most one may be the identity (image shift 0, 0)
        assert not np.array_equal(a[key], c[key])
    assert np.array_equal(data.inputs[2], val[modality].inputs[2])  # the data is untouched


def test_augmentations_are_label_preserving_transforms():
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (6, 5, 3)).astype(np.float32)
    moved = shift_image(image, 2, -1)  # right 2, up 1
    assert np.array_equal(moved[:5, 2:], image[1:, :3])
    assert np.all(moved[:, :2] == -1) and np.all(moved[5:] == -1)
    assert np.all(shift_image(image, 0, 0) == image)
    out = augment_example("image", image, np.random.default_rng(1))
    shifts = [(dx, dy) for dx in range(-2, 3) for dy in range(-2, 3)]
    assert any(np.array_equal(out, shift_image(image, dx, dy)) for dx, dy in shifts)

    clip = rng.normal(size=100).astype(np.float32)
    out = augment_example("audio", clip, np.random.default_rng(1))
    lag = int(np.argmax([np.dot(np.roll(clip, k), out) for k in range(100)]))
    gain = out / np.roll(clip, lag)
    assert np.allclose(gain, gain[0], rtol=1e-5) and 0.8 <= gain[0] <= 1.2

    cloud = rng.normal(size=(500, 3)).astype(np.float32)
    out = augment_example("points", cloud, np.random.default_rng(1))
    assert np.abs(out[:, 2] - cloud[:, 2]).std() < 0.015  # z kept (up to the jitter)
    r_in, r_out = np.linalg.norm(cloud[:, :2], axis=1), np.linalg.norm(out[:, :2], axis=1)
    assert np.abs(r_in - r_out).max() < 0.1  # a rotation about z, jitter 0.01
    assert np.abs(out - cloud).max() > 0.1  # it did turn


# --------------------------------------------------------------------------------------------
# Files: audio
# --------------------------------------------------------------------------------------------


def _write_wav(path: Path, samples: np.ndarray, rate: int = 8000, width: int = 2) -> None:
    """``samples`` (n,) or (n, channels) integers of the sample width's range."""
    samples = np.asarray(samples)
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    data = samples.astype("<i2" if width == 2 else np.uint8).tobytes()
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(data)


def test_audio_files_round_trip(tmp_path):
    mono = np.array([0, 16384, -32768, 32767, 8] * 3)  # 15 samples
    stereo = np.stack([np.full(30, 1000), np.full(30, 3000)], axis=1)
    _write_wav(tmp_path / "train" / "dog" / "a.wav", mono)
    _write_wav(tmp_path / "train" / "dog" / "b.wav", stereo)
    _write_wav(tmp_path / "train" / "cat" / "c.wav", np.array([128, 192, 0, 255]), width=1)
    data = load_modality("audio", str(tmp_path), "train", num_samples=20)
    assert data.class_names == ["cat", "dog"] and data.labels.tolist() == [0, 1, 1]
    assert data.inputs.shape == (3, 20) and data.inputs.dtype == np.float32
    assert np.allclose(data.inputs[0, :4], [0, 0.5, -1, 127 / 128])  # 8-bit: (x - 128) / 128
    assert np.all(data.inputs[0, 4:] == 0)  # zero-padded
    assert np.allclose(data.inputs[1], np.r_[mono / 32768, np.zeros(5)])
    assert np.allclose(data.inputs[2], 2000 / 32768)  # channels averaged, cropped to 20
    source = ModalitySource(data)
    assert source.eval_example(1)["audio_label"] == 1


def test_audio_file_errors(tmp_path):
    with pytest.raises(DatasetError, match="audio data folder not found"):
        load_modality("audio", str(tmp_path / "nope"), "train")
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match="no 'val' folder"):
        load_modality("audio", str(tmp_path), "val")
    with pytest.raises(DatasetError, match="no class sub-folders"):
        load_modality("audio", str(tmp_path), "train")
    (tmp_path / "train" / "empty").mkdir()
    _write_wav(tmp_path / "train" / "dog" / "a.wav", np.zeros(10))
    with pytest.raises(DatasetError, match=r"class folder .*empty holds no \.wav files"):
        load_modality("audio", str(tmp_path), "train")
    (tmp_path / "train" / "empty").rmdir()
    _write_wav(tmp_path / "train" / "dog" / "b.wav", np.zeros(10), rate=16000)
    with pytest.raises(DatasetError, match=r"b\.wav: sample rate 16000 Hz, expected 8000 Hz"):
        load_modality("audio", str(tmp_path), "train")
    (tmp_path / "train" / "dog" / "b.wav").write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(DatasetError, match=r"b\.wav: not a PCM WAV file"):
        load_modality("audio", str(tmp_path), "train")


def test_class_names_map_another_split_by_name(tmp_path):
    _write_wav(tmp_path / "train" / "cat" / "a.wav", np.zeros(10))
    _write_wav(tmp_path / "train" / "dog" / "a.wav", np.zeros(10))
    _write_wav(tmp_path / "validation" / "dog" / "a.wav", np.ones(10))  # found for "val"
    train = load_modality("audio", str(tmp_path), "train")
    alone = load_modality("audio", str(tmp_path), "val")
    assert alone.class_names == ["dog"] and alone.labels.tolist() == [0]
    mapped = load_modality("audio", str(tmp_path), "val", class_names=train.class_names)
    assert mapped.class_names == ["cat", "dog"] and mapped.labels.tolist() == [1]
    _write_wav(tmp_path / "validation" / "bird" / "a.wav", np.ones(10))
    with pytest.raises(DatasetError, match=r"\['bird'\] are not among the given classes"):
        load_modality("audio", str(tmp_path), "val", class_names=train.class_names)


# --------------------------------------------------------------------------------------------
# Files: points
# --------------------------------------------------------------------------------------------


def _normalised(points: np.ndarray) -> np.ndarray:
    centred = points - points.mean(axis=0)
    return centred / np.sqrt((centred**2).sum(axis=1)).max()


def _rows(x: np.ndarray) -> np.ndarray:
    return x[np.lexsort(x.T[::-1])]


def _write_off(path: Path, vertices: np.ndarray, *, counts_on_header: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = f"{len(vertices)} 1 0"
    head = f"OFF {counts}\n# a comment\n" if counts_on_header else f"OFF\n# a comment\n{counts}\n"
    body = "".join(f"{x} {y} {z}\n" for x, y, z in vertices)
    path.write_text(f"{head}{body}3 0 1 2\n")


def test_point_files_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    cloud = rng.normal(size=(300, 3)) * [3, 2, 1] + 5
    (tmp_path / "train" / "blob").mkdir(parents=True)
    np.save(tmp_path / "train" / "blob" / "a.npy", cloud.astype(np.float32))
    exact = rng.normal(size=(16, 3))
    np.save(tmp_path / "train" / "blob" / "b.npy", np.c_[exact, np.ones((16, 3))])  # + normals
    corners = np.array([[x, y, z] for x in (0, 2) for y in (0, 2) for z in (0, 2)], float)
    _write_off(tmp_path / "train" / "box" / "c.off", corners)
    _write_off(tmp_path / "train" / "box" / "d.off", corners + 1, counts_on_header=True)
    data = load_modality("points", str(tmp_path), "train", num_points=16, seed=5)
    assert data.class_names == ["blob", "box"] and data.labels.tolist() == [0, 0, 1, 1]
    assert data.inputs.shape == (4, 16, 3) and data.inputs.dtype == np.float32
    # 16 of 16: all of them, in some order, centred and scaled by hand
    assert np.allclose(_rows(data.inputs[1]), _rows(_normalised(exact)), atol=1e-6)
    # 16 of 300: distinct points of the file
    assert len({tuple(p) for p in data.inputs[0]}) == 16
    # 16 of 8 corners: drawn with replacement, so every point is a corner of one cube: each
    # axis takes at most two values, the same distance apart on every axis
    for cloud_out in data.inputs[2:]:
        values = [np.unique(np.round(cloud_out[:, k], 5)) for k in range(3)]
        assert all(len(v) <= 2 for v in values) and len({tuple(p) for p in cloud_out}) >= 2
        gaps = [v[1] - v[0] for v in values if len(v) == 2]
        assert np.allclose(gaps, gaps[0], atol=1e-4)
    again = load_modality("points", str(tmp_path), "train", num_points=16, seed=5)
    other = load_modality("points", str(tmp_path), "train", num_points=16, seed=6)
    assert np.array_equal(again.inputs, data.inputs)
    assert not np.array_equal(other.inputs[0], data.inputs[0])
    assert np.allclose(np.linalg.norm(data.inputs, axis=-1).max(axis=1), 1)


def test_read_off_vertices_and_header_variants(tmp_path):
    path = tmp_path / "m.off"
    path.write_text("OFF 3 1 0\n0 0 0\n1 0 0\n0 1.5 0\n3 0 1 2\n")
    assert read_off(path).tolist() == [[0, 0, 0], [1, 0, 0], [0, 1.5, 0]]
    path.write_text("OFF\n\n# comment\n2 0 0\n1 2 3 # trailing\n4 5 6\n")
    assert read_off(path).tolist() == [[1, 2, 3], [4, 5, 6]]


@pytest.mark.parametrize(
    "text, message",
    [
        ("PLY\n3 1 0\n", "starts with the line 'OFF'"),
        ("", "starts with the line 'OFF'"),
        ("OFF\n", "counts line .* is missing"),
        ("OFF\nthree 1 0\n", r"line 2: expected the counts"),
        ("OFF\n3 1 0\n0 0 0\n1 1\n2 2 2\n", r"line 4: expected a vertex"),
        ("OFF\n4 0 0\n0 0 0\n1 1 1\n", "announces 4 vertices"),
    ],
)
def test_malformed_off_files(tmp_path, text, message):
    path = tmp_path / "train" / "box" / "bad.off"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(DatasetError, match=message):
        load_modality("points", str(tmp_path), "train")


def test_bad_point_arrays(tmp_path):
    folder = tmp_path / "train" / "blob"
    folder.mkdir(parents=True)
    np.save(folder / "a.npy", np.zeros((10, 2)))
    with pytest.raises(DatasetError, match=r"a\.npy: expected a \(P, 3\) array .*\(10, 2\)"):
        load_modality("points", str(tmp_path), "train")
    np.save(folder / "a.npy", np.full((10, 3), np.nan))
    with pytest.raises(DatasetError, match="NaN"):
        load_modality("points", str(tmp_path), "train")
    np.save(folder / "a.npy", np.ones((10, 3)))
    with pytest.raises(DatasetError, match="all points coincide"):
        load_modality("points", str(tmp_path), "train")
    (folder / "a.npy").write_bytes(b"not numpy")
    with pytest.raises(DatasetError, match=r"a\.npy: not a numpy \.npy array"):
        load_modality("points", str(tmp_path), "train")


# --------------------------------------------------------------------------------------------
# Files: video
# --------------------------------------------------------------------------------------------


def test_sample_frames_takes_segment_centres():
    assert sample_frames(16, 8).tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
    assert sample_frames(8, 8).tolist() == list(range(8))
    assert sample_frames(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    assert sample_frames(1, 4).tolist() == [0, 0, 0, 0]


def test_video_files_round_trip(tmp_path):
    # uint8 (T, H, W): frame t is the constant 10 t
    clip = np.repeat(np.arange(16, dtype=np.uint8)[:, None, None] * 10, 20, axis=1)
    clip = np.repeat(clip, 24, axis=2)  # (16, 20, 24)
    (tmp_path / "train" / "wave").mkdir(parents=True)
    np.save(tmp_path / "train" / "wave" / "a.npy", clip)
    # float (T, H, W, 3) in [0, 1]: red 1, green 0.5, blue 0 -> grey 0.5
    rgb = np.zeros((4, 8, 8, 3), np.float32)
    rgb[..., 0], rgb[..., 1] = 1.0, 0.5
    np.save(tmp_path / "train" / "wave" / "b.npy", rgb)
    # a folder of frames, read in name order
    frames = tmp_path / "train" / "zoom" / "clip"
    frames.mkdir(parents=True)
    for t, name in enumerate(["f_00.png", "f_01.png", "f_02.png", "f_03.png"]):
        Image.fromarray(np.full((10, 12, 3), 60 * t, np.uint8)).save(frames / name)
    data = load_modality("video", str(tmp_path), "train", num_frames=8, frame_size=16)
    assert data.class_names == ["wave", "zoom"] and data.labels.tolist() == [0, 0, 1]
    assert data.inputs.shape == (3, 8, 16, 16, 1) and data.inputs.dtype == np.float32
    x = (data.inputs + 1) / 2
    expected = np.array([1, 3, 5, 7, 9, 11, 13, 15]) * 10 / 255
    assert np.allclose(x[0, :, :, :, 0], expected[:, None, None], atol=1e-5)
    assert np.allclose(x[1], 0.5, atol=1e-6)
    assert np.allclose(x[2, :, 0, 0, 0], np.array([0, 0, 1, 1, 2, 2, 3, 3]) * 60 / 255, atol=1e-5)
    rgb_out = load_modality("video", str(tmp_path), "train", num_frames=2, channels=3)
    assert rgb_out.inputs.shape == (3, 2, 32, 32, 3)
    assert np.allclose((rgb_out.inputs[1] + 1) / 2, [1.0, 0.5, 0.0], atol=1e-6)
    assert np.allclose(rgb_out.inputs[0, ..., 0], rgb_out.inputs[0, ..., 2])  # grey copied


def test_video_file_errors(tmp_path):
    folder = tmp_path / "train" / "wave"
    folder.mkdir(parents=True)
    np.save(folder / "a.npy", np.zeros((4, 8), np.uint8))
    with pytest.raises(DatasetError, match=r"a\.npy: expected a \(T, H, W\) or .*\(4, 8\)"):
        load_modality("video", str(tmp_path), "train")
    np.save(folder / "a.npy", np.full((2, 4, 4), 2.0, np.float32))
    with pytest.raises(DatasetError, match=r"float frames must be in \[0, 1\], found 2.0"):
        load_modality("video", str(tmp_path), "train")
    np.save(folder / "a.npy", np.zeros((2, 4, 4), np.int16))
    with pytest.raises(DatasetError, match="uint8 or floats"):
        load_modality("video", str(tmp_path), "train")
    (folder / "a.npy").unlink()
    (folder / "clip").mkdir()
    with pytest.raises(DatasetError, match="clip folder holds no frame images"):
        load_modality("video", str(tmp_path), "train")
    (folder / "clip").rmdir()
    with pytest.raises(DatasetError, match=r"holds no \.npy files or frame folders"):
        load_modality("video", str(tmp_path), "train")


# --------------------------------------------------------------------------------------------
# Files: text and images
# --------------------------------------------------------------------------------------------


def _write_jsonl(path: Path, records: list, extra: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + extra)


def test_text_files_round_trip(tmp_path):
    train = [
        {"document": "The cat sat on the mat. It was warm.", "summary": "Cat sat."},
        {"document": "A dog ran in the park.", "summary": "Dog ran."},
    ]
    _write_jsonl(tmp_path / "train.jsonl", train, extra="\n")  # a blank line is skipped
    _write_jsonl(tmp_path / "val.jsonl", [{"document": "The cat flew.", "summary": "cat"}])
    data = load_modality("text", str(tmp_path), "train", document_length=8, summary_length=4)
    vocab = data.vocabulary
    expected = Vocabulary.build([t for r in train for t in (r["document"], r["summary"])])
    assert vocab == expected
    assert data.inputs.shape == (2, 8) and data.summaries.shape == (2, 4)
    assert vocab.decode(data.inputs[0]) == "the cat sat on the mat . it"  # truncated to 8
    assert vocab.decode(data.summaries[1]) == "dog ran ."
    assert data.summaries[1].tolist()[3] == EOS
    # val: encoded with the train vocabulary ("flew" is unknown)
    val = load_modality("text", str(tmp_path), "val", document_length=8, summary_length=4)
    assert val.vocabulary == vocab and vocab.decode(val.inputs[0]) == "the cat <unk> ."
    reused = load_modality("text", str(tmp_path), "val", vocabulary=Vocabulary.build(["flew"]))
    assert reused.vocabulary.decode(reused.inputs[0]) == "<unk> <unk> flew <unk>"
    source = ModalitySource(data)
    assert np.array_equal(source.eval_example(1)["summary"], data.summaries[1])


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"document": "a", "summary": ', r"line 2: not valid JSON"),
        ('["a", "b"]', r"line 2: expected an object .* got list"),
        ('{"document": "a"}', r"line 2: 'summary' is missing"),
        ('{"document": 3, "summary": "b"}', r"line 2: 'document' is not a string"),
    ],
)
def test_bad_jsonl_lines(tmp_path, line, message):
    _write_jsonl(tmp_path / "train.jsonl", [{"document": "x", "summary": "y"}], extra=line + "\n")
    with pytest.raises(DatasetError, match=r"train\.jsonl, " + message):
        load_modality("text", str(tmp_path), "train")


def test_missing_or_empty_jsonl(tmp_path):
    with pytest.raises(DatasetError, match=r"no val\.jsonl file"):
        load_modality("text", str(tmp_path), "val")
    (tmp_path / "val.jsonl").write_text("\n")
    with pytest.raises(DatasetError, match="holds no examples"):
        load_modality("text", str(tmp_path), "val", vocabulary=Vocabulary.build([]))
    _write_jsonl(tmp_path / "val.jsonl", [{"document": "a", "summary": "b"}])
    with pytest.raises(DatasetError, match=r"no train\.jsonl"):  # the vocabulary comes from it
        load_modality("text", str(tmp_path), "val")


def test_image_specs(tmp_path, val):
    digits = load_modality("image", "digits", "val")
    assert np.array_equal(digits.inputs, val["image"].inputs)
    assert np.array_equal(load_modality("image", "synthetic", "val").inputs, digits.inputs)
    for split, cls, value in [("train", "red", 255), ("train", "blue", 0), ("val", "blue", 0)]:
        folder = tmp_path / split / cls
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((12, 10, 3), value, np.uint8)).save(folder / "a.png")
    train = load_modality("image", str(tmp_path), "train", image_size=8)
    assert train.class_names == ["blue", "red"] and train.inputs.shape == (2, 8, 8, 3)
    assert np.all(train.inputs[0] == -1) and np.all(train.inputs[1] == 1)
    same = load_modality("image", f"folder:{tmp_path}", "train", image_size=8)
    assert np.array_equal(same.inputs, train.inputs)
    val_split = load_modality("image", str(tmp_path), "val", class_names=["red", "blue"])
    assert val_split.class_names == ["red", "blue"] and val_split.labels.tolist() == [1]
    with pytest.raises(DatasetError, match=r"\['blue'\] are not among the given"):
        load_modality("image", str(tmp_path), "val", class_names=["red"])


def test_load_modality_synthetic_and_option_checks():
    data = load_modality("points", "synthetic", "val", seed=2, num_examples=14, num_points=32)
    assert np.array_equal(
        data.inputs, synthetic("points", "val", seed=2, num_examples=14, num_points=32).inputs
    )
    with pytest.raises(DatasetError, match="synthetic points has the classes"):
        load_modality("points", "synthetic", "val", num_examples=7, class_names=["a"])
    with pytest.raises(DatasetError, match="num_examples is for generated data"):
        load_modality("audio", "/nowhere", "train", num_examples=3)
    with pytest.raises(DatasetError, match="vocabulary= is for text"):
        load_modality("audio", "synthetic", "train", vocabulary=Vocabulary.build([]))
    with pytest.raises(DatasetError, match="unknown size option"):
        load_modality("points", "/nowhere", "train", num_frames=3)

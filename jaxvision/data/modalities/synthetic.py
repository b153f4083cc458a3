"""Generated data for the five modalities: small, structured, offline and deterministic.

Every split is a pure function of (seed, split, modality, sizes): the generator's random numbers
come from ``np.random.default_rng([seed, split id, modality id])``, so train and val of one seed
never share an example and every machine makes the same arrays. Classes are balanced (their
counts differ by at most one) and in random order.

* **image** - scikit-learn's digits (8x8 grey, 10 classes), with the library's fixed stratified
  split (``load_dataset("digits", ...)``: 1,437 train, 360 held out; ``val`` and ``test`` are both
  the held-out images), upsampled bilinearly to 32x32 and copied to 3 channels.
* **video** - a digit of the split (its identity a distractor) moving over a black canvas; the
  class is the motion: ``right``, ``left``, ``down``, ``up`` (straight, speed 0.5-1 of the
  largest that keeps the digit inside, a sideways drift of at most a quarter of the speed),
  ``circle`` (clockwise on screen, radius 20-35% of the free travel, 0.75-1 turn over the clip)
  and ``zoom`` (the digit grows from 0.6x to 1.4x its size about a fixed centre). Every digit's
  size varies by +-20%; positions are sub-pixel (bilinear), so the motion is smooth.
* **audio** - a one-second clip with one sound event of 25-75% of its length at a random onset,
  10 ms fades, in white background noise at an SNR of 5-20 dB (event power over its duration
  against the noise power), peak-normalised to 0.9. Classes: ``tone`` (300 Hz-3 kHz at 8 kHz),
  ``chirp_up`` / ``chirp_down`` (a linear sweep over a factor 2-4 in frequency), ``noise_burst``
  (white), ``clicks`` (8-25 damped 1-2.4 kHz clicks a second) and ``am_tone`` (a tone whose
  amplitude is modulated at 4-12 Hz, depth 0.6-1). Frequencies scale with the sample rate.
* **points** - points sampled uniformly (by area) on the surface of a ``sphere``, ``cube``,
  ``cylinder``, ``cone``, ``torus``, flat ``disc`` or square ``pyramid``, stretched by a random
  factor of 0.8-1.25 along each axis, turned by a uniformly random 3D rotation, jittered
  (std 0.01), then centred on their mean and scaled to a largest radius of 1.
* **text** - a short news-like document and a headline summary (see :func:`make_document`):
  three or four people each did something; the main event is flagged by a cue word
  (``"notably , anna found the old key in the park ."``) among sentences opened by look-alike
  words that flag nothing (``"meanwhile , ..."``), and the summary is that event as a headline,
  ``"anna found old key in park"``. Sentences are shuffled, so the answer is at no fixed place
  and must be found by content.
"""

from __future__ import annotations

import re

import numpy as np

from jaxvision.data.datasets import DatasetError, load_dataset
from jaxvision.data.modalities.base import (
    MODALITIES,
    SPLIT_IDS,
    ModalityData,
    centre_and_scale,
    check_split,
    normalise,
    resize_plane,
    resolve_sizes,
)
from jaxvision.data.text import Vocabulary, tokenize

SPLIT_SIZES = {"train": 1200, "val": 300, "test": 300}  # generated modalities (not image)

VIDEO_CLASSES = ("right", "left", "down", "up", "circle", "zoom")
AUDIO_CLASSES = ("tone", "chirp_up", "chirp_down", "noise_burst", "clicks", "am_tone")
POINT_CLASSES = ("sphere", "cube", "cylinder", "cone", "torus", "disc", "pyramid")

SNR_DB = (5.0, 20.0)
EVENT_FRACTION = (0.25, 0.75)  # event length, as a fraction of the clip
FADE_SECONDS = 0.01
PEAK = 0.9
POINT_SCALE = (0.8, 1.25)  # anisotropic stretch along each axis
POINT_JITTER = 0.01
TORUS_RADII = (1.0, 0.35)  # ring radius, tube radius


def digits_split(split: str) -> str:
    """The digits split (load_dataset names) behind ``split``: the held-out one for val/test."""
    return "train" if split == "train" else "test"


def _generator(seed: int, split: str, modality: str) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_IDS[split], MODALITIES.index(modality)])


def _balanced_labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return rng.permutation(np.arange(n) % k).astype(np.int32)


# --------------------------------------------------------------------------------------------
# Image
# --------------------------------------------------------------------------------------------


def grey_images_to_inputs(grey: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) grey in [0, 1] -> (N, size, size, 3) float32 normalised to [-1, 1]."""
    out = np.stack([resize_plane(g, size, size) for g in grey])
    return normalise(np.repeat(np.clip(out, 0.0, 1.0)[..., None], 3, axis=-1))


def _image(split: str, rng: np.random.Generator, n: int | None, image_size: int) -> ModalityData:
    ds = load_dataset("digits", digits_split(split))
    idx = np.arange(len(ds))
    if n is not None:
        if n > len(ds):
            raise DatasetError(f"digits/{digits_split(split)} has {len(ds)} images, not {n}")
        idx = np.sort(rng.choice(len(ds), n, replace=False))
    inputs = grey_images_to_inputs(ds.images[idx, :, :, 0] / 255.0, image_size)
    return ModalityData("image", inputs, ds.labels[idx], list(ds.class_names))


# --------------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------------


def _paste(canvas: np.ndarray, patch: np.ndarray, x: float, y: float) -> None:
    """Add ``patch`` to ``canvas`` with its top-left corner at (x, y) pixels, sub-pixel by
    bilinear weights; whatever falls outside the canvas is dropped."""
    h, w = patch.shape
    ix, iy = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - ix, y - iy
    shifted = np.zeros((h + 1, w + 1), np.float32)
    shifted[:h, :w] += (1 - fx) * (1 - fy) * patch
    shifted[:h, 1:] += fx * (1 - fy) * patch
    shifted[1:, :w] += (1 - fx) * fy * patch
    shifted[1:, 1:] += fx * fy * patch
    size_y, size_x = canvas.shape
    top, left = max(iy, 0), max(ix, 0)
    bottom, right = min(iy + h + 1, size_y), min(ix + w + 1, size_x)
    if top < bottom and left < right:
        canvas[top:bottom, left:right] += shifted[top - iy : bottom - iy, left - ix : right - ix]


def _trajectory(
    label: int, rng: np.random.Generator, t: np.ndarray, free: float
) -> tuple[np.ndarray, np.ndarray]:
    """Top-left positions (x, y) over the clip's ``t`` in [0, 1] for a digit with ``free``
    pixels of travel room along each axis."""
    kind = VIDEO_CLASSES[label]
    if kind in ("right", "left", "down", "up"):
        travel = rng.uniform(0.5, 1.0) * free  # along the motion, over the whole clip
        drift = rng.uniform(-0.25, 0.25) * travel  # sideways
        start = rng.uniform(0, free - travel)
        side = rng.uniform(max(0.0, -drift), min(free, free - drift))
        along = start + travel * t if kind in ("right", "down") else start + travel * (1 - t)
        across = side + drift * t
        return (along, across) if kind in ("right", "left") else (across, along)
    # circle: clockwise on screen (y points down, so the angle grows)
    radius = rng.uniform(0.2, 0.35) * free
    cx, cy = rng.uniform(radius, free - radius, size=2)
    angle = rng.uniform(0, 2 * np.pi) + rng.uniform(0.75, 1.0) * 2 * np.pi * t
    return cx + radius * np.cos(angle), cy + radius * np.sin(angle)


def _video(
    split: str,
    rng: np.random.Generator,
    n: int,
    num_frames: int,
    frame_size: int,
    channels: int,
    digit_size: int,
) -> ModalityData:
    if 1.4 * 1.2 * digit_size > frame_size:
        raise DatasetError(
            f"video digit_size {digit_size} too large for frame_size {frame_size} (the zoom class "
            f"grows a digit to 1.7x; use digit_size <= {int(frame_size / 1.68)})"
        )
    if num_frames < 2:
        raise DatasetError(f"video needs num_frames >= 2 to show motion, got {num_frames}")
    digits = load_dataset("digits", digits_split(split)).images[..., 0] / 255.0
    labels = _balanced_labels(rng, n, len(VIDEO_CLASSES))
    t = np.linspace(0.0, 1.0, num_frames)
    videos = np.zeros((n, num_frames, frame_size, frame_size), np.float32)
    for i, label in enumerate(labels):
        digit = digits[rng.integers(len(digits))]
        size = int(round(digit_size * rng.uniform(0.8, 1.2)))
        if VIDEO_CLASSES[label] == "zoom":
            sizes = np.round(size * (0.6 + 0.8 * t)).astype(int)
            half = sizes[-1] / 2
            cx, cy = rng.uniform(half, frame_size - half, size=2)
            for f, s in enumerate(sizes):
                patch = np.clip(resize_plane(digit, s, s), 0, 1)
                _paste(videos[i, f], patch, cx - s / 2, cy - s / 2)
            continue
        patch = np.clip(resize_plane(digit, size, size), 0, 1)
        xs, ys = _trajectory(int(label), rng, t, frame_size - size)
        for f in range(num_frames):
            _paste(videos[i, f], patch, xs[f], ys[f])
    videos = np.clip(videos, 0.0, 1.0)[..., None]
    if channels == 3:
        videos = np.repeat(videos, 3, axis=-1)
    return ModalityData("video", normalise(videos), labels, list(VIDEO_CLASSES))


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------


def _event(kind: str, rng: np.random.Generator, length: int, sample_rate: int) -> np.ndarray:
    """One sound event of ``length`` samples (before fades and level)."""
    t = np.arange(length) / sample_rate
    duration = length / sample_rate
    nyquist = sample_rate / 2
    if kind in ("tone", "am_tone"):
        freq = rng.uniform(0.075, 0.75) * nyquist  # 300 Hz - 3 kHz at 8 kHz
        wave = np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
        if kind == "am_tone":
            rate, depth = rng.uniform(4, 12), rng.uniform(0.6, 1.0)
            wave *= 1 + depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
        return wave
    if kind in ("chirp_up", "chirp_down"):
        low = rng.uniform(0.05, 0.2) * nyquist  # 200-800 Hz at 8 kHz
        high = min(low * rng.uniform(2.0, 4.0), 0.8 * nyquist)
        f0, f1 = (low, high) if kind == "chirp_up" else (high, low)
        # instantaneous frequency f0 + (f1 - f0) t / duration
        return np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration)))
    if kind == "noise_burst":
        return rng.normal(0.0, 1.0, length)
    if kind == "clicks":
        rate = rng.uniform(8, 25)
        ring = rng.uniform(0.25, 0.6) * nyquist  # 1-2.4 kHz at 8 kHz
        decay = rng.uniform(0.0005, 0.0015) * sample_rate  # samples
        k = np.arange(int(4 * decay) + 1)
        click = np.exp(-k / decay) * np.sin(2 * np.pi * ring * k / sample_rate)
        impulses = np.zeros(length)
        # The first click falls inside the event however short it is (at least one click).
        times = np.arange(rng.uniform(0, min(1 / rate, duration)), duration, 1 / rate)
        # ... and early enough for its ringing to fit (a click at the last sample would be silent).
        at = np.minimum((times * sample_rate).astype(int), max(length - len(click), 0))
        impulses[at] = rng.choice([-1.0, 1.0], len(times))
        return np.convolve(impulses, click)[:length]
    raise ValueError(f"unknown audio class {kind!r}")


def _audio(
    split: str, rng: np.random.Generator, n: int, sample_rate: int, num_samples: int
) -> ModalityData:
    fade = int(FADE_SECONDS * sample_rate)
    if num_samples < 8 * fade or sample_rate < 1000:
        raise DatasetError(
            f"audio needs sample_rate >= 1000 and num_samples >= {8 * fade} (80 ms), got "
            f"{sample_rate} and {num_samples}"
        )
    labels = _balanced_labels(rng, n, len(AUDIO_CLASSES))
    clips = np.empty((n, num_samples), np.float32)
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)
    for i, label in enumerate(labels):
        length = int(rng.uniform(*EVENT_FRACTION) * num_samples)
        event = _event(AUDIO_CLASSES[label], rng, length, sample_rate)
        event[:fade] *= ramp
        event[-fade:] *= ramp[::-1]
        event /= np.sqrt(np.mean(event**2))  # unit power over the event
        onset = rng.integers(0, num_samples - length + 1)
        snr_db = rng.uniform(*SNR_DB)
        clip = rng.normal(0.0, 10 ** (-snr_db / 20), num_samples)
        clip[onset : onset + length] += event
        clips[i] = PEAK * clip / np.abs(clip).max()
    return ModalityData("audio", clips, labels, list(AUDIO_CLASSES))


# --------------------------------------------------------------------------------------------
# Points
# --------------------------------------------------------------------------------------------


def _disc(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Uniform points (x, y) on the unit disc."""
    r, a = np.sqrt(rng.uniform(size=shape)), rng.uniform(0, 2 * np.pi, shape)
    return r * np.cos(a), r * np.sin(a)


def _triangles(rng: np.random.Generator, corners: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform points on triangles ``corners`` (K, 3, 3), each picked with probability by area."""
    areas = 0.5 * np.linalg.norm(
        np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=-1
    )
    which = rng.choice(len(corners), size=shape, p=areas / areas.sum())
    u, v = rng.uniform(size=shape), rng.uniform(size=shape)
    flip = u + v > 1
    u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
    a, b, c = corners[which, 0], corners[which, 1], corners[which, 2]
    return a + u[..., None] * (b - a) + v[..., None] * (c - a)


def surface_points(shape: str, rng: np.random.Generator, count: int, num_points: int) -> np.ndarray:
    """(count, num_points, 3) points uniform by area on the surface of a canonical ``shape``:
    unit sphere; cube [-1, 1]^3; cylinder and cone of radius 1 and height 2 (z in [-1, 1], the
    cone's apex at z = 1), closed by their discs; torus of radii 1 and 0.35 about the z axis;
    unit disc in z = 0; pyramid on the square [-1, 1]^2 at z = -1 with its apex at (0, 0, 1)."""
    size = (count, num_points)
    if shape == "sphere":
        p = rng.normal(size=(*size, 3))
        return p / np.linalg.norm(p, axis=-1, keepdims=True)
    if shape == "cube":
        face = rng.integers(0, 6, size)
        p = rng.uniform(-1, 1, (*size, 3))
        axis = face % 3
        np.put_along_axis(p, axis[..., None], np.where(face < 3, 1.0, -1.0)[..., None], axis=-1)
        return p
    if shape in ("cylinder", "cone"):
        # Areas over pi: cylinder side 2 pi r h = 4, two caps 2; cone side pi r slant = sqrt(5),
        # base 1.
        side, caps = (4.0, 2.0) if shape == "cylinder" else (np.sqrt(5.0), 1.0)
        on_side = rng.uniform(size=size) < side / (side + caps)
        a = rng.uniform(0, 2 * np.pi, size)
        dx, dy = _disc(rng, size)
        if shape == "cylinder":
            z_side, r_side = rng.uniform(-1, 1, size), np.ones(size)
            cap_z = np.where(rng.uniform(size=size) < 0.5, 1.0, -1.0)
        else:
            frac = np.sqrt(rng.uniform(size=size))  # distance from the apex, as a fraction
            z_side, r_side = 1 - 2 * frac, frac
            cap_z = -np.ones(size)
        x = np.where(on_side, r_side * np.cos(a), dx)
        y = np.where(on_side, r_side * np.sin(a), dy)
        return np.stack([x, y, np.where(on_side, z_side, cap_z)], axis=-1)
    if shape == "torus":
        ring, tube = TORUS_RADII
        grid = np.linspace(0, 2 * np.pi, 2049)
        cdf = (ring * grid + tube * np.sin(grid)) / (2 * np.pi * ring)  # area density R + r cos v
        v = np.interp(rng.uniform(size=size), cdf, grid)
        u = rng.uniform(0, 2 * np.pi, size)
        radius = ring + tube * np.cos(v)
        return np.stack([radius * np.cos(u), radius * np.sin(u), tube * np.sin(v)], axis=-1)
    if shape == "disc":
        x, y = _disc(rng, size)
        return np.stack([x, y, np.zeros(size)], axis=-1)
    if shape == "pyramid":
        base = np.array([[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1]], np.float64)
        apex = np.array([0.0, 0.0, 1.0])
        sides = [[base[k], base[(k + 1) % 4], apex] for k in range(4)]
        corners = np.array([*sides, [base[0], base[1], base[2]], [base[0], base[2], base[3]]])
        return _triangles(rng, corners, size)
    raise ValueError(f"unknown shape {shape!r}; one of {POINT_CLASSES}")


def random_rotations(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, 3, 3) rotation matrices, uniform over SO(3) (from normalised Gaussian
    quaternions)."""
    q = rng.normal(size=(count, 4))
    w, x, y, z = (q / np.linalg.norm(q, axis=-1, keepdims=True)).T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def _points(split: str, rng: np.random.Generator, n: int, num_points: int) -> ModalityData:
    labels = _balanced_labels(rng, n, len(POINT_CLASSES))
    clouds = np.empty((n, num_points, 3))
    for c, shape in enumerate(POINT_CLASSES):
        members = np.flatnonzero(labels == c)
        clouds[members] = surface_points(shape, rng, len(members), num_points)
    clouds *= rng.uniform(*POINT_SCALE, size=(n, 1, 3))
    clouds = np.einsum("nij,npj->npi", random_rotations(rng, n), clouds)
    clouds += rng.normal(0.0, POINT_JITTER, clouds.shape)
    return ModalityData("points", centre_and_scale(clouds), labels, list(POINT_CLASSES))


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------

NAMES = (
    "anna", "ben", "clara", "david", "emma", "felix", "grace", "henry", "iris", "jack", "lena",
    "max", "nora", "oscar", "paula", "quinn", "rosa", "sam", "tara", "umar", "vera", "will",
    "yara", "zoe",
)  # fmt: skip
ACTIONS = (
    "found", "lost", "painted", "repaired", "sold", "bought", "carried", "opened", "hid",
    "cleaned", "borrowed", "dropped", "broke", "built", "stole", "washed",
)  # fmt: skip
ADJECTIVES = (
    "old", "new", "red", "blue", "green", "small", "large", "heavy", "broken", "shiny", "wooden",
    "strange",
)  # fmt: skip
OBJECTS = (
    "key", "box", "lamp", "chair", "book", "bicycle", "kite", "letter", "map", "clock", "basket",
    "guitar", "bottle", "coat", "ladder", "mirror", "boat", "drum", "hat", "table",
)  # fmt: skip
PLACES = (
    "park", "kitchen", "garden", "station", "library", "market", "school", "harbour", "forest",
    "museum", "office", "garage", "castle", "bakery", "hotel", "village",
)  # fmt: skip
STATES = (
    "tired", "happy", "hungry", "nervous", "busy", "calm", "curious", "proud", "late",
    "cheerful", "quiet", "angry",
)  # fmt: skip
WEATHER = ("cold", "warm", "windy", "grey", "sunny", "foggy")

ACTION_SENTENCE = "{name} {action} the {adjective} {object} in the {place} ."
MAIN_CUES = ("importantly", "crucially", "notably", "remarkably")  # flag the main event
OPENERS = ("later", "earlier", "meanwhile", "then")  # start other sentences: not flags
MENTION_SENTENCES = (  # a person named without doing anything
    "{name} was {state} .",
    "{name} felt very {state} .",
    "everyone said {name} was {state} .",
    "{name} lives near the {place} .",
)
FILLER_SENTENCE = "it was {weather} in the {place} ."
SUMMARY = "{name} {action} {adjective} {object} in {place}"
MAX_DOCUMENT_TOKENS = 57  # 2 + 9 (main event) + 3 x (2 + 9) (others) + 6 (mention) + 7 (filler)
SUMMARY_TOKENS = 7  # 6 words and <eos>


def text_vocabulary() -> Vocabulary:
    """The synthetic text's vocabulary: every word the generator can write, alphabetical (it
    depends on no seed or split, so all splits share it)."""
    templates = " ".join([ACTION_SENTENCE, *MENTION_SENTENCES, FILLER_SENTENCE, SUMMARY, ","])
    fixed = tokenize(re.sub(r"\{\w+\}", " ", templates))  # the words around the {slots}
    slots = [NAMES, ACTIONS, ADJECTIVES, OBJECTS, PLACES, STATES, WEATHER, MAIN_CUES, OPENERS]
    words = {*fixed, *(w for ws in slots for phrase in ws for w in tokenize(phrase))}
    return Vocabulary.build([" ".join(sorted(words))])


def make_document(rng: np.random.Generator) -> tuple[str, str]:
    """One (document, summary) pair.

    The document shuffles: the main event, an action sentence flagged by a cue word
    (``"notably , anna found the old key in the park ."``); the action sentences of two or
    three other people, half of them opened by a word that is not a flag (``"meanwhile , ben
    sold the red box in the school ."``); half the time a sentence that names someone without
    an action (``"everyone said ben was tired ."``) and half the time one with no person
    (``"it was cold in the park ."``). The summary is the flagged event as a headline: ``"anna
    found old key in park"``. It sits at no fixed place and is found by its content (the cue
    among look-alike openers), then compressed (articles and the full stop left out).
    """
    people = [NAMES[p] for p in rng.choice(len(NAMES), 4, replace=False)]
    hero, others = people[0], people[1 : 1 + rng.integers(2, 4)]

    def pick(words: tuple[str, ...]) -> str:
        return words[rng.integers(len(words))]

    def action(name: str) -> dict[str, str]:
        return dict(
            name=name,
            action=pick(ACTIONS),
            adjective=pick(ADJECTIVES),
            object=pick(OBJECTS),
            place=pick(PLACES),
        )

    event = action(hero)
    sentences = [f"{pick(MAIN_CUES)} , " + ACTION_SENTENCE.format(**event)]
    for name in others:
        opener = f"{pick(OPENERS)} , " if rng.random() < 0.5 else ""
        sentences.append(opener + ACTION_SENTENCE.format(**action(name)))
    if rng.random() < 0.5:
        who = pick((*others, hero, people[3]))
        template = pick(MENTION_SENTENCES)
        sentences.append(template.format(name=who, state=pick(STATES), place=pick(PLACES)))
    if rng.random() < 0.5:
        sentences.append(FILLER_SENTENCE.format(weather=pick(WEATHER), place=pick(PLACES)))
    order = rng.permutation(len(sentences))
    return " ".join(sentences[i] for i in order), SUMMARY.format(**event)


def _text(
    split: str,
    rng: np.random.Generator,
    n: int,
    document_length: int,
    summary_length: int,
    vocabulary: Vocabulary | None,
) -> ModalityData:
    if document_length < MAX_DOCUMENT_TOKENS or summary_length < SUMMARY_TOKENS:
        raise DatasetError(
            f"the synthetic text needs document_length >= {MAX_DOCUMENT_TOKENS} and "
            f"summary_length >= {SUMMARY_TOKENS}, got {document_length} and {summary_length}"
        )
    vocabulary = text_vocabulary() if vocabulary is None else vocabulary
    pairs = [make_document(rng) for _ in range(n)]
    documents = np.stack([vocabulary.encode(d, document_length) for d, _ in pairs])
    summaries = np.stack([vocabulary.encode(s, summary_length, eos=True) for _, s in pairs])
    return ModalityData("text", documents, None, [], summaries=summaries, vocabulary=vocabulary)


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def synthetic(
    modality: str,
    split: str,
    *,
    seed: int = 0,
    num_examples: int | None = None,
    vocabulary: Vocabulary | None = None,
    **sizes: int,
) -> ModalityData:
    """The generated ``split`` ("train", "val" or "test") of ``modality``.

    ``num_examples`` defaults to 1200 (train) / 300 (val, test), or the whole digits split for
    images (a smaller number takes a random subset of it). ``sizes`` override the modality's
    :data:`~jaxvision.data.modalities.base.DEFAULT_SIZES`; ``vocabulary`` (text only) encodes
    with another vocabulary than :func:`text_vocabulary`.
    """
    check_split(split)
    sizes = resolve_sizes(modality, sizes)
    if vocabulary is not None and modality != "text":
        raise DatasetError(f"vocabulary= is for text, not {modality}")
    if num_examples is not None and num_examples < 1:
        raise DatasetError(f"num_examples must be >= 1, got {num_examples}")
    rng = _generator(seed, split, modality)
    if modality == "image":
        return _image(split, rng, num_examples, **sizes)
    n = SPLIT_SIZES[split] if num_examples is None else num_examples
    if modality == "video":
        return _video(split, rng, n, **sizes)
    if modality == "audio":
        return _audio(split, rng, n, **sizes)
    if modality == "points":
        return _points(split, rng, n, **sizes)
    return _text(split, rng, n, vocabulary=vocabulary, **sizes)


def text_baselines(data: ModalityData, *, seed: int = 0) -> dict[str, float]:
    """Mean ROUGE-L F1 of two summaries that ignore the content, on a text split:

    ``lead_k``: the document's first k words, k the reference summary's length in words (an
    oracle length, in the baseline's favour); ``random_summary``: the reference summary of another
    document of the split, drawn by ``seed``. A model that reads the document should beat both.
    """
    from jaxvision.metrics.rouge import rouge_l

    if data.modality != "text" or data.vocabulary is None or data.summaries is None:
        raise DatasetError(f"text_baselines needs text data, got {data.modality}")
    n = len(data)
    if n < 2:
        raise DatasetError("text_baselines needs at least 2 documents")
    vocab = data.vocabulary
    documents = [vocab.decode(d).split() for d in data.inputs]
    references = [vocab.decode(s) for s in data.summaries]
    other = (np.arange(n) + np.random.default_rng(seed).integers(1, n, size=n)) % n
    lead = [
        rouge_l(" ".join(doc[: len(ref.split())]), ref)["fmeasure"]
        for doc, ref in zip(documents, references, strict=True)
    ]
    random = [
        rouge_l(references[j], ref)["fmeasure"] for j, ref in zip(other, references, strict=True)
    ]
    return {"lead_k": float(np.mean(lead)), "random_summary": float(np.mean(random))}

"""Readers of the on-disk formats, and :func:`load_modality`, the one entry point for generated and
real data.

Layouts (``ROOT`` is the ``spec`` path; a ``val`` split falls back to a ``validation`` or ``test``
folder or file, and ``test`` to ``val`` or ``validation``, as for the image folders):

* image: anything :func:`~jaxvision.data.datasets.load_dataset` reads (``digits``,
  ``folder:PATH``, ``cifar10:PATH``, or a bare folder path), resized to ``image_size``.
* audio: ``ROOT/SPLIT/CLASS/*.wav``, 8- or 16-bit PCM, mono or stereo (channels averaged), at
  exactly ``sample_rate``; cropped or zero-padded at the end to ``num_samples``; the levels are
  kept (-1..1), not normalised.
* points: ``ROOT/SPLIT/CLASS/*.npy`` ((P, 3) arrays, or (P, C > 3) whose first three columns are
  x, y, z) or ``*.off`` (the vertices of an Object File Format mesh); ``num_points`` of them
  picked at random by ``seed`` (with replacement when there are fewer), centred and scaled to a
  largest radius of 1.
* video: ``ROOT/SPLIT/CLASS/CLIP.npy`` ((T, H, W) or (T, H, W, C), uint8 or floats in [0, 1]) or
  ``ROOT/SPLIT/CLASS/CLIP/`` a folder of frame images in name order; ``num_frames`` frames taken
  at the centres of equal time segments, resized to ``frame_size``, grey (channel mean) or RGB.
* text: ``ROOT/SPLIT.jsonl``, one ``{"document": str, "summary": str}`` object a line.

Class names are the sorted class folder names and class ids their places in that list; pass the
training split's ``class_names`` when loading another split, so its ids match by name even when
that split lacks a class.
"""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
from PIL import Image

from jaxvision.data.datasets import IMAGE_EXTENSIONS, ArrayDataset, DatasetError, load_dataset
from jaxvision.data.modalities.base import (
    ModalityData,
    centre_and_scale,
    check_split,
    normalise,
    resize_frames,
    resolve_sizes,
)
from jaxvision.data.modalities.synthetic import digits_split, grey_images_to_inputs, synthetic
from jaxvision.data.text import Vocabulary

SPLIT_ALTERNATIVES = {
    "train": ("train",),
    "val": ("val", "validation", "test"),
    "test": ("test", "val", "validation"),
}


def _root(spec: str, modality: str) -> Path:
    root = Path(spec).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{modality} data folder not found: {root}")
    return root


def _split_folder(root: Path, split: str, modality: str) -> Path:
    for name in SPLIT_ALTERNATIVES[split]:
        if (root / name).is_dir():
            return root / name
    raise DatasetError(
        f"{root}: no {split!r} folder for the {modality} data (expected ROOT/{split}/CLASS/...)"
    )


def _class_files(
    folder: Path,
    modality: str,
    suffixes: tuple[str, ...],
    class_names: list[str] | None,
    *,
    folders_too: bool = False,
) -> tuple[list[Path], np.ndarray, list[str]]:
    """The files (sorted) of each class sub-folder of ``folder``, their labels and the class
    names (``class_names`` if given, else the sorted folder names)."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(
            f"{folder}: no class sub-folders found (expected {folder}/CLASS/FILES for {modality})"
        )
    names = list(classes) if class_names is None else list(class_names)
    unknown = [c for c in classes if c not in names]
    if unknown:
        raise DatasetError(
            f"{folder}: class folder(s) {unknown} are not among the given classes {names}"
        )
    paths, labels = [], []
    for cls in classes:
        found = [
            p
            for p in sorted((folder / cls).iterdir())
            if not p.name.startswith(".")
            and ((p.is_file() and p.suffix.lower() in suffixes) or (folders_too and p.is_dir()))
        ]
        if not found:
            what = " or ".join(suffixes) + (" files or frame folders" if folders_too else " files")
            raise DatasetError(f"class folder {folder / cls} holds no {what}")
        paths += found
        labels += [names.index(cls)] * len(found)
    return paths, np.asarray(labels, np.int32), names


# --------------------------------------------------------------------------------------------
# Image
# --------------------------------------------------------------------------------------------


def _load_images(
    spec: str, split: str, class_names: list[str] | None, image_size: int
) -> ModalityData:
    if ":" not in spec and spec != "digits":
        spec = f"folder:{spec}"  # a bare path
    ds = load_dataset(spec, digits_split(split))
    if isinstance(ds, ArrayDataset) and ds.name.startswith("digits"):
        inputs = grey_images_to_inputs(ds.images[..., 0] / 255.0, image_size)
    else:
        size = (image_size, image_size)
        inputs = normalise(
            np.stack(
                [
                    np.asarray(ds.image(i).resize(size, Image.Resampling.BILINEAR)) / 255.0
                    for i in range(len(ds))
                ]
            )
        )
    labels = np.asarray(ds.labels, np.int32)
    names = list(ds.class_names)
    if class_names is not None and list(class_names) != names:
        unknown = [c for c in names if c not in class_names]
        if unknown:
            raise DatasetError(
                f"{ds.name}: classes {unknown} are not among the given {class_names}"
            )
        labels = np.asarray([list(class_names).index(names[y]) for y in labels], np.int32)
        names = list(class_names)
    return ModalityData("image", inputs, labels, names)


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------


def read_wav(path: Path, sample_rate: int) -> np.ndarray:
    """The samples of an 8- or 16-bit PCM WAV file at ``sample_rate``, channels averaged, as
    float32 in [-1, 1)."""
    try:
        with wave.open(str(path), "rb") as f:
            rate, channels, width = f.getframerate(), f.getnchannels(), f.getsampwidth()
            raw = f.readframes(f.getnframes())
    except (wave.Error, EOFError) as e:
        raise DatasetError(f"{path}: not a PCM WAV file ({e})") from None
    if rate != sample_rate:
        raise DatasetError(
            f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz (resample the files or "
            f"pass sample_rate={rate})"
        )
    if width == 1:  # unsigned, centred on 128
        samples = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        samples = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    else:
        raise DatasetError(f"{path}: {8 * width}-bit samples; only 8- and 16-bit PCM are read")
    if len(samples) == 0:
        raise DatasetError(f"{path}: the file holds no samples")
    return samples.reshape(-1, channels).mean(axis=1)


def _load_audio(
    spec: str, split: str, class_names: list[str] | None, sample_rate: int, num_samples: int
) -> ModalityData:
    folder = _split_folder(_root(spec, "audio"), split, "audio")
    paths, labels, names = _class_files(folder, "audio", (".wav",), class_names)
    clips = np.zeros((len(paths), num_samples), np.float32)
    for i, path in enumerate(paths):
        samples = read_wav(path, sample_rate)[:num_samples]
        clips[i, : len(samples)] = samples
    return ModalityData("audio", clips, labels, names)


# --------------------------------------------------------------------------------------------
# Points
# --------------------------------------------------------------------------------------------


def read_off(path: Path) -> np.ndarray:
    """(V, 3) vertices of an Object File Format mesh (faces are not read)."""
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not a text OFF file") from None
    lines = [
        (n, line.split("#", 1)[0].strip()) for n, line in enumerate(text.splitlines(), start=1)
    ]
    lines = [(n, line) for n, line in lines if line]
    if not lines or not lines[0][1].startswith("OFF"):
        raise DatasetError(f"{path}: an OFF file starts with the line 'OFF'")
    header = lines[0][1][3:].split()  # some writers put the counts on the OFF line itself
    body = lines[1:]
    if not header:
        if not body:
            raise DatasetError(f"{path}: the counts line (vertices faces edges) is missing")
        count_line, header = body[0][0], body[0][1].split()
        body = body[1:]
    else:
        count_line = lines[0][0]
    try:
        num_vertices = int(header[0])
    except ValueError:
        raise DatasetError(
            f"{path}, line {count_line}: expected the counts 'vertices faces edges', "
            f"got {' '.join(header)!r}"
        ) from None
    if num_vertices < 1:
        raise DatasetError(f"{path}: the mesh has {num_vertices} vertices")
    if len(body) < num_vertices:
        raise DatasetError(
            f"{path}: the header announces {num_vertices} vertices, the file has {len(body)} "
            "lines after it"
        )
    vertices = np.empty((num_vertices, 3))
    for k, (n, line) in enumerate(body[:num_vertices]):
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            values = []
        if len(values) < 3:
            raise DatasetError(f"{path}, line {n}: expected a vertex 'x y z', got {line!r}")
        vertices[k] = values[:3]
    return vertices


def read_points(path: Path) -> np.ndarray:
    """(P, 3) float64 points of a ``.npy`` or ``.off`` file."""
    if path.suffix.lower() == ".off":
        points = read_off(path)
    else:
        try:
            points = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DatasetError(f"{path}: not a numpy .npy array ({e})") from None
        if points.ndim != 2 or points.shape[1] < 3 or points.shape[0] < 1:
            raise DatasetError(
                f"{path}: expected a (P, 3) array of points, got shape {points.shape}"
            )
        if not np.issubdtype(points.dtype, np.number):
            raise DatasetError(f"{path}: expected numbers, got {points.dtype}")
        points = points[:, :3].astype(np.float64)
    if not np.all(np.isfinite(points)):
        raise DatasetError(f"{path}: the points hold NaN or infinite values")
    return points


def _load_points(
    spec: str, split: str, class_names: list[str] | None, seed: int, num_points: int
) -> ModalityData:
    folder = _split_folder(_root(spec, "points"), split, "points")
    paths, labels, names = _class_files(folder, "points", (".npy", ".off"), class_names)
    clouds = np.empty((len(paths), num_points, 3), np.float32)
    for i, path in enumerate(paths):
        points = read_points(path)
        rng = np.random.default_rng([seed, i])
        pick = rng.choice(len(points), num_points, replace=len(points) < num_points)
        clouds[i] = centre_and_scale(points[pick], str(path))
    return ModalityData("points", clouds, labels, names)


# --------------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------------


def read_clip(path: Path) -> np.ndarray:
    """(T, H, W, C) float32 in [0, 1] from a ``.npy`` clip or a folder of frame images."""
    if path.is_dir():
        frames = sorted(
            p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not frames:
            raise DatasetError(f"{path}: the clip folder holds no frame images")
        images = []
        for p in frames:
            try:
                with Image.open(p) as img:
                    images.append(np.asarray(img.convert("RGB"), np.float32) / 255.0)
            except Exception as e:  # pillow and its plugins raise many kinds
                raise DatasetError(f"cannot decode frame {p}: {e}") from None
        if len({im.shape for im in images}) > 1:
            raise DatasetError(f"{path}: the frames have different sizes")
        return np.stack(images)
    try:
        clip = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DatasetError(f"{path}: not a numpy .npy array ({e})") from None
    if clip.ndim == 3:
        clip = clip[..., None]
    if clip.ndim != 4 or clip.shape[-1] not in (1, 3, 4) or min(clip.shape) < 1:
        raise DatasetError(
            f"{path}: expected a (T, H, W) or (T, H, W, C) clip with C = 1, 3 or 4, got shape "
            f"{clip.shape}"
        )
    clip = clip[..., :3]  # drop alpha
    if clip.dtype == np.uint8:
        return clip.astype(np.float32) / 255.0
    if not np.issubdtype(clip.dtype, np.floating):
        raise DatasetError(f"{path}: expected uint8 or floats in [0, 1], got {clip.dtype}")
    if not np.all(np.isfinite(clip)) or clip.min() < 0 or clip.max() > 1:
        raise DatasetError(
            f"{path}: float frames must be in [0, 1], found {np.nanmin(clip)}..{np.nanmax(clip)}"
        )
    return clip.astype(np.float32)


def sample_frames(num_available: int, num_frames: int) -> np.ndarray:
    """Indices of ``num_frames`` frames, one at the centre of each of ``num_frames`` equal time
    segments of the clip (frames repeat when the clip is shorter)."""
    return np.floor((np.arange(num_frames) + 0.5) * num_available / num_frames).astype(int)


def _load_video(
    spec: str,
    split: str,
    class_names: list[str] | None,
    num_frames: int,
    frame_size: int,
    channels: int,
    digit_size: int,
) -> ModalityData:
    del digit_size  # for the generator only
    folder = _split_folder(_root(spec, "video"), split, "video")
    paths, labels, names = _class_files(folder, "video", (".npy",), class_names, folders_too=True)
    videos = np.empty((len(paths), num_frames, frame_size, frame_size, channels), np.float32)
    for i, path in enumerate(paths):
        clip = read_clip(path)
        clip = clip[sample_frames(len(clip), num_frames)]
        if channels == 1:
            clip = clip.mean(axis=-1, keepdims=True)
        elif clip.shape[-1] == 1:
            clip = np.repeat(clip, 3, axis=-1)
        videos[i] = normalise(np.clip(resize_frames(clip, frame_size), 0.0, 1.0))
    return ModalityData("video", videos, labels, names)


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[tuple[str, str]]:
    """The (document, summary) pairs of a JSON-lines file; blank lines are skipped."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}, line {n}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise DatasetError(
                    f"{path}, line {n}: expected an object with 'document' and 'summary', "
                    f"got {type(record).__name__}"
                )
            for key in ("document", "summary"):
                if not isinstance(record.get(key), str):
                    problem = "missing" if key not in record else "not a string"
                    raise DatasetError(f"{path}, line {n}: {key!r} is {problem}")
            pairs.append((record["document"], record["summary"]))
    if not pairs:
        raise DatasetError(f"{path}: the file holds no examples")
    return pairs


def _jsonl_file(root: Path, split: str) -> Path:
    for name in SPLIT_ALTERNATIVES[split]:
        if (root / f"{name}.jsonl").is_file():
            return root / f"{name}.jsonl"
    raise DatasetError(f"{root}: no {split}.jsonl file (one JSON object a line)")


def _load_text(
    spec: str,
    split: str,
    vocabulary: Vocabulary | None,
    document_length: int,
    summary_length: int,
) -> ModalityData:
    root = _root(spec, "text")
    pairs = read_jsonl(_jsonl_file(root, split))
    if vocabulary is None:
        train = pairs if split == "train" else read_jsonl(_jsonl_file(root, "train"))
        vocabulary = Vocabulary.build([t for pair in train for t in pair])
    documents = np.stack([vocabulary.encode(d, document_length) for d, _ in pairs])
    summaries = np.stack([vocabulary.encode(s, summary_length, eos=True) for _, s in pairs])
    return ModalityData("text", documents, None, [], summaries=summaries, vocabulary=vocabulary)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def load_modality(
    modality: str,
    spec: str,
    split: str,
    *,
    seed: int = 0,
    class_names: list[str] | None = None,
    vocabulary: Vocabulary | None = None,
    num_examples: int | None = None,
    **sizes: int,
) -> ModalityData:
    """The ``split`` of ``modality`` named by ``spec``: ``"synthetic"`` for the generated data
    (:func:`~jaxvision.data.modalities.synthetic.synthetic`, ``num_examples`` and ``seed``
    apply), else a path in the layouts of this module's docstring (images: any
    :func:`~jaxvision.data.datasets.load_dataset` spec too).

    ``class_names`` imposes the training split's classes on another split; ``vocabulary`` (text)
    encodes with a given vocabulary, by default the one built from the TRAIN split's documents
    and summaries; ``seed`` picks the points of a point cloud file; ``sizes`` as in
    :data:`~jaxvision.data.modalities.base.DEFAULT_SIZES`.
    """
    check_split(split)
    if spec == "synthetic":
        data = synthetic(
            modality,
            split,
            seed=seed,
            num_examples=num_examples,
            **({"vocabulary": vocabulary} if vocabulary is not None else {}),
            **sizes,
        )
        if class_names is not None and list(class_names) != data.class_names:
            raise DatasetError(
                f"synthetic {modality} has the classes {data.class_names}, not {list(class_names)}"
            )
        return data
    if num_examples is not None:
        raise DatasetError("num_examples is for generated data (spec 'synthetic') only")
    sizes = resolve_sizes(modality, sizes)
    if vocabulary is not None and modality != "text":
        raise DatasetError(f"vocabulary= is for text, not {modality}")
    if class_names is not None and modality == "text":
        raise DatasetError("class_names= is for the classification modalities, not text")
    if modality == "image":
        return _load_images(spec, split, class_names, **sizes)
    if modality == "audio":
        return _load_audio(spec, split, class_names, **sizes)
    if modality == "points":
        return _load_points(spec, split, class_names, seed, **sizes)
    if modality == "video":
        return _load_video(spec, split, class_names, **sizes)
    return _load_text(spec, split, vocabulary, **sizes)

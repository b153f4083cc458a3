"""The in-memory container of one split of one modality, and helpers shared by the generators and
the file readers."""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from jaxvision.constants import MODALITIES
from jaxvision.data.text import Vocabulary
from jaxvision.errors import DatasetError

SPLITS = ("train", "val", "test")
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}  # part of every generator seed: splits differ

# The sizes each modality accepts (keyword arguments of ``synthetic`` and ``load_modality``) and
# their defaults. ``num_samples=None`` means one second at ``sample_rate``; ``digit_size=None``
# (the generated videos' digit) 3/8 of ``frame_size``, 12 pixels at 32.
DEFAULT_SIZES: dict[str, dict[str, object]] = {
    "image": {"image_size": 32},
    "video": {"num_frames": 8, "frame_size": 32, "channels": 1, "digit_size": None},
    "audio": {"sample_rate": 8000, "num_samples": None},
    "points": {"num_points": 256},
    "text": {"document_length": 64, "summary_length": 12},
}


@dataclasses.dataclass(eq=False)  # arrays: ``==`` would be ambiguous; compare fields instead
class ModalityData:
    """One split of one modality, in memory.

    ``inputs`` (N, ...): image (N, S, S, 3), video (N, T, S, S, C) and audio (N, samples) float32,
    points (N, P, 3) float32, text (N, document_length) int32 token ids padded with 0.
    ``labels`` (N,) int32 class ids into ``class_names`` (``None`` and ``[]`` for text);
    ``summaries`` (N, summary_length) int32 and ``vocabulary`` for text only.
    """

    modality: str
    inputs: np.ndarray
    labels: np.ndarray | None
    class_names: list[str]
    summaries: np.ndarray | None = None
    vocabulary: Vocabulary | None = None

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise DatasetError(f"unknown modality {self.modality!r}; one of {MODALITIES}")
        n = len(self.inputs)
        if n == 0:
            raise DatasetError(f"{self.modality}: the split is empty")
        if self.modality == "text":
            if self.summaries is None or self.vocabulary is None:
                raise DatasetError("text data needs summaries and a vocabulary")
            if len(self.summaries) != n:
                raise DatasetError(f"text: {n} documents but {len(self.summaries)} summaries")
            if self.labels is not None:
                raise DatasetError("text data has no labels (labels must be None)")
            return
        if self.labels is None:
            raise DatasetError(f"{self.modality}: classification data needs labels")
        self.labels = np.asarray(self.labels, np.int32)
        if self.labels.shape != (n,):
            raise DatasetError(
                f"{self.modality}: labels must be ({n},) for {n} inputs, got {self.labels.shape}"
            )
        if self.labels.min() < 0 or self.labels.max() >= len(self.class_names):
            raise DatasetError(
                f"{self.modality}: labels must be in [0, {len(self.class_names)}), found "
                f"{self.labels.min()}..{self.labels.max()}"
            )

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def take(self, indices: np.ndarray) -> ModalityData:
        """The examples ``indices``, in that order."""
        indices = np.asarray(indices, np.int64)
        return dataclasses.replace(
            self,
            inputs=self.inputs[indices],
            labels=None if self.labels is None else self.labels[indices],
            summaries=None if self.summaries is None else self.summaries[indices],
        )

    def subset_per_class(self, n: int, seed: int) -> ModalityData:
        """``n`` examples of each class, chosen at random by ``seed`` (the same every time),
        in their original order."""
        if self.labels is None:
            raise DatasetError(f"{self.modality} data has no classes to subset by")
        if n < 1:
            raise DatasetError(f"n must be >= 1 examples per class, got {n}")
        rng = np.random.default_rng(seed)
        chosen = []
        for c, name in enumerate(self.class_names):
            members = np.flatnonzero(self.labels == c)
            if len(members) < n:
                raise DatasetError(
                    f"{self.modality}: class {name!r} has {len(members)} examples, "
                    f"fewer than the {n} asked for"
                )
            chosen.append(rng.choice(members, n, replace=False))
        return self.take(np.sort(np.concatenate(chosen)))


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")


def resolve_sizes(modality: str, sizes: dict[str, object]) -> dict[str, object]:
    """The modality's default sizes updated by ``sizes``; unknown names and bad values raise."""
    if modality not in MODALITIES:
        raise DatasetError(f"unknown modality {modality!r}; one of {MODALITIES}")
    defaults = DEFAULT_SIZES[modality]
    unknown = sorted(set(sizes) - set(defaults))
    if unknown:
        raise DatasetError(
            f"unknown size option(s) {unknown} for {modality}; accepted: {sorted(defaults)}"
        )
    out = {**defaults, **sizes}
    if modality == "audio" and out["num_samples"] is None:
        out["num_samples"] = out["sample_rate"]
    if (
        modality == "video"
        and out["digit_size"] is None
        and isinstance(out["frame_size"], int | np.integer)
    ):
        out["digit_size"] = max(1, round(0.375 * out["frame_size"]))
    for name, value in out.items():
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
            raise DatasetError(f"{modality} {name} must be a positive integer, got {value!r}")
    if modality == "video" and out["channels"] not in (1, 3):
        raise DatasetError(f"video channels must be 1 or 3, got {out['channels']}")
    return {k: int(v) for k, v in out.items()}


def normalise(x: np.ndarray) -> np.ndarray:
    """[0, 1] -> [-1, 1]: (x - 0.5) / 0.5, float32."""
    return ((np.asarray(x, np.float32) - 0.5) / 0.5).astype(np.float32)


def resize_plane(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize (pillow) of one (H, W) float plane, kept in floating point."""
    img = Image.fromarray(np.ascontiguousarray(plane, np.float32))  # mode "F"
    return np.asarray(img.resize((width, height), Image.Resampling.BILINEAR), np.float32)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """(..., H, W, C) floats -> (..., size, size, C), bilinear, plane by plane."""
    lead, (h, w, c) = frames.shape[:-3], frames.shape[-3:]
    if (h, w) == (size, size):
        return frames.astype(np.float32)
    flat = frames.reshape(-1, h, w, c)
    out = np.empty((len(flat), size, size, c), np.float32)
    for i, frame in enumerate(flat):
        for k in range(c):
            out[i, :, :, k] = resize_plane(frame[:, :, k], size, size)
    return out.reshape(*lead, size, size, c)


def centre_and_scale(points: np.ndarray, what: str = "points") -> np.ndarray:
    """(..., P, 3) -> centred on the mean, scaled so the farthest point is at radius 1."""
    points = points - points.mean(axis=-2, keepdims=True)
    radius = np.linalg.norm(points, axis=-1).max(axis=-1, keepdims=True)[..., None]
    if np.any(radius <= 0):
        raise DatasetError(f"{what}: all points coincide, the cloud cannot be scaled")
    return (points / radius).astype(np.float32)

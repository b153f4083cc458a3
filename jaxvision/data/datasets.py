"""Image-classification data sets: the bundled digits, ImageNet-style folders, CIFAR-10 files.

Every data set exposes the same small interface - ``len(ds)``, ``ds.labels`` (int32 array),
``ds.num_classes``, ``ds.class_names`` and ``ds.image(i) -> PIL.Image`` (RGB) - so the loader and
the transforms do not care where pixels come from. ``load_dataset(spec, split)`` parses the
command-line spec: ``digits``, ``folder:PATH`` or ``cifar10:PATH``.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from jaxvision.data.images import IMAGE_EXTENSIONS, SKIP_HINT, open_image
from jaxvision.errors import DatasetError

SPLITS = ("train", "test")
DIGITS_TEST_FRACTION = 0.2  # 1,437 training and 360 held-out images, stratified by class
DIGITS_SPLIT_SEED = 0  # fixed: the held-out split is the same in every run


@dataclasses.dataclass
class ArrayDataset:
    """Images held in memory as uint8 (N, H, W, 3)."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    name: str
    # Small, already-framed images (digits, CIFAR) are evaluated by resizing the whole image;
    # photographs get the reference resize + centre crop.
    centre_crop: bool = False

    def __post_init__(self) -> None:
        if np.issubdtype(self.images.dtype, np.floating) and not np.all(np.isfinite(self.images)):
            raise DatasetError(f"{self.name}: images contain NaN or infinite values")
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise DatasetError(
                f"{self.name}: images must be uint8 (N, H, W, 3), got {self.images.dtype} "
                f"{self.images.shape}"
            )
        self.labels = np.asarray(self.labels)
        if self.labels.size and not np.issubdtype(self.labels.dtype, np.integer):
            raise DatasetError(f"{self.name}: labels must be integers, got {self.labels.dtype}")
        self.labels = self.labels.astype(np.int32)
        if len(self.images) != len(self.labels):
            raise DatasetError(
                f"{self.name}: {len(self.images)} images but {len(self.labels)} labels"
            )
        if len(self.labels) == 0:
            raise DatasetError(f"{self.name}: the data set is empty")
        if self.labels.min() < 0 or self.labels.max() >= self.num_classes:
            raise DatasetError(
                f"{self.name}: labels must be in [0, {self.num_classes}), found "
                f"{self.labels.min()}..{self.labels.max()}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])


@dataclasses.dataclass
class FolderDataset:
    """An ImageNet-style tree: one sub-folder per class, images read lazily with pillow."""

    paths: list[Path]
    labels: np.ndarray
    class_names: list[str]
    name: str
    skipped: int = 0
    centre_crop: bool = True

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> Image.Image:
        try:
            return open_image(self.paths[index])
        except DatasetError as e:
            raise DatasetError(f"{e} {SKIP_HINT}") from None


def _digits(split: str) -> ArrayDataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # Pixel values are 0..16 (counts of set pixels in 4x4 cells of the original 32x32 bitmaps).
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.repeat(images[..., None], 3, axis=-1)  # (N, 8, 8) -> (N, 8, 8, 3)
    index = np.arange(len(images))
    train_idx, test_idx = train_test_split(
        index,
        test_size=DIGITS_TEST_FRACTION,
        stratify=digits.target,
        random_state=DIGITS_SPLIT_SEED,
    )
    idx = np.sort(train_idx if split == "train" else test_idx)
    return ArrayDataset(
        images[idx], digits.target[idx], [str(i) for i in range(10)], f"digits/{split}"
    )


def _scan_folder(root: Path, name: str, skip_bad_images: bool) -> FolderDataset:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(f"{root}: no class sub-folders found (expected ROOT/CLASS/IMAGE files)")
    paths, labels = [], []
    for label, cls in enumerate(classes):
        for p in sorted((root / cls).rglob("*")):
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(p)
                labels.append(label)
    if not paths:
        raise DatasetError(
            f"{root}: the class folders hold no images ({', '.join(IMAGE_EXTENSIONS)})"
        )
    skipped = 0
    if skip_bad_images:
        good = []
        for p, y in zip(paths, labels, strict=True):
            try:
                open_image(p)
                good.append((p, y))
            except DatasetError:
                skipped += 1
        if not good:
            raise DatasetError(f"{root}: none of the {len(paths)} images could be decoded")
        paths, labels = [p for p, _ in good], [y for _, y in good]
    return FolderDataset(paths, np.asarray(labels, np.int32), classes, name, skipped=skipped)


def _folder(path: str, split: str, skip_bad_images: bool) -> FolderDataset:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(f"data folder not found: {root}")
    names = ("train",) if split == "train" else ("val", "validation", "test")
    for sub in names:
        if (root / sub).is_dir():
            return _scan_folder(root / sub, f"folder:{root / sub}", skip_bad_images)
    if (root / "train").is_dir():
        raise DatasetError(f"{root} has train/ but no val/ or test/ folder for evaluation")
    # One tree without split folders: a fixed stratified 80/20 split, as for digits.
    full = _scan_folder(root, f"folder:{root}", skip_bad_images)
    idx = _stratified_split(full.labels, split)
    return FolderDataset(
        [full.paths[i] for i in idx],
        full.labels[idx],
        full.class_names,
        f"{full.name}/{split}",
        skipped=full.skipped,
    )


def _stratified_split(labels: np.ndarray, split: str) -> np.ndarray:
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    chosen = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_test = max(1, int(round(len(members) * DIGITS_TEST_FRACTION))) if len(members) > 1 else 0
        chosen.append(members[:n_test] if split == "test" else members[n_test:])
    return np.sort(np.concatenate(chosen))


def _cifar10(path: str, split: str) -> ArrayDataset:
    root = Path(path).expanduser()
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        raise DatasetError(f"CIFAR-10 files not found in {root}: {', '.join(missing)}")
    images, labels = [], []
    for f in files:
        try:
            with open(root / f, "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            data = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32)
        except Exception as e:  # a damaged or foreign file: say which one
            raise DatasetError(f"{root / f}: not a CIFAR-10 python batch file ({e})") from None
        images.append(data.transpose(0, 2, 3, 1))  # (N, 3, 32, 32) -> (N, 32, 32, 3)
        labels.extend(batch[b"labels"])
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    meta = root / "batches.meta"
    if meta.is_file():
        with open(meta, "rb") as fh:
            names = [n.decode() for n in pickle.load(fh, encoding="bytes")[b"label_names"]]
    return ArrayDataset(np.concatenate(images), np.asarray(labels), names, f"cifar10/{split}")


def load_dataset(
    spec: str, split: str, *, skip_bad_images: bool = False
) -> ArrayDataset | FolderDataset:
    """The ``split`` ("train" or "test") of the data set named by ``spec``.

    ``digits`` | ``folder:PATH`` | ``cifar10:PATH``.
    """
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")
    kind, _, path = spec.partition(":")
    if kind == "digits" and not path:
        return _digits(split)
    if kind in ("folder", "cifar10"):
        if not path:
            raise DatasetError(f"{kind} needs a path: --data {kind}:PATH")
        return _folder(path, split, skip_bad_images) if kind == "folder" else _cifar10(path, split)
    raise DatasetError(f"unknown data set {spec!r}; use digits, folder:PATH or cifar10:PATH")

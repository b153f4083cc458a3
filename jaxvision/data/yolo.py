"""YOLO-format detection and segmentation data, and YOLOv8's training augmentations.

The ultralytics layout, which ``YOLO(...).train(data="data.yaml")`` reads::

    ROOT/data.yaml              path: ROOT, train: images/train, val: images/val, names: {0: ...}
    ROOT/images/train/a.png     an image
    ROOT/labels/train/a.txt     its objects, one per line (no file: no objects)

A label line is either a box, ``class cx cy w h``, or a polygon, ``class x1 y1 x2 y2 ...``
(three points or more), every coordinate normalised by the image width or height to [0, 1].

:class:`YoloDataset` reads that layout; :class:`DetectionSource` turns any detection data set
(a :class:`YoloDataset` or the generated :class:`~jaxvision.data.shapes.ShapesDataset`) into
fixed-shape examples for the :class:`~jaxvision.data.loader.BatchLoader`::

    image     (S, S, 3)        float32  pixels / 255 (YOLOv8 has no mean / std normalisation)
    boxes     (M, 4)           float32  xyxy, pixels of the S x S image
    classes   (M,)             int32
    box_mask  (M,)             float32  1 for a real object, 0 for padding
    masks     (M, S/r, S/r)    uint8    with ``masks=True``: instance masks at 1/r resolution

``M`` is ``max_objects``: padding keeps every batch the same shape under ``jit``; an image with
more objects is an error, never truncated.

Coordinates are continuous pixel coordinates: pixel ``(col, row)`` covers
``[col, col + 1) x [row, row + 1)`` and its centre is ``(col + 0.5, row + 0.5)``; a mask holds the
pixels whose centre lies inside the object.

Training augmentation (``train_example``) follows ultralytics' ``v8_transforms`` with its
``cfg/default.yaml`` values, each step drawing only from the generator it is handed:

1. load: resize so the longer side is S (``BaseDataset.load_image``: ``ceil`` rounding, bilinear);
2. mosaic (``Mosaic``, n=4): the image and three others drawn from the data set on a 2S x 2S
   gray canvas around a centre drawn from [S/2, 3S/2); boxes clipped to their tile;
3. random affine (``RandomPerspective``): zoom in [1 - scale, 1 + scale] about the canvas centre,
   translate the centre to [0.5 - translate, 0.5 + translate] * S, output S x S, boxes clipped to
   the image (with masks: re-fitted to what is left of the mask, as ultralytics re-derives boxes
   from transformed polygons) and filtered by ``box_candidates`` (wider and taller than 2 px,
   aspect ratio < 100, more than 10% of the (zoomed) area kept - 1% with masks, as ultralytics
   does for segments);
4. HSV jitter (``RandomHSV``: hue +-0.015 of a turn, saturation and value x [0.3, 1.7]);
5. horizontal flip with probability 0.5 (``RandomFlip``).

Without mosaic (``mosaic=False``, or the last ``close_mosaic`` epochs) step 3 works on the loaded
image alone, centred, as ultralytics does once ``close_mosaic`` switches mosaic off.

Simplified on purpose, or different:

- ``degrees``, ``shear`` and ``perspective`` are not implemented (their defaults are 0), so the
  affine is a zoom plus a shift; no MixUp, CutMix, copy-paste (default probability 0), vertical
  flip (``flipud`` 0) or Albumentations (blur, CLAHE, ... at p=0.01 each);
- mosaic partners are drawn from the whole data set, not from a buffer of recently loaded images;
- masks are warped as rasters (each output mask pixel samples the source under its centre) rather
  than as polygons, and kept one per object (ultralytics' ``overlap_mask`` merges them into one
  index image);
- without masks a box cut by a tile or the image edge is clipped (as in ultralytics), so for a
  non-rectangular shape it can be larger than what is left of the shape;
- colour goes through pillow's HSV (hue 0-255) instead of OpenCV's (hue 0-179): same jitter up to
  rounding; resizing is pillow's bilinear, which anti-aliases when it shrinks (OpenCV does not);
- evaluation letterboxes every image to the same S x S square (fixed shapes under ``jit``);
  ultralytics validates with ``rect`` batches padded only to the batch's own aspect ratio.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from jaxvision.data.images import IMAGE_EXTENSIONS, SKIP_HINT, open_image, scan_images
from jaxvision.data.letterbox import PAD_VALUE, letterbox
from jaxvision.errors import DatasetError

SPLITS = ("train", "val")
MAX_BAD_LISTED = 10  # undecodable images named in the error; the rest are counted
COORD_TOLERANCE = 1e-6  # normalised coordinates may overshoot [0, 1] by float rounding


# --------------------------------------------------------------------------------------------
# Annotations and polygons
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Annotations:
    """The objects of one image: ``classes`` (N,) int32, ``boxes`` (N, 4) float32 xyxy in pixels
    of the image, ``masks`` (N, H, W) bool or ``None`` for box-only labels."""

    classes: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray | None

    def __len__(self) -> int:
        return len(self.classes)


def rasterize_polygon(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """(height, width) bool mask of the pixels whose centre lies inside the polygon ``points``
    ((K, 2) x, y in pixels; even-odd rule).

    Written out rather than pillow's ``ImageDraw.polygon``, which rounds vertices to whole pixels
    and also paints the outline: a square spanning [3, 8) would cover 6 pixels instead of 5, a
    one-pixel bias on two sides that matters for small objects and would break the exact round
    trip mask -> polygon -> mask.
    """
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    mask = np.zeros((height, width), bool)
    if len(pts) < 3:
        return mask
    x0, y0 = pts[:, 0], pts[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)  # edge k runs from point k to point k + 1
    first = max(math.ceil(y0.min() - 0.5), 0)  # rows whose centre can be inside
    last = min(math.floor(y0.max() - 0.5), height - 1)
    if last < first:
        return mask
    centres_y = np.arange(first, last + 1) + 0.5  # (R,)
    # Half-open test: an edge crosses a row if exactly one end is at or below the centre line,
    # so a vertex on the line counts once and horizontal edges never count.
    crosses = (y0[:, None] <= centres_y) != (y1[:, None] <= centres_y)  # (E, R)
    edge, row = np.nonzero(crosses)
    x = x0[edge] + (centres_y[row] - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
    # Each crossing flips inside/outside from the first pixel whose centre is right of it.
    col = np.clip(np.ceil(x - 0.5), 0, width).astype(np.int64)
    flips = np.bincount(row * (width + 1) + col, minlength=len(centres_y) * (width + 1))
    inside = np.cumsum(flips.reshape(len(centres_y), width + 1), axis=1)[:, :width] % 2 == 1
    mask[first : last + 1] = inside
    return mask


# --------------------------------------------------------------------------------------------
# data.yaml: the subset of YAML that ultralytics data files use
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """A parsed data.yaml: image folders of each split and the class names."""

    root: Path
    train: Path
    val: Path
    names: list[str]


_KEY = re.compile(r"[A-Za-z_][\w.-]*")


def _strip_comment(line: str) -> str:
    """``line`` without a ``# comment`` (a ``#`` at the start or after a space, outside quotes)."""
    quote = None
    for k, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (k == 0 or line[k - 1].isspace()):
            return line[:k].rstrip()
    return line.rstrip()


def _scalar(text: str) -> str | None:
    """A YAML plain or quoted scalar; ``None`` for an empty value, ``~`` or ``null``."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return None if text in ("", "~", "null") else text


def _split_flow(text: str) -> list[str]:
    """The comma-separated items of a ``[...]`` or ``{...}`` flow collection, quotes respected."""
    items, quote, start = [], None, 0
    for k, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == ",":
            items.append(text[start:k])
            start = k + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def _parse_names(entries: list[tuple[int, str]], path: Path) -> list[str]:
    """Class names from ``- name`` items or ``index: name`` pairs (each with its line number)."""
    mapping: dict[int, str] = {}
    listed: list[str] = []
    for lineno, entry in entries:
        if entry.startswith("- ") or entry == "-":
            listed.append(_scalar(entry[1:]) or "")
            continue
        key, colon, value = entry.partition(":")
        if not colon or not key.strip().lstrip("-").isdigit():
            raise DatasetError(
                f"{path}, line {lineno}: cannot read class name {entry!r}: expected "
                "'- name' or 'index: name'"
            )
        mapping[int(key)] = _scalar(value) or ""
    if listed and mapping:
        raise DatasetError(f"{path}: names mixes '- name' items and 'index: name' pairs")
    if mapping:
        if sorted(mapping) != list(range(len(mapping))):
            raise DatasetError(
                f"{path}: class indices in names must be 0..{len(mapping) - 1}, got "
                f"{sorted(mapping)}"
            )
        listed = [mapping[k] for k in range(len(mapping))]
    if not listed or any(not n for n in listed):
        raise DatasetError(f"{path}: names must list at least one class, each with a name")
    return listed


def read_data_yaml(data_yaml: str | Path) -> DataConfig:
    """Parse an ultralytics data.yaml: ``path``, ``train``, ``val`` and ``names`` (a
    ``{0: name}`` mapping, block or inline, or a ``- name`` / ``[a, b]`` list).

    Other top-level keys (``nc``, ``test``, ``download`` ...) are skipped, ``nc`` is checked
    against ``names``. ``train`` and ``val`` must be image folders (ultralytics also accepts lists
    and .txt files of image paths). A relative ``path`` is taken relative to the YAML file
    (ultralytics resolves it against its ``datasets_dir`` setting); no ``path`` means the YAML's
    folder.
    """
    path = Path(data_yaml).expanduser()
    if not path.is_file():
        raise DatasetError(f"data YAML not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read data YAML {path}: {e}") from None
    values: dict[str, str | None] = {}
    blocks: dict[str, list[tuple[int, str]]] = {}
    key = None
    for lineno, raw in enumerate(lines, 1):
        line = _strip_comment(raw)
        if not line.strip() or line.strip() in ("---", "..."):
            continue
        if line[0].isspace():  # belongs to the block of the last top-level key
            if key is None:
                raise DatasetError(f"{path}, line {lineno}: indented line outside a key: {raw!r}")
            blocks[key].append((lineno, line.strip()))
            continue
        name, colon, rest = line.partition(":")
        if not colon or not _KEY.fullmatch(name.strip()) or (rest and not rest[0].isspace()):
            raise DatasetError(
                f"{path}, line {lineno}: cannot read {raw!r}: only 'key: value' lines and the "
                "names list / mapping of an ultralytics data YAML are understood"
            )
        key = name.strip()
        values[key], blocks[key] = rest.strip(), []

    def scalar(k: str) -> str | None:
        if k not in values:
            return None
        text = values[k]
        if blocks[k] or text.startswith(("[", "{", "|", ">")):
            raise DatasetError(
                f"{path}: {k} must be a single folder name, got a list or block "
                "(lists of folders and multi-line values are not supported)"
            )
        return _scalar(text)

    if "names" not in values:
        raise DatasetError(f"{path}: no 'names:' (the class names) found")
    text = values["names"]
    if text.startswith("[") and text.endswith("]"):
        entries = [(0, f"- {item}") for item in _split_flow(text[1:-1])]
    elif text.startswith("{") and text.endswith("}"):
        entries = [(0, item) for item in _split_flow(text[1:-1])]
    elif text:
        raise DatasetError(f"{path}: cannot read names: {text!r}")
    else:
        entries = blocks["names"]
    names = _parse_names(entries, path)
    nc = scalar("nc")
    if nc is not None and nc != str(len(names)):
        raise DatasetError(f"{path}: nc is {nc} but names lists {len(names)} classes")

    base = scalar("path")
    root = path.parent if base is None else Path(base).expanduser()
    if not root.is_absolute():
        root = path.parent / root
    folders = {}
    for split in SPLITS:
        folder = scalar(split)
        if folder is None:
            raise DatasetError(f"{path}: no '{split}:' image folder given")
        folder_path = Path(folder).expanduser()
        folder_path = folder_path if folder_path.is_absolute() else root / folder_path
        if folder_path.suffix == ".txt":
            raise DatasetError(
                f"{path}: {split}: {folder} is a list file; only image folders are supported"
            )
        folders[split] = folder_path
    return DataConfig(root=root, train=folders["train"], val=folders["val"], names=names)


def _quote(text: str) -> str:
    """``text`` as a YAML scalar: plain when that is safe, else single-quoted (so that names such
    as ``no``, ``1`` or ``a: b`` stay strings)."""
    plain = re.fullmatch(r"[\w./~\\][\w ./~\\:-]*", text) and not (
        text.endswith((" ", ":")) or ": " in text or " #" in text
    )
    special = text.lower() in ("~", "null", "true", "false", "yes", "no", "on", "off")
    if plain and not special and not _is_float(text):
        return text
    return "'" + text.replace("'", "''") + "'"


def write_data_yaml(
    data_yaml: str | Path,
    names: list[str],
    *,
    root: str | Path | None = None,
    train: str = "images/train",
    val: str = "images/val",
) -> Path:
    """Write a data.yaml that ultralytics and :func:`read_data_yaml` both read. ``root``
    defaults to the YAML's folder; it is written as an absolute path, because ultralytics
    resolves a relative one against its own ``datasets_dir``."""
    data_yaml = Path(data_yaml)
    root = Path(root if root is not None else data_yaml.parent).expanduser().resolve()
    lines = [f"path: {_quote(str(root))}", f"train: {train}", f"val: {val}", "names:"]
    lines += [f"  {k}: {_quote(n)}" for k, n in enumerate(names)]
    data_yaml.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data_yaml


# --------------------------------------------------------------------------------------------
# Label files and the data set
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Labels:
    classes: np.ndarray  # (N,) int32
    boxes: np.ndarray  # (N, 4) float64 xyxy, normalised
    polygons: list[np.ndarray] | None  # N arrays (K, 2) normalised, or None for box labels


def label_path(image_path: Path) -> Path:
    """The label file of an image: the last ``images`` folder of its path replaced by ``labels``
    and the suffix by ``.txt`` (ultralytics ``img2label_paths``)."""
    parts = list(image_path.with_suffix(".txt").parts)
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == "images":
            parts[k] = "labels"
            break
    return Path(*parts)


def read_labels(path: Path, num_classes: int) -> _Labels:
    """Parse a label file; a bad line raises :class:`DatasetError` naming the file and line."""
    empty = _Labels(np.zeros(0, np.int32), np.zeros((0, 4)), None)
    if not path.is_file():
        return empty
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read label file {path}: {e}") from None
    classes, boxes, polygons, kinds = [], [], [], set()
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue

        def bad(why: str, lineno: int = lineno, line: str = line) -> DatasetError:
            return DatasetError(f"bad label in {path}, line {lineno}: {why}: {line.strip()!r}")

        if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
            raise bad(
                f"{len(fields)} columns; expected 5 (class cx cy w h) or a class and 3 or "
                "more x y pairs"
            )
        try:
            numbers = np.array([float(f) for f in fields])
        except ValueError:
            word = next(f for f in fields if not _is_float(f))
            raise bad(f"{word!r} is not a number") from None
        if not np.all(np.isfinite(numbers)):
            raise bad("not a finite number")
        cls, coords = numbers[0], numbers[1:]
        if cls != int(cls) or not 0 <= cls < num_classes:
            raise bad(f"class {fields[0]} is not a class id in 0..{num_classes - 1}")
        outside = (coords < -COORD_TOLERANCE) | (coords > 1 + COORD_TOLERANCE)
        if outside.any():
            raise bad(
                f"coordinate {fields[1 + int(np.argmax(outside))]} outside [0, 1] (coordinates "
                "are normalised by the image width and height)"
            )
        coords = np.clip(coords, 0.0, 1.0)
        classes.append(int(cls))
        if len(fields) == 5:
            cx, cy, w, h = coords
            box = np.clip([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 0.0, 1.0)
            boxes.append(box)
            kinds.add("box")
        else:
            points = coords.reshape(-1, 2)
            polygons.append(points)
            boxes.append(np.concatenate([points.min(0), points.max(0)]))
            kinds.add("polygon")
        if len(kinds) == 2:
            raise bad("mixes box lines and polygon lines in one file")
    if not classes:
        return empty
    return _Labels(
        np.asarray(classes, np.int32),
        np.asarray(boxes, np.float64),
        polygons if kinds == {"polygon"} else None,
    )


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class YoloDataset:
    """A split of a YOLO-format data set: ``len``, ``class_names``, ``image(i)`` (PIL RGB) and
    ``annotations(i)`` (boxes in pixels; masks rasterised from polygon labels, ``None`` for box
    labels).

    Every label file is parsed and every image's header checked up front, so a bad line fails at
    once, naming its file and line, and all undecodable images are listed together.
    ``has_masks`` is true when every labelled image uses polygons; a data set mixing box files
    and polygon files is read as boxes only, as ultralytics does.
    """

    def __init__(self, data_yaml: str | Path, split: str, *, skip_bad_images: bool = False):
        if split not in SPLITS:
            raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")
        config = read_data_yaml(data_yaml)
        folder = config.train if split == "train" else config.val
        if not folder.is_dir():
            raise DatasetError(f"{data_yaml}: {split} image folder not found: {folder}")
        paths = sorted(
            p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not paths:
            raise DatasetError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)})")
        self.class_names = list(config.names)
        self.name = f"yolo:{folder}"
        sizes, bad = scan_images(paths)
        if bad and not skip_bad_images:
            shown = bad[:MAX_BAD_LISTED] + [f"... and {len(bad) - MAX_BAD_LISTED} more"] * (
                len(bad) > MAX_BAD_LISTED
            )
            raise DatasetError(
                f"{folder}: {len(bad)} of {len(paths)} images cannot be decoded {SKIP_HINT}:\n"
                + "\n".join(shown)
            )
        if len(bad) == len(paths):
            raise DatasetError(f"{folder}: none of the {len(paths)} images could be decoded")
        self.skipped = len(bad)
        paths = [p for i, p in enumerate(paths) if i in sizes]
        # (width, height) after EXIF rotation, read from each header by the scan
        self._sizes = [size for _, size in sorted(sizes.items())]
        self.paths = paths
        self._labels = [read_labels(label_path(p), len(self.class_names)) for p in paths]
        with_polygons = sum(lab.polygons is not None for lab in self._labels)
        with_boxes = sum(len(lab.classes) > 0 and lab.polygons is None for lab in self._labels)
        self.has_masks = with_polygons > 0 and with_boxes == 0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> Image.Image:
        return open_image(self.paths[index])

    def image_size(self, index: int) -> tuple[int, int]:
        """(width, height) of image ``index`` after EXIF rotation."""
        return self._sizes[index]

    def annotations(self, index: int, *, with_masks: bool = True) -> Annotations:
        labels = self._labels[index]
        w, h = self.image_size(index)
        boxes = (labels.boxes * np.array([w, h, w, h])).astype(np.float32)
        masks = None
        if self.has_masks and with_masks:
            masks = np.zeros((len(labels.classes), h, w), bool)
            for k, polygon in enumerate(labels.polygons or []):
                masks[k] = rasterize_polygon(polygon * np.array([w, h]), h, w)
        return Annotations(labels.classes.copy(), boxes, masks)


# --------------------------------------------------------------------------------------------
# YOLOv8 training augmentations, each a pure function of its inputs
# --------------------------------------------------------------------------------------------


class DetectionDataset(Protocol):
    """What :class:`DetectionSource` needs: ``ShapesDataset`` and ``YoloDataset`` have it."""

    name: str
    class_names: list[str]

    def __len__(self) -> int: ...

    def image(self, index: int) -> Image.Image: ...

    def annotations(self, index: int, *, with_masks: bool = True) -> Annotations: ...


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Strengths of YOLOv8's training augmentation (ultralytics ``cfg/default.yaml``)."""

    scale: float = 0.5  # zoom factor drawn from [1 - scale, 1 + scale]
    translate: float = 0.1  # centre moved by up to this fraction of the image side
    hsv_h: float = 0.015  # hue shift, fraction of a turn
    hsv_s: float = 0.7  # saturation x [1 - hsv_s, 1 + hsv_s]
    hsv_v: float = 0.4  # value x [1 - hsv_v, 1 + hsv_v]
    fliplr: float = 0.5  # probability of a horizontal flip


@dataclasses.dataclass(frozen=True)
class Piece:
    """The objects of one image placed on a canvas: boxes in canvas pixels, masks kept in the
    image's own pixels with the map ``to_canvas`` (3x3) and the ``window`` (x1, y1, x2, y2, image
    pixels) of the image that is visible on the canvas."""

    classes: np.ndarray  # (N,) int32
    boxes: np.ndarray  # (N, 4) float64, canvas pixels
    masks: np.ndarray | None  # (N, H0, W0) bool, image pixels
    to_canvas: np.ndarray  # (3, 3)
    window: tuple[float, float, float, float]

    def select(self, keep: np.ndarray) -> Piece:
        masks = None if self.masks is None else self.masks[keep]
        return dataclasses.replace(
            self, classes=self.classes[keep], boxes=self.boxes[keep], masks=masks
        )


def mosaic_layout(
    centre: tuple[int, int], sizes: list[tuple[int, int]], size: int
) -> list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
    """Where four images of ``sizes`` ((w, h) each, longer side ``size``) go on the 2S x 2S
    mosaic canvas: for each, the canvas rectangle and the image rectangle copied into it (both
    x1, y1, x2, y2). The images meet at ``centre`` (x, y): top-left, top-right, bottom-left,
    bottom-right (ultralytics ``Mosaic._mosaic4``); the parts that fall off the canvas are cut."""
    xc, yc = centre
    edge = 2 * size
    layout = []
    for k, (w, h) in enumerate(sizes):
        if k == 0:  # top left: the image's bottom-right corner at the centre
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
        elif k == 1:  # top right
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, edge), yc
            x1b, y1b = 0, h - (y2a - y1a)
        elif k == 2:  # bottom left
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(yc + h, edge)
            x1b, y1b = w - (x2a - x1a), 0
        else:  # bottom right
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, edge), min(yc + h, edge)
            x1b, y1b = 0, 0
        canvas_rect = (x1a, y1a, x2a, y2a)
        image_rect = (x1b, y1b, x1b + (x2a - x1a), y1b + (y2a - y1a))
        layout.append((canvas_rect, image_rect))
    return layout


def clip_boxes(boxes: np.ndarray, rect: tuple[float, float, float, float]) -> np.ndarray:
    """xyxy boxes clipped to ``rect`` (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = rect
    return np.clip(boxes, [x1, y1, x1, y1], [x2, y2, x2, y2])


def box_candidates(
    before: np.ndarray,
    after: np.ndarray,
    *,
    min_size: float = 2.0,
    max_aspect: float = 100.0,
    min_area_ratio: float = 0.1,
) -> np.ndarray:
    """Which boxes survive an augmentation (ultralytics ``RandomPerspective.box_candidates``):
    wider and taller than ``min_size`` px, aspect ratio under ``max_aspect``, and more than
    ``min_area_ratio`` of the area they would have had unclipped (``before``, already zoomed)."""
    eps = 1e-16
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    area_ratio = w2 * h2 / (w1 * h1 + eps)
    return (w2 > min_size) & (h2 > min_size) & (area_ratio > min_area_ratio) & (aspect < max_aspect)


def fit_boxes(
    masks: np.ndarray,
    matrix: np.ndarray,
    window: tuple[float, float, float, float],
    size: int,
) -> np.ndarray:
    """(N, 4) boxes, in output pixels, tight around the part of each (N, H, W) mask that lies in
    ``window`` (mask pixels) and that ``matrix`` (mask -> output, a zoom and a shift) brings into
    the ``size`` x ``size`` output. An object with nothing left gets an empty box (all zeros).

    Ultralytics re-derives boxes from the transformed polygons when it has them; this is the
    same for masks: a shape cut by the image edge gets the box of what is left of it, not the
    clipped box of the whole shape."""
    n, height, width = masks.shape
    inverse = np.linalg.inv(matrix)
    # The visible rectangle, in mask pixels, and the pixels whose centre lies in it.
    x_lo = max(window[0], inverse[0, 2], 0.0)
    x_hi = min(window[2], inverse[0, 0] * size + inverse[0, 2], float(width))
    y_lo = max(window[1], inverse[1, 2], 0.0)
    y_hi = min(window[3], inverse[1, 1] * size + inverse[1, 2], float(height))
    c0, c1 = max(math.ceil(x_lo - 0.5), 0), min(math.ceil(x_hi - 0.5), width)
    r0, r1 = max(math.ceil(y_lo - 0.5), 0), min(math.ceil(y_hi - 0.5), height)
    scale = np.array([matrix[0, 0], matrix[1, 1], matrix[0, 0], matrix[1, 1]])
    offset = matrix[[0, 1, 0, 1], 2]
    boxes = np.zeros((n, 4))
    for k in range(n):
        part = masks[k, r0:r1, c0:c1]
        cols, rows = np.flatnonzero(part.any(0)), np.flatnonzero(part.any(1))
        if len(cols) == 0:
            continue
        box = np.array([c0 + cols[0], r0 + rows[0], c0 + cols[-1] + 1, r0 + rows[-1] + 1])
        box = np.clip(box, [x_lo, y_lo, x_lo, y_lo], [x_hi, y_hi, x_hi, y_hi])
        boxes[k] = box * scale + offset
    return boxes


def warp_image(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) image mapped by the 3x3 affine ``matrix`` (image -> output pixels) onto a
    ``size`` x ``size`` gray canvas, bilinear (cv2.warpAffine's INTER_LINEAR, border 114)."""
    inverse = np.linalg.inv(matrix)  # pillow asks, for each output pixel, where to read
    out = Image.fromarray(image).transform(
        (size, size),
        Image.Transform.AFFINE,
        tuple(inverse[:2].ravel()),
        resample=Image.Resampling.BILINEAR,
        fillcolor=(PAD_VALUE,) * 3,
    )
    return np.asarray(out)


def warp_masks(
    masks: np.ndarray,
    matrix: np.ndarray,
    window: tuple[float, float, float, float],
    size: int,
    ratio: int,
) -> np.ndarray:
    """(N, H, W) bool masks mapped by ``matrix`` (mask -> output pixels, a zoom and a shift) to
    (N, size / ratio, size / ratio) uint8, each output mask pixel taking the value of the source
    pixel under its centre (0 outside ``window``, the source region that is visible)."""
    if abs(matrix[0, 1]) > 1e-12 or abs(matrix[1, 0]) > 1e-12:
        raise ValueError("warp_masks handles a zoom and a shift only (no rotation or shear)")
    n, height, width = masks.shape
    centres = (np.arange(size // ratio) + 0.5) * ratio  # output pixels, (G,)
    inverse = np.linalg.inv(matrix)
    xs = inverse[0, 0] * centres + inverse[0, 2]  # the axes are separable: x from x, y from y
    ys = inverse[1, 1] * centres + inverse[1, 2]
    x1, y1, x2, y2 = window
    valid_x = (xs >= max(x1, 0)) & (xs < min(x2, width))
    valid_y = (ys >= max(y1, 0)) & (ys < min(y2, height))
    cols = np.clip(np.floor(xs).astype(np.int64), 0, max(width - 1, 0))
    rows = np.clip(np.floor(ys).astype(np.int64), 0, max(height - 1, 0))
    if n == 0 or width == 0 or height == 0:
        return np.zeros((n, len(centres), len(centres)), np.uint8)
    sampled = masks[:, rows[:, None], cols[None, :]]  # (N, G, G)
    return (sampled & valid_y[:, None] & valid_x[None, :]).astype(np.uint8)


def hsv_jitter(image: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Shift hue by ``gains[0]`` of a turn and scale saturation and value by ``1 + gains[1]``,
    ``1 + gains[2]``, through look-up tables (ultralytics ``RandomHSV``)."""
    x = np.arange(256, dtype=np.float64)
    hue = ((x + gains[0] * 256) % 256).astype(np.uint8)  # pillow's hue runs 0..255 for a turn
    sat = np.clip(x * (1 + gains[1]), 0, 255).astype(np.uint8)
    val = np.clip(x * (1 + gains[2]), 0, 255).astype(np.uint8)
    h, s, v = Image.fromarray(image).convert("HSV").split()
    h, s, v = h.point(hue.tolist()), s.point(sat.tolist()), v.point(val.tolist())
    return np.asarray(Image.merge("HSV", (h, s, v)).convert("RGB"))


def resize_long_side(image: Image.Image, size: int) -> Image.Image:
    """``image`` with its longer side resized to ``size`` (ultralytics ``load_image``: sides
    rounded up, capped at ``size``)."""
    w0, h0 = image.size
    r = size / max(w0, h0)
    if r == 1:
        return image
    w, h = min(math.ceil(w0 * r), size), min(math.ceil(h0 * r), size)
    return image.resize((max(w, 1), max(h, 1)), Image.Resampling.BILINEAR)


class DetectionSource:
    """Detection / segmentation examples of a data set for the :class:`BatchLoader` (see the
    module docstring for the example format and the augmentations).

    ``augment=False`` makes training examples the evaluation examples (letterboxed). With
    ``epochs`` given, :meth:`set_epoch` switches mosaic off for the last ``close_mosaic`` epochs.
    """

    def __init__(
        self,
        dataset: DetectionDataset,
        *,
        image_size: int,
        max_objects: int = 32,
        augment: bool = True,
        mosaic: bool = True,
        close_mosaic: int = 10,
        epochs: int | None = None,
        masks: bool = False,
        mask_ratio: int = 4,
        augmentation: Augmentation = Augmentation(),  # noqa: B008 (frozen, so shared safely)
    ):
        if image_size < 1 or max_objects < 1:
            raise ValueError(f"image_size and max_objects must be >= 1: {image_size, max_objects}")
        if masks and (mask_ratio < 1 or image_size % mask_ratio):
            raise ValueError(
                f"image_size {image_size} must be a multiple of mask_ratio {mask_ratio}"
            )
        if masks and not getattr(dataset, "has_masks", True):
            raise DatasetError(
                f"{dataset.name}: masks=True needs polygon labels on every labelled image "
                "(class x1 y1 x2 y2 ...); these labels are boxes (or a mix of boxes and polygons)"
            )
        self.dataset = dataset
        self.image_size = image_size
        self.max_objects = max_objects
        self.augment = augment
        self.mosaic = mosaic
        self.close_mosaic = close_mosaic
        self.epochs = epochs
        self.masks = masks
        self.mask_ratio = mask_ratio
        self.augmentation = augmentation
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """Called by the loader before it makes epoch ``epoch``'s training examples."""
        self.epoch = epoch

    @property
    def mosaic_active(self) -> bool:
        closed = self.epochs is not None and self.epoch >= self.epochs - self.close_mosaic
        return self.mosaic and not closed

    # -- evaluation ----------------------------------------------------------------------------

    def eval_example(self, index: int) -> dict[str, np.ndarray]:
        """Letterboxed to ``image_size`` (ultralytics validation), no randomness."""
        image, box = letterbox(self.dataset.image(index), self.image_size)
        annotations = self.dataset.annotations(index, with_masks=self.masks)
        masks = None
        if self.masks:
            window = (0, 0, box.width, box.height)
            masks = warp_masks(
                annotations.masks, box.matrix, window, self.image_size, self.mask_ratio
            )
        boxes = box.boxes_to_letterbox(annotations.boxes)
        return self._pack(self._describe(index), image, boxes, annotations.classes, masks)

    # -- training ------------------------------------------------------------------------------

    def train_example(self, index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        if not self.augment:
            return self.eval_example(index)
        size, aug = self.image_size, self.augmentation
        if self.mosaic_active:
            partners = rng.integers(0, len(self.dataset), size=3)
            indices = [index, *(int(i) for i in partners)]
            canvas, pieces = self._mosaic(indices, rng)
            description = "the mosaic of " + ", ".join(self._describe(i) for i in indices)
        else:
            image, piece = self._load(index)
            canvas, pieces, description = np.asarray(image), [piece], self._describe(index)

        # Random affine: zoom about the canvas centre, move that centre near the image centre.
        zoom = rng.uniform(1 - aug.scale, 1 + aug.scale)
        shift = rng.uniform(0.5 - aug.translate, 0.5 + aug.translate, size=2) * size
        height, width = canvas.shape[:2]
        matrix = np.array(
            [
                [zoom, 0.0, shift[0] - zoom * width / 2],
                [0.0, zoom, shift[1] - zoom * height / 2],
                [0.0, 0.0, 1.0],
            ]
        )
        image = warp_image(canvas, matrix, size)
        area_ratio = 0.01 if self.masks else 0.1  # ultralytics: 0.01 when there are segments
        classes, boxes, masks = [], [], []
        for piece in pieces:
            to_output = matrix @ piece.to_canvas
            if self.masks:  # boxes of what is left of each mask
                after = fit_boxes(piece.masks, to_output, piece.window, size)
            else:  # the boxes moved, then clipped to the image
                after = clip_boxes(piece.boxes * zoom + matrix[[0, 1, 0, 1], 2], (0, 0, size, size))
            keep = box_candidates(piece.boxes * zoom, after, min_area_ratio=area_ratio)
            classes.append(piece.classes[keep])
            boxes.append(after[keep])
            if self.masks:
                kept = piece.masks[keep]
                masks.append(warp_masks(kept, to_output, piece.window, size, self.mask_ratio))
        classes, boxes = np.concatenate(classes), np.concatenate(boxes)
        masks = np.concatenate(masks) if self.masks else None

        gains = rng.uniform(-1, 1, size=3) * [aug.hsv_h, aug.hsv_s, aug.hsv_v]
        if any(gains):
            image = hsv_jitter(image, gains)
        if rng.random() < aug.fliplr:
            image = image[:, ::-1]
            boxes = np.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], 1)
            masks = None if masks is None else masks[:, :, ::-1]
        return self._pack(description, image, boxes, classes, masks)

    def _load(self, index: int) -> tuple[Image.Image, Piece]:
        """Image ``index`` with its longer side resized to ``image_size`` and its objects."""
        original = self.dataset.image(index)
        annotations = self.dataset.annotations(index, with_masks=self.masks)
        image = resize_long_side(original, self.image_size)
        # Per axis, as ultralytics scales normalised labels by the resized width and height.
        sx, sy = image.width / original.width, image.height / original.height
        boxes = annotations.boxes.astype(np.float64) * [sx, sy, sx, sy]
        to_canvas = np.diag([sx, sy, 1.0])
        window = (0.0, 0.0, float(original.width), float(original.height))
        return image, Piece(annotations.classes, boxes, annotations.masks, to_canvas, window)

    def _mosaic(self, indices: list[int], rng: np.random.Generator) -> tuple[np.ndarray, list]:
        """Four images on a 2S x 2S canvas around a random centre in [S/2, 3S/2)."""
        size = self.image_size
        centre_y, centre_x = (int(rng.uniform(size / 2, 3 * size / 2)) for _ in range(2))
        loaded = [self._load(i) for i in indices]
        layout = mosaic_layout((centre_x, centre_y), [img.size for img, _ in loaded], size)
        canvas = np.full((2 * size, 2 * size, 3), PAD_VALUE, np.uint8)
        pieces = []
        for (image, piece), (canvas_rect, image_rect) in zip(loaded, layout, strict=True):
            x1a, y1a, x2a, y2a = canvas_rect
            x1b, y1b, x2b, y2b = image_rect
            canvas[y1a:y2a, x1a:x2a] = np.asarray(image)[y1b:y2b, x1b:x2b]
            dx, dy = x1a - x1b, y1a - y1b
            boxes = clip_boxes(piece.boxes + [dx, dy, dx, dy], canvas_rect)
            sx, sy = piece.to_canvas[0, 0], piece.to_canvas[1, 1]
            placed = Piece(
                classes=piece.classes,
                boxes=boxes,
                masks=piece.masks,
                to_canvas=np.array([[sx, 0.0, dx], [0.0, sy, dy], [0.0, 0.0, 1.0]]),
                window=(x1b / sx, y1b / sy, x2b / sx, y2b / sy),
            )
            # Ultralytics drops boxes left with no area by the cut (remove_zero_area_boxes).
            w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            pieces.append(placed.select((w > 0) & (h > 0)))
        return canvas, pieces

    # -- packing -------------------------------------------------------------------------------

    def _describe(self, index: int) -> str:
        paths = getattr(self.dataset, "paths", None)
        return str(paths[index]) if paths is not None else f"{self.dataset.name} image {index}"

    def _pack(
        self,
        description: str,
        image: np.ndarray,
        boxes: np.ndarray,
        classes: np.ndarray,
        masks: np.ndarray | None,
    ) -> dict[str, Any]:
        n, m = len(classes), self.max_objects
        if n > m:
            raise DatasetError(
                f"{description} has {n} objects, more than max_objects={m}: raise max_objects "
                "(objects are never dropped silently)"
            )
        example = {
            "image": np.asarray(image, np.float32) / 255.0,
            "boxes": np.zeros((m, 4), np.float32),
            "classes": np.zeros(m, np.int32),
            "box_mask": np.zeros(m, np.float32),
        }
        example["boxes"][:n] = boxes
        example["classes"][:n] = classes
        example["box_mask"][:n] = 1.0
        if self.masks:
            grid = self.image_size // self.mask_ratio
            example["masks"] = np.zeros((m, grid, grid), np.uint8)
            example["masks"][:n] = masks
        return example


__all__ = [
    "Annotations",
    "Augmentation",
    "DataConfig",
    "DetectionSource",
    "YoloDataset",
    "box_candidates",
    "fit_boxes",
    "hsv_jitter",
    "label_path",
    "mosaic_layout",
    "rasterize_polygon",
    "read_data_yaml",
    "read_labels",
    "warp_image",
    "warp_masks",
    "write_data_yaml",
]

"""A generated detection / segmentation data set: coloured shapes on textured backgrounds.

Small enough to train a detector on a CPU in minutes and to check a pipeline end to end, with no
download. Each image holds 1-6 objects of four classes - circle, square, triangle, star - of
varied size (the outer diameter is 8-50% of the image side), position, rotation and colour, on a
background of gradients, stripes or blotchy noise, with pixel noise over everything.

Objects are painted in order, so later ones occlude earlier ones; each object's mask is its
*visible* part and its box is tight around that mask. A placement that would hide more than 70%
of an earlier object is drawn again (up to 10 tries, then that object is left out): so no labelled
object is mostly hidden, and no unlabelled sliver of a dropped object is left in the image.

Everything is a pure function of (seed, split, index): image ``i`` of a split is generated when
first asked for, identical on every machine and in every run, independent of the other images.

:func:`export_yolo` writes the data set in the ultralytics layout, so the reference
implementation trains on exactly the same pixels and labels::

    data_yaml = export_yolo(ShapesDataset("train"), ShapesDataset("val"), "shapes", segments=True)
    YOLO("yolov8n-seg.yaml").train(data=data_yaml)      # ultralytics
    YoloDataset(data_yaml, "train")                     # jaxvision reads it back

Coordinates are continuous pixel coordinates (pixel ``(col, row)`` covers
``[col, col + 1) x [row, row + 1)``), the convention of :mod:`jaxvision.data.yolo`.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
from pathlib import Path

import numpy as np
from PIL import Image

from jaxvision.data.datasets import DatasetError
from jaxvision.data.yolo import Annotations, rasterize_polygon, write_data_yaml

CLASS_NAMES = ("circle", "square", "triangle", "star")
SPLIT_SIZES = {"train": 1000, "val": 200}  # default number of images per split
SPLIT_IDS = {"train": 0, "val": 1}  # part of each image's seed: the splits never share an image
MAX_OBJECTS = 6
SIZE_RANGE = (0.08, 0.5)  # outer diameter of an object, as a fraction of the image side
MAX_HIDDEN = 0.7  # no labelled object is hidden more than this by the ones painted over it
PLACEMENT_TRIES = 10
MIN_AREA = 4  # pixels: smaller shapes (only at tiny image sizes) are drawn again
CIRCLE_VERTICES = 64  # the circle is this regular polygon: its label polygon is exact
STAR_INNER = 0.45  # inner / outer radius of the five-pointed star
MIN_CONTRAST = 60.0  # RGB distance wanted between an object's colour and what it covers
COLOUR_TRIES = 8


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------


def shape_outline(
    kind: str, centre: tuple[float, float], radius: float, angle: float
) -> np.ndarray:
    """(K, 2) vertices, in pixels, of a shape inscribed in the circle (``centre``, ``radius``)
    and turned by ``angle`` radians."""
    if kind == "circle":
        turns, radii = np.arange(CIRCLE_VERTICES) / CIRCLE_VERTICES, np.ones(CIRCLE_VERTICES)
    elif kind == "square":
        turns, radii = np.arange(4) / 4, np.ones(4)
    elif kind == "triangle":
        turns, radii = np.arange(3) / 3, np.ones(3)
    elif kind == "star":
        turns, radii = np.arange(10) / 10, np.tile([1.0, STAR_INNER], 5)
    else:
        raise ValueError(f"unknown shape {kind!r}; one of {CLASS_NAMES}")
    theta = angle + 2 * np.pi * turns
    x = centre[0] + radius * radii * np.cos(theta)
    y = centre[1] + radius * radii * np.sin(theta)
    return np.stack([x, y], axis=1)


def _hsv_colour(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue, saturation, value)) * 255.0


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    return _hsv_colour(rng.uniform(), rng.uniform(0.0, 0.5), rng.uniform(0.25, 0.9))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 in [0, 255]: a gradient, stripes or blotchy noise between two
    muted colours."""
    kind = int(rng.integers(3))
    low, high = _muted_colour(rng), _muted_colour(rng)
    centres = np.arange(size) + 0.5
    angle = rng.uniform(0, 2 * np.pi)
    along = centres[None, :] * np.cos(angle) + centres[:, None] * np.sin(angle)  # (H, W) px
    if kind == 0:  # linear gradient
        mix = (along - along.min()) / max(along.max() - along.min(), 1e-6)
    elif kind == 1:  # stripes, hard or soft
        period = rng.uniform(0.05, 0.25) * size
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * along / period)
        mix = (wave > 0.5).astype(np.float64) if rng.random() < 0.5 else wave
    else:  # blotches: a coarse random grid, smoothly enlarged
        cells = int(rng.integers(3, 9))
        grid = rng.uniform(0, 1, (cells, cells)).astype(np.float32)
        mix = np.asarray(Image.fromarray(grid).resize((size, size), Image.Resampling.BILINEAR))
    image = low + mix[..., None] * (high - low)
    return image.astype(np.float32)


def _pick_colour(rng: np.random.Generator, covered: np.ndarray) -> np.ndarray:
    """A saturated colour that stands out from ``covered``, the mean colour it paints over."""
    best, best_distance = None, -1.0
    for _ in range(COLOUR_TRIES):
        colour = _hsv_colour(rng.uniform(), rng.uniform(0.45, 1.0), rng.uniform(0.45, 1.0))
        distance = float(np.linalg.norm(colour - covered))
        if distance > best_distance:
            best, best_distance = colour, distance
        if distance >= MIN_CONTRAST:
            break
    return best


@dataclasses.dataclass(frozen=True)
class Scene:
    """One generated image and its objects (arrays are read-only: scenes are cached)."""

    image: np.ndarray  # (H, W, 3) uint8
    classes: np.ndarray  # (N,) int32
    boxes: np.ndarray  # (N, 4) float32 xyxy, tight around the visible masks
    masks: np.ndarray  # (N, H, W) bool, visible parts
    outlines: list[np.ndarray]  # N (K, 2) polygons of the whole shapes, in pixels
    occluded: np.ndarray  # (N,) bool: part of the object is hidden by a later one


def _tight_box(mask: np.ndarray) -> np.ndarray:
    cols, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def generate_scene(seed: int, split: str, index: int, size: int) -> Scene:
    """Image ``index`` of ``split``: a pure function of its arguments."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    image = _background(rng, size)
    classes, outlines, full_areas, visible = [], [], [], []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        # The first object always finds a place (only its size can fail, at tiny image sizes).
        for _try in range(PLACEMENT_TRIES if visible else 100 * PLACEMENT_TRIES):
            kind = int(rng.integers(len(CLASS_NAMES)))
            radius = rng.uniform(*SIZE_RANGE) * size / 2
            centre = rng.uniform(radius, size - radius, size=2)
            outline = shape_outline(CLASS_NAMES[kind], centre, radius, rng.uniform(0, 2 * np.pi))
            shape = rasterize_polygon(outline, size, size)
            area = int(shape.sum())
            if area < MIN_AREA:
                continue
            left = [int((v & ~shape).sum()) for v in visible]  # what stays visible of the others
            if all(s >= (1 - MAX_HIDDEN) * a for s, a in zip(left, full_areas, strict=True)):
                break
        else:
            continue  # no placement leaves the earlier objects visible enough: leave it out
        visible = [v & ~shape for v in visible] + [shape]
        classes.append(kind)
        outlines.append(outline)
        full_areas.append(area)
        # Paint it: a flat colour with a gentle shading across the shape.
        colour = _pick_colour(rng, image[shape].mean(axis=0))
        shade_angle, shade = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.25)
        rows, cols = np.nonzero(shape)
        across = (cols + 0.5 - centre[0]) * np.cos(shade_angle)
        across += (rows + 0.5 - centre[1]) * np.sin(shade_angle)
        image[rows, cols] = colour * (1 + shade * across / radius)[:, None]
    image += rng.normal(0.0, rng.uniform(2.0, 10.0), image.shape).astype(np.float32)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    masks = np.stack(visible)
    scene = Scene(
        image=image,
        classes=np.asarray(classes, np.int32),
        boxes=np.stack([_tight_box(m) for m in masks]),
        masks=masks,
        outlines=outlines,
        occluded=np.array([int(m.sum()) < a for m, a in zip(masks, full_areas, strict=True)]),
    )
    for array in (scene.image, scene.classes, scene.boxes, scene.masks, scene.occluded):
        array.setflags(write=False)
    return scene


# --------------------------------------------------------------------------------------------
# Masks to polygons
# --------------------------------------------------------------------------------------------

# Directions clockwise on screen (y points down): east, south, west, north.
_STEP = ((1, 0), (0, 1), (-1, 0), (0, -1))
# For a walk from corner (x, y) in each direction: the pixels (col, row offsets from the corner)
# ahead on the left and ahead on the right of the next edge.
_AHEAD = (
    ((0, -1), (0, 0)),  # east
    ((0, 0), (-1, 0)),  # south
    ((-1, 0), (-1, -1)),  # west
    ((-1, -1), (0, -1)),  # north
)


def trace_outline(mask: np.ndarray) -> np.ndarray:
    """(K, 2) corners, in pixels, of the outer boundary of the 4-connected region of ``mask``
    that holds its first set pixel (raster order); holes are not traced.

    Crack following: walk along pixel edges keeping the region on the right. At each corner look
    at the two pixels ahead: if the right one is outside, turn right; else if the left one is
    inside, turn left; else go straight. The polygon's corners are where the walk turns, so
    :func:`~jaxvision.data.yolo.rasterize_polygon` gives back exactly the region (holes filled).
    """
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        raise ValueError("trace_outline needs a mask with at least one set pixel")
    inside = np.pad(mask, 1).tolist()  # padded: pixel (col, row) is inside[row + 1][col + 1]
    start = (int(cols[0]), int(rows[0]))  # the top-left corner of the first pixel
    corners = [start]
    direction = 0  # east along the top edge of the first pixel: the region is below, right
    x, y = start[0] + 1, start[1]
    while (x, y) != start:
        (left_dx, left_dy), (right_dx, right_dy) = _AHEAD[direction]
        if not inside[y + right_dy + 1][x + right_dx + 1]:
            turn = (direction + 1) % 4
        elif inside[y + left_dy + 1][x + left_dx + 1]:
            turn = (direction - 1) % 4
        else:
            turn = direction
        if turn != direction:
            corners.append((x, y))
            direction = turn
        x, y = x + _STEP[direction][0], y + _STEP[direction][1]
    return np.asarray(corners, np.float64)


def mask_to_polygon(mask: np.ndarray) -> np.ndarray:
    """The outline (:func:`trace_outline`) of the largest 4-connected region of ``mask``.

    A YOLO label holds one polygon per object: an object cut in two by an occluder keeps its
    larger part; holes are filled (ultralytics draws overlapping masks largest first, so a hole
    made by a smaller object in front is covered by that object's own mask).
    """
    height, width = mask.shape
    remaining = mask.copy()
    best, best_count = None, 0
    while remaining.any():
        outline = trace_outline(remaining)
        region = rasterize_polygon(outline, height, width)
        count = int((region & remaining).sum())
        if count > best_count:
            best, best_count = outline, count
        remaining &= ~region
        if int(remaining.sum()) <= best_count:  # what is left cannot hold a larger region
            break
    if best is None:
        raise ValueError("mask_to_polygon needs a mask with at least one set pixel")
    return best


# --------------------------------------------------------------------------------------------
# The data set
# --------------------------------------------------------------------------------------------


class ShapesDataset:
    """A split of the generated shapes data set: ``len``, ``class_names``, ``image(i)`` (PIL RGB),
    ``annotations(i)`` (classes, tight boxes, visible masks) and ``segments(i)`` (one polygon per
    object, as a YOLO segmentation label holds it)."""

    has_masks = True

    def __init__(
        self,
        split: str,
        *,
        num_images: int | None = None,
        image_size: int = 128,
        seed: int = 0,
    ):
        if split not in SPLIT_IDS:
            raise DatasetError(f"split must be one of {tuple(SPLIT_IDS)}, got {split!r}")
        num_images = SPLIT_SIZES[split] if num_images is None else num_images
        if num_images < 1:
            raise DatasetError(f"num_images must be >= 1, got {num_images}")
        if image_size < 16:
            raise DatasetError(f"image_size must be >= 16 pixels, got {image_size}")
        self.split, self.num_images = split, num_images
        self.image_size, self.seed = image_size, seed
        self.class_names = list(CLASS_NAMES)
        self.name = f"shapes/{split}"
        # Images are asked for twice per example (pixels, then labels): keep the recent ones.
        self.scene = functools.lru_cache(maxsize=64)(self._generate)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return self.num_images

    def _generate(self, index: int) -> Scene:
        if not 0 <= index < self.num_images:
            raise IndexError(f"{self.name}: index {index} outside 0..{self.num_images - 1}")
        return generate_scene(self.seed, self.split, index, self.image_size)

    def image(self, index: int) -> Image.Image:
        return Image.fromarray(self.scene(int(index)).image)

    def annotations(self, index: int, *, with_masks: bool = True) -> Annotations:
        scene = self.scene(int(index))
        return Annotations(scene.classes, scene.boxes, scene.masks if with_masks else None)

    def segments(self, index: int) -> list[np.ndarray]:
        """One (K, 2) polygon in pixels per object: the exact outline of an unoccluded shape, the
        traced outline of the largest visible part of an occluded one."""
        scene = self.scene(int(index))
        return [
            mask_to_polygon(mask) if occluded else outline
            for mask, outline, occluded in zip(
                scene.masks, scene.outlines, scene.occluded, strict=True
            )
        ]


def _export_split(dataset: ShapesDataset, out_dir: Path, split: str, segments: bool) -> None:
    images, labels = out_dir / "images" / split, out_dir / "labels" / split
    for folder in (images, labels):
        if folder.is_dir() and any(folder.iterdir()):
            raise DatasetError(f"{folder} is not empty: export into a new folder")
        folder.mkdir(parents=True, exist_ok=True)
    for index in range(len(dataset)):
        image = dataset.image(index)
        w, h = image.size
        stem = f"{index:06d}"
        image.save(images / f"{stem}.png", compress_level=1)
        annotations = dataset.annotations(index, with_masks=False)
        lines = []
        if segments:
            for cls, polygon in zip(annotations.classes, dataset.segments(index), strict=True):
                coords = (polygon / [w, h]).ravel()
                lines.append(f"{cls} " + " ".join(f"{v:.6f}" for v in coords))
        else:
            for cls, (x1, y1, x2, y2) in zip(annotations.classes, annotations.boxes, strict=True):
                cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
                lines.append(f"{cls} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
        (labels / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))


def export_yolo(
    train: ShapesDataset, val: ShapesDataset, out_dir: str | Path, *, segments: bool = False
) -> Path:
    """Write both splits in the ultralytics layout under ``out_dir`` and return its data.yaml:
    ``images/{train,val}/NNNNNN.png``, ``labels/{train,val}/NNNNNN.txt`` (``class cx cy w h``
    normalised, or with ``segments=True`` the polygon ``class x1 y1 x2 y2 ...``) and ``data.yaml``.
    """
    if train.class_names != val.class_names:
        raise DatasetError("train and val data sets have different class names")
    out_dir = Path(out_dir).expanduser()
    for split, dataset in (("train", train), ("val", val)):
        _export_split(dataset, out_dir, split, segments)
    return write_data_yaml(out_dir / "data.yaml", train.class_names, root=out_dir)


__all__ = [
    "CLASS_NAMES",
    "Scene",
    "ShapesDataset",
    "export_yolo",
    "generate_scene",
    "mask_to_polygon",
    "shape_outline",
    "trace_outline",
]

"""Detection data: letterbox, the generated shapes, the YOLO layout and YOLOv8's augmentations."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from jaxvision.data import BatchLoader, DatasetError
from jaxvision.data.letterbox import letterbox, letterbox_geometry
from jaxvision.data.shapes import (
    CLASS_NAMES,
    ShapesDataset,
    export_yolo,
    generate_scene,
    mask_to_polygon,
)
from jaxvision.data.yolo import (
    Annotations,
    Augmentation,
    DetectionSource,
    YoloDataset,
    hsv_jitter,
    mosaic_layout,
    rasterize_polygon,
    read_data_yaml,
)

KEYS = {"image", "boxes", "classes", "box_mask"}


# --------------------------------------------------------------------------------------------
# Letterbox
# --------------------------------------------------------------------------------------------


@given(
    width=st.integers(1, 3000),
    height=st.integers(1, 3000),
    size=st.integers(16, 1280),
    corners=st.lists(st.floats(0, 1), min_size=4, max_size=4),
)
def test_letterbox_boxes_round_trip(width, height, size, corners):
    box, (new_w, new_h) = letterbox_geometry(width, height, size)
    assert max(new_w, new_h) == size and 0 <= box.pad_x and 0 <= box.pad_y
    assert box.pad_x + new_w <= size and box.pad_y + new_h <= size
    fx, fy = sorted(corners[:2]), sorted(corners[2:])
    original = np.array([[fx[0] * width, fy[0] * height, fx[1] * width, fy[1] * height]])
    boxed = box.boxes_to_letterbox(original)
    assert np.all(boxed >= -1e-9) and np.all(boxed <= size + 0.5)
    np.testing.assert_allclose(box.boxes_to_original(boxed), original, atol=1e-6 * size)
    # And back: a box inside the letterboxed image content maps to the original and back.
    np.testing.assert_allclose(
        box.boxes_to_letterbox(box.boxes_to_original(boxed)), boxed, atol=1e-6 * size
    )
    # Boxes outside the image are clipped to it.
    far = box.boxes_to_original(np.array([[-50.0, -50.0, size + 50.0, size + 50.0]]))
    np.testing.assert_allclose(far, [[0, 0, width, height]])


@pytest.mark.parametrize(("width", "height", "size"), [(37, 91, 64), (64, 64, 64), (101, 7, 48)])
def test_letterbox_places_the_resized_image_between_gray_bands(width, height, size):
    image, box = letterbox(Image.new("RGB", (width, height), (200, 30, 60)), size)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    content = np.all(image == (200, 30, 60), axis=-1)
    rows, cols = np.flatnonzero(content.any(1)), np.flatnonzero(content.any(0))
    assert (cols[0], rows[0]) == (box.pad_x, box.pad_y)
    assert (cols[-1] + 1, rows[-1] + 1) == (
        box.pad_x + round(width * box.scale),
        box.pad_y + round(height * box.scale),
    )
    assert np.all(image[~content] == 114)


@pytest.mark.reference
def test_letterbox_matches_ultralytics_geometry():
    augment = pytest.importorskip("ultralytics.data.augment")
    rng = np.random.default_rng(0)
    for width, height, size in [(37, 91, 64), (640, 480, 640), (101, 7, 64), (33, 33, 64)]:
        array = rng.integers(120, 255, (height, width, 3), dtype=np.uint8)  # never gray 114
        ref = augment.LetterBox((size, size), auto=False, scaleup=True)(image=array.copy())
        mine, _ = letterbox(Image.fromarray(array), size)
        # Same placement; pixel values differ a little where pillow anti-aliases a shrink.
        np.testing.assert_array_equal(ref == 114, mine == 114)


# --------------------------------------------------------------------------------------------
# Generated shapes
# --------------------------------------------------------------------------------------------


def test_shapes_are_a_pure_function_of_seed_split_and_index():
    a, b = ShapesDataset("train", seed=3), ShapesDataset("train", seed=3)
    for i in (7, 0, 999):
        assert np.array_equal(np.asarray(a.image(i)), np.asarray(b.image(i)))
        la, lb = a.annotations(i), b.annotations(i)
        assert np.array_equal(la.classes, lb.classes) and np.array_equal(la.boxes, lb.boxes)
        assert np.array_equal(la.masks, lb.masks)
    other_seed = ShapesDataset("train", seed=4)
    val = ShapesDataset("val", seed=3)
    for other in (other_seed, val):
        assert not np.array_equal(np.asarray(a.image(7)), np.asarray(other.image(7)))
    assert (len(a), len(val), a.class_names) == (1000, 200, list(CLASS_NAMES))
    with pytest.raises(IndexError):
        a.image(1000)


def test_shapes_objects_counts_classes_sizes_occlusion_and_tight_boxes():
    size = 96
    counts, classes = [], []
    for i in range(60):
        scene = generate_scene(0, "train", i, size)
        n = len(scene.classes)
        counts.append(n)
        classes.extend(scene.classes.tolist())
        assert scene.image.shape == (size, size, 3) and scene.masks.shape == (n, size, size)
        full = [rasterize_polygon(outline, size, size) for outline in scene.outlines]
        for k, (mask, box) in enumerate(zip(scene.masks, scene.boxes, strict=True)):
            cols, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
            np.testing.assert_array_equal(box, [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
            assert max(box[2] - box[0], box[3] - box[1]) <= 0.5 * size + 1
            # Visible = the shape minus everything painted later; never more than 70% hidden.
            later = np.zeros((size, size), bool)
            for f in full[k + 1 :]:
                later |= f
            np.testing.assert_array_equal(mask, full[k] & ~later)
            assert mask.sum() >= 0.3 * full[k].sum()
            assert scene.occluded[k] == (mask.sum() < full[k].sum())
            if not scene.occluded[k]:
                assert max(box[2] - box[0], box[3] - box[1]) >= 0.05 * size
    assert min(counts) >= 1 and max(counts) <= 6 and len(set(counts)) >= 4
    assert set(classes) == set(range(len(CLASS_NAMES)))


def _components(mask, connectivity):
    """Connected components (lists of (row, col)) by breadth-first search, for the tests."""
    steps = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    if connectivity == 8:
        steps += [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    seen, found = np.zeros_like(mask), []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        seen[start], queue, members = True, deque([start]), []
        while queue:
            r, c = queue.popleft()
            members.append((r, c))
            for dr, dc in steps:
                q = (r + dr, c + dc)
                if 0 <= q[0] < mask.shape[0] and 0 <= q[1] < mask.shape[1]:
                    if mask[q] and not seen[q]:
                        seen[q] = True
                        queue.append(q)
        found.append(members)
    return found


def _filled(component, shape):
    """The component and every pixel it encloses: all but the background 8-connected to the
    border (the crack outline of a 4-connected region lets background pass at a corner)."""
    region = np.zeros((shape[0] + 2, shape[1] + 2), bool)
    for r, c in component:
        region[r + 1, c + 1] = True
    outside = next(comp for comp in _components(~region, 8) if (0, 0) in comp)
    filled = np.ones_like(region)
    for r, c in outside:
        filled[r, c] = False
    return filled[1:-1, 1:-1]


@given(st.lists(st.booleans(), min_size=120, max_size=120))
def test_mask_to_polygon_outlines_the_region_covering_most_of_the_mask(bits):
    mask = np.array(bits).reshape(10, 12)
    if not mask.any():
        return
    polygon = mask_to_polygon(mask)
    region = rasterize_polygon(polygon, *mask.shape)
    candidates = [_filled(comp, mask.shape) for comp in _components(mask, 4)]
    assert any(np.array_equal(region, c) for c in candidates)
    assert (region & mask).sum() == max((c & mask).sum() for c in candidates)


def test_rasterize_polygon_takes_pixels_whose_centre_is_inside():
    square = rasterize_polygon(np.array([[3, 3], [8, 3], [8, 8], [3, 8]]), 12, 12)
    expected = np.zeros((12, 12), bool)
    expected[3:8, 3:8] = True
    np.testing.assert_array_equal(square, expected)
    offset = rasterize_polygon(np.array([[2.6, 2.6], [8.4, 2.6], [8.4, 7.6], [2.6, 7.6]]), 12, 12)
    np.testing.assert_array_equal(offset, expected)  # centres 2.5 and 8.5 are outside
    assert not rasterize_polygon(np.array([[0, 0], [5, 5]]), 12, 12).any()


# --------------------------------------------------------------------------------------------
# The YOLO layout
# --------------------------------------------------------------------------------------------


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.fixture(scope="module")
def shapes():
    return ShapesDataset("train", num_images=24, image_size=96), ShapesDataset("val", num_images=6)


def test_export_yolo_boxes_read_back(shapes, tmp_path):
    train, val = shapes
    data_yaml = export_yolo(train, val, tmp_path / "boxes")
    config = read_data_yaml(data_yaml)
    assert config.names == list(CLASS_NAMES) and config.root == (tmp_path / "boxes").resolve()
    for split, original in (("train", train), ("val", val)):
        read = YoloDataset(data_yaml, split)
        assert len(read) == len(original) and not read.has_masks
        for i in range(len(read)):
            assert np.array_equal(np.asarray(read.image(i)), np.asarray(original.image(i)))
            got, want = read.annotations(i), original.annotations(i)
            assert got.masks is None
            np.testing.assert_array_equal(got.classes, want.classes)
            np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
    with pytest.raises(DatasetError, match="not empty"):
        export_yolo(train, val, tmp_path / "boxes")


def test_export_yolo_segments_read_back(shapes, tmp_path):
    train, val = shapes
    read = YoloDataset(export_yolo(train, val, tmp_path, segments=True), "train")
    assert read.has_masks
    ious = []
    for i in range(len(read)):
        got, want = read.annotations(i), train.annotations(i)
        np.testing.assert_array_equal(got.classes, want.classes)
        occluded = train.scene(i).occluded
        for k in range(len(got)):
            iou = _iou(got.masks[k], want.masks[k])
            ious.append(iou)
            if not occluded[k]:  # the label is the exact outline the shape was drawn from
                assert iou > 0.99
                np.testing.assert_allclose(got.boxes[k], want.boxes[k], atol=2.0)
            elif iou == 1:  # one piece without holes: the traced outline is exact
                np.testing.assert_allclose(got.boxes[k], want.boxes[k], atol=1e-3)
    # Occluded objects cut in two keep their larger part, holes are filled: mostly agree.
    assert np.mean(np.array(ious) > 0.8) > 0.9


def test_data_yaml_forms(tmp_path):
    (tmp_path / "imgs").mkdir()
    forms = {
        "names:\n  0: cat\n  1: 'big dog'  # comment\n": ["cat", "big dog"],
        "names:\n  - cat\n  - dog\n": ["cat", "dog"],
        "names: [cat, 'd, o, g']\nnc: 2\n": ["cat", "d, o, g"],
        'names: {0: cat, 1: "dog"}\n': ["cat", "dog"],
        "download: |\n  import os\n  print(1)\nnames:\n  0: a\n": ["a"],
    }
    for k, (names, expected) in enumerate(forms.items()):
        path = tmp_path / f"d{k}.yaml"
        path.write_text(f"# data\npath: .\ntrain: imgs\nval: imgs\n{names}")
        config = read_data_yaml(path)
        assert config.names == expected and config.train == tmp_path / "imgs"
    head = "path: .\ntrain: imgs\nval: imgs\n"
    bad = {
        head + "names:\n  0: a\nnc: 3\n": "nc is 3",
        head: "no 'names:'",
        head + "names:\n  1: a\n": r"0\.\.0",
        head + "names: [a]\nweird line\n": "line 5",
        head + "names:\n  zero: a\n": "line 5: cannot read class name",
        "path: .\nval: imgs\nnames: [a]\n": "no 'train:'",
        "path: .\ntrain: [a, b]\nval: imgs\nnames: [a]\n": "single folder",
        "path: .\ntrain: list.txt\nval: imgs\nnames: [a]\n": "only image folders",
    }
    for k, (text, message) in enumerate(bad.items()):
        path = tmp_path / f"bad{k}.yaml"
        path.write_text(text)
        with pytest.raises(DatasetError, match=message):
            read_data_yaml(path)


def test_data_yaml_agrees_with_pyyaml_where_installed(tmp_path):
    yaml = pytest.importorskip("yaml")  # not a jaxvision dependency: a cross-check only
    train, val = ShapesDataset("train", num_images=1), ShapesDataset("val", num_images=1)
    for dataset in (train, val):
        dataset.class_names = [*CLASS_NAMES[:3], "no"]  # YAML reads a bare no as false
    data_yaml = export_yolo(train, val, tmp_path)
    loaded = yaml.safe_load(data_yaml.read_text())
    assert list(loaded["names"].values()) == read_data_yaml(data_yaml).names
    assert loaded["names"][3] == "no" and loaded["path"] == str(tmp_path.resolve())


def _tiny_layout(tmp_path, labels: dict[str, str]):
    for folder in ("images/train", "images/val", "labels/train"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    for stem, text in labels.items():
        Image.new("RGB", (20, 10), (9, 9, 9)).save(tmp_path / "images" / "train" / f"{stem}.png")
        if text is not None:
            (tmp_path / "labels" / "train" / f"{stem}.txt").write_text(text)
    Image.new("RGB", (20, 10)).save(tmp_path / "images" / "val" / "v.png")
    path = tmp_path / "data.yaml"
    path.write_text("train: images/train\nval: images/val\nnames: [a, b]\n")
    return path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0 0.5 0.5 0.2", "4 columns"),
        ("0 0.5 0.5 0.2 0.2 0.3", "6 columns"),
        ("0 0.5 1.2 0.2 0.2", "coordinate 1.2 outside"),
        ("0 0.5 -0.01 0.2 0.2", "coordinate -0.01 outside"),
        ("2 0.5 0.5 0.2 0.2", "class 2 is not a class id in 0..1"),
        ("-1 0.5 0.5 0.2 0.2", "class -1"),
        ("0.5 0.5 0.5 0.2 0.2", "class 0.5"),
        ("0 0.5 abc 0.2 0.2", "'abc' is not a number"),
        ("0 0.5 nan 0.2 0.2", "not a finite number"),
        ("0 0.1 0.1 0.5 0.1 0.5 0.5", "mixes box lines and polygon lines"),
    ],
)
def test_bad_label_line_names_file_and_line(tmp_path, line, message):
    path = _tiny_layout(
        tmp_path, {"ok": "1 0.5 0.5 0.2 0.2\n", "x": f"0 0.5 0.5 0.1 0.1\n{line}\n"}
    )
    with pytest.raises(DatasetError, match=rf"labels/train/x\.txt, line 2: {message}"):
        YoloDataset(path, "train")


def test_yolo_labels_tolerance_missing_files_and_mixed_kinds(tmp_path):
    path = _tiny_layout(
        tmp_path,
        {
            "a": "1 1.0000005 0.5 0.2 0.2\n\n",  # within the 1e-6 tolerance: clipped
            "b": None,  # no label file: no objects
            "c": "0 0.1 0.1 0.5 0.1 0.5 0.5\n",  # a polygon in a data set of boxes
        },
    )
    ds = YoloDataset(path, "train")
    assert (len(ds), ds.class_names, ds.has_masks) == (3, ["a", "b"], False)
    np.testing.assert_allclose(ds.annotations(0).boxes, [[18, 4, 20, 6]], atol=1e-4)
    assert len(ds.annotations(1)) == 0 and ds.annotations(1).boxes.shape == (0, 4)
    np.testing.assert_allclose(ds.annotations(2).boxes, [[2, 1, 10, 5]], atol=1e-4)
    with pytest.raises(DatasetError, match="masks=True needs polygon labels"):
        DetectionSource(ds, image_size=32, masks=True)


def test_undecodable_yolo_images_are_all_named_when_the_data_set_opens(tmp_path):
    path = _tiny_layout(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n", "b": "", "c": "", "d": ""})
    (tmp_path / "images" / "train" / "b.png").write_bytes(b"not a png")
    whole = tmp_path / "whole.jpg"
    Image.new("RGB", (20, 10), (200, 10, 10)).save(whole)
    (tmp_path / "images" / "train" / "c.png").unlink()
    (tmp_path / "images" / "train" / "c.jpg").write_bytes(whole.read_bytes()[:-2])  # no end marker
    # Opening reads only the headers, yet names every bad file, not just the first one reached.
    with pytest.raises(DatasetError, match=r"2 of 4 images cannot be decoded") as e:
        YoloDataset(path, "train")
    lines = str(e.value).splitlines()
    assert "--skip-bad-images" in lines[0]
    assert [line.split(": ")[0].rsplit("/", 1)[-1] for line in lines[1:]] == ["b.png", "c.jpg"]
    assert "truncated JPEG" in lines[2]
    kept = YoloDataset(path, "train", skip_bad_images=True)
    assert (len(kept), kept.skipped) == (2, 2)
    assert [p.name for p in kept.paths] == ["a.png", "d.png"]
    assert kept.annotations(0).boxes.shape == (1, 4) and kept.image(1).size == (20, 10)


def test_yolo_image_sizes_follow_exif_orientation(tmp_path):
    path = _tiny_layout(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n"})
    image = Image.new("RGB", (20, 10), (9, 9, 9))
    exif = image.getexif()
    exif[0x0112] = 6  # stored sideways: shown rotated by 90 degrees
    image.save(tmp_path / "images" / "train" / "a.png", exif=exif)
    ds = YoloDataset(path, "train")
    assert ds.image(0).size == (10, 20) == ds.image_size(0)
    np.testing.assert_allclose(ds.annotations(0).boxes, [[2.5, 5, 7.5, 15]], atol=1e-4)


# --------------------------------------------------------------------------------------------
# DetectionSource
# --------------------------------------------------------------------------------------------


class _Rectangles:
    """One bright rectangle per image on black, in the middle of the image: a transform that
    moves pixels and boxes differently shows up as bright pixels outside the box."""

    name = "rectangles"
    class_names = ["rectangle"]
    has_masks = True

    def __init__(self, size=64, count=8, objects=1):
        rng = np.random.default_rng(1)
        self.size, self.boxes = size, []
        for _ in range(count):
            boxes = []
            for _ in range(objects):
                x1, y1 = rng.integers(int(0.3 * size), int(0.45 * size), 2)
                w, h = rng.integers(int(0.05 * size), int(0.25 * size), 2)
                boxes.append([x1, y1, x1 + w, y1 + h])
            self.boxes.append(np.array(boxes, np.float32))

    def __len__(self):
        return len(self.boxes)

    def _masks(self, index):
        masks = np.zeros((len(self.boxes[index]), self.size, self.size), bool)
        for k, (x1, y1, x2, y2) in enumerate(self.boxes[index].astype(int)):
            masks[k, y1:y2, x1:x2] = True
        return masks

    def image(self, index):
        bright = self._masks(index).any(0)
        return Image.fromarray(np.where(bright[..., None], 255, 0).astype(np.uint8).repeat(3, 2))

    def annotations(self, index, *, with_masks=True):
        classes = np.zeros(len(self.boxes[index]), np.int32)
        return Annotations(classes, self.boxes[index], self._masks(index) if with_masks else None)


NO_COLOUR = Augmentation(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0)


def _centres_inside(masks, boxes, ratio, margin=0.0):
    """Whether every set mask pixel's centre lies inside its box."""
    for mask, (x1, y1, x2, y2) in zip(masks, boxes, strict=True):
        rows, cols = np.nonzero(mask)
        x, y = (cols + 0.5) * ratio, (rows + 0.5) * ratio
        if not (
            np.all(x >= x1 - margin)
            and np.all(x <= x2 + margin)
            and np.all(y >= y1 - margin)
            and np.all(y <= y2 + margin)
        ):
            return False
    return True


@pytest.mark.parametrize("mosaic", [True, False])
def test_augmented_pixels_boxes_and_masks_agree(mosaic):
    size = 64
    source = DetectionSource(
        _Rectangles(size),
        image_size=size,
        mosaic=mosaic,
        masks=True,
        mask_ratio=2,
        augmentation=NO_COLOUR,
    )
    for seed in range(12):
        example = source.train_example(seed % len(source), np.random.default_rng(seed))
        n = int(example["box_mask"].sum())
        boxes, bright = example["boxes"][:n], example["image"].mean(-1) > 0.7
        assert n >= 1 and np.all(example["boxes"][n:] == 0) and np.all(example["masks"][n:] == 0)
        centres = np.arange(size) + 0.5
        for x1, y1, x2, y2 in boxes:
            inner_x = (centres > x1 + 1) & (centres < x2 - 1)
            inner_y = (centres > y1 + 1) & (centres < y2 - 1)
            assert bright[np.ix_(inner_y, inner_x)].all()
        if not mosaic:  # one rectangle, never cut: every bright pixel is in the box
            x1, y1, x2, y2 = boxes[0]
            rows, cols = np.nonzero(bright)
            assert cols.min() + 0.5 >= x1 - 1 and cols.max() + 0.5 <= x2 + 1
            assert rows.min() + 0.5 >= y1 - 1 and rows.max() + 0.5 <= y2 + 1
        assert _centres_inside(example["masks"][:n], boxes, 2)
        # A mask pixel covers 2 x 2 image pixels: some are bright; and where the 4 x 4 pixels
        # around it are all bright, it is set.
        masked = example["masks"][:n].any(0) > 0
        assert np.all(bright.reshape(size // 2, 2, size // 2, 2).any((1, 3))[masked])
        padded = np.pad(bright, 1)
        windows = np.lib.stride_tricks.sliding_window_view(padded, (4, 4))[::2, ::2]
        assert np.all(masked[windows.all((2, 3))])


def test_horizontal_flip_mirrors_pixels_boxes_and_masks():
    dataset, size = ShapesDataset("val", num_images=6, image_size=64), 64
    sources = [
        DetectionSource(
            dataset,
            image_size=size,
            masks=True,
            augmentation=Augmentation(hsv_h=0, hsv_s=0, hsv_v=0, fliplr=p),
        )
        for p in (0.0, 1.0)
    ]
    plain, flipped = (s.train_example(2, np.random.default_rng(5)) for s in sources)
    np.testing.assert_array_equal(flipped["image"], plain["image"][:, ::-1])
    np.testing.assert_array_equal(flipped["masks"], plain["masks"][:, :, ::-1])
    n = int(plain["box_mask"].sum())
    mirrored = plain["boxes"][:n][:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [size, 0, size, 0]
    np.testing.assert_allclose(flipped["boxes"][:n], mirrored, atol=1e-4)


def test_train_example_is_a_pure_function_of_the_generator():
    def make():
        return DetectionSource(
            ShapesDataset("train", num_images=50, image_size=64), image_size=64, masks=True
        )

    a, b = make(), make()
    for seed in range(4):
        first = a.train_example(3, np.random.default_rng(seed))
        a.train_example(5, np.random.default_rng(99))  # other calls in between change nothing
        second = b.train_example(3, np.random.default_rng(seed))
        assert first.keys() == second.keys()
        for key in first:
            np.testing.assert_array_equal(first[key], second[key])
    other = a.train_example(3, np.random.default_rng(1000))
    assert not np.array_equal(first["image"], other["image"])


@pytest.mark.parametrize("masks", [False, True])
def test_examples_have_fixed_shapes_and_valid_boxes(masks):
    size, ratio, m = 64, 4, 32
    source = DetectionSource(
        ShapesDataset("val", num_images=30, image_size=96),
        image_size=size,
        max_objects=m,
        masks=masks,
        mask_ratio=ratio,
        epochs=4,
        close_mosaic=2,
    )
    expected = {
        "image": ((size, size, 3), np.float32),
        "boxes": ((m, 4), np.float32),
        "classes": ((m,), np.int32),
        "box_mask": ((m,), np.float32),
    }
    if masks:
        expected["masks"] = ((m, size // ratio, size // ratio), np.uint8)
    examples, has_mask = [source.eval_example(i) for i in range(6)], []
    for epoch in (0, 3):
        source.set_epoch(epoch)
        assert source.mosaic_active == (epoch < 2)
        examples += [source.train_example(i, np.random.default_rng([epoch, i])) for i in range(8)]
    for example in examples:
        assert {k: (v.shape, v.dtype) for k, v in example.items()} == expected
        n = int(example["box_mask"].sum())
        assert np.all(example["box_mask"][:n] == 1) and np.all(example["box_mask"][n:] == 0)
        boxes = example["boxes"]
        assert np.all(boxes >= 0) and np.all(boxes <= size) and np.all(boxes[n:] == 0)
        assert np.all(boxes[:n, 2:] - boxes[:n, :2] > 0)
        assert np.all(example["classes"][:n] < len(CLASS_NAMES))
        assert 0 <= example["image"].min() and example["image"].max() <= 1
        if masks:
            assert _centres_inside(example["masks"][:n], boxes[:n], ratio)
            big = np.prod(boxes[:n, 2:] - boxes[:n, :2], axis=1) > (3 * ratio) ** 2
            has_mask.extend(example["masks"][:n][big].any((1, 2)))
    # A big box can hold a thin remnant of a shape that no mask pixel centre hits: rarely.
    assert not masks or np.mean(has_mask) > 0.9


def test_eval_example_letterboxes_boxes_and_masks():
    dataset = ShapesDataset("val", num_images=4, image_size=128)
    source = DetectionSource(dataset, image_size=96, masks=True, mask_ratio=4)
    for i in range(4):
        example, want = source.eval_example(i), dataset.annotations(i)
        n = len(want)
        np.testing.assert_allclose(example["boxes"][:n], want.boxes * 0.75, atol=1e-5)
        np.testing.assert_array_equal(example["classes"][:n], want.classes)
        # Mask pixel j of the 24 x 24 grid samples the original under its centre, (j + .5) * 16/3.
        centres = ((np.arange(24) + 0.5) * 16 / 3).astype(int)
        expected = want.masks[:, centres][:, :, centres]
        np.testing.assert_array_equal(example["masks"][:n], expected)
    plain = DetectionSource(dataset, image_size=96, augment=False)
    example = plain.train_example(1, np.random.default_rng(0))
    np.testing.assert_array_equal(example["image"], plain.eval_example(1)["image"])


def test_too_many_objects_is_an_error_naming_the_image(tmp_path):
    dataset = _Rectangles(64, count=3, objects=3)
    source = DetectionSource(dataset, image_size=64, max_objects=2)
    with pytest.raises(DatasetError, match=r"rectangles image 1 has 3 objects.*raise max_objects"):
        source.eval_example(1)
    with pytest.raises(DatasetError, match=r"mosaic of rectangles image 0, .*max_objects=2"):
        for seed in range(10):  # a mosaic with more than 2 surviving objects
            source.train_example(0, np.random.default_rng(seed))
    path = _tiny_layout(tmp_path, {"crowded": "0 0.5 0.5 0.2 0.2\n" * 3})
    with pytest.raises(DatasetError, match=r"crowded\.png has 3 objects"):
        DetectionSource(YoloDataset(path, "train"), image_size=32, max_objects=2).eval_example(0)


def test_mosaic_layout_tiles_the_canvas_without_overlap():
    size = 32
    sizes = [(32, 20), (11, 32), (32, 32), (25, 32)]
    for centre in [(16, 16), (47, 20), (30, 47)]:
        canvas = np.zeros((2 * size, 2 * size), int)
        for (x1a, y1a, x2a, y2a), (x1b, y1b, x2b, y2b) in mosaic_layout(centre, sizes, size):
            assert (x2a - x1a, y2a - y1a) == (x2b - x1b, y2b - y1b)
            canvas[y1a:y2a, x1a:x2a] += 1
        assert canvas.max() == 1


def test_hsv_jitter_without_gain_is_nearly_the_identity():
    image = np.asarray(ShapesDataset("val", num_images=1).image(0))
    same = hsv_jitter(image, np.zeros(3))
    assert np.abs(same.astype(int) - image).mean() < 2
    darker = hsv_jitter(image, np.array([0.0, 0.0, -0.4]))
    assert darker.mean() < 0.7 * image.mean()


def test_batch_loader_stacks_detection_examples():
    source = DetectionSource(ShapesDataset("train", num_images=8, image_size=64), image_size=64)
    loader = BatchLoader(source, workers=2)
    try:
        batch = loader.train_batch(np.arange(4), seed=0, epoch=0, batch=0)
        assert batch["image"].shape == (4, 64, 64, 3) and batch["boxes"].shape == (4, 32, 4)
        evaluation = loader.eval_batch(np.arange(3), batch_size=4)
        assert evaluation["mask"].tolist() == [1, 1, 1, 0]
        assert evaluation["classes"].shape == (4, 32)
    finally:
        loader.close()
    assert KEYS <= set(batch)

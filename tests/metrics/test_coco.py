"""COCO mAP in numpy: hand-computed cases, the engine hook, and agreement with pycocotools."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from jaxvision.metrics import (
    COCOEvaluator,
    average_precision,
    box_iou,
    mask_iou,
    match_detections,
)

NUM_CLASSES = 3
SIZE = 48  # image side, pixels, of the synthetic scenes


# ----------------------------------------------------------------------------------------------
# Scenes: a scene is a list of images, each a dict of ``COCOEvaluator.add_image``'s arguments.
# ----------------------------------------------------------------------------------------------


def _image(gt_boxes, gt_classes, pred_boxes, pred_scores, pred_classes):
    return {
        "gt_boxes": np.asarray(gt_boxes, np.float64).reshape(-1, 4),
        "gt_classes": np.asarray(gt_classes, np.int64).reshape(-1),
        "pred_boxes": np.asarray(pred_boxes, np.float64).reshape(-1, 4),
        "pred_scores": np.asarray(pred_scores, np.float64).reshape(-1),
        "pred_classes": np.asarray(pred_classes, np.int64).reshape(-1),
    }


def _evaluate(images, iou_type="bbox", **kwargs):
    ev = COCOEvaluator(NUM_CLASSES, iou_type=iou_type, **kwargs)
    for im in images:
        ev.add_image(**im)
    return ev


A, B, C = [2.0, 3.0, 20.0, 25.0], [24.0, 10.0, 40.0, 30.0], [5.0, 30.0, 15.0, 44.0]
FAR = [40.0, 40.0, 47.0, 47.0]
NEAR_A = [3.0, 4.0, 21.0, 24.0]  # IoU with A ~ 0.82: a hit at 0.50, a miss at 0.95


def _perfect():
    return [
        _image([A, B], [0, 1], [A, B], [0.9, 0.8], [0, 1]),
        _image([C], [2], [C], [0.7], [2]),
    ]


# Small scenes, each showing one way to lose (or not lose) precision or recall.
SCENES = {
    "perfect": _perfect(),
    "missed": [
        _image([A, B], [0, 1], [A], [0.9], [0]),
        _image([C, B], [2, 1], [C, B], [0.7, 0.6], [2, 1]),
    ],
    "class_never_detected": [  # class 1 has objects and no detection at all: AP 0 for it
        _image([A, B], [0, 1], [A], [0.9], [0]),
        _image([C], [1], [FAR], [0.3], [0]),
    ],
    "false_positive": [
        _image([A, B], [0, 1], [A, FAR, B], [0.9, 0.95, 0.8], [0, 0, 1]),
        _image([C], [2], [C, FAR], [0.7, 0.1], [2, 2]),
    ],
    "duplicate": [  # the duplicate (a FP) outranks the second object's true positive
        _image([A, B], [0, 0], [A, NEAR_A, B], [0.9, 0.85, 0.8], [0, 0, 0]),
        _image([C], [2], [C, C], [0.7, 0.7], [2, 2]),
    ],
    "no_gt_image": [
        _image([A, B], [0, 1], [A, B], [0.9, 0.8], [0, 1]),
        _image([], [], [C, B], [0.95, 0.5], [0, 1]),
        _image([C], [2], [C], [0.7], [2]),
    ],
    "wrong_class": [
        _image([A, B], [0, 1], [A, B], [0.9, 0.8], [1, 1]),
        _image([C], [0], [NEAR_A, C], [0.7, 0.6], [0, 0]),
    ],
    "class_without_gt": [  # class 2 has detections but no ground truth: left out of the mean
        _image([A, B], [0, 1], [A, B, C], [0.9, 0.8, 0.99], [0, 1, 2]),
        _image([A], [0], [NEAR_A], [0.7], [0]),
    ],
    "tied_iou": [  # the first detection overlaps two objects equally: COCOeval takes the last
        _image(
            [[1, 0, 11, 10], [-1, 0, 9, 10]],
            [0, 0],
            [[0, 0, 10, 10], [1.5, 0, 11.5, 10]],
            [0.9, 0.8],
            [0, 0],
        ),
    ],
    "tied_scores": [  # equal scores across images: pooled in image order (a stable sort)
        _image([A], [0], [FAR, A], [0.5, 0.5], [0, 0]),
        _image([A, B], [0, 0], [A, FAR, B], [0.5, 0.5, 0.5], [0, 0, 0]),
    ],
}


def _jitter(rng, box, scale):
    w, h = box[2] - box[0], box[3] - box[1]
    out = box + rng.normal(0.0, scale, 4) * np.array([w, h, w, h])
    return np.array(
        [min(out[0], out[2]), min(out[1], out[3]), max(out[0], out[2]), max(out[1], out[3])]
    )


def _random_box(rng):
    xy = rng.uniform(0, SIZE * 0.7, 2)
    wh = rng.uniform(3, SIZE * 0.4, 2)
    return np.concatenate([xy, np.minimum(xy + wh, SIZE)])


def _random_scene(seed, num_images=4, tied_scores=False, many=False):
    """Random objects; detections are jittered objects (sometimes missed, sometimes twice, now
    and then with the wrong class) plus random false positives, in random order and scores."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(num_images):
        gt_boxes = [_random_box(rng) for _ in range(rng.integers(0, 7))]
        gt_classes = rng.integers(0, NUM_CLASSES, len(gt_boxes))
        boxes, classes = [], []
        for box, c in zip(gt_boxes, gt_classes, strict=True):
            for _ in range(rng.choice([0, 1, 1, 1, 2])):
                boxes.append(_jitter(rng, box, rng.choice([0.02, 0.1, 0.3])))
                classes.append(c if rng.random() > 0.1 else rng.integers(0, NUM_CLASSES))
        for _ in range(rng.integers(1 if i == 0 else 0, 4) + (60 if many else 0)):
            boxes.append(_random_box(rng))
            classes.append(rng.integers(0, NUM_CLASSES))
        scores = rng.uniform(0, 1, len(boxes))
        if tied_scores:
            scores = np.round(scores, 1)
        order = rng.permutation(len(boxes))
        images.append(
            _image(
                gt_boxes,
                gt_classes,
                np.asarray(boxes).reshape(-1, 4)[order],
                scores[order],
                np.asarray(classes, np.int64)[order],
            )
        )
    return images


def _rasterise(rng, box, holes=0.15):
    """A binary mask: the box's pixels, with random holes so masks are not rectangles."""
    x1, y1, x2, y2 = np.clip(np.round(box), 0, SIZE).astype(int)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[y1:y2, x1:x2] = True
    return mask & (rng.random((SIZE, SIZE)) >= holes)


def _with_masks(images, seed):
    rng = np.random.default_rng(seed + 1000)
    for im in images:
        for kind in ("gt", "pred"):
            masks = [_rasterise(rng, b) for b in im[f"{kind}_boxes"]]
            im[f"{kind}_masks"] = np.stack(masks) if masks else np.zeros((0, SIZE, SIZE), bool)
    return images


# ----------------------------------------------------------------------------------------------
# The reference: pycocotools' COCOeval on the same scene, built in memory.
# ----------------------------------------------------------------------------------------------


def _coco_reference(images, iou_type="bbox"):
    """``(stats[0], stats[1])`` = (mAP, AP50) of COCOeval on ``images``."""
    coco = pytest.importorskip("pycocotools.coco")
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    mask_utils = pytest.importorskip("pycocotools.mask")

    def rle(m):
        return mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))

    annotations, results = [], []
    for image_id, im in enumerate(images, start=1):
        for g, (box, c) in enumerate(zip(im["gt_boxes"], im["gt_classes"], strict=True)):
            x1, y1, x2, y2 = map(float, box)
            ann = {
                "id": len(annotations) + 1,  # ids start at 1: COCOeval reads id 0 as "unmatched"
                "image_id": image_id,
                "category_id": int(c) + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": 0,
            }
            if iou_type == "segm":
                ann["segmentation"] = rle(im["gt_masks"][g])
                ann["area"] = float(mask_utils.area(ann["segmentation"]))
            annotations.append(ann)
        for d, (box, s, c) in enumerate(
            zip(im["pred_boxes"], im["pred_scores"], im["pred_classes"], strict=True)
        ):
            res = {"image_id": image_id, "category_id": int(c) + 1, "score": float(s)}
            if iou_type == "segm":
                res["segmentation"] = rle(im["pred_masks"][d])
            else:
                x1, y1, x2, y2 = map(float, box)
                res["bbox"] = [x1, y1, x2 - x1, y2 - y1]
            results.append(res)
    assert results, "loadRes cannot take an empty result list"
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco.COCO()
        gt.dataset = {
            "images": [{"id": i, "width": SIZE, "height": SIZE} for i in range(1, len(images) + 1)],
            "categories": [{"id": c + 1, "name": str(c)} for c in range(NUM_CLASSES)],
            "annotations": annotations,
        }
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = cocoeval.COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1])


def _assert_matches_reference(images, iou_type="bbox"):
    ours = _evaluate(images, iou_type).result()
    prefix = "mask_" if iou_type == "segm" else ""
    ref_map, ref_map50 = _coco_reference(images, iou_type)
    assert ours[f"{prefix}map"] == pytest.approx(ref_map, abs=1e-4)
    assert ours[f"{prefix}map50"] == pytest.approx(ref_map50, abs=1e-4)
    return ours


# ----------------------------------------------------------------------------------------------
# Agreement with pycocotools
# ----------------------------------------------------------------------------------------------


@pytest.mark.reference
@pytest.mark.parametrize("name", sorted(SCENES))
def test_scenes_match_cocoeval(name):
    ours = _assert_matches_reference(SCENES[name])
    if name == "perfect":
        assert ours == pytest.approx({"map50": 1.0, "map": 1.0})  # 1 - 1e-16: precision epsilon


@pytest.mark.reference
@pytest.mark.parametrize("seed", range(8))
def test_random_scenes_match_cocoeval(seed):
    _assert_matches_reference(_random_scene(seed, tied_scores=seed % 3 == 2))


@pytest.mark.reference
def test_max_dets_per_image_and_class_matches_cocoeval():
    """Over 100 detections of class 0 in an image: COCOeval keeps the best 100 *per class*, so
    the object A found at score 0.01 is lost, while B (class 1, score 0.02, outside the image's
    best 100 over all classes) still counts."""
    images = _random_scene(11, num_images=2, many=True)
    images[0] = _image(
        np.concatenate([images[0]["gt_boxes"], [A, B]]),
        np.concatenate([images[0]["gt_classes"], [0, 1]]),
        np.concatenate([images[0]["pred_boxes"], [FAR] * 110, [A, B]]),
        np.concatenate([images[0]["pred_scores"], np.linspace(0.9, 0.5, 110), [0.01, 0.02]]),
        np.concatenate([images[0]["pred_classes"], [0] * 110, [0, 1]]),
    )
    ours = _assert_matches_reference(images)
    assert ours != _evaluate(images, max_dets=1000).result()  # the cut did matter


@pytest.mark.reference
@pytest.mark.parametrize("seed", range(4))
def test_random_mask_scenes_match_cocoeval(seed):
    images = _with_masks(_random_scene(seed, num_images=3), seed)
    _assert_matches_reference(images, "segm")


# ----------------------------------------------------------------------------------------------
# Hand-computed cases
# ----------------------------------------------------------------------------------------------


def test_box_iou_values():
    iou = box_iou(
        [[0, 0, 10, 10], [0, 0, 0, 0]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]
    )
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0], [0.0, 0.0, 0.0]])
    assert box_iou(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)


def test_mask_iou_values():
    a = np.zeros((2, 4, 4), bool)
    a[0, :2] = True  # 8 pixels
    b = np.zeros((2, 4, 4), bool)
    b[0, :1] = True  # 4 pixels, inside a[0]
    np.testing.assert_allclose(mask_iou(a, b), [[0.5, 0.0], [0.0, 0.0]])  # empty pairs: 0


def test_perfect_is_one():
    assert _evaluate(_perfect()).result() == pytest.approx({"map50": 1.0, "map": 1.0})


def test_far_off_detection_is_zero():
    ev = _evaluate([_image([A], [0], [FAR], [0.9], [0])])
    assert ev.result() == {"map50": 0.0, "map": 0.0}


def test_precision_recall_curve_by_hand():
    """Two objects; detections TP (0.9), FP (0.8), TP (0.7). Precision 1, 1/2, 2/3 at recall
    1/2, 1/2, 1; made decreasing: 1, 2/3, 2/3. The 51 recall levels 0..0.50 read 1, the 50
    levels 0.51..1 read 2/3: AP = (51 + 50 * 2/3) / 101 at every threshold (IoUs are 1 or 0)."""
    ev = _evaluate([_image([A, B], [0, 0], [A, FAR, B], [0.9, 0.8, 0.7], [0, 0, 0])])
    expected = (51 + 50 * 2 / 3) / 101
    assert ev.result() == pytest.approx({"map50": expected, "map": expected}, abs=1e-12)
    ap = average_precision(np.array([0.9, 0.8, 0.7]), np.array([[True, False, True]]), 2)
    assert ap == pytest.approx([expected], abs=1e-12)


def test_duplicate_counts_once_and_thresholds_differ():
    """NEAR_A (IoU ~0.82 with A) is a hit at 0.50..0.80 and a miss at 0.85..0.95."""
    ev = _evaluate([_image([A], [0], [NEAR_A, A], [0.9, 0.8], [0, 0])])
    ap = ev.class_ap()[0]
    iou = box_iou([NEAR_A], [A])[0, 0]
    hit = np.linspace(0.5, 0.95, 10) <= iou
    np.testing.assert_allclose(
        ap[hit], 1.0, atol=1e-12
    )  # first detection found it; the second is a FP after
    np.testing.assert_allclose(ap[~hit], 0.5, atol=1e-12)  # precision 1/2 at recall 1
    assert ev.result()["map50"] == pytest.approx(1.0)


def test_greedy_matching_ties_take_the_last_object():
    ious = np.array([[0.6, 0.6], [0.0, 0.7]])
    matched = match_detections(ious, np.array([0.5]))
    np.testing.assert_array_equal(matched, [[True, False]])  # det 0 took object 1: det 1 is a FP


def test_max_dets_cuts_per_class():
    images = [_image([A, B], [0, 1], [FAR, A, B], [0.9, 0.8, 0.7], [0, 0, 1])]
    per_class = _evaluate(images, max_dets=1).per_class()
    assert per_class == {0: (0.0, 0.0), 1: pytest.approx((1.0, 1.0))}
    assert _evaluate(images, max_dets=2).per_class()[0][0] == pytest.approx(0.5, abs=1e-12)


def test_classes_without_gt_are_left_out():
    ev = COCOEvaluator(NUM_CLASSES, class_names=["cat", "dog", "bird"])
    ev.add_image([A, B, C], [0.9, 0.8, 0.99], [0, 1, 2], [A, B], [0, 1])
    assert ev.result() == pytest.approx({"map50": 1.0, "map": 1.0})
    assert ev.per_class() == {"cat": pytest.approx((1.0, 1.0)), "dog": pytest.approx((1.0, 1.0))}


def test_no_ground_truth_at_all_is_minus_one():
    ev = COCOEvaluator(NUM_CLASSES)
    ev.add_image([A], [0.9], [0], np.zeros((0, 4)), [])
    ev.add_image(np.zeros((0, 4)), [], [], np.zeros((0, 4)), [])
    assert ev.result() == {"map50": -1.0, "map": -1.0}


def test_bad_input_is_refused():
    ev = COCOEvaluator(NUM_CLASSES)
    with pytest.raises(ValueError, match="pred_classes"):
        ev.add_image([A], [0.9], [3], [A], [0])
    with pytest.raises(ValueError, match="scores"):
        ev.add_image([A, B], [0.9], [0, 0], [A], [0])
    with pytest.raises(ValueError, match="segm"):
        COCOEvaluator(NUM_CLASSES, iou_type="segm").add_image([A], [0.9], [0], [A], [0])
    with pytest.raises(ValueError, match="iou_type"):
        COCOEvaluator(NUM_CLASSES, iou_type="keypoints")


# ----------------------------------------------------------------------------------------------
# The engine hook: update(predictions, batch)
# ----------------------------------------------------------------------------------------------


def _padded_batch(images, pad_dets=4, pad_gt=3, pad_images=1, masks=False):
    """Pads ``images`` to fixed shapes the way a data pipeline does, with garbage in the padding
    (high-scoring invalid detections, padded objects, whole padding images) that must be
    skipped. Returns (predictions, batch)."""
    n = len(images) + pad_images
    d = max(len(im["pred_boxes"]) for im in images) + pad_dets
    m = max(len(im["gt_boxes"]) for im in images) + pad_gt
    pred = {
        "boxes": np.tile(np.asarray(FAR, np.float32), (n, d, 1)),
        "scores": np.ones((n, d), np.float32),
        "classes": np.zeros((n, d), np.int32),
        "valid": np.zeros((n, d), bool),
    }
    batch = {
        "boxes": np.tile(np.asarray(C, np.float32), (n, m, 1)),
        "classes": np.zeros((n, m), np.int32),
        "box_mask": np.zeros((n, m), np.float32),
        "mask": np.zeros((n,), np.float32),
    }
    if masks:
        pred["masks"] = np.ones((n, d, SIZE, SIZE), bool)
        batch["masks"] = np.ones((n, m, SIZE, SIZE), bool)
    batch["box_mask"][len(images) :] = 1  # padding images are full of "objects": never counted
    for i, im in enumerate(images):
        k, g = len(im["pred_boxes"]), len(im["gt_boxes"])
        pred["boxes"][i, :k] = im["pred_boxes"]
        pred["scores"][i, :k] = im["pred_scores"]
        pred["classes"][i, :k] = im["pred_classes"]
        pred["valid"][i, :k] = True
        batch["boxes"][i, :g] = im["gt_boxes"]
        batch["classes"][i, :g] = im["gt_classes"]
        batch["box_mask"][i, :g] = 1
        batch["mask"][i] = 1
        if masks:
            pred["masks"][i, :k] = im["pred_masks"]
            batch["masks"][i, :g] = im["gt_masks"]
    return pred, batch


def test_update_skips_padding_and_invalid_detections():
    images = SCENES["false_positive"]
    direct = _evaluate(images).result()
    ev = COCOEvaluator(NUM_CLASSES)
    pred, batch = _padded_batch(images[:1])
    ev.update(pred, batch)
    pred, batch = _padded_batch(images[1:], pad_images=2)
    ev.update(pred, batch)
    assert ev.num_images == 2
    assert ev.result() == pytest.approx(direct, abs=1e-12)

    perfect = COCOEvaluator(NUM_CLASSES)
    perfect.update(*_padded_batch(_perfect()))
    assert perfect.result() == pytest.approx({"map50": 1.0, "map": 1.0})


def test_update_segm_names_its_keys_mask_map():
    images = _with_masks(_random_scene(3, num_images=2), 3)
    direct = _evaluate(images, "segm").result()
    ev = COCOEvaluator(NUM_CLASSES, iou_type="segm")
    ev.update(*_padded_batch(images, masks=True))
    assert set(ev.result()) == {"mask_map50", "mask_map"}
    assert ev.result() == pytest.approx(direct, abs=1e-12)


def test_update_names_missing_keys():
    pred, batch = _padded_batch(_perfect())
    del batch["box_mask"]
    with pytest.raises(KeyError, match="box_mask"):
        COCOEvaluator(NUM_CLASSES).update(pred, batch)

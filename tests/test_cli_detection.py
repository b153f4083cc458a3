"""The command line for detection and segmentation: train on the generated shapes, eval prints
mAP, predict draws boxes and prints JSON lines, the shapes export reads back as YOLO data."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from jaxvision.cli import main
from jaxvision.data.shapes import CLASS_NAMES

SMOKE = ["--image-size", "64", "--batch-size", "8", "--epochs", "1", "--no-progress"]


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    out = tmp_path_factory.mktemp("det")
    assert main(["train", "yolov8n_det", *SMOKE, "--max-steps", "2", "--output-dir", str(out)]) == 0
    return out


def test_train_and_eval_report_map(detector, capsys):
    code, out, err = _run(
        capsys, "eval", "yolov8n_det", "--checkpoint", str(detector), "--no-progress"
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert code == 0, err
    assert {"map50", "map", "loss", "box", "cls", "dfl"} <= set(result)
    assert 0 <= result["map"] <= result["map50"] <= 1


def test_predict_draws_and_prints_one_line_per_image(detector, tmp_path, capsys):
    paths = []
    for i, size in enumerate([(80, 60), (50, 90)]):  # not square: letterboxed and mapped back
        p = tmp_path / f"img{i}.png"
        Image.new("RGB", size, (30 * i, 120, 200)).save(p)
        paths.append(str(p))
    code, out, err = _run(
        capsys, "predict", "yolov8n_det", *paths, "--checkpoint", str(detector),
        "--conf", "0.0", "--save-dir", str(tmp_path / "pred"),
    )  # fmt: skip
    assert code == 0, err
    lines = [json.loads(x) for x in out.strip().splitlines()]
    assert [r["image"] for r in lines] == paths
    for r, (w, h) in zip(lines, [(80, 60), (50, 90)], strict=True):
        assert r["detections"], "with --conf 0 every image has detections"
        for d in r["detections"]:
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h  # in the original image
            assert d["class"] in CLASS_NAMES  # the names the checkpoint was trained with
        with Image.open(r["saved"]) as drawn:
            assert drawn.size == (w, h)


def test_segmentation_trains_on_exported_yolo_polygons(tmp_path, capsys):
    code, out, err = _run(
        capsys, "data", "shapes", "--output", str(tmp_path / "shapes"), "--image-size", "64",
        "--segments",
    )  # fmt: skip
    assert code == 0, err
    yaml = out.strip().splitlines()[-1]
    assert (tmp_path / "shapes" / "labels" / "val").is_dir() and yaml.endswith("data.yaml")
    argv = ["train", "yolov8n_seg", "--data", f"yolo:{yaml}", *SMOKE, "--max-steps", "1"]
    code, out, err = _run(capsys, *argv)
    result = json.loads(out.strip().splitlines()[-1])
    assert code == 0, err
    assert {"map50", "map", "mask_map50", "mask_map", "seg"} <= set(result)


def test_bad_detection_input_is_one_line(tmp_path, capsys):
    code, _, err = _run(capsys, "train", "yolov8n_det", "--image-size", "100", "--no-progress")
    assert code == 2 and "multiple of 32" in err
    code, _, err = _run(capsys, "train", "yolov8n_det", "--data", "yolo:/no/such.yaml", *SMOKE)
    assert code == 2 and "jaxvision: error:" in err and "Traceback" not in err

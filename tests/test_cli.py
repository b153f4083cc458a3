"""The ``jaxvision`` command: every subcommand, its JSON line, and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from jaxvision.cli import main

TRAIN = [
    "--data",
    "digits",
    "--image-size",
    "16",
    "--batch-size",
    "128",
    "--epochs",
    "1",
    "--no-progress",
]


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _last_json(out):
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", tiny, *TRAIN, "--output-dir", str(out), "--lr", "0.01"]) == 0
    return out


def test_train_prints_one_json_line_and_writes_its_files(trained, tiny, capsys):
    assert (trained / "metrics.jsonl").is_file() and (trained / "curves.png").is_file()
    assert list((trained / "checkpoints").glob("ckpt_*"))


def test_train_json_line(tiny, tmp_path, capsys):
    code, out, _ = _run(capsys, "train", tiny, *TRAIN, "--max-steps", "2")
    result = _last_json(out)
    assert code == 0 and set(result) == {"model", "top1", "top5", "loss", "epochs", "seconds"}
    assert result["model"] == tiny and 0 <= result["top1"] <= result["top5"] <= 1


def test_eval_reproduces_the_training_metrics(trained, tiny, capsys):
    rows = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    code, out, _ = _run(
        capsys, "eval", tiny, "--checkpoint", str(trained), "--no-progress", "--batch-size", "100"
    )
    result = _last_json(out)
    assert code == 0 and result["epochs"] == 1
    assert result["top1"] == pytest.approx(rows[-1]["eval_top1"], abs=1e-6)
    assert result["loss"] == pytest.approx(rows[-1]["eval_loss"], rel=1e-5)


def test_predict_prints_top_k(trained, tiny, tmp_path, capsys):
    paths = []
    for i in range(2):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(
            np.random.default_rng(i).integers(0, 255, (20, 20, 3), dtype=np.uint8)
        ).save(p)
        paths.append(str(p))
    code, out, _ = _run(
        capsys, "predict", tiny, *paths, "--checkpoint", str(trained), "--top-k", "3"
    )
    lines = out.strip().splitlines()
    assert code == 0 and lines[0] == paths[0] and len(lines) == 8
    probs = [float(line.split()[-1]) for line in lines[1:4]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def test_models_table(capsys):
    code, out, _ = _run(capsys, "models", "--family", "yolov8")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:4] == ["model", "family", "params", "reference"]
    row = next(line for line in lines if line.startswith("yolov8n_cls"))
    assert row.split()[2] == row.split()[3] == "2,719,288"
    code, out, _ = _run(capsys, "models", "--no-count")
    assert code == 0 and all(name in out for name in ("efficientnet_b7", "vit_h14", "yolov8x_cls"))


def test_summary_reports_layers_parameters_and_flops(capsys):
    code, out, _ = _run(capsys, "summary", "yolov8n_cls")
    assert code == 0
    assert "2,719,288 trainable" in out and "matches" in out
    assert "stage" in out or "backbone" in out or "head" in out
    assert "FLOPs/image:  0.405 G" in out  # reference: 405,172,224 (torch.utils.flop_counter)


def test_summary_lists_layers_in_the_order_they_run(capsys):
    code, out, _ = _run(capsys, "summary", "efficientnet_b0", "--depth", "1")
    names = [line.split()[0] for line in out.split("\n\n")[0].splitlines()[2:]]
    assert code == 0 and names[:3] == ["(model)", "stem", "stage1_block1"]
    assert names[-3:] == ["head", "Dropout_0", "classifier"]
    blocks = [n for n in names if n.startswith("stage")]
    assert blocks == sorted(blocks, key=lambda n: tuple(int(d) for d in n[5:].split("_block")))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "yolov8_nano", "--no-progress"], "unknown model 'yolov8_nano'; did you mean"),
        (
            ["train", "yolov8n_cls", "--data", "folder:/no/such/dir", "--no-progress"],
            "data folder not found",
        ),
        (
            ["train", "yolov8n_cls", "--batch-size", "4096", "--image-size", "16", "--no-progress"],
            "batch size 4096 is larger than the training set",
        ),
        (
            ["train", "yolov8n_cls", "--model-arg", "width", "--no-progress"],
            "--model-arg expects KEY=VALUE",
        ),
        (
            [
                "train",
                "yolov8n_cls",
                "--model-arg",
                "colour=3",
                "--image-size",
                "16",
                "--no-progress",
            ],
            "bad override",
        ),
        (
            ["eval", "yolov8n_cls", "--checkpoint", "/no/such/ckpt"],
            "checkpoint path does not exist",
        ),
        (
            ["predict", "yolov8n_cls", "x.png", "--checkpoint", "/no/such/ckpt"],
            "checkpoint path does not exist",
        ),
        (["summary", "vit_tiny"], "unknown model 'vit_tiny'"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2 and message in err and err.startswith("jaxvision: error:")
    assert "Traceback" not in err


def test_checkpoint_of_another_model(trained, capsys):
    code, _, err = _run(capsys, "eval", "yolov8n_cls", "--checkpoint", str(trained))
    assert code == 2 and "is a checkpoint of 'tiny_test_cnn', not of 'yolov8n_cls'" in err


def test_undecodable_image_for_predict(trained, tiny, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    code, _, err = _run(capsys, "predict", tiny, str(bad), "--checkpoint", str(trained))
    assert code == 2 and "cannot decode image" in err and "bad.jpg" in err


def test_nan_loss_exits_1_and_keeps_the_checkpoint(tiny, tmp_path, capsys):
    argv = [
        "train",
        tiny,
        *TRAIN,
        "--optimizer",
        "sgd",
        "--lr",
        "1e30",
        "--clip-norm",
        "0",
        "--warmup-epochs",
        "0",
        "--checkpoint-every",
        "1",
        "--output-dir",
        str(tmp_path),
    ]
    code, out, err = _run(capsys, *argv)
    assert code == 1 and "loss became" in err and "last good checkpoint is kept" in err
    assert list((tmp_path / "checkpoints").glob("ckpt_*"))


def test_console_entry_point_help():
    proc = subprocess.run(
        [sys.executable, "-m", "jaxvision", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0
    for command in ("models", "summary", "train", "eval", "predict", "convert", "bench"):
        assert command in proc.stdout


@pytest.mark.reference
def test_convert_timm_checkpoint_then_predict(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    ref = timm.create_model("vit_tiny_patch16_224", num_classes=5, img_size=32).eval()
    safetensors_torch.save_file(ref.state_dict(), str(tmp_path / "vit.safetensors"))
    code, _, err = _run(
        capsys,
        "convert",
        "vit_ti16",
        "--input",
        str(tmp_path / "vit.safetensors"),
        "--source",
        "timm",
        "--image-size",
        "32",
        "--output",
        str(tmp_path / "vit.jvc"),
    )
    assert code == 0, err
    img = tmp_path / "x.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(img)
    code, out, err = _run(
        capsys, "predict", "vit_ti16", str(img), "--checkpoint", str(tmp_path / "vit.jvc")
    )
    assert code == 0, err
    # The converted model gives the reference's probabilities for the same preprocessed image.
    from jaxvision import model_info
    from jaxvision.data.transforms import eval_transform

    x = eval_transform(Image.open(img).convert("RGB"), 32, model_info("vit_ti16").preprocessing)
    with torch.no_grad():
        p = torch.softmax(ref(torch.from_numpy(x).permute(2, 0, 1)[None]), -1)[0].numpy()
    top = [float(line.split()[-1]) for line in out.strip().splitlines()[1:]]
    np.testing.assert_allclose(top, np.sort(p)[::-1], atol=2e-4)
    # Converted weights for 5 classes cannot evaluate the 10-class digits.
    code, _, err = _run(capsys, "eval", "vit_ti16", "--checkpoint", str(tmp_path / "vit.jvc"))
    assert code == 2 and "10 classes but the checkpoint was trained for 5" in err


@pytest.mark.reference
def test_init_from_a_converted_timm_vit_fine_tunes_with_a_new_head(tmp_path, capsys):
    """A random timm ViT-Ti (5 classes) converted, then fine-tuned on digits (10 classes): every
    array but the head is loaded, the head is re-initialised, and both lists are printed."""
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    ref = timm.create_model("vit_tiny_patch16_224", num_classes=5, img_size=32).eval()
    safetensors_torch.save_file(ref.state_dict(), str(tmp_path / "vit.safetensors"))
    convert = ["convert", "vit_ti16", "--input", str(tmp_path / "vit.safetensors")]
    convert += ["--source", "timm", "--image-size", "32"]
    assert _run(capsys, *convert, "--output", str(tmp_path / "vit.jvc"))[0] == 0

    from jaxvision import create_model
    from jaxvision.train import checkpoint as ckpt
    from jaxvision.train import init_from, init_variables

    model = create_model("vit_ti16", num_classes=10, image_size=32)
    fresh = init_variables(model, jax.random.key(1), (np.zeros((1, 32, 32, 3), np.float32),))
    merged, report = init_from(tmp_path / "vit.jvc", fresh, model="vit_ti16")
    assert sorted(report.reinitialised) == ["params/head/bias", "params/head/kernel"]
    assert len(report.loaded) == len(jax.tree.leaves(fresh)) - 2 and not report.unused
    _, converted = ckpt.load_checkpoint(tmp_path / "vit.jvc")
    np.testing.assert_array_equal(
        merged["params"]["encoder_block3"]["mlp"]["fc1"]["kernel"],
        converted["params"]["encoder_block3"]["mlp"]["fc1"]["kernel"],
    )
    np.testing.assert_array_equal(
        merged["params"]["head"]["kernel"], fresh["params"]["head"]["kernel"]
    )

    argv = ["train", "vit_ti16", "--init-from", str(tmp_path / "vit.jvc"), "--image-size", "32"]
    argv += ["--batch-size", "32", "--epochs", "1", "--max-steps", "2", "--no-progress"]
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    assert "loaded 150 arrays" in err and "re-initialised 2 arrays:" in err
    assert "params/head/kernel (shape (192, 5) in the checkpoint, (192, 10) here)" in err
    assert _last_json(out)["model"] == "vit_ti16"

    # Converting the head away: a 10-class weights file evaluates on digits directly.
    out_10 = tmp_path / "vit10.jvc"
    assert _run(capsys, *convert, "--num-classes", "10", "--output", str(out_10))[0] == 0
    code, out, err = _run(capsys, "eval", "vit_ti16", "--checkpoint", str(out_10), "--no-progress")
    assert code == 0, err
    assert _last_json(out)["epochs"] == 0
    code, _, err = _run(capsys, "train", "yolov8n_cls", "--init-from", str(out_10), "--no-progress")
    assert code == 2 and "is a checkpoint of 'vit_ti16', not of 'yolov8n_cls'" in err

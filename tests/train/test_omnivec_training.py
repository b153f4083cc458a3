"""OmniVec through the one engine: masked pre-training over alternating modalities, sequential
stages that change only their own parts, all-at-once training, evaluation - from the command
line, on a very small configuration for a few steps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flax import traverse_util
from omnivec_micro import MICRO

from jaxvision.cli import main
from jaxvision.errors import ConfigError
from jaxvision.tasks.omnivec import OmniVecTask, SummaryEvaluator
from jaxvision.train import checkpoint as ckpt

MODEL_ARGS = [a for k, v in MICRO.items() for a in ("--model-arg", f"{k}={v!r}")]


def _run(capsys, *argv):
    assert main(["omnivec", *argv, "--no-progress", *MODEL_ARGS]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _params(run_dir):
    header, state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir / "checkpoints"))
    return header, traverse_util.flatten_dict(state["params"], sep="/")


def test_pretraining_then_sequential_stages_then_eval(tmp_path, capsys):
    pre = _run(
        capsys,
        "pretrain",
        "--modalities",
        "image,text",
        "--epochs",
        "1",
        "--max-steps",
        "4",
        "--batch-size",
        "8",
        "--output-dir",
        str(tmp_path / "pre"),
    )
    # The batches alternated between the two modalities: both losses were reported, and the
    # held-out losses were measured before training too.
    for key in ("image_loss", "text_loss", "loss"):
        assert np.isfinite(pre["start"][key]) and np.isfinite(pre["end"][key])

    seq = _run(
        capsys,
        "finetune",
        "--order",
        "audio,text",
        "--init-from",
        str(tmp_path / "pre"),
        "--epochs",
        "1",
        "--max-steps",
        "3",
        "--batch-size",
        "8",
        "--output-dir",
        str(tmp_path / "seq"),
    )
    assert (
        set(seq["after_stage"])
        == set(seq["final"])
        == set(seq["forgetting"])
        == {
            "audio",
            "text",
        }
    )
    for m in ("audio", "text"):
        assert seq["forgetting"][m] == pytest.approx(seq["after_stage"][m] - seq["final"][m])
        assert 0.0 <= seq["final"][m] <= 1.0
    assert "text_rougeL" in seq["final_metrics"] and "audio_top1" in seq["final_metrics"]
    # Each stage's run folder is reported (an --init-from / eval source for that stage's model).
    assert seq["stage_checkpoints"] == {
        "audio": str(tmp_path / "seq" / "stage1_audio"),
        "text": str(tmp_path / "seq" / "stage2_text"),
    }
    assert seq["checkpoint"] == seq["stage_checkpoints"]["text"]

    # The text stage changed only the backbone, the text encoder and the text head: every other
    # array is bit for bit what the audio stage left.
    _, audio = _params(tmp_path / "seq" / "stage1_audio")
    header, text = _params(tmp_path / "seq" / "stage2_text")
    assert header["trainable_parts"] is None and header["modalities"] == ["text"]
    trained = ("backbone/", "text_encoder/", "text_head/")
    changed = {k for k in audio if not np.array_equal(audio[k], text[k])}
    assert changed and all(k.startswith(trained) for k in changed)
    assert {k.split("/")[0] for k in changed} == {"backbone", "text_encoder", "text_head"}
    # ... and the audio stage started from the pre-trained encoders and backbone.
    _, pretrained = _params(tmp_path / "pre")
    for key in pretrained:
        if key.startswith("image_encoder/"):
            np.testing.assert_array_equal(pretrained[key], audio[key])

    ev = _run_eval(capsys, tmp_path / "seq" / "stage2_text", "audio,text")
    assert ev["audio_top1"] == pytest.approx(seq["final_metrics"]["audio_top1"])
    assert ev["text_rougeL"] == pytest.approx(seq["final_metrics"]["text_rougeL"])


def _run_eval(capsys, checkpoint, modalities):
    assert main(["omnivec", "eval", str(checkpoint), "--modalities", modalities]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_all_at_once_trains_every_task_in_one_run(tmp_path, capsys):
    out = _run(
        capsys,
        "finetune",
        "--schedule",
        "all-at-once",
        "--order",
        "image,points",
        "--epochs",
        "1",
        "--max-steps",
        "4",
        "--batch-size",
        "8",
        "--output-dir",
        str(tmp_path / "all"),
    )
    assert set(out["final"]) == {"image", "points"}
    header, _ = _params(tmp_path / "all")
    assert header["modalities"] == ["image", "points"]


def test_stage_options_are_checked(tmp_path):
    with pytest.raises(SystemExit):
        main(["omnivec", "finetune", "--schedule", "random", "--output-dir", str(tmp_path)])
    from jaxvision.train.loop import TrainConfig
    from jaxvision.train.omnivec import train_sequential

    with pytest.raises(ConfigError, match="unknown modalities"):
        train_sequential(TrainConfig(model="omnivec_tiny"), "image,smell", output_dir=tmp_path)


def test_a_stage_trains_only_its_parts_by_default():
    params = {
        "backbone": {"w": np.zeros(2)},
        "audio_encoder": {"w": np.zeros(2)},
        "audio_head": {"w": np.zeros(2)},
        "image_encoder": {"w": np.zeros(2)},
        "image_head": {"w": np.zeros(2)},
    }
    task = OmniVecTask(modalities=("audio",))
    mask = task.trainable(params)
    assert {k: v["w"] for k, v in mask.items()} == {
        "backbone": True,
        "audio_encoder": True,
        "audio_head": True,
        "image_encoder": False,
        "image_head": False,
    }
    assert OmniVecTask(objective="pretrain").trainable(params) is None
    only_head = OmniVecTask(modalities=("audio",), trainable_parts=("audio_head",))
    assert [k for k, v in only_head.trainable(params).items() if v["w"]] == ["audio_head"]
    with pytest.raises(ConfigError, match="not parts of the model"):
        OmniVecTask(trainable_parts=("decoder",)).trainable(params)


def test_summaries_are_scored_with_rouge_l_and_unknown_ids_decode_as_unknown():
    words = ("<pad>", "<bos>", "<eos>", "<unk>", "the", "cat", "sat")
    evaluator = SummaryEvaluator(words)
    evaluator.update(
        {"text": np.array([[4, 5, 2, 0], [4, 99, 6, 2], [5, 5, 5, 5]])},
        {"summary": np.array([[4, 5, 2, 0], [4, 5, 6, 2], [4, 4, 4, 2]]), "mask": [1, 1, 0]},
    )
    assert evaluator.examples == [("the cat", "the cat"), ("the <unk> sat", "the cat sat")]
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = np.mean([scorer.score(r, p)["rougeL"].fmeasure for p, r in evaluator.examples])
    assert evaluator.result()["text_rougeL"] == pytest.approx(expected)

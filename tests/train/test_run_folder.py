"""The run folder (``--output-dir``) as a user meets it through the command: a second run never
mixes with a first, a file in its way is named, a resume with other options says so, and
warnings are one ``jaxvision: warning:`` line."""

from __future__ import annotations

import pytest

from jaxvision.cli import main

TRAIN = ["--data", "digits", "--image-size", "16", "--epochs", "1", "--no-progress"]


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def interrupted(tiny, tmp_path, capsys):
    """A run folder whose run stopped after 2 of its 11 steps (batch 128)."""
    out = tmp_path / "run"
    code, _, err = _run(
        capsys, "train", tiny, *TRAIN, "--batch-size", "128", "--max-steps", "2",
        "--checkpoint-every", "1", "--output-dir", str(out),
    )  # fmt: skip
    assert code == 0, err
    return out


def test_a_second_run_into_a_used_folder_is_refused_and_changes_nothing(tiny, interrupted, capsys):
    before = {p: (interrupted / p).read_bytes() for p in _files(interrupted)
              if (interrupted / p).is_file()}  # fmt: skip
    code, out, err = _run(
        capsys, "train", tiny, *TRAIN, "--batch-size", "128", "--output-dir", str(interrupted)
    )
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.startswith(f"jaxvision: error: --output-dir {interrupted} already holds a run")
    assert "checkpoints" in err and "--resume" in err and "new --output-dir" in err
    after = {p: (interrupted / p).read_bytes() for p in _files(interrupted)
             if (interrupted / p).is_file()}  # fmt: skip
    assert after == before


def test_an_empty_or_new_folder_is_a_fresh_run(tiny, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "new" / "deeper"):
        code, _, err = _run(
            capsys, "train", tiny, *TRAIN, "--batch-size", "128", "--max-steps", "1",
            "--output-dir", str(folder),
        )  # fmt: skip
        assert code == 0, err
        assert list((folder / "checkpoints").glob("ckpt_*"))


def test_output_dir_below_a_file_is_named(tiny, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a folder")
    for target in (notes, notes / "sub"):
        code, _, err = _run(capsys, "train", tiny, *TRAIN, "--output-dir", str(target))
        assert code == 2 and "Traceback" not in err
        assert (
            err.strip()
            == f"jaxvision: error: --output-dir {target}: {notes} is a file, not a folder"
        )
    assert notes.read_text() == "not a folder"


def test_resume_with_other_options_says_what_changed(tiny, interrupted, capsys):
    code, _, err = _run(
        capsys, "train", tiny, *TRAIN, "--batch-size", "64", "--lr", "0.01", "--max-steps", "3",
        "--output-dir", str(interrupted), "--resume",
    )  # fmt: skip
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and warnings[0].startswith("jaxvision: warning: resuming")
    assert "batch_size: 128 -> 64" in warnings[0] and "lr: 0.001 -> 0.01" in warnings[0]
    assert "max_steps" not in warnings[0]  # options that leave the run as it is are not listed
    assert "no longer the one an uninterrupted run" in warnings[0]


def test_resume_with_the_same_options_warns_nothing(tiny, interrupted, capsys):
    code, _, err = _run(
        capsys, "train", tiny, *TRAIN, "--batch-size", "128", "--max-steps", "3",
        "--output-dir", str(interrupted), "--resume",
    )  # fmt: skip
    assert code == 0 and "warning" not in err and "resumed from" in err


def test_a_corrupt_newest_checkpoint_is_one_warning_line(tiny, interrupted, capsys):
    newest = sorted((interrupted / "checkpoints").glob("ckpt_*"))[-1]
    shard = newest / "shards-00000.msgpack"
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    code, _, err = _run(
        capsys, "train", tiny, *TRAIN, "--batch-size", "128", "--max-steps", "3",
        "--output-dir", str(interrupted), "--resume",
    )  # fmt: skip
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "arning" in line]
    assert len(warnings) == 1, err
    assert warnings[0].startswith(f"jaxvision: warning: skipping {newest}")
    assert "falling back to the previous checkpoint" in warnings[0]
    assert "UserWarning" not in err and ".py:" not in err

"""The benchmark harness runs and writes well-formed results (no assertion on any timing)."""

from __future__ import annotations

import csv
import json
import math
import sys

import pytest

from jaxvision import bench
from jaxvision.cli import main as cli_main

POSITIVE_FIELDS = (
    "params",
    "flops_per_image",
    "step_flops_per_image",
    "xla_flops_per_image",
    "trace_s",
    "lower_s",
    "compile_s",
    "compile_total_s",
    "step_ms",
    "images_per_s",
    "peak_rss_mb",
    "matmul_peak_gflops",
    "achieved_gflops",
    "utilisation",
)
ENVIRONMENT_FIELDS = ("device", "platform", "jax_version", "flax_version", "cpu_count", "threads",
                      "command", "timestamp")  # fmt: skip

# A one-block ViT-Ti at 32 px compiles in a second or two; it is the registered model's real code.
TINY_VIT = ["vit_ti16", "--image-size", "32", "--model-arg", "num_layers=1"]
FAST = ["--iters", "2", "--warmup", "1", "--batch-size", "2", "--train-batch-size", "2"]


@pytest.fixture(autouse=True)
def small_matmul_peak(monkeypatch):
    """A 256^3 product stands in for the 2048^3 peak measurement: these tests time nothing."""
    monkeypatch.setattr(bench, "CPU_MATMUL_SIZE", 256)
    bench.matmul_peak_flops.cache_clear()
    yield
    bench.matmul_peak_flops.cache_clear()


def _read_jsonl(path):
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines]


def _assert_measured(rec):
    assert rec["error"] is None
    for key in POSITIVE_FIELDS:
        value = rec[key]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, (key, value)
    for key in ENVIRONMENT_FIELDS:
        assert rec[key] not in (None, ""), key
    assert set(bench.FIELDS) == set(rec)


def test_inference_and_train_write_one_json_line_each(tiny, tmp_path, capsys):
    out = tmp_path / "results" / "r.jsonl"
    common = ["--no-torch", "--output", str(out), *FAST]
    assert cli_main(["bench", tiny, "--mode", "both", *common]) == 0
    records = _read_jsonl(out)
    assert [r["mode"] for r in records] == ["inference", "train"]
    for rec in records:
        _assert_measured(rec)
        assert rec["model"] == tiny and rec["image_size"] == 16 and rec["batch_size"] == 2
        assert rec["torch_images_per_s"] is None and rec["ratio_vs_torch"] is None
        assert rec["timed_steps"] == 2 and rec["warmup_steps"] == 1
    assert records[1]["step_flops_per_image"] == 3 * records[1]["flops_per_image"]
    table = capsys.readouterr().out
    assert tiny in table and "img/s" in table


def test_csv_output_appends_and_compile_only_skips_running(tiny, tmp_path):
    out = tmp_path / "r.csv"
    assert cli_main(["bench", *TINY_VIT, "--mode", "both", "--compile-only", "--no-torch",
                     "--output", str(out), *FAST]) == 0  # fmt: skip
    # A second run appends under the same header (here a failing one: scan_blocks is not a field
    # of the tiny CNN, so its row carries the error and the exit status is 1).
    assert cli_main(["bench", tiny, "--model-arg", "scan_blocks=True", "--no-torch",
                     "--output", str(out), *FAST]) == 1  # fmt: skip
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["mode"] for r in rows] == ["inference", "train", "inference"]
    for row in rows[:2]:
        assert row["model"] == "vit_ti16" and row["model_args"] == '{"num_layers": 1}'
        assert float(row["compile_total_s"]) > 0 and int(row["params"]) > 0
        assert int(row["xla_flops_per_image"]) > 0 and row["images_per_s"] == ""
        assert row["error"] == ""
    assert "bad override" in rows[2]["error"] and rows[2]["images_per_s"] == ""


def test_flops_count_every_scanned_block_and_every_depthwise_convolution():
    import jaxvision

    looped = jaxvision.create_model("vit_ti16", num_layers=2, image_size=32)
    scanned = jaxvision.create_model("vit_ti16", num_layers=2, scan_blocks=True, image_size=32)
    one_block = jaxvision.create_model("vit_ti16", num_layers=1, image_size=32)
    flops = bench.analytic_flops(looped, 32)
    assert bench.analytic_flops(scanned, 32) == flops > bench.analytic_flops(one_block, 32)
    # torch.utils.flop_counter's figure for timm's efficientnet_b0 (reference_models.json); the
    # depthwise convolutions run as shifted multiply-adds on CPU and must still be counted.
    shifted = jaxvision.create_model("efficientnet_b0", depthwise_implementation="shifted")
    reference = jaxvision.model_info("efficientnet_b0").reference_flops
    assert bench.analytic_flops(shifted, 224) == reference


@pytest.mark.reference
def test_side_by_side_with_pytorch(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    out = tmp_path / "r.jsonl"
    # The reference is timm's full ViT-Ti at 32 px (overrides are not passed to PyTorch): only the
    # well-formedness of the comparison is tested here.
    assert cli_main(["bench", *TINY_VIT, "--output", str(out), *FAST]) == 0
    (rec,) = _read_jsonl(out)
    _assert_measured(rec)
    assert rec["torch_reference"] == "timm vit_tiny_patch16_224"
    assert rec["threads"] >= 1 and rec["torch_version"]
    assert rec["torch_threads"] == rec["threads"]  # the worker ran with the same threads
    for key in ("torch_step_ms", "torch_images_per_s", "ratio_vs_torch", "torch_load_before"):
        assert rec[key] > 0, key
    assert math.isclose(rec["ratio_vs_torch"], rec["torch_step_ms"] / rec["step_ms"], rel_tol=0.01)


def _spec(**overrides):
    spec = {"name": "vit_ti16", "family": "vit", "mode": "train", "batch_size": 2,
            "image_size": 32, "dtype": "float32", "warmup": 1, "iters": 3, "threads": 1,
            "device": "cpu"}  # fmt: skip
    return {**spec, **overrides}


def test_pytorch_is_timed_by_a_worker_process_and_never_imported_here(tiny, tmp_path, monkeypatch):
    """JAX is timed here, then the worker's step times give the PyTorch columns; this process
    never imports torch (``import torch`` would fail: sys.modules holds None for it)."""
    specs = []

    def fake_worker(spec, timeout=None):
        specs.append(spec)
        return {"torch_reference": "fake reference", "torch_step_times": [0.3, 0.1, 0.2],
                "torch_threads": spec["threads"], "torch_load_before": 0.5,
                "torch_busy_cores_before": 0.25, "torch_peak_rss_delta_mb": 12.5,
                "not_a_field": 1}  # fmt: skip

    monkeypatch.setattr(bench, "run_torch_worker", fake_worker)
    monkeypatch.setitem(sys.modules, "torch", None)
    out = tmp_path / "r.jsonl"
    argv = ["bench", tiny, "--mode", "train", "--threads", "1", "--output", str(out), *FAST]
    assert cli_main(argv) == 0
    (rec,) = _read_jsonl(out)
    _assert_measured(rec)
    assert specs == [_spec(name=tiny, family="test", image_size=16, iters=2, warmup=1)]
    assert rec["torch_reference"] == "fake reference" and rec["torch_threads"] == 1
    assert rec["torch_step_ms"] == 200.0 and rec["torch_images_per_s"] == 10.0  # the median
    assert math.isclose(rec["ratio_vs_torch"], 200.0 / rec["step_ms"], rel_tol=0.01)
    assert rec["torch_load_before"] == 0.5 and rec["torch_peak_rss_delta_mb"] == 12.5
    assert "not_a_field" not in rec


def test_torch_compile_is_a_second_worker_with_its_own_columns(tiny, tmp_path, monkeypatch):
    specs = []

    def fake_worker(spec, timeout=None):
        specs.append(spec)
        times = [0.1, 0.1, 0.1] if spec.get("compile") else [0.4, 0.4, 0.4]
        return {"torch_reference": "fake", "torch_step_times": times, "torch_warmup_s": 7.0}

    monkeypatch.setattr(bench, "run_torch_worker", fake_worker)
    out = tmp_path / "r.jsonl"
    argv = ["bench", tiny, "--mode", "train", "--threads", "1", "--output", str(out), *FAST]
    assert cli_main([*argv, "--torch-compile"]) == 0
    (rec,) = _read_jsonl(out)
    assert [bool(s.get("compile")) for s in specs] == [False, True]
    assert rec["torch_step_ms"] == 400.0 and rec["torch_compiled_step_ms"] == 100.0
    assert rec["torch_compiled_images_per_s"] == 20.0 and rec["torch_compiled_warmup_s"] == 7.0
    assert math.isclose(rec["ratio_vs_torch_compiled"], 100.0 / rec["step_ms"], rel_tol=0.01)
    table = bench.format_table([rec], markdown=True)
    assert "torch.compile img/s" in table and "| 20.0 |" in table
    # Without the option: one worker, and the table keeps its usual columns.
    specs.clear()
    assert cli_main(argv) == 0
    assert len(specs) == 1 and "torch.compile" not in bench.format_table(_read_jsonl(out)[1:])


@pytest.mark.reference
def test_the_worker_times_the_reference_under_torch_compile():
    pytest.importorskip("timm")
    # The "eager" backend runs torch.compile's graph capture (TorchDynamo) without Inductor's
    # C++ code generation, which takes ~40 s even for ViT-Ti at 32 px on this CPU.
    out = bench.run_torch_worker(_spec(compile=True, compile_backend="eager"))
    assert out["torch_reference"] == "timm vit_tiny_patch16_224"
    assert len(out["torch_step_times"]) == 3 and out["torch_warmup_s"] > 0


def test_the_worker_reports_a_model_without_reference_and_a_crash():
    pytest.importorskip("torch")
    out = bench.run_torch_worker(_spec(name="no_such_model"))
    assert out["torch_reference"] == "no PyTorch reference known for no_such_model"
    assert "torch_step_times" not in out and out["torch_load_before"] is not None
    spec = _spec()
    del spec["name"]
    out = bench.run_torch_worker(spec)
    assert out == {"torch_reference": "PyTorch worker failed: KeyError: 'name'"}


@pytest.mark.reference
def test_the_worker_times_the_reference_with_the_threads_asked_for():
    pytest.importorskip("timm")
    out = bench.run_torch_worker(_spec())
    assert out["torch_reference"] == "timm vit_tiny_patch16_224" and out["torch_threads"] == 1
    assert len(out["torch_step_times"]) == 3 and min(out["torch_step_times"]) > 0
    assert out["torch_peak_rss_delta_mb"] > 0


def test_unknown_model_and_bad_arguments_are_usage_errors(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert cli_main(["bench", "vit_b17", "--output", str(out)]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert cli_main(["bench", "--output", str(out)]) == 2
    assert cli_main(["bench", "vit_ti16", "--iters", "0", "--output", str(out)]) == 2
    assert not out.exists()


def test_the_table_marks_compile_times_that_may_come_from_the_cache():
    rec = {"model": "m", "mode": "train", "batch_size": 8, "image_size": 32, "compile_s": 0.1}
    assert "[cache on]" not in bench.format_table([rec])
    assert "m [cache on]" in bench.format_table([{**rec, "compilation_cache": True}])


def test_parse_model_args_and_interleaved_timing():
    assert bench.parse_model_args(["scan_blocks=True", "implementation=xla", "n=3"]) == {
        "scan_blocks": True,
        "implementation": "xla",
        "n": 3,
    }
    # Shell spellings of the constants are the constants: the string "false" would be truthy.
    assert bench.parse_model_args(["a=false", "b=TRUE", "c=None", "d=False", "e=falsey"]) == {
        "a": False,
        "b": True,
        "c": None,
        "d": False,
        "e": "falsey",
    }
    with pytest.raises(ValueError):
        bench.parse_model_args(["no_equals"])
    calls = []
    times = bench.time_interleaved([lambda: calls.append("a"), lambda: calls.append("b")], 1, 5)
    assert [len(t) for t in times] == [5, 5]
    # warm-up a, b; then blocks of 3 and 2 alternate
    assert "".join(calls) == "ab" + "aaabbb" + "aabb"

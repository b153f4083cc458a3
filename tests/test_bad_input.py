"""Malformed input at every public entry point gets a clear error, never a deep traceback."""

from __future__ import annotations

import contextlib
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxvision
from jaxvision.cli import main
from jaxvision.data import ArrayDataset, DatasetError, load_dataset
from jaxvision.train import checkpoint as ckpt

MODELS = {"vit_ti16": 32, "yolov8n_cls": 32, "efficientnet_b0": 32}
_built = {}


def _model(name):
    if name not in _built:
        extra = {"image_size": 32} if name.startswith("vit") else {}
        _built[name] = jaxvision.create_model(name, num_classes=4, **extra)
    return _built[name]


shapes = st.one_of(
    st.lists(st.integers(1, 6), min_size=0, max_size=6).map(tuple),  # any rank, small dims
    st.tuples(st.integers(1, 3), st.sampled_from([1, 2, 4]), st.just(32), st.just(32)),  # NCHW-ish
    st.tuples(st.integers(1, 3), st.just(32), st.just(32), st.sampled_from([1, 2, 4])),  # channels
)


@given(name=st.sampled_from(sorted(MODELS)), shape=shapes)
def test_badly_shaped_images_are_named(name, shape):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    with pytest.raises(ValueError, match="expects"):
        jax.eval_shape(
            lambda x: _model(name).init({"params": jax.random.key(0)}, x, train=False), x
        )


@given(
    name=st.sampled_from(sorted(MODELS)), dtype=st.sampled_from([jnp.uint8, jnp.int32, jnp.bool_])
)
def test_integer_images_are_refused(name, dtype):
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), dtype)
    with pytest.raises(ValueError, match="floating-point"):
        jax.eval_shape(
            lambda x: _model(name).init({"params": jax.random.key(0)}, x, train=False), x
        )


@given(st.text(max_size=30))
def test_any_data_spec_is_loaded_or_refused_clearly(spec):
    try:
        ds = load_dataset(spec, "train")
    except DatasetError as e:
        assert str(e)
    else:
        assert spec == "digits" and len(ds) == 1437


@given(
    labels=st.lists(st.integers(-3, 12), min_size=0, max_size=6),
    nan_pixels=st.booleans(),
)
def test_array_datasets_validate_labels_and_pixels(labels, nan_pixels):
    n = len(labels)
    images = np.zeros((n, 4, 4, 3), np.float32 if nan_pixels else np.uint8)
    if nan_pixels and n:
        images[0, 0, 0, 0] = np.nan
    valid = n > 0 and not nan_pixels and all(0 <= y < 10 for y in labels)
    if valid:
        assert len(ArrayDataset(images, np.array(labels), [str(i) for i in range(10)], "t")) == n
    else:
        with pytest.raises(DatasetError):
            ArrayDataset(images, np.array(labels), [str(i) for i in range(10)], "t")


@given(st.binary(max_size=200))
def test_random_bytes_are_not_a_checkpoint(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("ck") / "ckpt_000000001.jvc"
    path.write_bytes(data)
    with pytest.raises(ckpt.CheckpointError):
        ckpt.load_checkpoint(path)


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "efficientnet_b9"],
        ["train", "yolov8n_cls", "--epochs", "0"],
        ["train", "yolov8n_cls", "--lr", "-1"],
        ["train", "yolov8n_cls", "--lr", "nan"],
        ["train", "yolov8n_cls", "--image-size", "3"],
        ["train", "yolov8n_cls", "--batch-size", "0"],
        ["train", "yolov8n_cls", "--crop-min-scale", "2"],
        ["train", "yolov8n_cls", "--data", "cifar10:"],
        ["train", "yolov8n_cls", "--model-arg", "=3"],
        ["eval", "yolov8n_cls", "--checkpoint", "/nonexistent"],
        ["summary", "VIT"],
        [
            "convert",
            "vit_ti16",
            "--input",
            "/nonexistent.safetensors",
            "--source",
            "timm",
            "--output",
            "/tmp/x.jvc",
        ],
        [
            "convert",
            "vit_ti16",
            "--input",
            "README.md",
            "--source",
            "timm",
            "--output",
            "x.jvc",
        ],
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxvision: error:") and "Traceback" not in err


@given(st.lists(st.sampled_from(["--epochs", "--lr", "x", "--nope", "-", "1e9999"]), max_size=4))
def test_cli_argument_syntax_errors_exit_2(junk):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
        main(["train", "yolov8n_cls", "--epochs", *junk, "--definitely-not-an-option"])
    assert info.value.code == 2
    assert "usage:" in err.getvalue()

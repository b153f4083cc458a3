"""Data sets, transforms and the batch loader."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from jaxvision.data import (
    BatchLoader,
    ClassificationSource,
    DatasetError,
    eval_transform,
    load_dataset,
    random_resized_crop_box,
    steps_per_epoch,
)
from jaxvision.registry import Preprocessing

PRE = Preprocessing(
    mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_fraction=0.875, interpolation="bilinear"
)


def _loader(ds, augment):
    return BatchLoader(ClassificationSource(ds, image_size=16, preprocessing=PRE, augment=augment))


def test_digits_split_is_fixed_stratified_and_disjoint():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.num_classes == 10 and train.images.shape[1:] == (8, 8, 3)
    counts = np.bincount(test.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 of each digit
    assert np.array_equal(test.labels, load_dataset("digits", "test").labels)
    flat = {img.tobytes() for img in test.images}
    # Some digits are pixel-identical across the data set; most held-out images are unseen.
    assert sum(img.tobytes() in flat for img in train.images) < 20
    assert train.images.max() == 255 and np.array_equal(train.images[..., 0], train.images[..., 2])


def _write_tree(root, classes=("cat", "dog"), per_class=5, size=(20, 12)):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")


def test_folder_tree_with_and_without_split_folders(tmp_path):
    _write_tree(tmp_path / "a" / "train")
    _write_tree(tmp_path / "a" / "val", per_class=2)
    train, val = (
        load_dataset(f"folder:{tmp_path / 'a'}", "train"),
        load_dataset(f"folder:{tmp_path / 'a'}", "test"),
    )
    assert (len(train), len(val), train.class_names) == (10, 4, ["cat", "dog"])
    _write_tree(tmp_path / "b")
    tr, te = (
        load_dataset(f"folder:{tmp_path / 'b'}", "train"),
        load_dataset(f"folder:{tmp_path / 'b'}", "test"),
    )
    assert len(tr) + len(te) == 10 and not set(tr.paths) & set(te.paths)
    assert np.asarray(tr.image(0)).shape == (12, 20, 3)


def test_undecodable_image_is_named_or_skipped_with_a_count(tmp_path):
    _write_tree(tmp_path / "train")
    _write_tree(tmp_path / "val", per_class=1)
    (tmp_path / "train" / "cat" / "broken.png").write_bytes(b"not a png at all")
    ds = load_dataset(f"folder:{tmp_path}", "train")
    bad = ds.paths.index(tmp_path / "train" / "cat" / "broken.png")
    with pytest.raises(DatasetError, match=r"cannot decode image .*broken\.png.*--skip-bad-images"):
        ds.image(bad)
    skipped = load_dataset(f"folder:{tmp_path}", "train", skip_bad_images=True)
    assert (len(skipped), skipped.skipped) == (10, 1)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("folder:/no/such/dir", "data folder not found"),
        ("cifar10:/no/such/dir", "CIFAR-10 files not found"),
        ("imagenet", "unknown data set 'imagenet'"),
        ("folder:", "folder needs a path"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(spec, "train")


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "cls").mkdir()
    with pytest.raises(DatasetError, match="hold no images"):
        load_dataset(f"folder:{tmp_path}", "train")


def test_cifar10_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in [*[(f"data_batch_{i}", 4) for i in range(1, 6)], ("test_batch", 3)]:
        data = rng.integers(0, 255, (n, 3 * 32 * 32), dtype=np.uint8)
        with open(tmp_path / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": list(rng.integers(0, 10, n))}, f)
    train, test = (
        load_dataset(f"cifar10:{tmp_path}", "train"),
        load_dataset(f"cifar10:{tmp_path}", "test"),
    )
    assert train.images.shape == (20, 32, 32, 3) and len(test) == 3
    with open(tmp_path / "data_batch_1", "rb") as f:
        raw = pickle.load(f)
    # CHW rows -> HWC images: pixel (row 1, col 2) of channel 1 of the first image.
    assert train.images[0, 1, 2, 1] == raw[b"data"][0, 1024 + 1 * 32 + 2]
    (tmp_path / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="test_batch: not a CIFAR-10 python batch file"):
        load_dataset(f"cifar10:{tmp_path}", "test")


def test_eval_transform_resizes_crops_and_normalises():
    img = Image.fromarray(np.full((40, 80, 3), 128, np.uint8))
    x = eval_transform(img, 32, PRE)
    assert x.shape == (32, 32, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x, (128 / 255 - 0.5) / 0.25, atol=1e-6)
    assert eval_transform(img, 24, PRE, centre_crop=False).shape == (24, 24, 3)


@given(
    st.integers(1, 300),
    st.integers(1, 300),
    st.integers(0, 2**32 - 1),
    st.floats(0.05, 1.0),
    st.floats(0.05, 1.0),
)
def test_random_resized_crop_box_stays_inside(width, height, seed, s0, s1):
    scale = (min(s0, s1), max(s0, s1))
    left, top, w, h = random_resized_crop_box(width, height, np.random.default_rng(seed), scale)
    assert 0 <= left and 0 <= top and 0 < w and 0 < h
    assert left + w <= width and top + h <= height


def test_eval_batches_cover_every_example_once_with_padding_masked():
    ds = load_dataset("digits", "test")
    loader = _loader(ds, augment="none")
    batches = list(loader.eval_batches(64))
    assert [len(b["label"]) for b in batches] == [64] * 6
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.sum() == 360 and np.all(mask[:360] == 1) and np.all(mask[360:] == 0)
    labels = np.concatenate([b["label"] for b in batches])[:360]
    assert np.array_equal(labels, ds.labels)
    loader.close()


def test_an_empty_slice_of_the_last_batch_is_all_padding():
    loader = _loader(load_dataset("digits", "test"), augment="none")
    batch = loader.eval_batch(np.arange(0), 4)  # a host with no example left in the last batch
    assert batch["image"].shape == (4, 16, 16, 3) and batch["label"].dtype == np.int32
    assert not batch["mask"].any()
    loader.close()


def test_train_batches_are_a_function_of_seed_epoch_and_index():
    ds = load_dataset("digits", "train")
    loader = _loader(ds, augment="crop-flip")
    a = list(loader.train_epoch(seed=3, epoch=1, batch_size=100))
    b = list(loader.train_epoch(seed=3, epoch=1, batch_size=100, start=5))
    assert len(a) == 14 and len(b) == 9
    np.testing.assert_array_equal(a[5]["image"], b[0]["image"])
    np.testing.assert_array_equal(a[13]["label"], b[8]["label"])
    c = next(loader.train_epoch(seed=3, epoch=2, batch_size=100))
    assert not np.array_equal(a[0]["label"], c["label"])
    loader.close()


def test_batch_larger_than_the_data_set_is_an_error():
    with pytest.raises(DatasetError, match="batch size 2000 is larger than the training set"):
        steps_per_epoch(1437, 2000)


def test_each_host_makes_exactly_its_slice_of_the_global_batch():
    ds = load_dataset("digits", "train")
    loader = _loader(ds, augment="crop-flip")
    full = next(loader.train_epoch(seed=0, epoch=0, batch_size=64))
    halves = [
        next(loader.train_epoch(seed=0, epoch=0, batch_size=64, shard=(i, 2))) for i in range(2)
    ]
    for key in ("image", "label"):
        np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), full[key])
    loader.close()

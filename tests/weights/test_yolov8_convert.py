"""Ultralytics YOLOv8 classification checkpoints -> jaxvision: same logits, clear errors."""

from __future__ import annotations

import copy
import functools
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from jaxvision.models.yolov8 import (
    DETECT_BACKBONE,
    DETECT_SCALES,
    SPPF,
    C2f,
    YOLOv8Backbone,
    scale_repeats,
)
from jaxvision.registry import create_model
from jaxvision.weights import WeightConversionError, convert, load_state_dict
from jaxvision.weights import yolov8 as convert_yolov8
from jaxvision.weights.common import StateDictReader

CONSTRUCTORS = {s: functools.partial(create_model, f"yolov8{s}_cls") for s in ("n", "s")}
# PyTorch's BatchNorm2d defaults, which standalone ultralytics blocks keep.
TORCH_DEFAULT_NORM = functools.partial(nn.BatchNorm, epsilon=1e-5, momentum=0.9)


@pytest.fixture(scope="module")
def torch():
    os.environ.setdefault("YOLO_OFFLINE", "1")  # never look for the network (is_online() -> False)
    torch = pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    torch.set_num_threads(2)
    return torch


def _randomise_batch_norm(torch, module, seed, input_channels):
    """Random BatchNorm affine parameters, and running statistics near the true ones.

    PyTorch initialises BatchNorm to the identity (mean 0, var 1), which after a few random layers
    collapses every input to the same logits. Calibrating the statistics on a batch keeps the
    activations at unit scale, so the logits depend on the image; the perturbation makes the
    statistics differ from any batch's, so eval mode is really tested.
    """
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            n = m.num_features
            m.weight.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.copy_(torch.randn(n, generator=g) * 0.2)
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch sets the statistics
        module.train()(torch.rand(4, input_channels, 48, 48, generator=g))
        for m in norms:
            m.momentum = 0.1
            m.running_mean.add_(
                torch.randn(m.num_features, generator=g) * 0.1 * m.running_var.sqrt()
            )
            m.running_var.mul_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
    return module.eval()


@pytest.fixture(scope="module")
def reference(torch):
    """``reference(scale, nc=1000)``: a random ultralytics ClassificationModel (cached)."""
    from ultralytics.nn.tasks import ClassificationModel

    cache = {}

    def build(scale, nc=None):
        if (scale, nc) not in cache:
            torch.manual_seed(0)
            model = ClassificationModel(f"yolov8{scale}-cls.yaml", nc=nc, verbose=False)
            cache[scale, nc] = _randomise_batch_norm(torch, model, seed=1, input_channels=3)
        return cache[scale, nc]

    return build


def _state_dict(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@pytest.mark.reference
@pytest.mark.parametrize("scale,size", [("n", 224), ("n", 97), ("s", 224), ("s", 97)])
def test_logits_match_ultralytics(torch, reference, scale, size):
    ref_model = reference(scale)
    variables = convert(f"yolov8{scale}_cls", ref_model.state_dict(), source="ultralytics")
    model = CONSTRUCTORS[scale](num_classes=1000)

    x = np.random.default_rng(size).uniform(0.0, 1.0, (2, 3, size, size)).astype(np.float32)
    with torch.inference_mode():
        out = ref_model(torch.from_numpy(x))
    # Eval mode returns (probabilities, logits): the second element is what our model returns.
    assert isinstance(out, tuple) and len(out) == 2
    probs, ref = out[0].numpy(), out[1].numpy()
    np.testing.assert_allclose(probs, torch.softmax(out[1], dim=1).numpy(), rtol=1e-5, atol=1e-7)

    got = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x.transpose(0, 2, 3, 1))
    got = np.asarray(got)
    assert got.shape == ref.shape == (2, 1000) and got.dtype == np.float32
    atol = 2e-5 * np.abs(ref).max()
    # The comparison is meaningful: the two images' logits differ by far more than the tolerance.
    assert np.abs(ref[0] - ref[1]).max() > 50 * atol
    np.testing.assert_allclose(got, ref, rtol=0, atol=atol)
    np.testing.assert_allclose(np.asarray(jax.nn.softmax(got)), probs, rtol=1e-4, atol=1e-7)


@pytest.mark.reference
@pytest.mark.parametrize("scale,size", [("n", 77), ("m", 64)])
def test_detection_backbone_features_match_ultralytics(torch, scale, size):
    """YOLOv8Backbone with yolov8.yaml's rows gives the P3, P4, P5 maps its detection neck reads."""
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    layers = DetectionModel(f"yolov8{scale}.yaml", verbose=False).model[: len(DETECT_BACKBONE)]
    ref = _randomise_batch_norm(torch, torch.nn.Sequential(*layers), seed=4, input_channels=3)
    s = DETECT_SCALES[scale]
    reader = StateDictReader(ref.state_dict())
    params, stats = {}, {}
    for i, row in enumerate(DETECT_BACKBONE):
        if row.block == "conv":
            params[row.name], stats[row.name] = convert_yolov8.conv_bn(reader, str(i))
        elif row.block == "c2f":
            repeats = scale_repeats(row.repeats, s.depth)
            params[row.name], stats[row.name] = convert_yolov8.c2f(reader, str(i), repeats)
        else:
            params[row.name], stats[row.name] = convert_yolov8.sppf(reader, str(i))
    reader.finish()

    x = np.random.default_rng(size).uniform(0.0, 1.0, (1, 3, size, size)).astype(np.float32)
    outputs, h = [], torch.from_numpy(x)
    with torch.inference_mode():
        for layer in ref:
            h = layer(h)
            outputs.append(h.numpy().transpose(0, 2, 3, 1))
    backbone = YOLOv8Backbone(
        DETECT_BACKBONE, depth=s.depth, width=s.width, max_channels=s.max_channels
    )  # the detection BatchNorm, eps 1e-3, as initialize_weights sets it
    assert ref[0].bn.eps == backbone.bn_epsilon
    features = jax.jit(lambda v, x: backbone.apply(v, x, train=False))(
        {"params": params, "batch_stats": stats}, x.transpose(0, 2, 3, 1)
    )
    for stage, row in (("stage3", 4), ("stage4", 6), ("stage5", 9)):
        want = outputs[row]
        np.testing.assert_allclose(features[stage], want, rtol=0, atol=2e-5 * np.abs(want).max())


@pytest.mark.reference
@pytest.mark.parametrize("shortcut", [True, False])
def test_c2f_block_matches_ultralytics(torch, shortcut):
    from ultralytics.nn.modules.block import C2f as TorchC2f

    torch.manual_seed(0)
    ref = _randomise_batch_norm(
        torch, torch.nn.Sequential(TorchC2f(8, 12, 2, shortcut)), seed=2, input_channels=8
    )
    reader = StateDictReader(ref.state_dict())
    params, stats = convert_yolov8.c2f(reader, "0", repeats=2)
    reader.finish()
    x = np.random.default_rng(0).normal(size=(2, 8, 9, 7)).astype(np.float32)
    with torch.inference_mode():
        want = ref(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
    block = C2f(12, repeats=2, shortcut=shortcut, norm=TORCH_DEFAULT_NORM)
    got = block.apply(
        {"params": params, "batch_stats": stats}, x.transpose(0, 2, 3, 1), train=False
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.reference
def test_sppf_block_matches_ultralytics(torch):
    from ultralytics.nn.modules.block import SPPF as TorchSPPF

    torch.manual_seed(0)
    sppf = TorchSPPF(16, 24, 5)
    # parse_model puts SiLU back on cv1 for YOLOv8's YAML rows (8.4 builds it without, for YOLO26).
    sppf.cv1.act = torch.nn.SiLU()
    ref = _randomise_batch_norm(torch, torch.nn.Sequential(sppf), seed=3, input_channels=16)
    reader = StateDictReader(ref.state_dict())
    params, stats = convert_yolov8.sppf(reader, "0")
    reader.finish()
    # Negative inputs too, so the -inf padding of the max pools matters at the borders.
    x = np.random.default_rng(0).normal(size=(2, 16, 7, 10)).astype(np.float32)
    with torch.inference_mode():
        want = ref(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
    got = SPPF(24, norm=TORCH_DEFAULT_NORM).apply(
        {"params": params, "batch_stats": stats}, x.transpose(0, 2, 3, 1), train=False
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_num_classes_read_from_the_checkpoint(reference):
    variables = convert("yolov8n_cls", reference("n", nc=10).state_dict(), source="ultralytics")
    assert variables["params"]["head"]["classifier"]["kernel"].shape == (1280, 10)
    assert variables["params"]["head"]["classifier"]["bias"].shape == (10,)


def test_unexpected_key_is_named(reference):
    state = _state_dict(reference("n"))
    state["model.2.m.7.cv1.conv.weight"] = np.zeros((16, 16, 3, 3), np.float32)
    with pytest.raises(WeightConversionError, match=r"unexpected keys.*model\.2\.m\.7\.cv1"):
        convert("yolov8n_cls", state, source="ultralytics")


def test_missing_key_is_named(reference):
    state = _state_dict(reference("n"))
    del state["model.4.m.1.cv2.bn.running_var"]
    with pytest.raises(WeightConversionError, match=r"missing keys.*model\.4\.m\.1\.cv2\.bn"):
        convert("yolov8n_cls", state, source="ultralytics")


def test_missing_classifier_is_named(reference):
    state = _state_dict(reference("n"))
    del state["model.9.linear.weight"]
    with pytest.raises(WeightConversionError, match=r"model\.9\.linear\.weight"):
        convert("yolov8n_cls", state, source="ultralytics")


def test_wrong_variant_is_a_shape_error(reference):
    # yolov8s has the same layers as yolov8n (depth 0.33 for both), only twice as wide.
    with pytest.raises(WeightConversionError, match="mis-shaped"):
        convert("yolov8n_cls", reference("s").state_dict(), source="ultralytics")


def test_load_state_dict_unwraps_an_ultralytics_checkpoint(torch, reference, tmp_path):
    model = reference("n")
    direct = convert("yolov8n_cls", model.state_dict(), source="ultralytics")
    # Ultralytics pickles the model object: a training checkpoint stores the EMA model in half
    # precision under "ema" (and "model": None); a stripped release stores it under "model".
    half = copy.deepcopy(model).half()
    torch.save({"model": model}, tmp_path / "plain.pt")
    torch.save({"model": None, "ema": half}, tmp_path / "last.pt")
    torch.save({"ema": None, "model": half}, tmp_path / "best.pt")
    for name, rtol in [("plain.pt", 0.0), ("last.pt", 1e-3), ("best.pt", 1e-3)]:
        state = load_state_dict(tmp_path / name)
        assert set(state) == set(model.state_dict())
        loaded = convert("yolov8n_cls", state, source="ultralytics")
        for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(direct), strict=True):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-6 if rtol else 0.0)

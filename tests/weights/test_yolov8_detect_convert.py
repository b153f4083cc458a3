"""Ultralytics YOLOv8 detection / segmentation models -> jaxvision: the same decoded boxes, class
scores, mask coefficients and prototypes, at 640 px and at a non-square size."""

from __future__ import annotations

import contextlib
import io
import os

import jax
import numpy as np
import pytest

from jaxvision.models.yolov8_detect import decode
from jaxvision.registry import create_model
from jaxvision.weights import WeightConversionError, convert


@pytest.fixture(scope="module")
def torch():
    os.environ.setdefault("YOLO_OFFLINE", "1")
    torch = pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    torch.set_num_threads(2)
    return torch


def _reference(torch, yaml, seed):
    """A random ultralytics model whose BatchNorm statistics and zero-initialised tensors are
    randomised too (calibrated on a batch so activations keep a useful scale)."""
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel

    torch.manual_seed(seed)
    cls = SegmentationModel if "seg" in yaml else DetectionModel
    with contextlib.redirect_stdout(io.StringIO()):
        model = cls(yaml, verbose=False)
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.reset_running_stats()
            m.momentum = None  # one batch sets the statistics
        for name, p in model.named_parameters():
            if name.endswith("bias") and not torch.any(p):  # e.g. Proto's upsample bias
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        model.train()(torch.rand(2, 3, 64, 64, generator=g))
        for m in norms:
            m.momentum = 0.03
        # Random weights give logits in the thousands, where a softmax over the 16 DFL bins is a
        # step function; bring the prediction layers to a realistic scale (logits ~ +-10).
        for name, p in model.named_parameters():
            if ".2.weight" in name and name.startswith("model.22.cv"):
                p.mul_(2e-3)
    return model.eval()


def _compare(torch, ref, name, variables, height, width, seed=0):
    x = np.random.default_rng(seed).uniform(0, 1, (2, height, width, 3)).astype(np.float32)
    with torch.no_grad():
        out = ref(torch.from_numpy(x).permute(0, 3, 1, 2))
    model = create_model(name)
    ours = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    boxes, probs = (np.asarray(a) for a in decode(ours, height, width))
    if model.num_masks:
        (y, proto), _ = out
    else:
        y, _ = out
    y = y.numpy().transpose(0, 2, 1)  # (B, 4 + K [+ 32], A)
    cx, cy, w, h = (y[..., i] for i in range(4))
    ref_boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
    k = model.num_classes
    # float32 through ~60 layers: boxes agree to 0.02 px (of 640), probabilities to 1e-4.
    np.testing.assert_allclose(boxes, ref_boxes, atol=2e-2)
    np.testing.assert_allclose(probs, y[..., 4 : 4 + k], atol=1e-4)
    if model.num_masks:
        coefficients = np.asarray(ours["mask_coefficients"])
        scale = np.abs(y[..., 4 + k :]).max()
        np.testing.assert_allclose(coefficients, y[..., 4 + k :], atol=1e-4 * scale)
        proto = proto.numpy().transpose(0, 2, 3, 1)
        np.testing.assert_allclose(
            np.asarray(ours["proto"]), proto, atol=1e-4 * np.abs(proto).max()
        )


@pytest.mark.reference
@pytest.mark.parametrize(
    "name, yaml",
    [
        ("yolov8n_det", "yolov8n.yaml"),
        ("yolov8n_seg", "yolov8n-seg.yaml"),
        ("yolov8s_det", "yolov8s.yaml"),
        ("yolov8s_seg", "yolov8s-seg.yaml"),
    ],
)
def test_converted_model_gives_the_reference_outputs(torch, name, yaml):
    ref = _reference(torch, yaml, seed=1)
    variables = convert(name, ref.state_dict(), source="ultralytics")
    _compare(torch, ref, name, variables, 640, 640)
    _compare(torch, ref, name, variables, 256, 320, seed=1)  # non-square: 256 high, 320 wide


@pytest.mark.reference
def test_detection_weights_do_not_load_into_a_segmentation_model(torch):
    ref = _reference(torch, "yolov8n.yaml", seed=0)
    with pytest.raises(WeightConversionError, match="detection model"):
        convert("yolov8n_seg", ref.state_dict(), source="ultralytics")

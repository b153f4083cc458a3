"""timm / torchvision EfficientNet checkpoints -> jaxvision: same logits, clear errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.registry import create_model
from jaxvision.weights import WeightConversionError, convert
from jaxvision.weights import efficientnet as convert_efficientnet
from jaxvision.weights.common import StateDictReader

pytestmark = pytest.mark.reference


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    return torch


@pytest.fixture(scope="module")
def timm():
    return pytest.importorskip("timm")


@pytest.fixture(scope="module")
def torchvision():
    return pytest.importorskip("torchvision")


def _calibrate_batch_norm(torch, model, size, seed=0):
    """Random BatchNorm affine parameters, and running statistics near the true ones.

    PyTorch initialises BatchNorm to the identity (mean 0, var 1); after a few random layers the
    activations collapse and every image gets the same logits, so a wrong mapping (padding, say)
    could hide. With the affine parameters drawn first, statistics measured on one batch keep the
    activations at unit scale and the logits depend on the image; perturbing the statistics makes
    them differ from any batch's, so eval mode is really tested. (Drawing the affine parameters
    after measuring the statistics instead makes deep variants numerically chaotic: float32 and
    float64 PyTorch then disagree by 1e-3.)
    """
    torch.manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in norms:
            bn.weight.uniform_(0.8, 1.2)
            bn.bias.normal_(0.0, 0.1)
            bn.momentum = None  # cumulative average: one batch gives exactly its statistics
            bn.reset_running_stats()
        model.train()
        model(torch.randn(4, 3, size, size))
        for bn in norms:
            bn.running_mean.add_(0.1 * bn.running_var.sqrt() * torch.randn_like(bn.running_mean))
            bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.8, 1.25))
    return model.eval()


def _assert_same_logits(torch, reference, name, source, sizes):
    variables = convert(name, reference.state_dict(), source=source)
    for size in sizes:
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            want = reference(x).numpy()
        model = create_model(name, num_classes=want.shape[-1])
        got = jax.jit(lambda v, x, m=model: m.apply(v, x, train=False))(
            variables, jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
        )
        scale = np.abs(want).max()
        # The two images get clearly different logits, so the comparison sees the input.
        assert np.abs(want[0] - want[1]).max() > 0.05 * scale
        np.testing.assert_allclose(
            np.asarray(got), want, rtol=0, atol=1e-4 * scale, err_msg=f"{name} at {size} px"
        )


# --- Equivalence ---------------------------------------------------------------------------


def test_timm_efficientnet_b0(torch, timm):
    reference = _calibrate_batch_norm(torch, timm.create_model("efficientnet_b0"), 224)
    _assert_same_logits(torch, reference, "efficientnet_b0", "timm", [224, 225])


def test_timm_tf_efficientnet_b0(torch, timm):
    """TensorFlow 'SAME' padding and eps 1e-3; 224 pads stride-2 layers asymmetrically."""
    reference = _calibrate_batch_norm(torch, timm.create_model("tf_efficientnet_b0"), 224)
    _assert_same_logits(torch, reference, "tf_efficientnet_b0", "timm", [224, 225])


def test_torchvision_efficientnet_b3(torch, torchvision):
    reference = _calibrate_batch_norm(torch, torchvision.models.efficientnet_b3(), 300)
    _assert_same_logits(torch, reference, "efficientnet_b3", "torchvision", [300, 301])


# --- Conversion details ----------------------------------------------------------------------


def test_num_classes_read_from_classifier(timm):
    state = timm.create_model("efficientnet_b0", num_classes=7).state_dict()
    variables = convert("efficientnet_b0", state, source="timm")
    assert variables["params"]["classifier"]["kernel"].shape == (1280, 7)
    dw = state["blocks.1.0.conv_dw.weight"].numpy()  # PyTorch (C, 1, k, k)
    np.testing.assert_array_equal(
        variables["params"]["stage2_block1"]["conv_dw"]["kernel"], dw.transpose(2, 3, 1, 0)
    )


@pytest.mark.parametrize("variant", ["b0", "b5"])
def test_torchvision_batch_norm_settings_follow_torchvision(torchvision, variant):
    """torchvision's B5-B7 (TensorFlow ports) use eps 1e-3; the converter tells create_model."""
    reference = getattr(torchvision.models, f"efficientnet_{variant}")()
    _, kwargs = convert_efficientnet.from_torchvision(
        f"efficientnet_{variant}", StateDictReader(reference.state_dict())
    )
    bn = reference.features[0][1]
    assert kwargs["bn_epsilon"] == bn.eps
    assert kwargs["bn_momentum"] == pytest.approx(1.0 - bn.momentum)
    assert kwargs["num_classes"] == 1000 and kwargs["padding"] == "symmetric"


# --- Bad checkpoints -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timm_b0_state(timm):
    return {k: v.numpy() for k, v in timm.create_model("efficientnet_b0").state_dict().items()}


def test_missing_key_is_named(timm_b0_state):
    state = dict(timm_b0_state)
    del state["blocks.3.1.se.conv_reduce.bias"]
    with pytest.raises(WeightConversionError, match=r"blocks\.3\.1\.se\.conv_reduce\.bias"):
        convert("efficientnet_b0", state, source="timm")


def test_unexpected_key_is_named(timm_b0_state):
    state = {**timm_b0_state, "blocks.2.0.extra.weight": np.zeros(3, np.float32)}
    with pytest.raises(WeightConversionError, match=r"blocks\.2\.0\.extra\.weight"):
        convert("efficientnet_b0", state, source="timm")


def test_misshaped_key_is_named(timm_b0_state):
    state = dict(timm_b0_state)
    state["conv_head.weight"] = np.zeros((1280, 300, 1, 1), np.float32)
    with pytest.raises(WeightConversionError, match=r"head/conv/kernel"):
        convert("efficientnet_b0", state, source="timm")


def test_wrong_variant_is_refused(timm_b0_state):
    """A B0 checkpoint has too few blocks for B1: the missing blocks are listed."""
    with pytest.raises(WeightConversionError, match=r"stage1_block2"):
        convert("efficientnet_b1", timm_b0_state, source="timm")


def test_torchvision_keys_are_not_timm_keys(torchvision):
    state = torchvision.models.efficientnet_b0().state_dict()
    with pytest.raises(WeightConversionError, match=r"conv_stem\.weight|classifier\.weight"):
        convert("efficientnet_b0", state, source="timm")

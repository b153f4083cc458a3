"""The registry and the public front door; golden parameter counts for every variant."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvision
from jaxvision import registry as _registry
from jaxvision.analysis import abstract_variables, count_params

# Parameters at each model's default number of classes (1000; 80 for detection and segmentation,
# the DFL's fixed 16-bin projection included, as ultralytics counts it), as measured with the
# reference implementations (timm 1.0.31, torchvision 0.29.1, ultralytics 8.4.190). One source:
# the packaged reference_models.json, checked against the project's shared copy below.
PACKAGED_REFERENCE = Path(jaxvision.__file__).with_name("reference_models.json")
GOLDEN_PARAMS = {
    name: entry["params"]
    for name, entry in json.loads(PACKAGED_REFERENCE.read_text()).items()
    if not name.startswith("_")
}

# OmniVec has no reference implementation to count against (jaxvision's is the first public
# one); its parts are counted by hand in tests/models/test_omnivec.py.
MODELS = [
    n
    for n in jaxvision.list_models()
    if n != "tiny_test_cnn" and jaxvision.model_info(n).family != "omnivec"
]


def test_every_registered_variant_has_a_golden_count():
    assert sorted(MODELS) == sorted(GOLDEN_PARAMS)


@pytest.mark.parametrize("name", sorted(GOLDEN_PARAMS))
def test_golden_parameter_count(name):
    info = jaxvision.model_info(name)
    variables = abstract_variables(jaxvision.create_model(name), info.resolution)
    assert count_params(variables["params"]) == GOLDEN_PARAMS[name]
    assert info.reference_params == GOLDEN_PARAMS[name]


def test_packaged_reference_figures_match_the_shared_copy():
    shared = Path(__file__).parents[2] / "shared" / "reference" / "models.json"
    if not shared.is_file():
        pytest.skip("the project's shared/ folder is not beside this checkout")
    assert json.loads(PACKAGED_REFERENCE.read_text()) == json.loads(shared.read_text())


def test_model_info_fields():
    info = jaxvision.model_info("efficientnet_b7")
    assert (info.family, info.resolution, info.top1) == ("efficientnet", 600, 84.3)
    assert info.preprocessing.interpolation in ("bicubic", "bilinear")
    assert jaxvision.model_info("yolov8x_cls").top1 == 79.0
    assert jaxvision.model_info("vit_h14").top1 == 88.55


def test_unknown_name_lists_close_matches():
    with pytest.raises(jaxvision.UnknownModelError, match="did you mean .*efficientnet_b0"):
        jaxvision.create_model("efficentnet_b0")
    with pytest.raises(jaxvision.UnknownModelError, match="unknown model 'resnet50'"):
        jaxvision.model_info("resnet50")


def test_bad_override_and_num_classes():
    with pytest.raises(TypeError, match="bad override"):
        jaxvision.create_model("vit_ti16", no_such_field=3)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        jaxvision.create_model("vit_ti16", num_classes=0)


# The classifiers' top-level variable names, recorded before the backbones became modules of
# their own (they share the classifier's scope): checkpoints and weight converters rely on them.
_EFFICIENTNET_B0_BLOCKS = [
    f"stage{stage}_block{block}"
    for stage, blocks in enumerate([1, 2, 2, 3, 3, 4, 1], start=1)
    for block in range(1, blocks + 1)
]
TOP_LEVEL = {
    "efficientnet_b0": ["stem", *_EFFICIENTNET_B0_BLOCKS, "head", "classifier"],
    "yolov8n_cls": [
        "stem",
        "stage2_down",
        "stage2_c2f",
        "stage3_down",
        "stage3_c2f",
        "stage4_down",
        "stage4_c2f",
        "stage5_down",
        "stage5_c2f",
        "head",
    ],
    "vit_ti16": [
        "patch_embed",
        "class_token",
        "pos_embed",
        *(f"encoder_block{i}" for i in range(12)),
        "encoder_norm",
        "head",
    ],
}


@pytest.mark.parametrize("name", sorted(TOP_LEVEL))
def test_classifier_top_level_names_are_unchanged(name):
    model = jaxvision.create_model(name)
    variables = abstract_variables(model, jaxvision.model_info(name).resolution)
    assert sorted(variables["params"]) == sorted(TOP_LEVEL[name])
    with_batch_norm = [k for k in TOP_LEVEL[name] if k != "classifier"]
    if "batch_stats" in variables:
        assert sorted(variables["batch_stats"]) == sorted(with_batch_norm)
    else:
        assert name == "vit_ti16"


def test_every_family_registers_its_variants_the_same_way():
    """One pattern: register_model(name, ...)(functools.partial(Classifier, **config))."""
    classifiers = {
        "efficientnet": "EfficientNet",
        "vit": "VisionTransformer",
        "yolov8": "YOLOv8Classifier",
        "omnivec": "OmniVec",
    }
    for name in [n for n in jaxvision.list_models() if n != "tiny_test_cnn"]:
        constructor = _registry._entry(name).constructor
        assert isinstance(constructor, functools.partial), name
        if jaxvision.model_info(name).task in ("detection", "segmentation"):
            assert constructor.func.__name__ == "YOLOv8Detector", name
            assert not constructor.args and "num_classes" not in constructor.keywords, name
            continue
        family = jaxvision.model_info(name).family
        assert constructor.func.__name__ == classifiers[family], name
        assert not constructor.args, name
        if family != "omnivec":  # OmniVec's variants set all five heads' class counts
            assert "num_classes" not in constructor.keywords, name


def test_list_models_by_family():
    expected = [f"yolov8{s}_{kind}" for s in "lmnsx" for kind in ("cls", "det", "seg")]
    assert jaxvision.list_models("yolov8") == sorted(expected)
    assert len(jaxvision.list_models("efficientnet")) == 16


# Every model at a tiny resolution. Compiling a gradient costs 10-60 s per model on a 2-core CPU,
# so the full forward + gradient check runs on the smallest variant of each family (the larger
# ones share every block and differ only in widths, depths and resolution);
# every variant is traced in train and eval mode with jax.eval_shape (shapes, dtypes, RNG
# streams and mutable collections all exercised, no compile).
# tf_efficientnet_b0 has efficientnet_b0's blocks with another padding; its padding is pinned by
# the timm equivalence test at even and odd sizes.
GRADIENT_CHECKED = ["efficientnet_b0", "vit_ti16", "yolov8n_cls"]


def _tiny_size(name):
    return 28 if name == "vit_h14" else 32  # a multiple of the patch size (14 for ViT-H/14)


def _tiny_model(name, **extra):
    info = jaxvision.model_info(name)
    overrides = {"image_size": _tiny_size(name)} if info.family == "vit" else {}
    if name in ("vit_l16", "vit_h14"):
        overrides["scan_blocks"] = True
    return jaxvision.create_model(name, num_classes=7, **overrides, **extra)


def _rngs():
    return {"dropout": jax.random.key(2), "drop_path": jax.random.key(3)}


@pytest.mark.parametrize("name", sorted(GOLDEN_PARAMS))
def test_every_variant_traces_in_train_and_eval_mode(name):
    model, size = _tiny_model(name), _tiny_size(name)
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    variables = jax.eval_shape(
        lambda x: model.init({"params": jax.random.key(1)}, x, train=False), x
    )
    rest = [k for k in variables if k != "params"]
    out = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, mutable=rest or False, rngs=_rngs()),
        variables,
        x,
    )
    outputs = out[0] if rest else out
    evaluated = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    if isinstance(outputs, dict):  # detection: per-anchor outputs, 16 + 4 + 1 anchors at 32 px
        for o in (outputs, evaluated):
            assert o["scores"].shape == (2, 21, 7) and o["distances"].shape == (2, 21, 4)
            assert all(v.dtype == jnp.float32 for v in o.values())
        return
    assert outputs.shape == (2, 7) and outputs.dtype == jnp.float32
    assert evaluated.shape == (2, 7)


@pytest.mark.parametrize("name", GRADIENT_CHECKED)
def test_forward_and_gradient_at_tiny_resolution(name):
    model = _tiny_model(name)
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    variables = jax.jit(lambda k: model.init({"params": k}, x[:1], train=False))(jax.random.key(1))
    params, rest = variables["params"], {k: v for k, v in variables.items() if k != "params"}

    # Gradients in inference mode, where no block is dropped at random: every parameter must
    # take part in the output.
    def loss(p):
        logits = model.apply({"params": p, **rest}, x, train=False)
        return jnp.mean(jax.nn.log_softmax(logits)[:, 0]), logits

    grads, logits = jax.jit(jax.grad(loss, has_aux=True))(params)
    assert logits.shape == (2, 7) and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))
    flat = jax.tree_util.tree_leaves_with_path(grads)
    zero = [jax.tree_util.keystr(p) for p, g in flat if not np.any(np.asarray(g))]
    assert not zero, f"parameters with no gradient: {zero[:10]}"
    # Training mode: finite, and BatchNorm statistics (where present) are updated.
    out = jax.jit(
        lambda v: model.apply(v, x, train=True, mutable=list(rest) or False, rngs=_rngs())
    )(variables)
    train_logits, updates = out if rest else (out, {})
    assert bool(jnp.all(jnp.isfinite(train_logits)))
    if rest:
        changed = jax.tree.map(
            lambda a, b: not np.array_equal(a, b), rest["batch_stats"], updates["batch_stats"]
        )
        assert all(jax.tree.leaves(changed))


@pytest.mark.parametrize(
    "shape, dtype, message",
    [
        ((2, 3, 32, 32), jnp.float32, "looks like NCHW"),
        ((2, 32, 32, 1), jnp.float32, "grayscale"),
        ((32, 32, 3), jnp.float32, "rank 3"),
        ((2, 32, 32, 3), jnp.uint8, "floating-point"),
    ],
)
@pytest.mark.parametrize("name", ["efficientnet_b0", "vit_ti16", "yolov8n_cls"])
def test_wrongly_shaped_input_is_named(name, shape, dtype, message):
    overrides = {"image_size": 32} if name.startswith("vit") else {}
    model = jaxvision.create_model(name, num_classes=3, **overrides)
    x = jax.ShapeDtypeStruct(shape, dtype)
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(lambda x: model.init({"params": jax.random.key(0)}, x, train=False), x)

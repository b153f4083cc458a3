"""Regression guard for XLA:CPU's slow paths: which convolutions and dots of each family's train
step run on Eigen instead of YNNPACK / oneDNN (read from the optimized HLO, no timing).

``ALLOWED`` records, per family, every Eigen convolution and dot of the train step as it compiles
today, grouped by the reason it is there (each group's reason is also checked as a predicate on
its entries). A change that sends new work to Eigen fails the test, naming the operation and
the layer; when an entry disappears (a fix moved it to YNNPACK), the test fails too and asks for
the list to shrink, so it stays exact. ``jaxvision bench MODEL --mode train --compile-only
--no-torch --list-fallbacks`` prints the same table for any model.

The steps are those ``jaxvision bench --mode train`` measures (the library's ``train_step`` for
the model's task, SGD momentum, batch 8 at 224 px), compiled from abstract shapes and never run:
the compile costs the same at any size, and smaller images change XLA's choices (a 3x3 kernel on
a 2x2 map is rewritten), so the lists describe the benchmarked configuration. EfficientNet-B0 is
built at half depth (10 blocks instead of 16: every stage, stride and block kind is still there)
and ViT-Ti/16 with 2 of its 12 identical blocks, to halve their compiles.
"""

# ruff: noqa: E501  (the allow-list holds HLO signatures, one per line)

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import jaxlib
import pytest

from jaxvision import bench, tasks, xla_ops

RECORDED_WITH = "0.10.2"  # jaxlib: another version makes other choices; re-record the lists
IMAGE_SIZE, BATCH = 224, 8
FAMILIES = {
    "efficientnet_b0": {"depth": 0.5},
    "vit_ti16": {"num_layers": 2},
    "yolov8n_cls": {},
}

pytestmark = [
    pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's library choices"),
    pytest.mark.skipif(
        "--xla_cpu" in os.environ.get("XLA_FLAGS", ""),
        reason="XLA_FLAGS change XLA:CPU's library choices; the lists are for the defaults",
    ),
]


def _out_channels(signature: str) -> int:
    return int(re.search(r"-> f32\[[\d,]*?(\d+)\]", signature).group(1))


@dataclass(frozen=True)
class Cause:
    """Why an operation is on Eigen, and a test that an entry really is of that kind."""

    why: str
    applies: Callable[[str], bool]


WEIGHT_GRADIENT = Cause(
    "Weight gradient of a Dense layer or 1x1 convolution (einsum): a dot whose left operand "
    "contracts on its leading axis (batch x pixels), which YNNPACK does not take. oneDNN does "
    "(--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=dot).",
    lambda s: s.startswith("dot ") and "lhs_contracting_dims={0}" in s and "batch_dims" not in s,
)
ATTENTION_GRADIENT = Cause(
    "Attention backward, dK = dS^T Q and dV = P^T dO: a batched dot whose left operand contracts "
    "on its query axis, not its last, which YNNPACK does not take.",
    lambda s: s.startswith("dot ") and "lhs_batch_dims={0,1} lhs_contracting_dims={2}" in s,
)
LHS_DILATED = Cause(
    "Input gradient of a stride-2 convolution: JAX's transpose rule makes an lhs-dilated "
    "convolution (lhs_dilate=2x2), which YNNPACK rejects; Eigen runs it with 3/4 of its "
    "multiplies against the inserted zeros. A phase-split custom VJP would keep it off Eigen.",
    lambda s: s.startswith("convolution ") and "lhs_dilate=2x2" in s,
)
FEW_CHANNELS = Cause(
    "Convolution with at most 16 output channels, which XLA leaves to Eigen on purpose: "
    "YOLOv8n's 3->16 stem and its 16-channel first C2f (forward, input gradient, and the "
    "kernel gradients, whose 'output channels' are the layer's 16 filters).",
    lambda s: s.startswith("convolution ") and _out_channels(s) <= 16,
)

# family -> cause -> [(count, "kind signature")], as xla_ops.LibraryCall prints them.
# fmt: off
ALLOWED: dict[str, dict[Cause, list[tuple[int, str]]]] = {
    "efficientnet_b0": {
        # 1x1 expand / project convolutions, the squeeze-excite 1x1s, the head and classifier.
        WEIGHT_GRADIENT: [
            (1, "dot f32[100352,16] x f32[96,100352] -> f32[16,96] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[100352,32] x f32[16,100352] -> f32[32,16] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (2, "dot f32[1568,112] x f32[672,1568] -> f32[112,672] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[1568,240] x f32[80,1568] -> f32[240,80] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[1568,480] x f32[112,1568] -> f32[480,112] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[1568,480] x f32[80,1568] -> f32[480,80] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[1568,672] x f32[112,1568] -> f32[672,112] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (2, "dot f32[1568,80] x f32[480,1568] -> f32[80,480] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[25088,24] x f32[144,25088] -> f32[24,144] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[25088,96] x f32[24,25088] -> f32[96,24] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[392,1152] x f32[192,392] -> f32[1152,192] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[392,1152] x f32[320,392] -> f32[1152,320] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (2, "dot f32[392,192] x f32[1152,392] -> f32[192,1152] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[392,320] x f32[1280,392] -> f32[320,1280] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[392,672] x f32[192,392] -> f32[672,192] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[6272,144] x f32[40,6272] -> f32[144,40] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[6272,40] x f32[240,6272] -> f32[40,240] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[8,10] x f32[240,8] -> f32[10,240] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (2, "dot f32[8,1152] x f32[48,8] -> f32[1152,48] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[8,1280] x f32[8,1000] -> f32[1280,1000] lhs_contracting_dims={0} rhs_contracting_dims={0}"),
            (1, "dot f32[8,144] x f32[6,8] -> f32[144,6] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (2, "dot f32[8,20] x f32[480,8] -> f32[20,480] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[8,240] x f32[10,8] -> f32[240,10] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (2, "dot f32[8,28] x f32[672,8] -> f32[28,672] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[8,32] x f32[8,8] -> f32[32,8] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (2, "dot f32[8,480] x f32[20,8] -> f32[480,20] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (2, "dot f32[8,48] x f32[1152,8] -> f32[48,1152] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[8,4] x f32[96,8] -> f32[4,96] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (2, "dot f32[8,672] x f32[28,8] -> f32[672,28] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[8,6] x f32[144,8] -> f32[6,144] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[8,8] x f32[32,8] -> f32[8,32] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[8,96] x f32[4,8] -> f32[96,4] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
        ],
        # (The depthwise kernel gradient is k*k shifted reductions, no convolution or dot.)
    },
    "vit_ti16": {
        # Patch embedding, qkv, attention output, MLP fc1 / fc2 (per block), head.
        WEIGHT_GRADIENT: [
            (1, "dot f32[1568,768] x f32[192,1568] -> f32[768,192] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (2, "dot f32[1576,192] x f32[192,1576] -> f32[192,192] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (2, "dot f32[1576,192] x f32[576,1576] -> f32[192,576] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (2, "dot f32[1576,192] x f32[768,1576] -> f32[192,768] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (2, "dot f32[1576,768] x f32[192,1576] -> f32[768,192] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[8,192] x f32[8,1000] -> f32[192,1000] lhs_contracting_dims={0} rhs_contracting_dims={0}"),
        ],
        # Two per block: dK (from bkqd,bkmd->bkqm) and dV (from bkqm,bkmd->bkqd).
        ATTENTION_GRADIENT: [
            (4, "dot f32[8,3,197,197] x f32[8,3,197,64] -> f32[8,3,197,64] lhs_batch_dims={0,1} lhs_contracting_dims={2} rhs_batch_dims={0,1} rhs_contracting_dims={2}"),
        ],
    },
    "yolov8n_cls": {
        # stage2_down .. stage5_down (the stem's input gradient is not needed).
        LHS_DILATED: [
            (1, "convolution f32[8,56,56,32] x f32[3,3,32,16] -> f32[8,112,112,16] window={size=3x3 pad=1_2x1_2 lhs_dilate=2x2} dim_labels=b01f_01io->b01f"),
            (1, "convolution f32[8,28,28,64] x f32[3,3,64,32] -> f32[8,56,56,32] window={size=3x3 pad=1_2x1_2 lhs_dilate=2x2} dim_labels=b01f_01io->b01f"),
            (1, "convolution f32[8,14,14,128] x f32[3,3,128,64] -> f32[8,28,28,64] window={size=3x3 pad=1_2x1_2 lhs_dilate=2x2} dim_labels=b01f_01io->b01f"),
            (1, "convolution f32[8,7,7,256] x f32[3,3,256,128] -> f32[8,14,14,128] window={size=3x3 pad=1_2x1_2 lhs_dilate=2x2} dim_labels=b01f_01io->b01f"),
        ],
        FEW_CHANNELS: [
            # Stem forward (3 -> 16, stride 2) and its kernel gradient (rhs-dilated by the stride).
            (1, "convolution f32[8,224,224,3] x f32[3,3,3,16] -> f32[8,112,112,16] window={size=3x3 stride=2x2 pad=1_1x1_1} dim_labels=b01f_01io->b01f"),
            (1, "convolution f32[3,224,224,8] x f32[112,112,8,16] -> f32[3,3,3,16] window={size=112x112 pad=1_0x1_0 rhs_dilate=2x2} dim_labels=b01f_01io->b01f"),
            # stage2_c2f bottleneck conv1 / conv2 (16 -> 16): forward and input gradient ...
            (4, "convolution f32[8,56,56,16] x f32[3,3,16,16] -> f32[8,56,56,16] window={size=3x3 pad=1_1x1_1} dim_labels=b01f_01io->b01f"),
            # ... and their kernel gradients.
            (2, "convolution f32[16,56,56,8] x f32[56,56,8,16] -> f32[16,3,3,16] window={size=56x56 pad=1_1x1_1} dim_labels=b01f_01io->b01f"),
        ],
        # C2f split / merge 1x1 convolutions, the head's 1x1 convolution, the classifier.
        WEIGHT_GRADIENT: [
            (1, "dot f32[1568,128] x f32[128,1568] -> f32[128,128] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[1568,256] x f32[128,1568] -> f32[256,128] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[25088,32] x f32[32,25088] -> f32[32,32] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[25088,48] x f32[32,25088] -> f32[48,32] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[392,256] x f32[1280,392] -> f32[256,1280] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[392,256] x f32[256,392] -> f32[256,256] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[392,384] x f32[256,392] -> f32[384,256] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[6272,128] x f32[64,6272] -> f32[128,64] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[6272,64] x f32[64,6272] -> f32[64,64] lhs_contracting_dims={0} rhs_contracting_dims={1}"),
            (1, "dot f32[8,1280] x f32[8,1000] -> f32[1280,1000] lhs_contracting_dims={0} rhs_contracting_dims={0}"),
        ],
    },
}
# fmt: on
CAUSES = (WEIGHT_GRADIENT, ATTENTION_GRADIENT, LHS_DILATED, FEW_CHANNELS)


def _key(call: xla_ops.LibraryCall) -> str:
    return f"{call.kind} {call.signature}"


def _train_step_calls(name: str) -> list[xla_ops.LibraryCall]:
    model, size, _ = bench.build_model(name, IMAGE_SIZE, "float32", FAMILIES[name])
    task = tasks.for_model(name, image_size=size, num_classes=model.num_classes)
    return xla_ops.library_calls(bench.JaxStep(model, task, "train", BATCH).compiled)


@pytest.mark.skipif(
    jaxlib.__version__ != RECORDED_WITH,
    reason=f"the lists were recorded with jaxlib {RECORDED_WITH}; re-record them for this one",
)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_no_new_eigen_fallbacks_in_the_train_step(family, monkeypatch):
    from jaxvision.layers import conv

    monkeypatch.delenv(conv.STRIDED_GRAD_ENV, raising=False)  # the library's defaults
    calls = _train_step_calls(family)
    assert sum(c.library == xla_ops.YNNPACK for c in calls) > 0  # the reading of the HLO works
    found = Counter(_key(c) for c in xla_ops.fallbacks(calls))
    layers = defaultdict(set)
    for c in xla_ops.fallbacks(calls):
        layers[_key(c)].add(c.op_name)
    allowed = Counter()
    for entries in ALLOWED[family].values():
        for count, key in entries:
            allowed[key] += count

    new = found - allowed
    gone = allowed - found
    report = []
    if new:
        report.append(
            f"New Eigen fallbacks in the {family} train step (work that left YNNPACK/oneDNN): "
            "fix the layer, or add them to ALLOWED with the reason"
        )
        for key, n in sorted(new.items()):
            causes = [c.why.split(":")[0] for c in CAUSES if c.applies(key)] or ["unknown cause"]
            report.append(f"  +{n} {key}\n      looks like: {'; '.join(causes)}")
            report += [f"      in {name}" for name in sorted(layers[key])[:4]]
    if gone:
        report.append(
            f"Allowed fallbacks that no longer occur in {family} (good news): remove them from "
            "ALLOWED so the list stays exact"
        )
        report += [f"  -{n} {key}" for key, n in sorted(gone.items())]
    assert not report, "\n".join(report)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_allowed_entry_is_of_the_kind_its_reason_says(family):
    for cause, entries in ALLOWED[family].items():
        for _, key in entries:
            assert cause.applies(key), (family, cause.why[:40], key)


def test_the_lister_tells_ynnpack_from_eigen():
    """A Dense layer's gradient: forward and input-gradient dots on YNNPACK, the weight gradient
    (left operand contracting on its leading axis) on Eigen; an lhs-dilated convolution (the
    input gradient of a stride-2 one) on Eigen, a 32-channel 3x3 convolution on YNNPACK."""

    def dense(x, w):
        return jnp.tanh(x @ w).sum()

    x, w = jnp.ones((64, 128)), jnp.ones((128, 256))
    calls = xla_ops.library_calls(jax.jit(jax.grad(dense, argnums=(0, 1))).lower(x, w).compile())
    by_library = {(c.library, c.signature.split(" -> ")[1].split()[0]) for c in calls}
    assert by_library == {
        (xla_ops.YNNPACK, "f32[64,256]"),  # forward
        (xla_ops.YNNPACK, "f32[64,128]"),  # input gradient
        (xla_ops.EIGEN, "f32[128,256]"),  # weight gradient
    }
    (weight_gradient,) = xla_ops.fallbacks(calls)
    assert "lhs_contracting_dims={0}" in weight_gradient.signature
    assert "transpose(jvp(" in weight_gradient.op_name

    def conv(x, k, lhs_dilation):
        dims = ("NHWC", "HWIO", "NHWC")
        return jax.lax.conv_general_dilated(
            x, k, (1, 1), [(1, 1), (1, 1)], lhs_dilation=lhs_dilation, dimension_numbers=dims
        )

    x, k = jnp.ones((2, 16, 16, 32)), jnp.ones((3, 3, 32, 32))
    for dilation, library in (((1, 1), xla_ops.YNNPACK), ((2, 2), xla_ops.EIGEN)):
        compiled = jax.jit(conv, static_argnums=2).lower(x, k, dilation).compile()
        (call,) = xla_ops.library_calls(compiled)
        assert (call.kind, call.library) == ("convolution", library), call
    table = xla_ops.format_calls(calls)
    assert table.splitlines()[1].startswith("eigen") and table.count("ynnpack") == 2


ONEDNN_CHILD = r"""
import json
import jax, jax.numpy as jnp
from jaxvision import xla_ops
f = jax.grad(lambda x, w: jnp.tanh(x @ w).sum(), argnums=(0, 1))
calls = xla_ops.library_calls(jax.jit(f).lower(jnp.ones((64, 128)), jnp.ones((128, 256))).compile())
print(json.dumps(xla_ops.summary(calls)))
"""


def test_the_lister_sees_onednn_fusions():
    """With XLA's (experimental) oneDNN dot fusion on, all three dots of a Dense layer's gradient
    are ``"__onednn_fusion"`` fusions, the weight gradient included."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=dot"
    proc = subprocess.run([sys.executable, "-c", ONEDNN_CHILD], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts[xla_ops.ONEDNN]["dot"] == 3 and counts[xla_ops.EIGEN]["dot"] == 0, counts


def test_bench_lists_the_fallbacks(tmp_path, capsys):
    from jaxvision.cli import main

    out = tmp_path / "r.jsonl"
    argv = ["bench", "vit_ti16", "--image-size", "32", "--model-arg", "num_layers=1", "--mode",
            "train", "--train-batch-size", "2", "--compile-only", "--no-torch", "--list-fallbacks",
            "--output", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    rec = json.loads(out.read_text().splitlines()[-1])
    assert rec["eigen_dots"] == printed.count("\neigen    dot") > 0
    assert rec["eigen_convolutions"] == 0 and "ynnpack  dot" in printed
    assert json.loads(rec["library_calls"])["ynnpack"]["dot"] == printed.count("\nynnpack  dot")

"""Where the time goes: the building blocks of the target models, jaxvision vs PyTorch.

Times, forward and forward + backward, the operations that dominate EfficientNet-B0, ViT-S/16 and
YOLOv8n-cls at 224 px, each in the formulations jaxvision can choose between, beside the PyTorch
operation the reference model runs (same shapes, NHWC / channels_last for convolutions, same
threads), with the harness's interleaved median timing. Run on an idle machine::

    python benchmarks/profile_layers.py [--only depthwise,attention,...] [--iters 10]

Prints one line per case: milliseconds per call and the ratio PyTorch / JAX (above 1: JAX faster).
"""

from __future__ import annotations

import argparse
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from jaxvision.bench import limit_threads, time_interleaved
from jaxvision.layers.depthwise import depthwise_conv


def _jax_case(fn, *args, grad: bool):
    """A zero-argument step: fn(*args) (or the gradient of its sum w.r.t. every argument)."""
    if grad:
        g = jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a)), argnums=tuple(range(len(args)))))
        return lambda: jax.block_until_ready(g(*args))
    f = jax.jit(fn)
    return lambda: f(*args).block_until_ready()


def _torch_case(fn, *tensors, grad: bool):
    if grad:
        leaves = [t.detach().requires_grad_(True) for t in tensors]

        def step():
            for t in leaves:
                t.grad = None
            fn(*leaves).sum().backward()

        return step

    def infer():
        with torch.inference_mode():
            fn(*tensors)

    return infer


def _report(label: str, jax_step, torch_step, warmup: int, iters: int) -> None:
    jt, tt = time_interleaved([jax_step, torch_step], warmup, iters)
    j, t = statistics.median(jt) * 1e3, statistics.median(tt) * 1e3
    print(f"{label:<58} jax {j:8.2f} ms   torch {t:8.2f} ms   torch/jax {t / j:5.2f}", flush=True)


def _nhwc(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def depthwise_cases(warmup: int, iters: int) -> None:
    # EfficientNet-B0's largest depthwise convolutions at batch 8 (train) and 16 (inference).
    for batch, hw, c, k, s in (
        (16, 112, 32, 3, 1),
        (16, 112, 96, 3, 2),
        (8, 56, 144, 3, 1),
        (8, 28, 240, 5, 1),
        (8, 14, 480, 3, 1),
    ):
        x = _nhwc((batch, hw, hw, c))
        w = _nhwc((k, k, 1, c), 1) * 0.1
        tx = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        tw = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous()  # (C, 1, k, k)
        for grad in (False, True):
            torch_step = _torch_case(
                lambda a, b, s=s, k=k, c=c: F.conv2d(a, b, stride=s, padding=k // 2, groups=c),
                tx,
                tw,
                grad=grad,
            )
            for impl in ("shifted", "xla"):
                fn = lambda a, b, s=s, impl=impl: depthwise_conv(
                    a, b, stride=s, implementation=impl
                )
                label = (
                    f"depthwise {k}x{k}/s{s} {batch}x{hw}x{hw}x{c} {impl}{' grad' if grad else ''}"
                )
                _report(
                    label,
                    _jax_case(fn, jnp.asarray(x), jnp.asarray(w), grad=grad),
                    torch_step,
                    warmup,
                    iters,
                )


def pointwise_cases(warmup: int, iters: int) -> None:
    # 1x1 convolutions: EfficientNet expansion/projection, YOLOv8 C2f splits.
    for batch, hw, cin, cout in (
        (16, 112, 32, 16),
        (16, 56, 24, 144),
        (8, 28, 240, 40),
        (8, 7, 320, 1280),
    ):
        x = _nhwc((batch, hw, hw, cin))
        w = _nhwc((cin, cout), 1) * 0.1
        tx = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        tw = torch.from_numpy(w).T.contiguous()[:, :, None, None]
        for grad in (False, True):
            torch_step = _torch_case(F.conv2d, tx, tw, grad=grad)
            fn = lambda a, b: jnp.einsum("bhwc,cd->bhwd", a, b)
            label = f"pointwise 1x1 {batch}x{hw}x{hw} {cin}->{cout} einsum{' grad' if grad else ''}"
            _report(
                label,
                _jax_case(fn, jnp.asarray(x), jnp.asarray(w), grad=grad),
                torch_step,
                warmup,
                iters,
            )


def conv3x3_cases(warmup: int, iters: int) -> None:
    # Dense 3x3 convolutions (YOLOv8n-cls stem, downsampling and bottlenecks).
    for batch, hw, cin, cout, s in (
        (16, 224, 3, 16, 2),
        (16, 56, 16, 16, 1),
        (8, 28, 32, 32, 1),
        (8, 28, 64, 128, 2),
    ):
        x = _nhwc((batch, hw, hw, cin))
        w = _nhwc((3, 3, cin, cout), 1) * 0.1
        tx = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        tw = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous()
        for grad in (False, True):
            torch_step = _torch_case(
                lambda a, b, s=s: F.conv2d(a, b, stride=s, padding=1), tx, tw, grad=grad
            )
            fn = lambda a, b, s=s: jax.lax.conv_general_dilated(
                a, b, (s, s), [(1, 1), (1, 1)], dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            label = f"conv 3x3/s{s} {batch}x{hw}x{hw} {cin}->{cout}{' grad' if grad else ''}"
            _report(
                label,
                _jax_case(fn, jnp.asarray(x), jnp.asarray(w), grad=grad),
                torch_step,
                warmup,
                iters,
            )


def _attention_core(q, k, v):
    """softmax(q k^T / sqrt(d)) v over (B, K, N, d), written out as the "explicit" layer does."""
    scores = jnp.einsum("bkqd,bkmd->bkqm", q * q.shape[-1] ** -0.5, k)
    return jnp.einsum("bkqm,bkmd->bkqd", jax.nn.softmax(scores, axis=-1), v)


def attention_cases(warmup: int, iters: int) -> None:
    import timm.layers

    from jaxvision.layers.attention import MultiHeadSelfAttention

    for batch, tokens, width, heads in ((8, 197, 384, 6), (16, 197, 768, 12)):
        shape = f"{batch}x{tokens}x{width}/{heads}"
        x = _nhwc((batch, tokens, width))
        qkv = [_nhwc((batch, heads, tokens, width // heads), i) for i in range(3)]
        fused = lambda q, k, v: jax.nn.dot_product_attention(
            *(jnp.swapaxes(t, 1, 2) for t in (q, k, v))
        )  # (B, N, K, d) layout
        timm_attention = timm.layers.Attention(width, heads, qkv_bias=True)
        for grad in (False, True):
            suffix = " grad" if grad else ""
            sdpa = _torch_case(
                F.scaled_dot_product_attention, *map(torch.from_numpy, qkv), grad=grad
            )
            for impl, fn in (("explicit", _attention_core), ("fused", fused)):
                jax_step = _jax_case(fn, *map(jnp.asarray, qkv), grad=grad)
                _report(
                    f"attention core {shape} {impl} vs SDPA{suffix}", jax_step, sdpa, warmup, iters
                )
            torch_layer = _torch_case(timm_attention, torch.from_numpy(x), grad=grad)
            for impl in ("explicit", "fused"):
                layer = MultiHeadSelfAttention(heads, implementation=impl)
                params = layer.init(jax.random.key(0), x[:1], train=False)
                fn = lambda p, a, layer=layer: layer.apply(p, a, train=False)
                jax_step = _jax_case(fn, params, jnp.asarray(x), grad=grad)
                label = f"attention layer {shape} {impl} vs timm Attention{suffix}"
                _report(label, jax_step, torch_layer, warmup, iters)


def mlp_cases(warmup: int, iters: int) -> None:
    for batch, tokens, width, hidden in ((8, 197, 384, 1536), (16, 197, 768, 3072)):
        x = _nhwc((batch * tokens, width))
        w1 = _nhwc((width, hidden), 1) * 0.05
        w2 = _nhwc((hidden, width), 2) * 0.05
        tx, tw1, tw2 = map(torch.from_numpy, (x, w1.T.copy(), w2.T.copy()))
        for grad in (False, True):
            torch_step = _torch_case(
                lambda a, b, c: F.linear(F.gelu(F.linear(a, b)), c), tx, tw1, tw2, grad=grad
            )
            for approximate in (False, True):
                fn = lambda a, b, c, ap=approximate: jax.nn.gelu(a @ b, approximate=ap) @ c
                gelu = "tanh" if approximate else "erf"
                label = f"MLP {batch * tokens}x{width}->{hidden} gelu {gelu}"
                _report(
                    label + (" grad" if grad else ""),
                    _jax_case(fn, *map(jnp.asarray, (x, w1, w2)), grad=grad),
                    torch_step,
                    warmup,
                    iters,
                )
            fn = lambda a, b, c: (a @ b) @ c
            label = f"MLP {batch * tokens}x{width}->{hidden} no activation"
            _report(
                label + (" grad" if grad else ""),
                _jax_case(fn, *map(jnp.asarray, (x, w1, w2)), grad=grad),
                _torch_case(lambda a, b, c: a @ b.T @ c.T, tx, tw1, tw2, grad=grad),
                warmup,
                iters,
            )


def batchnorm_cases(warmup: int, iters: int) -> None:
    import flax.linen as nn

    for batch, hw, c in ((8, 112, 96), (8, 56, 144)):
        x = _nhwc((batch, hw, hw, c))
        tx = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
        variables = bn.init(jax.random.key(0), x[:1])

        def fn(p, a, bn=bn, stats=variables["batch_stats"]):
            y, _ = bn.apply({"params": p, "batch_stats": stats}, a, mutable=["batch_stats"])
            return jax.nn.silu(y)

        tbn = torch.nn.BatchNorm2d(c).train()
        label = f"BatchNorm(train)+SiLU {batch}x{hw}x{hw}x{c} grad"
        _report(
            label,
            _jax_case(fn, variables["params"], jnp.asarray(x), grad=True),
            _torch_case(lambda a, m=tbn: F.silu(m(a)), tx, grad=True),
            warmup,
            iters,
        )


CASES = {
    "depthwise": depthwise_cases,
    "pointwise": pointwise_cases,
    "conv3x3": conv3x3_cases,
    "attention": attention_cases,
    "mlp": mlp_cases,
    "batchnorm": batchnorm_cases,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(CASES)}")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    threads = limit_threads(args.threads)
    torch.set_num_threads(threads)
    print(f"{threads} threads, jax {jax.__version__}, torch {torch.__version__}")
    for name in args.only.split(",") if args.only else CASES:
        CASES[name](args.warmup, args.iters)


if __name__ == "__main__":
    main()

"""Benchmarks: compile time, throughput, memory, FLOPs and utilisation, side by side with PyTorch.

``jaxvision bench vit_s16 --mode both`` measures, for every (model, mode) asked for:

* compile time of the jitted function, split into trace (Python + Flax -> jaxpr), lower
  (jaxpr -> StableHLO) and compile (XLA), via ``jax.jit(f).trace(...).lower().compile()`` on
  abstract inputs, so compiling costs no parameter memory;
* steady-state throughput: ``--warmup`` untimed calls, then ``--iters`` calls each timed on its own
  with ``block_until_ready``; images/s = batch / median step time;
* memory: the process's resident-set high-water mark (Linux ``VmHWM``, reset before each phase
  through ``/proc/self/clear_refs``; ``resource.getrusage`` where that is unavailable), the bytes
  XLA's buffer assignment reserves for the compiled step, and ``memory_stats()`` on accelerators;
* FLOPs per image, counted two ways: analytically from the model's jaxpr
  (:func:`jaxvision.analysis.model_flops`: convolutions and matrix products, multiply-add = 2) and
  by XLA's ``compiled.cost_analysis()``. A train step is counted as 3x the forward pass (forward,
  input gradient, weight gradient);
* utilisation: achieved FLOP/s divided by the FLOP/s of a large jitted matrix product measured on
  the same device in the same run.

The inputs are the model's task's example batch (:meth:`jaxvision.tasks.Task.example_batch`) with
random values; the inference step is ``model.apply(variables, *inputs, train=False)``; the train
step is the library's own :func:`jaxvision.train.steps.train_step` for that task with SGD
momentum, jitted with ``donate_argnums=0`` exactly as :func:`jaxvision.train.loop.fit` runs it.

When PyTorch and the reference package of the family (timm, torchvision, ultralytics) are
installed, the reference model is timed too, in its best CPU configuration: ``channels_last`` for
convolutional networks, ``torch.inference_mode`` and ``eval()`` for inference, ``train()`` and a
full ``zero_grad / forward / cross-entropy / backward / SGD step`` for training, as many threads as
JAX uses, same batch and resolution. It runs in a process of its own (:func:`run_torch_worker`:
``python -m jaxvision.bench --torch-worker SPEC`` prints one JSON line), started after JAX's steps
are timed, with this process's cores. In the same process as JAX, PyTorch's convolutional
networks ran 25-40% slower than alone (EfficientNet-B0 train step 7.5 vs 12.5 img/s, inference
30.7 vs 40 img/s, idle machine), which flattered the ratio; this process never imports torch. The
two frameworks therefore run one after the other, not in alternating blocks, and each record
notes the load just before each (``load_before`` / ``torch_load_before``: the 1-minute load
average; ``busy_cores_before`` / ``torch_busy_cores_before``: the cores other processes kept busy
over the half second before the timed steps, which, unlike the load average, does not remember the
previous measurement). The ratio reported is jaxvision / PyTorch (higher is better for jaxvision).

Memory allocator: run as a program (``jaxvision bench``, ``python -m jaxvision.bench``), this
process restarts itself under tcmalloc where the system has it, as every ``jaxvision`` command does
(:mod:`jaxvision.allocator`); the PyTorch worker is started without it, under the allocator PyTorch
users get by default. ``allocator`` and ``torch_allocator`` in each record say which ran. To give
both the same allocator, set ``LD_PRELOAD`` yourself (it reaches both); to run JAX on glibc's
malloc, ``JAXVISION_ALLOCATOR=system``. Called as a function (``benchmark``), nothing restarts.

``--list-fallbacks`` prints which library runs every convolution and dot of the compiled step
(:mod:`jaxvision.xla_ops`: YNNPACK, oneDNN, or Eigen, XLA:CPU's slow fallback) and counts the
Eigen ones in the record.

Every (model, mode) appends one JSON object (or CSV row) to ``--output`` with the device, the
library versions and the command line. See benchmarks/README.md for the method and the results.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import datetime
import functools
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jaxvision.errors import ConfigError
from jaxvision.registry import parse_model_args

DEFAULT_OUTPUT = "benchmarks/results/results.jsonl"
MODES = ("inference", "train")
# A train step costs about three forward passes: the forward pass, the gradient with respect to
# the activations and the gradient with respect to the weights (each as many multiply-adds).
TRAIN_FLOPS_FACTOR = 3
SGD_LEARNING_RATE = 0.01  # any small rate: the step's cost does not depend on it
SGD_MOMENTUM = 0.9
MIB = 2**20
# Square matrix products that reach the device's peak: 2048^3 saturates a few CPU cores, a GPU
# needs far more work per call to hide its launch overhead.
CPU_MATMUL_SIZE = 2048
ACCELERATOR_MATMUL_SIZE = 8192

# jaxvision name -> (package, constructor name) of the reference PyTorch model. The reference
# figures in jaxvision/reference_models.json were counted from the same constructors.
TORCH_REFERENCES: dict[str, tuple[str, str]] = {
    **{f"efficientnet_b{i}": ("timm", f"efficientnet_b{i}") for i in range(8)},
    **{f"tf_efficientnet_b{i}": ("timm", f"tf_efficientnet_b{i}") for i in range(8)},
    "vit_ti16": ("timm", "vit_tiny_patch16_224"),
    "vit_s16": ("timm", "vit_small_patch16_224"),
    "vit_b16": ("timm", "vit_base_patch16_224"),
    "vit_b32": ("timm", "vit_base_patch32_224"),
    "vit_l16": ("timm", "vit_large_patch16_224"),
    "vit_h14": ("torchvision", "vit_h_14"),
    **{f"yolov8{s}_cls": ("ultralytics", f"yolov8{s}-cls.yaml") for s in "nsmlx"},
    **{f"yolov8{s}_det": ("ultralytics", f"yolov8{s}.yaml") for s in "nsmlx"},
    **{f"yolov8{s}_seg": ("ultralytics", f"yolov8{s}-seg.yaml") for s in "nsmlx"},
}
CONVNET_FAMILIES = frozenset({"efficientnet", "yolov8"})  # run channels_last in PyTorch

# Column order of CSV output (JSON lines carry the same keys).
# fmt: off
FIELDS = (
    "timestamp", "model", "family", "mode", "batch_size", "image_size", "dtype", "model_args",
    "params", "flops_per_image", "step_flops_per_image", "xla_flops_per_image",
    "trace_s", "lower_s", "compile_s", "compile_total_s",
    "step_ms", "step_ms_min", "images_per_s", "timed_steps", "warmup_steps",
    "peak_rss_mb", "peak_rss_delta_mb", "compile_peak_rss_mb", "xla_memory_mb", "device_peak_mb",
    "matmul_peak_gflops", "achieved_gflops", "utilisation",
    "torch_reference", "torch_step_ms", "torch_images_per_s", "torch_peak_rss_delta_mb",
    "torch_threads", "ratio_vs_torch", "torch_compiled_reference", "torch_compiled_step_ms",
    "torch_compiled_images_per_s", "ratio_vs_torch_compiled", "torch_compiled_warmup_s",
    "error", "load_before", "load_after", "busy_cores_before",
    "torch_load_before", "torch_busy_cores_before", "eigen_convolutions", "eigen_dots",
    "library_calls", "compilation_cache", "xla_flags", "allocator", "torch_allocator",
    "device", "platform", "cpu", "cpu_count", "threads", "python_version", "jax_version",
    "jaxlib_version", "flax_version", "torch_version", "timm_version", "torchvision_version",
    "ultralytics_version", "command",
)
# fmt: on


# ---------------------------------------------------------------------------------- arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``jaxvision bench`` (also usable with any ArgumentParser)."""
    parser.add_argument("models", nargs="*", metavar="MODEL", help="registered model name(s)")
    parser.add_argument("--all", action="store_true", help="sweep every registered variant")
    parser.add_argument("--family", help="with --all: only this family (efficientnet, vit, yolov8)")
    parser.add_argument("--mode", choices=("inference", "train", "both"), default="inference")
    parser.add_argument("--batch-size", type=int, default=16, help="inference batch (default 16)")
    parser.add_argument("--train-batch-size", type=int, default=8, help="train batch (default 8)")
    parser.add_argument("--image-size", type=int, help="input resolution (default: the model's)")
    parser.add_argument("--iters", type=int, default=10, help="timed steps (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="compute dtype; parameters, statistics and the loss stay float32",
    )
    parser.add_argument(
        "--model-arg",
        action="append",
        metavar="KEY=VALUE",
        help="override a model field, e.g. scan_blocks=True (repeatable)",
    )
    parser.add_argument("--no-torch", action="store_true", help="do not measure PyTorch")
    parser.add_argument(
        "--torch-compile",
        action="store_true",
        help="also time the PyTorch reference under torch.compile (a second worker process; "
        "its warm-up, which compiles, is timed too)",
    )
    parser.add_argument(
        "--compile-only",
        action="store_true",
        help="only compile (trace, lower, compile) from abstract shapes",
    )
    parser.add_argument(
        "--output",
        default=DEFAULT_OUTPUT,
        help=f"results file to append to, .jsonl or .csv (default {DEFAULT_OUTPUT})",
    )
    parser.add_argument("--plot", metavar="PATH", help="also plot throughput vs params / FLOPs")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument(
        "--from",
        dest="from_file",
        metavar="FILE",
        help="measure nothing: print the table (and --plot) of the records in a results file",
    )
    parser.add_argument(
        "--threads", type=int, help="CPU cores for JAX and PyTorch alike (default: all available)"
    )
    parser.add_argument(
        "--list-fallbacks",
        action="store_true",
        help="print every convolution and dot of the compiled step with the library that runs "
        "it (YNNPACK, oneDNN, or Eigen: the slow fallback), Eigen first",
    )
    # Internal: time the PyTorch reference described by a JSON spec, print one JSON line.
    parser.add_argument("--torch-worker", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument(
        "--compilation-cache",
        action="store_true",
        help="load compiled steps from the persistent compilation cache (and fill it): the "
        "compile times are then those of a warm start, not of a cold compile",
    )


# ---------------------------------------------------------------------------- measurement tools


def limit_threads(threads: int | None) -> int:
    """Pin this process to ``threads`` cores (before JAX starts its CPU backend); returns the count.

    XLA:CPU sizes its thread pool from the cores the process may run on, so restricting the
    affinity is the one switch that applies to JAX and PyTorch alike.
    """
    if not hasattr(os, "sched_getaffinity"):
        return threads or os.cpu_count() or 1
    cores = sorted(os.sched_getaffinity(0))
    if threads and threads < len(cores):
        os.sched_setaffinity(0, cores[:threads])
        cores = cores[:threads]
    return len(cores)


def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def trim_heap() -> None:
    """Hand memory that malloc holds free back to the system (tcmalloc's
    ``MallocExtension_ReleaseFreeMemory``, glibc's ``malloc_trim``).

    Without it, memory freed by an earlier phase (a compilation, the other framework's model)
    stays resident, the next phase reuses it without growing the resident set, and its peak
    growth reads far too low.
    """
    try:
        process = ctypes.CDLL(None)
    except OSError:
        return
    # tcmalloc (which the jaxvision command preloads where installed) keeps freed memory in its
    # own page heap, which glibc's malloc_trim cannot reach.
    if hasattr(process, "MallocExtension_ReleaseFreeMemory"):
        process.MallocExtension_ReleaseFreeMemory()
    if hasattr(process, "malloc_trim"):
        process.malloc_trim(0)


def reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux >= 4.0); False if not possible."""
    trim_heap()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Resident-set high-water mark since the last :func:`reset_peak_rss` (or process start)."""
    kib = _proc_status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def current_rss_bytes() -> int:
    kib = _proc_status_kib("VmRSS")
    return kib * 1024 if kib is not None else peak_rss_bytes()


def time_interleaved(
    steps: Sequence[Callable[[], Any]], warmup: int, iters: int, blocks: int = 2
) -> list[list[float]]:
    """Seconds per call of every step function, timed in alternating blocks.

    Each function performs one step and waits for its result. Warm-up calls run first; the
    ``iters`` timed calls of each function are split into ``blocks`` blocks that take turns, so a
    burst of load from another process is shared by all the functions compared.
    """
    for step in steps:
        for _ in range(warmup):
            step()
    times: list[list[float]] = [[] for _ in steps]
    blocks = max(1, min(blocks, iters))
    sizes = [iters // blocks + (b < iters % blocks) for b in range(blocks)]
    for size in sizes:
        for step, out in zip(steps, times, strict=True):
            for _ in range(size):
                t0 = time.perf_counter()
                step()
                out.append(time.perf_counter() - t0)
    return times


@functools.cache
def matmul_peak_flops(dtype_name: str = "float32") -> float:
    """FLOP/s of a large jitted square matrix product on the default device (median of runs)."""
    import jax
    import jax.numpy as jnp

    on_cpu = jax.default_backend() == "cpu"
    n = CPU_MATMUL_SIZE if on_cpu else ACCELERATOR_MATMUL_SIZE
    dtype = jnp.dtype(dtype_name)
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
    matmul = jax.jit(jnp.matmul)
    (times,) = time_interleaved([lambda: matmul(a, b).block_until_ready()], 2, 10 if on_cpu else 50)
    return 2.0 * n**3 / statistics.median(times)


def _cost_flops(compiled: Any) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(cost, list | tuple):  # older jax: one dict per computation
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def _xla_memory_bytes(compiled: Any) -> int | None:
    """Bytes XLA's buffer assignment needs for one call: arguments + outputs + temporaries."""
    try:
        m = compiled.memory_analysis()
    except Exception:
        return None
    if m is None:
        return None
    total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
    return int(total - m.alias_size_in_bytes)


def _device_peak_bytes() -> int | None:
    import jax

    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def _mb(n: float | None) -> float | None:
    return None if n is None else round(n / MIB, 1)


def _compile(fn: Callable[..., Any], *args: Any) -> tuple[Any, dict[str, float]]:
    t0 = time.perf_counter()
    traced = fn.trace(*args)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    compiled = lowered.compile()
    t3 = time.perf_counter()
    times = {
        "trace_s": t1 - t0,
        "lower_s": t2 - t1,
        "compile_s": t3 - t2,
        "compile_total_s": t3 - t0,
    }
    return compiled, {k: round(v, 3) for k, v in times.items()}


# ----------------------------------------------------------------------------------- JAX side


def build_model(name: str, image_size: int | None, dtype: str, model_args: dict[str, Any]):
    """The registered model at ``image_size`` (default: its own resolution), that size, its info."""
    import jaxvision
    from jaxvision.registry import build_model as build

    model, size = build(name, image_size=image_size, dtype=dtype, model_args=model_args)
    return model, size, jaxvision.model_info(name)


def analytic_flops(model: Any, image_size: int) -> int:
    """Forward FLOPs of one image (:func:`jaxvision.analysis.model_flops`, which counts a scanned
    body once per iteration and a shifted depthwise convolution as the convolution it is)."""
    from jaxvision.analysis import model_flops

    return model_flops(model, image_size)


class JaxStep:
    """One model's jitted inference or train step: compiled once, then callable as a step."""

    def __init__(self, model: Any, task: Any, mode: str, batch: int, *, seed: int = 0) -> None:
        import jax
        import numpy as np

        from jaxvision.analysis import abstract_variables
        from jaxvision.train.optim import make_optimizer
        from jaxvision.train.state import create_train_state, init_variables
        from jaxvision.train.steps import train_step

        self.mode = mode
        rng = np.random.default_rng(seed)
        # The task's example batch, floating-point entries filled with noise.
        example = {
            k: rng.standard_normal(v.shape).astype(v.dtype)
            if np.issubdtype(v.dtype, np.floating) and k != "mask"
            else v
            for k, v in task.example_batch(batch).items()
        }
        spec = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
        inputs = task.model_inputs(example)
        key = jax.random.key(seed)

        reset_peak_rss()
        if mode == "inference":
            forward = jax.jit(lambda variables, x: model.apply(variables, *x, train=False))
            self.compiled, self.compile_times = _compile(
                forward, abstract_variables(model, inputs), spec(inputs)
            )
        else:
            tx = make_optimizer("sgd", SGD_LEARNING_RATE, momentum=SGD_MOMENTUM)
            build_state = functools.partial(create_train_state, model, tx, rng=key, inputs=inputs)
            step = jax.jit(functools.partial(train_step, task=task), donate_argnums=0)
            self.compiled, self.compile_times = _compile(
                step, jax.eval_shape(build_state), spec(example), key
            )
        self.compile_peak_rss = peak_rss_bytes()
        self.xla_flops = _cost_flops(self.compiled)
        self.xla_memory = _xla_memory_bytes(self.compiled)

        # Concrete inputs are made lazily (compile-only runs never allocate them).
        def materialise() -> None:
            reset_peak_rss()
            self.rss_before = current_rss_bytes()
            if mode == "inference":
                self.variables = init_variables(model, key, inputs)
                self.inputs = jax.device_put(inputs)
            else:
                self.state = build_state()
                self.batch = jax.device_put(example)
                self.key = key

        self.materialise = materialise

    def release(self) -> None:
        """Drop the concrete state and inputs (before another process needs the memory)."""
        for attr in ("variables", "inputs", "state", "batch"):
            self.__dict__.pop(attr, None)
        trim_heap()

    def __call__(self) -> None:
        import jax

        if self.mode == "inference":
            jax.block_until_ready(self.compiled(self.variables, self.inputs))
        else:
            self.state, metrics = self.compiled(self.state, self.batch, self.key)
            jax.block_until_ready(metrics)


# ------------------------------------------------------------------------------- PyTorch side


def torch_versions() -> dict[str, str | None]:
    """Installed versions of the reference packages, read without importing them (PyTorch is
    only ever imported by the worker process)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for package in ("torch", "timm", "torchvision", "ultralytics"):
        try:
            out[f"{package}_version"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[f"{package}_version"] = None
    return out


def build_torch_reference(name: str, image_size: int, num_classes: int = 1000):
    """(reference PyTorch module, description), or (None, reason) when it cannot be built."""
    if name not in TORCH_REFERENCES:
        return None, f"no PyTorch reference known for {name}"
    package, ctor = TORCH_REFERENCES[name]
    try:
        if package == "timm":
            import timm

            kwargs = {"img_size": image_size} if ctor.startswith("vit_") else {}
            module = timm.create_model(ctor, pretrained=False, num_classes=num_classes, **kwargs)
        elif package == "torchvision":
            import torchvision

            module = getattr(torchvision.models, ctor)(
                weights=None, num_classes=num_classes, image_size=image_size
            )
        else:
            from ultralytics.nn import tasks

            if ctor.endswith("-cls.yaml"):
                module = tasks.ClassificationModel(ctor, nc=num_classes, verbose=False)
            elif ctor.endswith("-seg.yaml"):
                module = tasks.SegmentationModel(ctor, verbose=False)
            else:
                module = tasks.DetectionModel(ctor, verbose=False)
    except ImportError as e:
        return None, f"{package} not importable ({e})"
    return module, f"{package} {ctor}"


class TorchStep:
    """The reference PyTorch model's inference or train step in its best CPU configuration."""

    def __init__(
        self,
        module: Any,
        family: str,
        mode: str,
        batch: int,
        size: int,
        dtype: str,
        device: str | None = None,
        compile: bool = False,
        compile_backend: str = "inductor",
    ):
        import torch

        self.torch = torch
        self.mode = mode
        if device is None:  # the device JAX runs on
            device = "cuda" if _jax_platform() == "gpu" else "cpu"
        self.device = torch.device(
            "cuda" if device == "cuda" and torch.cuda.is_available() else "cpu"
        )
        memory_format = (
            torch.channels_last if family in CONVNET_FAMILIES else torch.contiguous_format
        )
        self.model = module.to(self.device, memory_format=memory_format)
        gen = torch.Generator().manual_seed(0)
        self.images = torch.randn(batch, 3, size, size, generator=gen).to(
            self.device, memory_format=memory_format
        )
        self.labels = torch.randint(0, 1000, (batch,), generator=gen).to(self.device)
        self.autocast = dtype == "bfloat16"
        # Ultralytics detection/segmentation models train through their own loss (model.loss):
        # the same v8DetectionLoss jaxvision's DetectionTask reproduces, here on images without
        # objects, as jaxvision's side is timed on the task's example batch (no objects either).
        self.detection = (
            hasattr(module, "loss")
            and hasattr(module, "model")
            and (type(module.model[-1]).__name__ in ("Detect", "Segment"))
        )
        if self.detection:
            from ultralytics.cfg import get_cfg

            self.model.args = get_cfg()
            empty = torch.zeros(0, device=self.device)
            self.batch = {
                "img": self.images,
                "batch_idx": empty,
                "cls": empty[:, None],
                "bboxes": torch.zeros(0, 4, device=self.device),
                "masks": torch.zeros(batch, size // 4, size // 4, device=self.device),
            }
        if mode == "inference":
            self.model.eval()
        else:
            self.model.train()
            self.optimizer = torch.optim.SGD(
                self.model.parameters(), lr=SGD_LEARNING_RATE, momentum=SGD_MOMENTUM
            )
        if compile:
            # torch.compile's default mode (Inductor); the first calls compile. The parameters
            # stay the module's own, so the optimizer built above updates them. (Ultralytics'
            # detection loss calls the uncompiled model's forward: there it changes nothing.)
            self.model = torch.compile(self.model, backend=compile_backend)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def __call__(self) -> None:
        torch = self.torch
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            if self.mode == "inference":
                with torch.inference_mode():
                    self.model(self.images)
            else:
                self.optimizer.zero_grad(set_to_none=True)
                if self.detection:
                    loss = self.model.loss(self.batch)[0].sum()
                else:
                    logits = self.model(self.images)
                    loss = torch.nn.functional.cross_entropy(logits.float(), self.labels)
                loss.backward()
                self.optimizer.step()
        self._sync()


def _jax_platform() -> str:
    import jax

    return jax.default_backend()


def torch_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Time the PyTorch reference of ``spec`` in this process; what :func:`run_torch_worker`
    runs in a process of its own (``python -m jaxvision.bench --torch-worker SPEC``).

    ``spec``: name, family, mode, batch_size, image_size, dtype, warmup, iters, threads, device;
    optionally ``compile`` (wrap the module in ``torch.compile``) and ``compile_backend``
    (default "inductor"). The warm-up's seconds are returned too (``torch_warmup_s``: with
    ``compile``, mostly compiling).
    Returns ``torch_reference`` (what was built, or why nothing was), the seconds of every timed
    step (``torch_step_times``), the resident-set growth of allocation and warm-up, the threads
    PyTorch used, and the load just before (1-minute load average and busy cores). No JAX
    backend is started in this process.
    """
    out: dict[str, Any] = {
        "torch_load_before": _load_average(),
        "torch_busy_cores_before": busy_cores(),
    }
    try:
        import torch
    except ImportError as e:
        return {**out, "torch_reference": f"torch not importable ({e})"}
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    torch.manual_seed(0)
    # ultralytics prints a model summary on stdout, which carries this worker's result.
    with contextlib.redirect_stdout(sys.stderr):
        module, description = build_torch_reference(spec["name"], spec["image_size"])
        out["torch_reference"] = description
        if module is None:
            return out
        reset_peak_rss()
        rss_before = current_rss_bytes()
        step = TorchStep(
            module,
            spec["family"],
            spec["mode"],
            spec["batch_size"],
            spec["image_size"],
            spec["dtype"],
            device=spec.get("device", "cpu"),
            compile=bool(spec.get("compile")),
            compile_backend=spec.get("compile_backend", "inductor"),
        )
        warmup_start = time.perf_counter()
        time_interleaved([step], spec["warmup"], 0)
        out["torch_warmup_s"] = time.perf_counter() - warmup_start
        out["torch_peak_rss_delta_mb"] = _mb(peak_rss_bytes() - rss_before)
        (times,) = time_interleaved([step], 0, spec["iters"])
    out["torch_step_times"] = times
    out["torch_threads"] = torch.get_num_threads()
    from jaxvision.allocator import active

    out["torch_allocator"] = active()
    return out


def run_torch_worker(spec: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """:func:`torch_worker` in a fresh Python process; its result, or why there is none.

    The process inherits this one's CPU affinity (``--threads``) and environment; its stderr
    (ultralytics' model summary, warnings) is shown only when it fails.
    """
    import subprocess

    import jaxvision
    from jaxvision.allocator import without_our_preload

    # PyTorch runs under the allocator its users get by default, not the tcmalloc the jaxvision
    # command preloads for itself (an LD_PRELOAD the caller set reaches both).
    env = without_our_preload(os.environ)
    root = str(Path(jaxvision.__file__).resolve().parent.parent)  # this jaxvision, not another
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "jaxvision.bench", "--torch-worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"torch_reference": f"PyTorch worker timed out after {timeout} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    err = proc.stderr.strip().splitlines()
    print(proc.stderr[-4000:], file=sys.stderr)
    reason = err[-1] if err else f"exit status {proc.returncode}"
    return {"torch_reference": f"PyTorch worker failed: {reason}"[:300]}


# --------------------------------------------------------------------------------- one record


def environment(threads: int) -> dict[str, Any]:
    import flax
    import jax
    import jaxlib

    from jaxvision import allocator

    device = jax.devices()[0]
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "device": f"cpu ({cpu})" if device.platform == "cpu" else str(device.device_kind),
        "platform": jax.default_backend(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "python_version": platform.python_version(),
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "flax_version": flax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "allocator": allocator.active(),
    }


def benchmark(
    name: str,
    mode: str,
    *,
    batch_size: int,
    image_size: int | None = None,
    dtype: str = "float32",
    iters: int = 10,
    warmup: int = 2,
    model_args: dict[str, Any] | None = None,
    torch_reference: bool = True,
    compile_only: bool = False,
    threads: int | None = None,
    list_fallbacks: bool = False,
    torch_compile: bool = False,
) -> dict[str, Any]:
    """Measure one (model, mode); returns the result record (without environment fields).

    ``torch_compile``: time the PyTorch reference a second time under ``torch.compile`` (its own
    worker process), into the ``torch_compiled_*`` fields and ``ratio_vs_torch_compiled``.

    ``list_fallbacks``: also print the library of every convolution and dot of the compiled step
    (:mod:`jaxvision.xla_ops`) and count those on Eigen in the record.
    """
    from jaxvision.analysis import abstract_variables, count_params

    load_before = _load_average()
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    model_args = dict(model_args or {})
    model, size, info = build_model(name, image_size, dtype, model_args)
    rec: dict[str, Any] = {
        "model": name,
        "family": info.family,
        "mode": mode,
        "batch_size": batch_size,
        "image_size": size,
        "dtype": dtype,
        "model_args": json.dumps(model_args, sort_keys=True) if model_args else "",
        "params": count_params(abstract_variables(model, size)["params"]),
        "load_before": load_before,
    }
    flops = analytic_flops(model, size)
    step_flops = flops * (TRAIN_FLOPS_FACTOR if mode == "train" else 1)
    rec["flops_per_image"] = flops
    rec["step_flops_per_image"] = step_flops

    from jaxvision import tasks

    task = tasks.for_model(name, image_size=size, num_classes=model.num_classes)
    jax_step = JaxStep(model, task, mode, batch_size)
    rec.update(jax_step.compile_times)
    rec["compile_peak_rss_mb"] = _mb(jax_step.compile_peak_rss)
    rec["xla_flops_per_image"] = (
        None if jax_step.xla_flops is None else round(jax_step.xla_flops / batch_size)
    )
    rec["xla_memory_mb"] = _mb(jax_step.xla_memory)
    if list_fallbacks:
        from jaxvision import xla_ops

        calls = xla_ops.library_calls(jax_step.compiled)
        counts = xla_ops.summary(calls)
        rec["eigen_convolutions"] = counts[xla_ops.EIGEN]["convolution"]
        rec["eigen_dots"] = counts[xla_ops.EIGEN]["dot"]
        rec["library_calls"] = json.dumps(counts, sort_keys=True)
        print(f"\n{name} {mode} (batch {batch_size}, {size} px): {len(calls)} convolutions and "
              f"dots, {rec['eigen_convolutions']} convolutions and {rec['eigen_dots']} dots on "
              "Eigen", flush=True)  # fmt: skip
        print(xla_ops.format_calls(calls), flush=True)
    if compile_only:
        return rec

    # JAX: allocate, warm up, and note the memory high-water of this phase.
    jax_step.materialise()
    time_interleaved([jax_step], warmup, 0)
    rec["peak_rss_mb"] = _mb(peak_rss_bytes())
    rec["peak_rss_delta_mb"] = _mb(peak_rss_bytes() - jax_step.rss_before)
    rec["device_peak_mb"] = _mb(_device_peak_bytes())

    # JAX's timed steps, in one block; the other processes' CPU use just before them is noted.
    rec["busy_cores_before"] = busy_cores()
    (times,) = time_interleaved([jax_step], 0, iters)
    step_s = statistics.median(times)
    rec.update(
        step_ms=round(step_s * 1e3, 3),
        step_ms_min=round(min(times) * 1e3, 3),
        images_per_s=round(batch_size / step_s, 3),
        timed_steps=iters,
        warmup_steps=warmup,
    )
    peak = matmul_peak_flops(dtype)
    achieved = step_flops * batch_size / step_s
    rec["matmul_peak_gflops"] = round(peak / 1e9, 2)
    rec["achieved_gflops"] = round(achieved / 1e9, 2)
    rec["utilisation"] = round(achieved / peak, 4)
    rec["load_after"] = _load_average()

    if torch_reference:
        # PyTorch in a process of its own, after JAX's steps: the same threads (this process's
        # cores are inherited), batch, resolution and dtype.
        jax_step.release()
        spec = {
            "name": name,
            "family": info.family,
            "mode": mode,
            "batch_size": batch_size,
            "image_size": size,
            "dtype": dtype,
            "warmup": warmup,
            "iters": iters,
            "threads": threads,
            "device": "cuda" if _jax_platform() == "gpu" else "cpu",
        }
        ref = run_torch_worker(spec)
        times = ref.pop("torch_step_times", None)
        rec.update({k: v for k, v in ref.items() if k in FIELDS})
        if times:
            torch_s = statistics.median(times)
            rec["torch_step_ms"] = round(torch_s * 1e3, 3)
            rec["torch_images_per_s"] = round(batch_size / torch_s, 3)
            rec["ratio_vs_torch"] = round(torch_s / step_s, 3)
        if torch_compile:
            compiled = run_torch_worker({**spec, "compile": True})
            times = compiled.get("torch_step_times")
            rec["torch_compiled_reference"] = compiled.get("torch_reference")
            if times:
                torch_s = statistics.median(times)
                rec["torch_compiled_step_ms"] = round(torch_s * 1e3, 3)
                rec["torch_compiled_images_per_s"] = round(batch_size / torch_s, 3)
                rec["ratio_vs_torch_compiled"] = round(torch_s / step_s, 3)
                rec["torch_compiled_warmup_s"] = round(compiled["torch_warmup_s"], 2)
    return rec


def busy_cores(seconds: float = 0.5) -> float | None:
    """CPU cores kept busy by every process on the machine over the next ``seconds`` (Linux
    ``/proc/stat``). Sampled while this process waits, it measures the other processes' load
    as it is now, where the 1-minute load average still remembers the last measurement."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values[:8]) - idle, sum(values[:8])

    try:
        busy0, total0 = sample()
        time.sleep(seconds)
        busy1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return round((busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1), 2)


def _load_average() -> float | None:
    """The 1-minute load average: timings taken while it exceeds the core count are suspect."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


# ------------------------------------------------------------------------------ output / table


def append_results(path: str | os.PathLike[str], records: Sequence[dict[str, Any]]) -> Path:
    """Append ``records`` to a .csv (header written once) or JSON-lines file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        header = list(FIELDS)
        if path.exists() and path.stat().st_size:
            with open(path, newline="") as f:
                header = next(csv.reader(f), header)
        new = not path.exists() or not path.stat().st_size
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
            if new:
                writer.writeheader()
            for rec in records:
                writer.writerow({k: "" if rec.get(k) is None else rec.get(k) for k in header})
    else:
        with open(path, "a") as f:
            for rec in records:
                f.write(json.dumps({k: rec.get(k) for k in FIELDS}) + "\n")
    return path


def _fmt(value: Any, spec: str, scale: float = 1.0, suffix: str = "") -> str:
    if value is None or value == "":
        return "-"
    return format(value * scale, spec) + suffix


TABLE_HEADER = (
    *("model", "mode", "batch", "res", "trace/lower/compile s", "img/s", "torch img/s", "ratio"),
    *("GFLOPs/img", "XLA GFLOPs/img", "util", "peak MB"),
)


def _table_row(r: dict[str, Any]) -> tuple[str, ...]:
    name = r["model"] + (f" {r['model_args']}" if r.get("model_args") else "")
    if r.get("compilation_cache") in (True, "True", "true", 1.0):  # JSON, or read from a CSV
        name += " [cache on]"  # compile times may be loads from the persistent cache
    if r.get("error"):
        return (name, r["mode"], str(r.get("batch_size", "")), "", f"error: {r['error']}"[:70],
                *[""] * 7)  # fmt: skip
    return (
        name,
        r["mode"],
        str(r["batch_size"]),
        str(r["image_size"]),
        "/".join(_fmt(r.get(k), ".1f") for k in ("trace_s", "lower_s", "compile_s")),
        _fmt(r.get("images_per_s"), ".1f"),
        _fmt(r.get("torch_images_per_s"), ".1f"),
        _fmt(r.get("ratio_vs_torch"), ".2f"),
        _fmt(r.get("step_flops_per_image"), ".2f", 1e-9),
        _fmt(r.get("xla_flops_per_image"), ".2f", 1e-9),
        _fmt(r.get("utilisation"), ".0f", 100, "%"),
        _fmt(r.get("peak_rss_delta_mb"), ".0f"),
    )


COMPILED_HEADER = ("torch.compile img/s", "ratio vs compiled")


def format_table(records: Sequence[dict[str, Any]], *, markdown: bool = False) -> str:
    """The records as an aligned text table (or a Markdown table); two more columns when any
    record has a ``torch.compile`` measurement (``--torch-compile``)."""
    header = TABLE_HEADER
    rows = [_table_row(r) for r in records]
    if any(r.get("torch_compiled_reference") for r in records):
        header = (*TABLE_HEADER, *COMPILED_HEADER)
        rows = [
            (
                *row,
                _fmt(r.get("torch_compiled_images_per_s"), ".1f"),
                _fmt(r.get("ratio_vs_torch_compiled"), ".2f"),
            )
            for row, r in zip(rows, records, strict=True)
        ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join(":--" if i < 2 else "--:" for i in range(len(header))) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        pairs = enumerate(zip(row, widths, strict=True))
        cells = (c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in pairs)
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def read_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Records from a results file written by :func:`append_results` (.jsonl or .csv)."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    numeric = {"batch_size", "image_size"}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        rec: dict[str, Any] = {}
        for k, v in row.items():
            if v == "":
                rec[k] = None
            elif k in numeric:
                rec[k] = int(v)
            else:
                try:
                    rec[k] = float(v) if k not in ("model", "mode", "model_args", "error") else v
                except ValueError:
                    rec[k] = v
        out.append(rec)
    return out


def plot_results(records: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path | None:
    """Throughput against parameters and against FLOPs, one colour per family (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "bench: matplotlib is not installed; no plot (pip install jaxvision[plot])",
            file=sys.stderr,
        )
        return None
    done = [r for r in records if r.get("images_per_s")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    families = sorted({r["family"] for r in done})
    markers = {"inference": "o", "train": "s"}
    for ax, key, label in (
        (axes[0], "params", "parameters"),
        (axes[1], "flops_per_image", "forward FLOPs per image"),
    ):
        for i, family in enumerate(families):
            for mode, marker in markers.items():
                pts = [r for r in done if r["family"] == family and r["mode"] == mode]
                if not pts:
                    continue
                ax.scatter(
                    [r[key] for r in pts],
                    [r["images_per_s"] for r in pts],
                    marker=marker,
                    color=f"C{i}",
                    label=f"{family} {mode}",
                )
                for r in pts:
                    ax.annotate(r["model"], (r[key], r["images_per_s"]), fontsize=6)
                ref = [r for r in pts if r.get("torch_images_per_s")]
                if ref:
                    ax.scatter(
                        [r[key] for r in ref],
                        [r["torch_images_per_s"] for r in ref],
                        marker=marker,
                        facecolors="none",
                        edgecolors=f"C{i}",
                        label=f"{family} {mode} (PyTorch)",
                    )
        ax.set(xscale="log", yscale="log", xlabel=label, ylabel="images / s")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    if done:
        env = done[0]
        fig.suptitle(
            f"jaxvision throughput, {env.get('device')}, {env.get('threads')} threads, "
            f"{env.get('dtype')}",
            fontsize=9,
        )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------- main


def _gpu_plugin_installed() -> bool:
    """Whether a JAX GPU plugin (jax-cuda*-plugin, jax-rocm*-plugin) is installed, found without
    starting a backend."""
    import importlib.util
    import pkgutil

    try:
        spec = importlib.util.find_spec("jax_plugins")
    except (ImportError, ValueError):
        spec = None
    plugins = (
        [m.name for m in pkgutil.iter_modules(spec.submodule_search_locations)] if spec else []
    )
    legacy = [m.name for m in pkgutil.iter_modules() if m.name.startswith(("jax_cuda", "jax_rocm"))]
    return any(("cuda" in n or "rocm" in n) for n in plugins + legacy)


def main(args: argparse.Namespace) -> int:
    """Run the benchmarks ``args`` ask for; 0 if every one ran, 1 if any failed.

    Bad usage (unknown model, no model, non-positive counts) raises ValueError / UnknownModelError,
    which ``jaxvision bench`` reports in one line with exit status 2.
    """
    if getattr(args, "torch_worker", None):
        print(json.dumps(torch_worker(json.loads(args.torch_worker))), flush=True)
        return 0
    if not args.no_torch and not args.compile_only and _gpu_plugin_installed():
        # On a GPU, JAX would otherwise take 75% of the memory when its backend starts and keep
        # it while the PyTorch worker runs (no effect once the backend has started). Only there:
        # on CPU (jaxlib 0.10) the setting doubled EfficientNet-B0's train-step memory under
        # tcmalloc (1.9 -> 3.8 GB) and brought back 59,000 page faults per step.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if args.from_file:
        records = read_results(args.from_file)
        if args.models:
            records = [r for r in records if r.get("model") in args.models]
        print(format_table(records, markdown=args.markdown))
        if args.plot:
            plot_results(records, args.plot)
        return 0
    if getattr(args, "compilation_cache", False) and not getattr(
        args, "no_compilation_cache", False
    ):
        from jaxvision import compilation_cache

        compilation_cache.enable()
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        return _run(args, limit_threads(args.threads))
    finally:
        if affinity is not None:  # a caller's process keeps its cores (XLA's pool keeps its size)
            os.sched_setaffinity(0, affinity)


def _run(args: argparse.Namespace, threads: int) -> int:
    import jaxvision

    if args.all:
        names = jaxvision.list_models(args.family)
        if args.family and not names:
            raise ConfigError(f"no registered models in family {args.family!r}")
    elif args.models:
        names = list(args.models)
        for name in names:
            jaxvision.model_info(name)  # unknown names fail before anything is measured
    else:
        raise ConfigError("name at least one model, or use --all")
    modes = MODES if args.mode == "both" else (args.mode,)
    for flag in ("batch_size", "train_batch_size", "iters"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        raise ConfigError("--warmup must be >= 0")
    model_args = parse_model_args(args.model_arg)

    env = environment(threads)
    from jaxvision import compilation_cache

    # Whether compile times are cold (False) or may come from the persistent cache (True).
    env["compilation_cache"] = compilation_cache.active_dir() is not None
    env["command"] = shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    if not args.no_torch:
        env.update(torch_versions())
    warnings.filterwarnings("ignore", message="Some donated buffers were not usable")

    records = []
    failed = False
    for name in names:
        for mode in modes:
            stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            batch = args.batch_size if mode == "inference" else args.train_batch_size
            print(f"bench: {name} {mode} batch {batch} ...", file=sys.stderr, flush=True)
            try:
                rec = benchmark(
                    name,
                    mode,
                    batch_size=batch,
                    image_size=args.image_size,
                    dtype=args.dtype,
                    iters=args.iters,
                    warmup=args.warmup,
                    model_args=model_args,
                    torch_reference=not args.no_torch,
                    compile_only=args.compile_only,
                    threads=threads,
                    list_fallbacks=args.list_fallbacks,
                    torch_compile=getattr(args, "torch_compile", False),
                )
            except Exception as e:  # one failing model must not lose the sweep's other results
                if os.environ.get("JAXVISION_DEBUG"):
                    raise
                failed = True
                rec = {
                    "model": name,
                    "mode": mode,
                    "batch_size": batch,
                    "error": f"{type(e).__name__}: {e}",
                }
            rec = {"timestamp": stamp, **rec, **env}
            records.append(rec)
            append_results(args.output, [rec])
    print(format_table(records, markdown=args.markdown))
    busy = [r for r in records if (r.get("load_after") or 0) > 1.5 * threads]
    if busy:
        print(
            f"bench: warning: the load average exceeded 1.5x the {threads} threads used during "
            f"{len(busy)} measurement(s); other processes shared the cores, so the timings "
            "(PyTorch's especially) are unreliable",
            file=sys.stderr,
        )
    print(f"\nresults appended to {args.output}", file=sys.stderr)
    if args.plot:
        out = plot_results(records, args.plot)
        if out:
            print(f"plot written to {out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    if "--torch-worker" not in sys.argv:  # the worker runs under the allocator it was given
        from jaxvision.allocator import restart_with_tcmalloc

        restart_with_tcmalloc()
    parser = argparse.ArgumentParser(
        prog="python -m jaxvision.bench", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))


__all__ = [
    "add_arguments",
    "append_results",
    "benchmark",
    "format_table",
    "main",
    "matmul_peak_flops",
    "parse_model_args",
    "plot_results",
    "run_torch_worker",
    "torch_worker",
    "TORCH_REFERENCES",
]

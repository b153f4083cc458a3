"""The ``jaxvision`` command: list, inspect, train, evaluate, predict, convert, benchmark, and
report its environment (``jaxvision env``).

Errors a user can cause (unknown model, bad option or path, undecodable image, wrong checkpoint:
every :class:`jaxvision.errors.UserError`) print one line ``jaxvision: error: ...`` and exit with
status 2; a NaN loss exits with 1; nothing is lost. Any other exception is a bug and shows its
traceback. Set ``JAXVISION_DEBUG=1`` to see the traceback of user errors too.
Training and evaluation print exactly one JSON object as the last line of stdout; progress bars
and logs go to stderr.

Run as a program, the command restarts itself once under tcmalloc when the system has it: XLA:CPU
allocates a step's buffers afresh at every step, and glibc's malloc makes each of those a
page-faulting ``mmap`` (:mod:`jaxvision.allocator`; ``JAXVISION_ALLOCATOR=system`` keeps glibc's).
``jaxvision env`` shows which allocator runs, with the versions, devices and cache folder.

The commands that compile (summary, train, eval, predict, convert) first switch on JAX's persistent
compilation cache (:mod:`jaxvision.compilation_cache`), so a second start compiles nothing it
compiled before; ``--no-compilation-cache`` (before or after the command name) or
``JAXVISION_COMPILATION_CACHE=0`` turns it off. ``bench`` measures cold compiles and leaves it off
unless given ``--compilation-cache``.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import warnings
from typing import Any

from jaxvision.errors import JaxvisionWarning, UserError
from jaxvision.report import print_json_line

EXIT_USAGE = 2
EXIT_DIVERGED = 1
MAX_ERROR_LINES = 12  # an error's first line and up to 11 lines of detail


class CLIError(UserError):
    """A user error found by the command line itself."""


def _result_line(
    model: str, metrics: dict[str, Any], epochs: int, seconds: float
) -> dict[str, Any]:
    """The last stdout line of ``train`` and ``eval``: the model, the task's held-out metrics
    (classification: ``top1``, ``top5``, ``loss``), completed epochs and seconds."""
    skip = ("model", "epochs", "seconds", "state")
    shown = {k: float(v) for k, v in metrics.items() if k not in skip}
    return {"model": model, **shown, "epochs": epochs, "seconds": round(seconds, 2)}


# ----------------------------------------------------------------------------------- commands


def cmd_models(args: argparse.Namespace) -> None:
    import jaxvision
    from jaxvision import tasks
    from jaxvision.analysis import abstract_variables, count_params

    names = jaxvision.list_models(args.family)
    rows = []
    for name in names:
        info = jaxvision.model_info(name)
        params = "-"
        if not args.no_count:
            model = jaxvision.create_model(name)
            task = tasks.for_model(name, image_size=info.resolution, num_classes=model.num_classes)
            params = f"{count_params(abstract_variables(model, task)['params']):,}"
        ref = f"{info.reference_params:,}" if info.reference_params else "-"
        top1 = f"{info.top1:g}" if info.top1 is not None else "-"
        rows.append((name, info.family, params, ref, str(info.resolution), top1))
    header = ("model", "family", "params", "reference", "res", "top-1 %")
    _print_table(header, rows, right={2, 3, 4, 5})


def _print_table(
    header: tuple[str, ...], rows: list[tuple[str, ...]], right: set[int] = frozenset()
) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: tuple[str, ...]) -> str:
        return "  ".join(
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    print(fmt(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(fmt(row))


def cmd_summary(args: argparse.Namespace) -> None:
    import jaxvision
    from jaxvision import tasks
    from jaxvision.analysis import abstract_variables, count_params, layer_table, model_flops
    from jaxvision.registry import build_model, parse_model_args

    overrides = parse_model_args(args.model_arg)
    info = jaxvision.model_info(args.name)
    model, size = build_model(
        args.name, num_classes=args.num_classes, image_size=args.image_size, model_args=overrides
    )
    task = tasks.for_model(args.name, image_size=size, num_classes=model.num_classes)
    try:
        rows = layer_table(model, task, depth=args.depth)
    except ValueError as e:  # the model refuses its configuration
        raise CLIError(f"{args.name} cannot be built as configured: {e}") from None
    _print_table(
        ("layer", "output shape", "params"), [(n, s, f"{p:,}") for n, s, p in rows], right={2}
    )
    variables = abstract_variables(model, task)
    n_params = count_params(variables["params"])
    n_stats = count_params(variables.get("batch_stats", {}))
    flops = model_flops(model, task)
    print()
    print(
        f"model:        {args.name} ({info.family}), {size}x{size} input, "
        f"{model.num_classes} classes"
    )
    print(
        f"parameters:   {n_params:,} trainable"
        + (f" + {n_stats:,} BatchNorm statistics" if n_stats else "")
    )
    if info.family == "omnivec":  # the paper describes OmniVec's size this way
        from jaxvision.models.omnivec import count_parts

        parts = count_parts(variables["params"])
        print(
            f"              = encoders {parts['encoders']:,} + backbone {parts['backbone']:,} "
            f"+ heads {parts['heads']:,}"
        )
    if (
        info.reference_params
        and args.num_classes is None
        and not overrides
        and size == info.resolution
    ):
        match = "matches" if n_params == info.reference_params else "DIFFERS from"
        print(f"reference:    {info.reference_params:,} ({match} {info.source})")
    per = "one example of each modality" if info.family == "omnivec" else "conv + matmul"
    print(f"FLOPs/image:  {flops / 1e9:.3f} G ({per}, multiply-add = 2)")


def _load_for_inference(name: str, checkpoint: str, use_ema: bool):
    """(model, task, variables, header) of a checkpoint or weights file saved for ``name``."""
    import jax

    import jaxvision
    from jaxvision import tasks
    from jaxvision.analysis import abstract_variables
    from jaxvision.registry import build_model
    from jaxvision.train import checkpoint as ckpt

    jaxvision.model_info(name)  # unknown names fail here, before any file is read
    path = ckpt.resolve_checkpoint(checkpoint)
    header, saved = ckpt.load_checkpoint(path)  # once: the header says how to build the model
    ckpt.check_model(header, name, path)
    size = header.get("image_size")
    task = tasks.from_header(header, size or jaxvision.model_info(name).resolution)
    model, size = build_model(
        name,
        image_size=size,
        dtype=header.get("dtype", "float32"),
        model_args={**task.model_args(), **(header.get("model_args") or {})},
    )
    expected = abstract_variables(model, task)
    variables = ckpt.variables_from_checkpoint(header, saved, expected, use_ema=use_ema, path=path)
    variables = jax.tree.map(jax.numpy.asarray, variables)
    return model, task, variables, header


def _inference_state(model: Any, variables: dict[str, Any]):
    from jaxvision.train.state import TrainState

    return TrainState(
        step=0,
        apply_fn=model.apply,
        params=variables["params"],
        tx=None,
        opt_state=None,
        batch_stats=variables.get("batch_stats", {}),
    )


def cmd_train(args: argparse.Namespace) -> int:
    from jaxvision.registry import parse_model_args
    from jaxvision.train import distributed
    from jaxvision.train.loop import TrainConfig, fit

    if args.distributed:
        distributed.initialize()
    task_args = {
        "label_smoothing": args.label_smoothing,
        "augment": args.augment,
        "crop_min_scale": args.crop_min_scale,
    }
    config = TrainConfig(
        model=args.name,
        data=args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        momentum=args.momentum,
        nesterov=args.nesterov,
        warmup_epochs=args.warmup_epochs,
        clip_norm=args.clip_norm or None,
        ema_decay=args.ema_decay,
        image_size=args.image_size,
        seed=args.seed,
        output_dir=args.output_dir,
        resume=args.resume,
        init_from=args.init_from,
        model_args=parse_model_args(args.model_arg),
        task_args={k: v for k, v in task_args.items() if v is not None},
        dtype=args.dtype,
        checkpoint_every=args.checkpoint_every,
        skip_bad_images=args.skip_bad_images,
        fsdp=args.fsdp,
        progress=not args.no_progress,
        log_every=args.log_every,
        max_steps=args.max_steps,
    )
    result = fit(config)
    print_json_line(_result_line(result["model"], result, result["epochs"], result["seconds"]))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import time

    from jaxvision import model_info, tasks
    from jaxvision.data import BatchLoader
    from jaxvision.train import distributed
    from jaxvision.train.loop import evaluate

    t0 = time.perf_counter()
    model, task, variables, header = _load_for_inference(args.name, args.checkpoint, args.ema)
    # Default: the data the checkpoint was trained on, else the task's own default.
    trained_on = (header.get("config") or {}).get("data")
    source = tasks.eval_source(
        task,
        args.data or trained_on,
        args.split,
        info=model_info(args.name),
        skip_bad_images=args.skip_bad_images,
    )
    loader = BatchLoader(source)
    mesh = distributed.make_mesh()
    batch = args.batch_size - args.batch_size % mesh.devices.size or mesh.devices.size
    evaluator = task.evaluator()
    try:
        metrics = evaluate(
            _inference_state(model, variables),
            task.for_evaluation(),
            loader,
            batch,
            mesh=mesh,
            progress=not args.no_progress,
            evaluator=evaluator,
        )
    finally:
        loader.close()
    for line in getattr(evaluator, "report", lambda: [])():
        print(line, file=sys.stderr)
    # "epochs": completed training epochs of the checkpoint (0 for converted weights).
    print_json_line(
        _result_line(args.name, metrics, int(header.get("epoch", 0)), time.perf_counter() - t0)
    )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from jaxvision import model_info
    from jaxvision.data.images import open_image
    from jaxvision.data.transforms import eval_transform
    from jaxvision.tasks import ClassificationTask
    from jaxvision.train.steps import predict_step

    model, task, variables, header = _load_for_inference(args.name, args.checkpoint, args.ema)
    if not isinstance(task, ClassificationTask):
        return _predict_detections(args, model, task, variables)
    pre = model_info(args.name).preprocessing
    size = task.image_size
    images = [
        eval_transform(open_image(p), size, pre, centre_crop=not args.no_crop) for p in args.images
    ]
    batch = {**task.example_batch(len(images)), "image": np.stack(images)}
    predict = jax.jit(functools.partial(predict_step, task=task))
    probs = np.asarray(predict(_inference_state(model, variables), batch))
    names = header.get("class_names") or [str(i) for i in range(probs.shape[-1])]
    k = min(args.top_k, probs.shape[-1])
    for path, p in zip(args.images, probs, strict=True):
        top = np.argsort(-p)[:k]
        print(path)
        for rank, c in enumerate(top, 1):
            print(f"  {rank}. {names[c]:<24} {p[c]:.4f}")
    return 0


def _predict_detections(args: argparse.Namespace, model: Any, task: Any, variables: Any) -> int:
    """Letterbox each image, detect (NMS at --conf / --iou), map the boxes back to the image,
    draw them (and the masks) on a copy saved in --save-dir, print one JSON line per image."""
    import dataclasses
    from pathlib import Path

    import jax
    import numpy as np

    from jaxvision.data import letterbox
    from jaxvision.data.images import open_image
    from jaxvision.train.steps import predict_step
    from jaxvision.visualize import draw_detections

    originals = [open_image(p) for p in args.images]  # every image readable before any output

    task = dataclasses.replace(task, conf_threshold=args.conf, iou_threshold=args.iou)
    names = list(task.class_names or [str(i) for i in range(task.num_classes)])
    out_dir = Path(args.save_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predict = jax.jit(functools.partial(predict_step, task=task))
    state = _inference_state(model, variables)
    for path, original in zip(args.images, originals, strict=True):
        pixels, geometry = letterbox(original, task.image_size)
        batch = {**task.example_batch(1), "image": pixels[None].astype(np.float32) / 255.0}
        out = jax.device_get(predict(state, batch))
        valid = out["valid"][0]
        boxes = geometry.boxes_to_original(out["boxes"][0][valid])
        masks = None
        if task.segmentation:
            masks = _masks_to_original(out["masks"][0][valid], geometry, task.image_size)
        detections = [
            {
                "class": names[int(c)],
                "class_id": int(c),
                "score": round(float(s), 4),
                "box": [round(float(v), 1) for v in b],
            }
            for b, s, c in zip(
                boxes, out["scores"][0][valid], out["classes"][0][valid], strict=True
            )
        ]
        saved = out_dir / f"{Path(path).stem}_pred.png"
        draw_detections(
            original, boxes, out["scores"][0][valid], out["classes"][0][valid], names, masks=masks
        ).save(saved)
        print_json_line({"image": str(path), "detections": detections, "saved": str(saved)})
    return 0


def _masks_to_original(masks: Any, geometry: Any, size: int):
    """(N, S/4, S/4) masks of the letterboxed image -> (N, H, W) masks of the original image."""
    import numpy as np
    from PIL import Image

    out = []
    for m in masks:
        full = Image.fromarray(m.astype(np.uint8) * 255).resize(
            (size, size), Image.Resampling.BILINEAR
        )
        x0, y0 = geometry.pad_x, geometry.pad_y
        x1 = x0 + round(geometry.width * geometry.scale)
        y1 = y0 + round(geometry.height * geometry.scale)
        crop = full.crop((x0, y0, x1, y1)).resize(
            (geometry.width, geometry.height), Image.Resampling.BILINEAR
        )
        out.append(np.asarray(crop) > 127)
    return np.stack(out) if out else np.zeros((0, geometry.height, geometry.width), bool)


def cmd_data(args: argparse.Namespace) -> int:
    from pathlib import Path

    from jaxvision.data import ShapesDataset, export_yolo

    if args.dataset != "shapes":
        raise CLIError(f"unknown data set {args.dataset!r}; jaxvision data knows: shapes")
    out = Path(args.output)
    train = ShapesDataset("train", seed=args.seed, image_size=args.image_size)
    val = ShapesDataset("val", seed=args.seed, image_size=args.image_size)
    yaml = export_yolo(train, val, out, segments=args.segments)
    print(
        f"wrote {len(train)} train and {len(val)} val images with labels to {out}", file=sys.stderr
    )
    print(yaml)
    return 0


def environment_report() -> dict[str, Any]:
    """What ``jaxvision env`` prints: versions, devices, the allocator, the compilation cache."""
    import platform

    import flax
    import jax
    import jaxlib
    import optax

    import jaxvision
    from jaxvision import allocator, compilation_cache

    alloc = allocator.describe()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "jaxvision": jaxvision.__version__,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_cores": cores,
        "allocator": alloc["allocator"],
        "allocator_how": alloc["how"],
        "tcmalloc_library": alloc["tcmalloc_library"]
        or "not installed (Debian/Ubuntu: apt install libtcmalloc-minimal4)",
        "compilation_cache": "off"
        if compilation_cache.disabled_by_env()
        else str(compilation_cache.default_dir()),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def cmd_env(args: argparse.Namespace) -> int:
    report = environment_report()
    if args.json:
        print_json_line(report)
        return 0
    for key, value in report.items():
        print(f"{key:<18} {', '.join(value) if isinstance(value, list) else value}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    import jax

    import jaxvision
    from jaxvision import tasks, weights
    from jaxvision.registry import build_model, parse_model_args
    from jaxvision.train import checkpoint as ckpt
    from jaxvision.train.finetune import merge_matching
    from jaxvision.train.state import init_variables

    info = jaxvision.model_info(args.name)
    overrides = parse_model_args(args.model_arg)
    if args.image_size:
        overrides["image_size"] = args.image_size
    state_dict = weights.load_state_dict(args.input)
    variables = weights.convert(args.name, state_dict, source=args.source, **overrides)
    size = overrides.pop("image_size", info.resolution)
    classes = _num_classes(args.name, variables, size, overrides)
    if args.num_classes and args.num_classes != classes:
        # A new head: every other array is kept, the classifier initialised afresh.
        model, size = build_model(
            args.name, num_classes=args.num_classes, image_size=size, model_args=overrides
        )
        task = tasks.for_model(args.name, image_size=size, num_classes=args.num_classes)
        inputs = task.model_inputs(task.example_batch(1))
        fresh = init_variables(model, jax.random.key(args.seed), inputs)
        variables, report = merge_matching(fresh, variables)
        report.source = str(args.input)
        for line in report.lines():
            print(line, file=sys.stderr)
        classes = args.num_classes
    header = {
        "model": args.name,
        "task": info.task,
        "num_classes": classes,
        "class_names": None,
        "image_size": size,
        "model_args": overrides,
        "dtype": "float32",
        "source": args.source,
        "converted_from": str(args.input),
        "epoch": 0,
        "batch": 0,
    }
    out = ckpt.save_variables(args.output, variables, header)
    print(f"wrote {out} ({args.name}, {classes} classes, from {args.source})", file=sys.stderr)
    return 0


def _num_classes(name: str, variables: dict[str, Any], size: int, model_args: dict) -> int:
    """The number of classes of converted ``variables``: read from the arrays whose shape depends
    on ``num_classes`` (found by building the model abstractly for 1 and for 2 classes)."""
    from flax import traverse_util

    from jaxvision.analysis import abstract_variables
    from jaxvision.registry import build_model

    shapes = []
    for k in (1, 2):
        model, _ = build_model(name, num_classes=k, image_size=size, model_args=model_args)
        shapes.append(traverse_util.flatten_dict(abstract_variables(model, size)["params"]))
    got = traverse_util.flatten_dict(variables["params"])
    for path, leaf in shapes[0].items():
        if leaf.shape != shapes[1][path].shape and path in got:
            axis = next(
                i
                for i, (a, b) in enumerate(zip(leaf.shape, shapes[1][path].shape, strict=True))
                if a != b
            )
            return int(got[path].shape[axis])
    raise CLIError(f"could not find the classifier of {name} in the converted weights")


def cmd_bench(args: argparse.Namespace) -> int:
    from jaxvision.bench import main as bench_main

    return bench_main(args)


# ------------------------------------------------------------------------------------- parser


NO_CACHE_HELP = (
    "do not use the persistent compilation cache (also JAXVISION_COMPILATION_CACHE=0); it is on "
    "by default for the commands that compile, in $JAXVISION_CACHE_DIR or ~/.cache/jaxvision/xla"
)


def _cache_option(parser: argparse.ArgumentParser, *, top_level: bool = False) -> None:
    """``--no-compilation-cache``, accepted before the command name and after it."""
    parser.add_argument(
        "--no-compilation-cache",
        action="store_true",
        # A sub-command's default would overwrite the value given before the command name.
        default=False if top_level else argparse.SUPPRESS,
        help=NO_CACHE_HELP,
    )


def cmd_omnivec(args: argparse.Namespace) -> int:
    from jaxvision.train.omnivec import main as omnivec_main

    return omnivec_main(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jaxvision",
        description="Landmark vision architectures in JAX/Flax: list, inspect, train, evaluate, "
        "predict, convert reference weights, benchmark.",
    )
    _cache_option(p, top_level=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    m = sub.add_parser("models", help="table of every registered model")
    m.add_argument("--family", help="only this family (efficientnet, vit, yolov8, omnivec)")
    m.add_argument("--no-count", action="store_true", help="skip counting parameters (faster)")
    m.set_defaults(fn=cmd_models)

    s = sub.add_parser("summary", help="per-layer table, parameter total and FLOPs of one model")
    s.add_argument("name")
    s.add_argument("--image-size", type=int, help="input resolution (default: the model's)")
    s.add_argument(
        "--num-classes", type=int, help="default: the model's (1000 ImageNet, 80 COCO detection)"
    )
    s.add_argument("--depth", type=int, default=1, help="module nesting levels to list (default 1)")
    s.add_argument("--model-arg", action="append", metavar="KEY=VALUE")
    _cache_option(s)
    s.set_defaults(compilation_cache=True, fn=cmd_summary)

    t = sub.add_parser("train", help="train a model; last stdout line is a JSON result")
    t.add_argument("name")
    t.add_argument(
        "--data",
        help="classification: digits (default) | folder:PATH | cifar10:PATH; detection and "
        "segmentation: shapes (default) | yolo:PATH/data.yaml",
    )
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=64, help="global batch size (default 64)")
    t.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    t.add_argument("--optimizer", choices=("adamw", "sgd", "rmsprop"), default="adamw")
    t.add_argument("--weight-decay", type=float, default=0.05)
    t.add_argument("--momentum", type=float, default=0.9, help="for sgd and rmsprop")
    t.add_argument("--nesterov", action="store_true", help="Nesterov momentum (sgd)")
    t.add_argument("--warmup-epochs", type=float, default=1.0)
    t.add_argument(
        "--label-smoothing", type=float, help="classification: label smoothing (default 0.1)"
    )
    t.add_argument(
        "--clip-norm", type=float, default=1.0, help="global gradient-norm clip; 0 disables"
    )
    t.add_argument("--ema-decay", type=float, default=0.0, help="EMA of the parameters (0 = off)")
    t.add_argument("--image-size", type=int, help="input resolution (default: the model's)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--output-dir", help="metrics.jsonl, checkpoints/ and curves.png go here")
    t.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in --output-dir"
    )
    t.add_argument(
        "--init-from",
        metavar="PATH",
        help="fine-tune: start from the parameters of this checkpoint (a .jvc from convert, a "
        "training checkpoint or run folder) whose names and shapes match; the rest (e.g. a head "
        "for another number of classes) is initialised afresh. Both lists are printed",
    )
    t.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="STEPS",
        help="also checkpoint every STEPS steps inside an epoch",
    )
    t.add_argument(
        "--model-arg",
        action="append",
        metavar="KEY=VALUE",
        help="override a model field, e.g. patch_size=4 (repeatable)",
    )
    t.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="compute dtype; parameters, statistics and the loss stay float32",
    )
    t.add_argument(
        "--augment",
        choices=("none", "crop", "crop-flip"),
        help="train augmentation (default: crop for digits, crop-flip otherwise)",
    )
    t.add_argument(
        "--crop-min-scale",
        type=float,
        help="smallest area fraction of a random resized crop "
        "(default 0.7 for digits, 0.08 otherwise)",
    )
    t.add_argument(
        "--skip-bad-images", action="store_true", help="leave undecodable images out (counted)"
    )
    t.add_argument(
        "--fsdp", action="store_true", help="shard parameters and optimizer state over devices"
    )
    t.add_argument(
        "--distributed",
        action="store_true",
        help="multi-host: jax.distributed.initialize from JAX_COORDINATOR_ADDRESS, "
        "JAX_NUM_PROCESSES, JAX_PROCESS_ID",
    )
    t.add_argument("--max-steps", type=int, help="stop after this many steps (smoke tests)")
    t.add_argument(
        "--log-every",
        type=int,
        default=10,
        metavar="STEPS",
        help="copy the running metrics to the host (progress bar, NaN check) every STEPS steps",
    )
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    _cache_option(t)
    t.set_defaults(compilation_cache=True, fn=cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint; prints the same JSON line as train")
    e.add_argument("name")
    e.add_argument(
        "--checkpoint", required=True, help="checkpoint file, checkpoints folder or run folder"
    )
    e.add_argument(
        "--data", help="as for train (default: the checkpoint's training data, else digits/shapes)"
    )
    e.add_argument("--split", choices=("train", "test"), default="test")
    e.add_argument("--batch-size", type=int, default=128)
    e.add_argument("--ema", action="store_true", help="evaluate the EMA parameters")
    e.add_argument("--skip-bad-images", action="store_true")
    e.add_argument("--no-progress", action="store_true")
    _cache_option(e)
    e.set_defaults(compilation_cache=True, fn=cmd_eval)

    r = sub.add_parser(
        "predict",
        help="classifiers: top-5 classes with probabilities; detectors: boxes (and masks) drawn "
        "on each image and one JSON line per image",
    )
    r.add_argument("name")
    r.add_argument("images", nargs="+", metavar="IMAGE")
    r.add_argument("--checkpoint", required=True)
    r.add_argument("--top-k", type=int, default=5)
    r.add_argument("--ema", action="store_true")
    r.add_argument(
        "--no-crop", action="store_true", help="resize the whole image instead of centre-cropping"
    )
    r.add_argument("--conf", type=float, default=0.25, help="detection: confidence threshold")
    r.add_argument("--iou", type=float, default=0.7, help="detection: NMS IoU threshold")
    r.add_argument(
        "--save-dir", default="runs/predict", help="detection: where the drawn pictures go"
    )
    _cache_option(r)
    r.set_defaults(compilation_cache=True, fn=cmd_predict)

    d = sub.add_parser("data", help="export a bundled data set to disk (the YOLO layout)")
    d.add_argument("dataset", choices=("shapes",), help="the generated shapes data set")
    d.add_argument("--output", required=True, help="folder for images/, labels/ and data.yaml")
    d.add_argument("--image-size", type=int, default=128, help="image side in pixels")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument(
        "--segments", action="store_true", help="write polygon (segmentation) labels, not boxes"
    )
    d.set_defaults(fn=cmd_data)

    v = sub.add_parser(
        "env", help="versions, devices, memory allocator and cache folder (for bug reports)"
    )
    v.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    v.set_defaults(fn=cmd_env)

    c = sub.add_parser("convert", help="convert a timm / torchvision / ultralytics checkpoint")
    c.add_argument("name")
    c.add_argument("--input", required=True, help=".safetensors, .pth, .pt or .bin file")
    c.add_argument("--source", required=True, choices=("timm", "torchvision", "ultralytics"))
    c.add_argument("--output", required=True, help="jaxvision weights file to write (.jvc)")
    c.add_argument(
        "--image-size", type=int, help="target resolution (ViT position embeddings are resized)"
    )
    c.add_argument("--model-arg", action="append", metavar="KEY=VALUE")
    c.add_argument(
        "--num-classes",
        type=int,
        help="give the model a new classifier for this many classes (initialised afresh, seed "
        "--seed); every other array is converted",
    )
    c.add_argument("--seed", type=int, default=0, help="for a new classifier (default 0)")
    _cache_option(c)
    c.set_defaults(compilation_cache=True, fn=cmd_convert)

    b = sub.add_parser(
        "bench", help="compile time, throughput, memory, FLOPs, utilisation (vs PyTorch)"
    )
    from jaxvision.bench import add_arguments

    add_arguments(b)
    _cache_option(b)
    b.set_defaults(fn=cmd_bench)

    o = sub.add_parser(
        "omnivec",
        help="OmniVec: masked pre-training, sequential (or all-at-once) training of its tasks, "
        "per-task evaluation",
    )
    from jaxvision.train.omnivec import add_arguments as omnivec_arguments

    omnivec_arguments(o)
    _cache_option(o)
    o.set_defaults(compilation_cache=True, fn=cmd_omnivec)
    return p


def start_compilation_cache(args: argparse.Namespace) -> None:
    """Before anything compiles: the persistent compilation cache on for the commands that
    compile (bench only with ``--compilation-cache``), off with ``--no-compilation-cache``."""
    from jaxvision import compilation_cache

    if args.no_compilation_cache:
        compilation_cache.disable()
    elif getattr(args, "compilation_cache", False):
        compilation_cache.enable()


def _show_warning(message, category, filename, lineno, file=None, line=None, *, other) -> None:
    """jaxvision's own warnings as one ``jaxvision: warning: ...`` line on stderr (no source
    file and line: they are for users, not about the code); any other as ``other`` shows it."""
    if issubclass(category, JaxvisionWarning):
        print(f"jaxvision: warning: {message}", file=file or sys.stderr, flush=True)
    else:
        other(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    """The command: ``argv`` (default ``sys.argv[1:]``) parsed and run; the exit status.

    Run as a program (``argv`` None), it first restarts itself once under tcmalloc where the
    system has it (:mod:`jaxvision.allocator`; ``JAXVISION_ALLOCATOR=system`` switches that off).
    """
    if argv is None:
        from jaxvision.allocator import restart_with_tcmalloc

        restart_with_tcmalloc()
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = functools.partial(_show_warning, other=warnings.showwarning)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """The parsed command run; user errors and a diverged loss as one line and an exit status."""
    start_compilation_cache(args)
    from jaxvision.train.loop import NonFiniteLossError

    try:
        return int(args.fn(args) or 0)
    except NonFiniteLossError as e:
        print(f"jaxvision: error: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except UserError as e:
        if os.environ.get("JAXVISION_DEBUG"):
            raise
        msg = str(e).strip().splitlines()
        print(f"jaxvision: error: {msg[0] if msg else e.__class__.__name__}", file=sys.stderr)
        for line in msg[1:MAX_ERROR_LINES]:
            print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("jaxvision: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["build_parser", "main"]

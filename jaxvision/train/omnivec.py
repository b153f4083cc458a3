"""OmniVec's training schedules, each a sequence of ordinary runs of the one engine.

* :func:`pretrain` - masked pre-training of the encoders and the shared backbone on several
  modalities at once, the batches alternating between modalities (one :func:`fit`);
* :func:`train_sequential` - the paper's sequential training: one stage per task in a
  configurable order; each stage is a :func:`fit` that starts from the previous stage's
  checkpoint (``init_from``) and trains only the backbone, that task's encoder and its head (the
  task's :meth:`~jaxvision.tasks.omnivec.OmniVecTask.trainable`; ``train_parts`` to choose
  otherwise); every other parameter is frozen bit for bit. ``backbone_lr_scale`` (a task option)
  slows the backbone in every stage. At the end every task is measured again, and what each
  earlier task lost ("forgetting") is reported;
* :func:`train_all_at_once` - the documented alternative: every task in one run, a task sampled
  per step (PolyViT's schedule), to compare with the sequential one.

``jaxvision omnivec pretrain | finetune | eval`` (:func:`add_arguments`, :func:`main`) runs them
from the command line; each prints per-task metrics and a final JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import optax

from jaxvision.constants import MODALITIES
from jaxvision.errors import ConfigError
from jaxvision.report import print_json_line
from jaxvision.tasks.omnivec import parse_modalities
from jaxvision.train.loop import TrainConfig, evaluate, fit


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def task_metric(modality: str, metrics: dict[str, float]) -> float:
    """The headline figure of a task: top-1 for classification, ROUGE-L F1 for summarisation."""
    return metrics["text_rougeL"] if modality == "text" else metrics[f"{modality}_top1"]


def _with(config: TrainConfig, **task_args: Any) -> dict[str, Any]:
    return {**(config.task_args or {}), **task_args}


def pretrain(config: TrainConfig, modalities: Any = MODALITIES) -> dict[str, Any]:
    """Masked pre-training on ``modalities`` (batches alternate between them); returns
    :func:`fit`'s result, whose ``"initial"`` holds the held-out reconstruction losses before
    training."""
    config = dataclasses.replace(
        config,
        eval_first=True,
        task_args=_with(
            config, objective="pretrain", modalities=",".join(parse_modalities(modalities))
        ),
    )
    return fit(config)


def measure(config: TrainConfig, state: Any = None, *, params: Any = None) -> dict[str, float]:
    """Held-out metrics on the task and data ``config`` describes, of a train ``state`` or of the
    model of ``config`` with ``params`` (e.g. a checkpoint's). The metrics before any training
    come from ``fit`` itself (``TrainConfig.eval_first``)."""
    from jaxvision import tasks
    from jaxvision.data import BatchLoader
    from jaxvision.registry import build_model, model_info
    from jaxvision.train.state import TrainState

    if (state is None) == (params is None):
        raise ValueError("measure() takes a train state or parameters, exactly one of them")
    size = config.image_size or model_info(config.model).resolution
    task, _, held_out = tasks.prepare(config, size)
    if state is None:
        model, _ = build_model(
            config.model,
            image_size=config.image_size,
            model_args={**task.model_args(), **config.model_args},
        )
        state = TrainState.create(apply_fn=model.apply, params=params, tx=optax.identity())
    loader = BatchLoader(held_out)
    try:
        return evaluate(
            state, task.for_evaluation(), loader, config.eval_batch_size or config.batch_size
        )
    finally:
        loader.close()


def train_sequential(
    config: TrainConfig,
    order: Any = MODALITIES,
    *,
    init_from: str | None = None,
    output_dir: str | Path,
    epochs: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One stage per task in ``order``, each starting from the previous stage (``epochs``:
    per-task epochs where they differ from ``config.epochs``); returns per-task
    metrics right after its stage (``"after_stage"``), at the end (``"final"``), the
    ``"forgetting"`` (after its stage minus at the end, for the headline metric), the full
    metrics, and per stage (``"stages"``) its seconds, metrics and output folder
    (``"checkpoint"``: an ``--init-from`` / ``eval`` source for the model as it was after that
    stage); ``"checkpoint"`` at the top level is the last stage's."""
    order = list(dict.fromkeys(order.split(",") if isinstance(order, str) else order))
    parse_modalities(order)  # checks the names
    output_dir = Path(output_dir)
    previous = init_from or config.init_from
    after: dict[str, float] = {}
    stages = []
    result: dict[str, Any] = {}
    for k, modality in enumerate(order):
        stage_dir = output_dir / f"stage{k + 1}_{modality}"
        stage = dataclasses.replace(
            config,
            epochs=(epochs or {}).get(modality, config.epochs),
            output_dir=str(stage_dir),
            init_from=previous,
            resume=False,
            task_args=_with(config, objective="tasks", modalities=modality),
        )
        _log(f"stage {k + 1}/{len(order)}: {modality}")
        result = fit(stage)
        after[modality] = task_metric(modality, result)
        stages.append(
            {
                "modality": modality,
                "seconds": result["seconds"],
                "metrics": _plain(result),
                "checkpoint": str(stage_dir),  # this stage's run: checkpoints/, metrics.jsonl
            }
        )
        previous = str(stage_dir)
    final_config = dataclasses.replace(
        config, task_args=_with(config, objective="tasks", modalities=",".join(order))
    )
    final_metrics = measure(final_config, result["state"])
    final = {m: task_metric(m, final_metrics) for m in order}
    return {
        "order": order,
        "after_stage": after,
        "final": final,
        "forgetting": {m: after[m] - final[m] for m in order},
        "final_metrics": final_metrics,
        "stages": stages,
        "state": result["state"],
        "checkpoint": previous,
    }


def train_all_at_once(
    config: TrainConfig, modalities: Any = MODALITIES, *, init_from: str | None = None
) -> dict[str, Any]:
    """Every task in one run, the batches in random order (a task sampled per step)."""
    config = dataclasses.replace(
        config,
        init_from=init_from or config.init_from,
        task_args=_with(
            config,
            objective="tasks",
            modalities=",".join(parse_modalities(modalities)),
            schedule="shuffle",
        ),
    )
    result = fit(config)
    names = parse_modalities(modalities)
    return {**result, "final": {m: task_metric(m, result) for m in names}}


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k not in ("state", "initial")}


# ------------------------------------------------------------------------------ command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="omnivec_command", required=True, metavar="STEP")

    def common(p: argparse.ArgumentParser, *, epochs: int, lr: float) -> None:
        p.add_argument("--model", default="omnivec_tiny", help="default omnivec_tiny")
        p.add_argument("--epochs", type=int, default=epochs, help="per run (per task stage)")
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--lr", type=float, default=lr)
        p.add_argument("--weight-decay", type=float, default=0.05)
        p.add_argument("--warmup-epochs", type=float, default=0.5)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--data-seed", type=int, default=0, help="seed of the generated data")
        p.add_argument("--output-dir", required=True)
        p.add_argument("--model-arg", action="append", metavar="KEY=VALUE")
        for m in MODALITIES:
            p.add_argument(
                f"--{m}-data",
                default="synthetic",
                metavar="SPEC",
                help=f"{m} data: synthetic (default) or a folder (README: OmniVec data formats)",
            )
        p.add_argument("--no-progress", action="store_true")
        p.add_argument(
            "--max-steps", type=int, help="stop each run after this many steps (smoke tests)"
        )

    p = sub.add_parser("pretrain", help="masked pre-training, modalities alternating per step")
    common(p, epochs=6, lr=1e-3)
    p.add_argument("--modalities", default=",".join(MODALITIES))

    f = sub.add_parser(
        "finetune", help="train the tasks one after another (default) or all at once"
    )
    common(f, epochs=6, lr=1e-3)
    f.add_argument("--order", default=",".join(MODALITIES), help="the tasks, in order")
    f.add_argument(
        "--schedule",
        choices=("sequential", "all-at-once"),
        default="sequential",
        help="one stage per task (the paper) or every task in one run, a task per step (PolyViT)",
    )
    f.add_argument(
        "--task-epochs",
        metavar="TASK=N,...",
        help="sequential: epochs of particular stages, e.g. text=10 (the others: --epochs)",
    )
    f.add_argument("--init-from", metavar="PATH", help="a pre-training run or checkpoint")
    f.add_argument(
        "--train-parts",
        help="comma-separated top-level parameter collections each stage trains (default: "
        "backbone,<task>_encoder,<task>_head)",
    )
    f.add_argument(
        "--labels-per-class", type=int, help="keep only this many training labels per class"
    )
    f.add_argument(
        "--backbone-lr-scale",
        type=float,
        default=1.0,
        help="the backbone's learning rate as a fraction of --lr in every stage (a slower "
        "backbone forgets earlier tasks less; default 1)",
    )

    e = sub.add_parser("eval", help="per-task metrics of a checkpoint")
    e.add_argument("checkpoint", help="checkpoint, checkpoints folder or run folder")
    e.add_argument("--modalities", default=",".join(MODALITIES))
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--data-seed", type=int, default=0)
    for m in MODALITIES:
        e.add_argument(f"--{m}-data", default="synthetic", metavar="SPEC")


def parse_task_epochs(spec: str | None) -> dict[str, int]:
    """``"text=10,points=6"`` -> ``{"text": 10, "points": 6}``."""
    out = {}
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit() or int(value) < 1:
            raise ConfigError(f"--task-epochs expects TASK=N with N >= 1, got {item!r}")
        out[name.strip()] = int(value)
    parse_modalities(list(out) or None)
    return out


def _config(args: argparse.Namespace, **task_args: Any) -> TrainConfig:
    from jaxvision.registry import parse_model_args

    data = {f"{m}_data": getattr(args, f"{m}_data") for m in MODALITIES}
    data = {k: v for k, v in data.items() if v != "synthetic"}
    return TrainConfig(
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        seed=args.seed,
        output_dir=args.output_dir,
        model_args=parse_model_args(args.model_arg),
        task_args={"data_seed": args.data_seed, **data, **task_args},
        progress=not args.no_progress,
        keep_checkpoints=1,
        max_steps=args.max_steps,
    )


def _report(title: str, metrics: dict[str, float]) -> None:
    _log(f"{title}: " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


def main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    if args.omnivec_command == "pretrain":
        config = _config(args)
        result = pretrain(config, args.modalities)
        out = {"start": result["initial"], "end": _plain(result)}
    elif args.omnivec_command == "finetune":
        extra = {}
        if args.train_parts:
            extra["train_parts"] = args.train_parts
        if args.labels_per_class:
            extra["labels_per_class"] = args.labels_per_class
        if args.backbone_lr_scale != 1.0:
            extra["backbone_lr_scale"] = args.backbone_lr_scale
        config = _config(args, **extra)
        if args.schedule == "sequential":
            result = train_sequential(
                config,
                args.order,
                init_from=args.init_from,
                output_dir=args.output_dir,
                epochs=parse_task_epochs(args.task_epochs),
            )
            for name in ("after_stage", "final", "forgetting"):
                _report(name.replace("_", " "), result[name])
            out = {k: v for k, v in result.items() if k not in ("state", "stages")}
            out["stage_checkpoints"] = {s["modality"]: s["checkpoint"] for s in result["stages"]}
        else:
            result = train_all_at_once(config, args.order, init_from=args.init_from)
            _report("final", result["final"])
            out = _plain(result)
    else:
        out = evaluate_checkpoint(args)
        _report("eval", out)
    out = {"command": f"omnivec {args.omnivec_command}", **out}
    out["seconds"] = round(time.perf_counter() - t0, 2)
    print_json_line(out)
    return 0


def evaluate_checkpoint(args: argparse.Namespace) -> dict[str, float]:
    """Every task of ``--modalities`` measured on its held-out split with a checkpoint."""
    from jaxvision.train import checkpoint as ckpt

    header, state = ckpt.load_checkpoint(ckpt.resolve_checkpoint(args.checkpoint))
    if header.get("task") != "omnivec":
        raise ConfigError(f"{args.checkpoint} is not an OmniVec checkpoint")
    data = {f"{m}_data": getattr(args, f"{m}_data") for m in MODALITIES}
    config = TrainConfig(
        model=header["model"],
        batch_size=args.batch_size,
        model_args=header.get("model_args") or {},
        image_size=header.get("image_size"),
        task_args={
            "objective": header.get("objective", "tasks"),
            "modalities": args.modalities,
            "data_seed": args.data_seed,
            **{k: v for k, v in data.items() if v != "synthetic"},
        },
    )
    return measure(config, params=state["params"])


__all__ = ["measure", "pretrain", "task_metric", "train_all_at_once", "train_sequential"]

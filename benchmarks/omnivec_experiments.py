"""OmniVec experiments on omnivec_tiny and the generated data, all through the library's API.

    python benchmarks/omnivec_experiments.py demo      [--epochs-pretrain 4 --epochs-task 3]
    python benchmarks/omnivec_experiments.py compare   [--epochs 6]
    python benchmarks/omnivec_experiments.py transfer  [--seeds 0 1 2 --labels-per-class 10]

* ``demo``: masked pre-training on all five modalities (held-out reconstruction loss per modality
  before and after), then sequential training image -> video -> audio -> points -> text: each
  task's metric right after its stage, at the end, and what it lost in between (forgetting);
  the wall-clock time of the whole run.
* ``compare``: from the same pre-trained checkpoint, sequential training against all tasks at
  once (a task sampled per step), with the same number of steps per task.
* ``transfer``: a low-data audio task (``--labels-per-class`` labels per class) fine-tuned after
  masked pre-training on the OTHER four modalities, against the same fine-tuning from scratch,
  over several seeds (mean and spread).

Each writes one JSON file to ``benchmarks/results/`` and prints a Markdown table. Chance levels:
1/classes for the classification tasks; for summarisation the ROUGE-L of two baselines that
:func:`jaxvision.data.modalities.text_baselines` computes (the first words of the document, and
the summary of a random other document).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

from jaxvision.constants import MODALITIES
from jaxvision.data.modalities import synthetic, text_baselines
from jaxvision.train.loop import TrainConfig
from jaxvision.train.omnivec import (
    parse_task_epochs,
    pretrain,
    train_all_at_once,
    train_sequential,
)

RESULTS = Path(__file__).parent / "results"
CHANCE = {"image": 1 / 10, "video": 1 / 6, "audio": 1 / 6, "points": 1 / 7}  # 1 / classes


def _config(args: argparse.Namespace, output_dir: Path, epochs: int, seed: int = 0) -> TrainConfig:
    return TrainConfig(
        model="omnivec_tiny",
        epochs=epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=0.05,
        warmup_epochs=0.5,
        seed=seed,
        output_dir=str(output_dir),
        keep_checkpoints=1,
        progress=False,
        task_args={"backbone_lr_scale": args.backbone_lr_scale},
    )


def chance() -> dict[str, float]:
    baselines = text_baselines(synthetic("text", "val"))
    return {
        **CHANCE,
        "text": max(baselines.values()),
        **{f"text_{k}": v for k, v in baselines.items()},
    }


def _load_average() -> float:
    return round(os.getloadavg()[0], 2)


def demo(args: argparse.Namespace) -> dict:
    root = Path(args.work) / "demo"
    t0 = time.perf_counter()
    load = _load_average()
    pre = pretrain(_config(args, root / "pretrain", args.epochs_pretrain), MODALITIES)
    t_pre = time.perf_counter() - t0
    seq = train_sequential(
        _config(args, root / "sequential", args.epochs_task),
        args.order,
        init_from=str(root / "pretrain"),
        output_dir=root / "sequential",
        epochs=parse_task_epochs(args.task_epochs),
    )
    total = time.perf_counter() - t0
    pre_losses = {m: (pre["initial"][f"{m}_loss"], pre[f"{m}_loss"]) for m in MODALITIES}
    return {
        "experiment": "demo",
        "load_average_at_start": load,
        "load_average_at_end": _load_average(),
        "seconds_pretrain": round(t_pre, 1),
        "seconds_total": round(total, 1),
        "pretrain_loss_start_end": pre_losses,
        "after_stage": seq["after_stage"],
        "final": seq["final"],
        "forgetting": seq["forgetting"],
        "stage_seconds": {s["modality"]: s["seconds"] for s in seq["stages"]},
        "chance": chance(),
        "settings": vars(args),
    }


def compare(args: argparse.Namespace) -> dict:
    root = Path(args.work) / "demo"
    if not (root / "pretrain").exists():
        raise SystemExit("run the demo first: compare starts from its pre-trained checkpoint")
    t0 = time.perf_counter()
    load = _load_average()
    together = train_all_at_once(
        _config(args, Path(args.work) / "all_at_once", args.epochs_task),
        MODALITIES,
        init_from=str(root / "pretrain"),
    )
    return {
        "experiment": "compare",
        "all_at_once": together["final"],
        "seconds": round(time.perf_counter() - t0, 1),
        "load_average_at_start": load,
        "load_average_at_end": _load_average(),
        "settings": vars(args),
    }


def transfer(args: argparse.Namespace) -> dict:
    root = Path(args.work) / "transfer"
    others = [m for m in MODALITIES if m != "audio"]
    pre_dir = root / "pretrain_without_audio"
    if not pre_dir.exists():
        pretrain(_config(args, pre_dir, args.epochs_pretrain), others)
    runs = {"pretrained": [], "scratch": []}
    for seed in args.seeds:
        for name, init in (("pretrained", str(pre_dir)), ("scratch", None)):
            config = _config(args, root / f"{name}_seed{seed}", args.epochs_transfer, seed=seed)
            config = dataclasses.replace(config, batch_size=args.transfer_batch_size)
            config = dataclasses.replace(
                config,
                init_from=init,
                task_args={
                    "objective": "tasks",
                    "modalities": "audio",
                    "labels_per_class": args.labels_per_class,
                },
            )
            from jaxvision.train.loop import fit

            result = fit(config)
            runs[name].append(result["audio_top1"])
            print(f"seed {seed} {name}: audio top-1 {result['audio_top1']:.4f}", flush=True)
    summary = {
        name: {
            "mean": statistics.mean(v),
            "stdev": statistics.stdev(v) if len(v) > 1 else 0.0,
            "runs": v,
        }
        for name, v in runs.items()
    }
    return {"experiment": "transfer", **summary, "settings": vars(args), "chance": CHANCE["audio"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=("demo", "compare", "transfer"))
    parser.add_argument("--work", default="runs/omnivec_experiments", help="run folders go here")
    parser.add_argument("--epochs-pretrain", type=int, default=4)
    parser.add_argument("--epochs-task", type=int, default=3)
    parser.add_argument("--task-epochs", default="image=10,text=10", help="as the CLI's")
    parser.add_argument("--order", default="text,image,video,audio,points")
    parser.add_argument("--backbone-lr-scale", type=float, default=1.0)
    parser.add_argument("--epochs-transfer", type=int, default=30)
    parser.add_argument("--labels-per-class", type=int, default=10)
    parser.add_argument("--transfer-batch-size", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    result = {"demo": demo, "compare": compare, "transfer": transfer}[args.experiment](args)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"omnivec_{args.experiment}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

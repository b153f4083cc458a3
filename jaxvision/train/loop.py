"""The training loop: ``fit`` trains a registered model on a data set; ``evaluate`` measures one.

Data flows one way: data set -> batches -> jitted ``train_step`` -> metrics / checkpoints. Every
epoch ends with an evaluation on the held-out split, a row in ``metrics.jsonl`` and a checkpoint;
``checkpoint_every`` adds checkpoints inside an epoch. A run resumed from any checkpoint ends with
the same parameters and metrics as an uninterrupted one: the data order, the augmentation and the
dropout keys are all functions of (seed, epoch, step), never of wall-clock or thread timing.

Devices: batches are sharded along the "data" axis of a mesh of all devices and the state is
replicated (or, with ``fsdp=True``, large parameters and their optimizer state are sharded too);
XLA inserts the collectives, so BatchNorm statistics and gradients are computed over the global
batch exactly as on one device.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.data import BatchLoader, DatasetError, load_dataset, steps_per_epoch
from jaxvision.registry import create_model, model_info
from jaxvision.train import checkpoint as ckpt
from jaxvision.train import distributed
from jaxvision.train.metrics import add_sums, summarize
from jaxvision.train.optim import make_optimizer, warmup_cosine_schedule
from jaxvision.train.state import TrainState, create_train_state
from jaxvision.train.steps import eval_step, train_step


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


@dataclasses.dataclass
class TrainConfig:
    model: str
    data: str = "digits"
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int | None = None
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    clip_norm: float | None = 1.0
    ema_decay: float = 0.0
    image_size: int | None = None
    seed: int = 0
    output_dir: str | None = None
    resume: bool = False
    model_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    dtype: str = "float32"
    augment: str | None = None  # None: "crop" for digits (not mirror-symmetric), else "crop-flip"
    # Smallest area fraction of a random resized crop; None: 0.7 for digits (a tighter crop cuts
    # strokes off and changes the digit), 0.08 (Inception / torchvision) otherwise.
    crop_min_scale: float | None = None
    checkpoint_every: int = 0  # steps; 0 = only at the end of each epoch
    keep_checkpoints: int = 3
    skip_bad_images: bool = False
    fsdp: bool = False
    progress: bool = True
    max_steps: int | None = None  # stop early after this many steps (tests, smoke runs)

    def validate(self) -> None:
        for field in ("epochs", "batch_size"):
            if getattr(self, field) < 1:
                raise ValueError(
                    f"--{field.replace('_', '-')} must be >= 1, got {getattr(self, field)}"
                )
        if self.lr <= 0 or not math.isfinite(self.lr):
            raise ValueError(f"--lr must be a positive number, got {self.lr}")
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"--image-size must be >= 8, got {self.image_size}")
        if self.crop_min_scale is not None and not 0 < self.crop_min_scale <= 1:
            raise ValueError(f"--crop-min-scale must be in (0, 1], got {self.crop_min_scale}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")
        if self.resume and not self.output_dir:
            raise ValueError("--resume needs --output-dir (the run to continue)")


def build_model(
    name: str, num_classes: int, image_size: int | None, model_args: dict[str, Any], dtype: str
):
    """``create_model`` plus the image size and compute dtype, for models that take them."""
    overrides = dict(model_args)
    if dtype == "bfloat16":
        overrides["dtype"] = jnp.bfloat16
    model = create_model(name, num_classes=num_classes, **overrides)
    size = image_size or model_info(name).resolution
    fields = {f.name for f in dataclasses.fields(model)}
    if "image_size" in fields and "image_size" not in model_args:
        model = model.clone(image_size=size)
    return model, size


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


def run_header(config: TrainConfig, image_size: int, class_names: list[str]) -> dict[str, Any]:
    return {
        "model": config.model,
        "num_classes": len(class_names),
        "class_names": class_names,
        "image_size": image_size,
        "model_args": config.model_args,
        "dtype": config.dtype,
        "config": {k: _jsonable(v) for k, v in dataclasses.asdict(config).items()},
    }


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        disable=not enabled,
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
    )


def evaluate(
    state: TrainState,
    loader: BatchLoader,
    batch_size: int,
    *,
    mesh: jax.sharding.Mesh | None = None,
    eval_fn: Any = None,
    progress: bool = False,
) -> dict[str, float]:
    """Loss, top-1 and top-5 over every example of ``loader``'s data set (none dropped)."""
    mesh = mesh or distributed.make_mesh()
    eval_fn = eval_fn or jax.jit(eval_step)
    sums = None
    n = len(loader.dataset)
    shard = distributed.process_shard()
    with _progress(math.ceil(n / batch_size), 0, "eval", progress) as bar:
        for batch in loader.eval_batches(batch_size, shard=shard):
            batch = distributed.shard_batch(batch, mesh)
            sums = add_sums(sums, jax.device_get(eval_fn(state, batch)))
            bar.update(1)
    return summarize(sums)


def fit(config: TrainConfig) -> dict[str, Any]:
    """Train ``config.model`` on ``config.data``; returns the final held-out metrics."""
    t0 = time.perf_counter()
    config.validate()
    train_ds = load_dataset(config.data, "train", skip_bad_images=config.skip_bad_images)
    test_ds = load_dataset(config.data, "test", skip_bad_images=config.skip_bad_images)
    for ds in (train_ds, test_ds):
        if getattr(ds, "skipped", 0):
            _log(f"skipped {ds.skipped} undecodable image(s) in {ds.name}")
    info = model_info(config.model)
    model, size = build_model(
        config.model, train_ds.num_classes, config.image_size, config.model_args, config.dtype
    )
    mesh = distributed.make_mesh()
    global_batch = config.batch_size
    distributed.check_batch_size(global_batch, mesh)
    eval_batch = config.eval_batch_size or global_batch
    distributed.check_batch_size(eval_batch, mesh)
    n_steps = steps_per_epoch(len(train_ds), global_batch)
    total_steps = n_steps * config.epochs
    digits = config.data == "digits"
    augment = config.augment or ("crop" if digits else "crop-flip")
    crop_scale = (config.crop_min_scale or (0.7 if digits else 0.08), 1.0)
    common = dict(image_size=size, preprocessing=info.preprocessing)
    train_loader = BatchLoader(train_ds, augment=augment, crop_scale=crop_scale, **common)
    test_loader = BatchLoader(test_ds, augment="none", **common)

    schedule = warmup_cosine_schedule(config.lr, total_steps, int(config.warmup_epochs * n_steps))
    tx = make_optimizer(
        config.optimizer,
        schedule,
        weight_decay=config.weight_decay,
        momentum=config.momentum,
        nesterov=config.nesterov,
        clip_norm=config.clip_norm,
    )
    init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
    state = create_train_state(model, tx, rng=init_rng, image_size=size, ema_decay=config.ema_decay)
    header = run_header(config, size, train_ds.class_names)

    out = Path(config.output_dir) if config.output_dir else None
    ckpt_dir = out / "checkpoints" if out else None
    start_epoch, start_batch, resumed_sums = 0, 0, None
    if config.resume:
        path = ckpt.latest_checkpoint(ckpt_dir)
        if path is None:
            _log(f"no checkpoint in {ckpt_dir}; starting from scratch")
        else:
            state, saved = ckpt.restore_state(path, state, model=config.model)
            start_epoch, start_batch = saved["epoch"], saved["batch"]
            resumed_sums = saved.get("train_sums")
            _log(f"resumed from {path} (epoch {start_epoch + 1}, batch {start_batch})")
    if out:
        out.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(out / "metrics.jsonl", start_epoch)

    state = distributed.place_state(state, mesh, fsdp=config.fsdp)
    step_fn = jax.jit(
        functools.partial(train_step, label_smoothing=config.label_smoothing), donate_argnums=0
    )
    eval_fn = jax.jit(eval_step)

    def save(epoch: int, batch: int, sums: dict[str, float] | None = None) -> None:
        # Inside an epoch the running train-metric sums are saved too, so the epoch's row in
        # metrics.jsonl is the same whether or not the run was interrupted.
        if ckpt_dir is not None and distributed.is_main_process():
            extra = {"epoch": epoch, "batch": batch, "train_sums": sums}
            ckpt.save_checkpoint(ckpt_dir, state, {**header, **extra}, keep=config.keep_checkpoints)

    final: dict[str, Any] = {}
    history = _read_metrics(out / "metrics.jsonl") if out else []
    steps_done = start_epoch * n_steps + start_batch
    shard = distributed.process_shard()
    try:
        for epoch in range(start_epoch, config.epochs):
            first = start_batch if epoch == start_epoch else 0
            sums = resumed_sums if epoch == start_epoch and first else None
            position = first
            with _progress(
                n_steps, first, f"epoch {epoch + 1}/{config.epochs}", config.progress
            ) as bar:
                batches = train_loader.train_epoch(
                    config.seed, epoch, global_batch, first, shard=shard
                )
                for position, batch in enumerate(batches, start=first + 1):
                    batch = distributed.shard_batch(batch, mesh)
                    new_state, metrics = step_fn(state, batch, step_rng)
                    metrics = jax.device_get(metrics)
                    loss = float(metrics["loss_sum"]) / max(float(metrics["count"]), 1.0)
                    if not math.isfinite(loss):
                        raise NonFiniteLossError(
                            f"loss became {loss} at epoch {epoch + 1}, step {position}; stopping "
                            f"(lower --lr or enable --clip-norm); the last good checkpoint is kept"
                        )
                    state = new_state
                    steps_done += 1
                    sums = add_sums(sums, metrics)
                    running = summarize(sums)
                    bar.set_postfix(loss=f"{running['loss']:.3f}", acc=f"{running['top1']:.3f}")
                    bar.update(1)
                    if position < n_steps and (
                        (config.checkpoint_every and position % config.checkpoint_every == 0)
                        or steps_done == config.max_steps
                    ):
                        save(epoch, position, sums)
                    if steps_done == config.max_steps:
                        break
            if position < n_steps:  # stopped inside the epoch by max_steps
                final = evaluate(state, test_loader, eval_batch, mesh=mesh, eval_fn=eval_fn)
                break
            train_metrics = summarize(sums) if sums else {}
            final = evaluate(state, test_loader, eval_batch, mesh=mesh, eval_fn=eval_fn)
            row = {
                "epoch": epoch + 1,
                "step": int(jax.device_get(state.step)),
                "lr": float(schedule(int(jax.device_get(state.step)))),
                **{f"train_{k}": v for k, v in train_metrics.items() if k != "count"},
                **{f"eval_{k}": v for k, v in final.items() if k != "count"},
            }
            history.append(row)
            _log(
                f"epoch {epoch + 1}/{config.epochs}: "
                f"train loss {row.get('train_loss', float('nan')):.4f} "
                f"top1 {row.get('train_top1', float('nan')):.4f} | eval loss {final['loss']:.4f} "
                f"top1 {final['top1']:.4f} top5 {final['top5']:.4f}"
            )
            if out and distributed.is_main_process():
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
            save(epoch + 1, 0)
            if steps_done == config.max_steps:
                break
    finally:
        train_loader.close()
        test_loader.close()
    if not final:  # resumed a finished run: measure it again
        final = evaluate(state, test_loader, eval_batch, mesh=mesh, eval_fn=eval_fn)
    if out and distributed.is_main_process():
        plot_curves(history, out / "curves.png")
    return {
        "model": config.model,
        "top1": final["top1"],
        "top5": final["top5"],
        "loss": final["loss"],
        "epochs": config.epochs,
        "seconds": round(time.perf_counter() - t0, 2),
        "state": state,
    }


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a crash
    return rows


def _truncate_metrics(path: Path, epoch: int) -> None:
    """Keep only rows of epochs completed before ``epoch`` (a resumed run rewrites the rest)."""
    rows = [r for r in _read_metrics(path) if r.get("epoch", 0) <= epoch]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def plot_curves(history: list[dict[str, Any]], path: Path) -> bool:
    """Learning curves (loss and top-1 per epoch) as a PNG, when matplotlib is installed."""
    if not history:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, label in (("train_loss", "train"), ("eval_loss", "held-out")):
        ax1.plot(epochs, [r.get(key, np.nan) for r in history], marker="o", label=label)
    for key, label in (("train_top1", "train"), ("eval_top1", "held-out")):
        ax2.plot(epochs, [r.get(key, np.nan) for r in history], marker="o", label=label)
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax2.set(xlabel="epoch", ylabel="top-1", title="top-1 accuracy", ylim=(0, 1))
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return True


__all__ = ["DatasetError", "NonFiniteLossError", "TrainConfig", "build_model", "evaluate", "fit"]

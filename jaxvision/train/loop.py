"""The training loop: ``fit`` trains a registered model on a task's data; ``evaluate`` measures it.

Data flow: a :class:`~jaxvision.data.Source` of examples -> batches -> the one jitted
``train_step`` -> metric pairs / checkpoints. Every epoch ends with an evaluation on the held-out
split, a row in ``metrics.jsonl`` and a checkpoint; ``checkpoint_every`` adds checkpoints inside
an epoch. A run resumed from any checkpoint ends with the same parameters and metrics as an
uninterrupted one: the data order, the augmentation and the random keys are all functions of
(seed, epoch, step), never of wall-clock or thread timing.

What the loop trains for is a :class:`~jaxvision.tasks.Task`: by default the task the model is
registered with (``jaxvision.tasks.prepare`` builds it and its data from the configuration); any
other task and data can be handed to :func:`fit`. The loop only sees metric pairs by name.

Metrics stay on the device while the steps run (the pairs are summed there) and are copied to the
host every ``log_every`` steps, before a checkpoint and at the end of an epoch, so the host never
waits for the device after each step. A non-finite loss is noticed at those points; it stops the
run before anything after the last good checkpoint is saved.

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
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvision import tasks
from jaxvision.data import BatchLoader, DatasetError, Source
from jaxvision.data.loader import train_steps
from jaxvision.errors import ConfigError, JaxvisionWarning
from jaxvision.registry import build_model
from jaxvision.tasks.base import Task, summarize
from jaxvision.train import checkpoint as ckpt
from jaxvision.train import distributed
from jaxvision.train.finetune import init_from
from jaxvision.train.optim import make_optimizer, warmup_cosine_schedule
from jaxvision.train.state import TrainState, create_train_state, init_variables
from jaxvision.train.steps import eval_step, train_step


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


@dataclasses.dataclass
class TrainConfig:
    model: str
    data: str | None = None  # None: the task's default (digits; shapes for detection)
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int | None = None
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    warmup_epochs: float = 1.0
    clip_norm: float | None = 1.0
    ema_decay: float = 0.0
    image_size: int | None = None
    seed: int = 0
    output_dir: str | None = None
    resume: bool = False
    init_from: str | None = None  # fine-tune: load the matching parameters of this checkpoint
    model_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Options of the model's task, e.g. classification's label_smoothing, augment and
    # crop_min_scale (see jaxvision.tasks.classification.prepare).
    task_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    dtype: str = "float32"
    checkpoint_every: int = 0  # steps; 0 = only at the end of each epoch
    keep_checkpoints: int = 3
    skip_bad_images: bool = False
    fsdp: bool = False
    progress: bool = True
    log_every: int = 10  # steps between copies of the running metrics to the host
    max_steps: int | None = None  # stop early after this many steps (tests, smoke runs)
    eval_first: bool = False  # also measure the held-out metrics before training

    def validate(self) -> None:
        for field in ("epochs", "batch_size", "log_every"):
            if getattr(self, field) < 1:
                raise ConfigError(
                    f"--{field.replace('_', '-')} must be >= 1, got {getattr(self, field)}"
                )
        if self.lr <= 0 or not math.isfinite(self.lr):
            raise ConfigError(f"--lr must be a positive number, got {self.lr}")
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError(f"--image-size must be >= 8, got {self.image_size}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if self.resume and not self.output_dir:
            raise ConfigError("--resume needs --output-dir (the run to continue)")


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


@jax.jit
def _add_pairs(a: Any, b: Any) -> Any:
    return jax.tree.map(jnp.add, a, b)


def _accumulate(sums: Any, metrics: Any) -> Any:
    """Running ``{name: (sum, count)}`` on the device: no copy to the host per step. Batches may
    report different metrics (a run over several kinds of data): the pairs add up by name."""
    if sums is None:
        return metrics
    if sums.keys() == metrics.keys():
        return _add_pairs(sums, metrics)
    common = {k: v for k, v in metrics.items() if k in sums}
    added = _add_pairs({k: sums[k] for k in common}, common)
    return {**sums, **metrics, **added}


def _host_pairs(sums: Any) -> dict[str, list[float]]:
    """The running pairs as host floats (float32 values, exactly as on the device)."""
    return {
        k: [float(np.float32(s)), float(np.float32(c))]
        for k, (s, c) in jax.device_get(sums).items()
    }


def _device_pairs(saved: dict[str, list[float]] | None) -> Any:
    if not saved:
        return None
    return {k: (jnp.float32(s), jnp.float32(c)) for k, (s, c) in saved.items()}


# ------------------------------------------------------------------------------------ evaluation


def evaluate(
    state: TrainState,
    task: Task,
    loader: BatchLoader,
    batch_size: int,
    *,
    mesh: jax.sharding.Mesh | None = None,
    eval_fn: Any = None,
    use_ema: bool = False,
    progress: bool = False,
    evaluator: Any = None,
) -> dict[str, float]:
    """The task's metrics over every example of ``loader``'s source (none dropped, padding never
    counted): the means of its metric pairs, plus its host-side evaluator's results (pass
    ``evaluator`` to keep it, e.g. for per-class figures; default ``task.evaluator()``)."""
    mesh = mesh or distributed.make_mesh()
    eval_fn = eval_fn or jax.jit(functools.partial(eval_step, task=task, use_ema=use_ema))
    evaluator = evaluator if evaluator is not None else task.evaluator()
    sums = None
    n = len(loader.source)
    shard = distributed.process_shard()
    with _progress(math.ceil(n / batch_size), 0, "eval", progress) as bar:
        for batch in loader.eval_batches(batch_size, shard=shard):
            batch = distributed.shard_batch(batch, mesh)
            metrics, predictions = eval_fn(state, batch)
            sums = _accumulate(sums, metrics)
            if evaluator is not None:
                evaluator.update(distributed.to_host(predictions), distributed.to_host(batch))
            bar.update(1)
    result = summarize(jax.device_get(sums))
    if evaluator is not None:
        result.update(evaluator.result())
    return task.ordered(result)


# ------------------------------------------------------------------------------------- set-up


@dataclasses.dataclass
class _Run:
    """Everything ``fit`` sets up once: the model, its data, the jitted steps, where it stands."""

    config: TrainConfig
    task: Task
    train_loader: BatchLoader
    eval_loader: BatchLoader
    state: TrainState
    schedule: Any
    mesh: Any
    step_fn: Any
    eval_fn: Any
    step_rng: jax.Array
    header: dict[str, Any]
    steps_per_epoch: int
    eval_batch: int
    out: Path | None
    start_epoch: int = 0
    start_batch: int = 0
    resumed_sums: dict[str, list[float]] | None = None
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def ckpt_dir(self) -> Path | None:
        return self.out / "checkpoints" if self.out else None

    def save(self, epoch: int, batch: int, sums: dict[str, list[float]] | None = None) -> None:
        # Inside an epoch the running train-metric sums are saved too, so the epoch's row in
        # metrics.jsonl is the same whether or not the run was interrupted.
        if self.ckpt_dir is None:
            return
        extra = {"epoch": epoch, "batch": batch, "train_sums": sums}
        ckpt.save_checkpoint(
            self.ckpt_dir, self.state, {**self.header, **extra}, keep=self.config.keep_checkpoints
        )


# Options that change neither the trajectory nor the result of a run: a resumed run may differ
# from its first start in these without a warning.
RUN_ONLY_OPTIONS = frozenset(
    {
        "resume",
        "output_dir",
        "init_from",  # read only at a fresh start
        "progress",
        "log_every",
        "max_steps",
        "checkpoint_every",
        "keep_checkpoints",
        "eval_batch_size",
        "eval_first",
        "fsdp",  # the same numbers, laid out otherwise
    }
)


def _check_output_dir(config: TrainConfig) -> Path | None:
    """The run folder, after checking that it can be one: no file in its place or above it, and,
    unless the run resumes, no other run's checkpoints or metrics in it (a second run must not
    mix its checkpoints with the first's, nor a later ``--resume`` continue the wrong one)."""
    if not config.output_dir:
        return None
    out = Path(config.output_dir).expanduser()
    for folder in (out, *out.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"--output-dir {out}: {folder} is a file, not a folder")
            break
    found, metrics = [], out / "metrics.jsonl"
    if n := len(ckpt.list_checkpoints(out / "checkpoints")):
        found.append(f"{n} checkpoint{'s' * (n > 1)}")
    if metrics.is_file() and metrics.stat().st_size:
        found.append("metrics.jsonl")
    if found and not config.resume:
        raise ConfigError(
            f"--output-dir {out} already holds a run ({', '.join(found)}): add --resume to "
            "continue it, or give a new --output-dir"
        )
    return out


def _changed_options(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """``name: saved -> now`` for each option that changes the run and differs from the one the
    checkpoint was written with."""
    now = _config_json(config)
    return [
        f"{k}: {saved[k]!r} -> {now[k]!r}"
        for k in sorted(now)
        if k not in RUN_ONLY_OPTIONS and k in saved and saved[k] != now[k]
    ]


def _resume(run: _Run, path: Path) -> None:
    """Continue ``run`` from the checkpoint at ``path``: its state and place in the epoch; a
    warning names the options that differ from the ones the run started with."""
    run.state, saved = ckpt.restore_state(path, run.state, model=run.config.model)
    run.start_epoch, run.start_batch = saved["epoch"], saved["batch"]
    run.resumed_sums = saved.get("train_sums")
    _log(f"resumed from {path} (epoch {run.start_epoch + 1}, batch {run.start_batch})")
    if changed := _changed_options(saved.get("config", {}), run.config):
        warnings.warn(
            f"resuming {run.out} with other options than it started with ({'; '.join(changed)}): "
            "the run is no longer the one an uninterrupted run would have given",
            JaxvisionWarning,
            stacklevel=4,
        )


def _config_json(config: TrainConfig) -> dict[str, Any]:
    """The configuration as a checkpoint header stores it (and reads it back)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _run_header(config: TrainConfig, task: Task, image_size: int) -> dict[str, Any]:
    return {
        "model": config.model,
        **task.header(),
        "image_size": image_size,
        "model_args": config.model_args,
        "dtype": config.dtype,
        "config": _config_json(config),
    }


def _partition(tx: Any, trainable: Any) -> Any:
    """``tx`` for the parameters ``trainable`` marks True (or 1.0), the same scaled for those it
    gives another positive factor (a slower learning rate), and a zero update with no optimizer
    state for those it marks False / 0.0 (frozen bit for bit). ``None``: all train."""
    if trainable is None:
        return tx
    factor = lambda t: 1.0 if t is True else 0.0 if t is False else float(t)
    labels = jax.tree.map(lambda t: repr(factor(t)), trainable)
    groups = {}
    for label in set(jax.tree.leaves(labels)):
        f = float(label)
        if f < 0:
            raise ConfigError(f"a learning-rate factor must be >= 0, got {f}")
        groups[label] = (
            optax.set_to_zero() if f == 0 else tx if f == 1 else optax.chain(tx, optax.scale(f))
        )
    return optax.multi_transform(groups, labels)


def _setup(
    config: TrainConfig, task: Task | None, train_data: Source | None, eval_data: Source | None
) -> _Run:
    config.validate()
    out = _check_output_dir(config)
    if task is None:
        if train_data is not None or eval_data is not None:
            raise ConfigError("data sources were given without the task they are for")
        from jaxvision.registry import model_info

        size = config.image_size or model_info(config.model).resolution
        task, train_data, eval_data = tasks.prepare(config, size)
    elif train_data is None or eval_data is None:
        raise ConfigError("a task needs both its train and its held-out data sources")
    model, size = build_model(
        config.model,
        image_size=config.image_size,
        dtype=config.dtype,
        model_args={**task.model_args(), **config.model_args},
    )
    mesh = distributed.make_mesh()
    distributed.check_batch_size(config.batch_size, mesh)
    eval_batch = config.eval_batch_size or config.batch_size
    distributed.check_batch_size(eval_batch, mesh)
    n_steps = train_steps(train_data, config.batch_size)
    schedule = warmup_cosine_schedule(
        config.lr, n_steps * config.epochs, int(config.warmup_epochs * n_steps)
    )
    tx = make_optimizer(
        config.optimizer,
        schedule,
        weight_decay=config.weight_decay,
        momentum=config.momentum,
        nesterov=config.nesterov,
        clip_norm=config.clip_norm,
    )
    init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
    inputs = task.model_inputs(task.example_batch(1))
    try:
        variables = init_variables(model, init_rng, inputs)
    except ValueError as e:  # the model refuses its configuration (size, model arguments)
        raise ConfigError(f"{config.model} cannot be built as configured: {e}") from None
    tx = _partition(tx, task.trainable(variables["params"]))
    resume_from = None
    if config.resume:
        resume_from = ckpt.latest_checkpoint(out / "checkpoints")
        if resume_from is None:
            _log(f"no checkpoint in {out / 'checkpoints'}; starting from scratch")
    if config.init_from and resume_from is None:
        variables, report = init_from(config.init_from, variables, model=config.model)
        for line in report.lines():
            _log(line)
    state = create_train_state(
        model, tx, rng=init_rng, variables=variables, ema_decay=config.ema_decay
    )
    state = distributed.place_state(state, mesh, fsdp=config.fsdp)
    if config.fsdp:
        sharded, total = distributed.count_sharded(state.params)
        _log(
            f"fsdp: {sharded} of {total} parameter arrays sharded over {mesh.devices.size} devices"
        )

    run = _Run(
        config=config,
        task=task,
        train_loader=BatchLoader(train_data),
        eval_loader=BatchLoader(eval_data),
        state=state,
        schedule=schedule,
        mesh=mesh,
        step_fn=jax.jit(functools.partial(train_step, task=task), donate_argnums=0),
        eval_fn=jax.jit(functools.partial(eval_step, task=task.for_evaluation())),
        step_rng=step_rng,
        header=_run_header(config, task, size),
        steps_per_epoch=n_steps,
        eval_batch=eval_batch,
        out=out,
    )
    if resume_from is not None:
        _resume(run, resume_from)
    if out:
        if distributed.is_main_process():
            out.mkdir(parents=True, exist_ok=True)
            _truncate_metrics(out / "metrics.jsonl", run.start_epoch)
        run.history = _read_metrics(out / "metrics.jsonl")
    return run


# ---------------------------------------------------------------------------------- one epoch


def _check_finite(pairs: dict[str, list[float]], epoch: int, first: int, last: int) -> None:
    # The task's "loss" pair if it reports one, else every metric: a NaN anywhere stops the run.
    watched = [pairs["loss"]] if "loss" in pairs else list(pairs.values())
    bad = [s / max(c, 1.0) for s, c in watched if not math.isfinite(s / max(c, 1.0))]
    if bad:
        loss = bad[0]
        where = f"step {last}" if first == last else f"steps {first}-{last}"
        raise NonFiniteLossError(
            f"loss became {loss} at epoch {epoch + 1}, {where}; stopping (lower --lr or enable "
            "--clip-norm); the last good checkpoint is kept"
        )


def _postfix(task: Task, means: dict[str, float]) -> dict[str, str]:
    return {k: f"{means[k]:.3f}" for k in task.progress_metrics if k in means}


def _train_epoch(run: _Run, epoch: int, steps_done: int) -> tuple[int, int, dict[str, float]]:
    """Train one epoch (or up to ``max_steps``); returns (steps done, position in the epoch,
    the epoch's mean train metrics)."""
    config, n_steps = run.config, run.steps_per_epoch
    first = run.start_batch if epoch == run.start_epoch else 0
    sums = _device_pairs(run.resumed_sums) if epoch == run.start_epoch and first else None
    checked = first  # the last position whose loss is known to be finite
    position = first
    shard = distributed.process_shard()
    with _progress(n_steps, first, f"epoch {epoch + 1}/{config.epochs}", config.progress) as bar:
        batches = run.train_loader.train_epoch(
            config.seed, epoch, config.batch_size, first, shard=shard
        )
        for position, batch in enumerate(batches, start=first + 1):
            batch = distributed.shard_batch(batch, run.mesh)
            run.state, metrics = run.step_fn(run.state, batch, run.step_rng)
            sums = _accumulate(sums, metrics)
            steps_done += 1
            bar.update(1)
            last = position == n_steps or steps_done == config.max_steps
            save_here = not last and (
                config.checkpoint_every and position % config.checkpoint_every == 0
            )
            if save_here or last or position % config.log_every == 0:
                pairs = _host_pairs(sums)  # the one place the host waits for the device
                _check_finite(pairs, epoch, checked + 1, position)
                checked = position
                bar.set_postfix(_postfix(run.task, summarize(pairs)))
                if save_here:
                    run.save(epoch, position, pairs)
            if steps_done == config.max_steps:
                break
    if position < n_steps and sums is not None and run.ckpt_dir is not None:
        run.save(epoch, position, _host_pairs(sums))  # stopped inside the epoch by max_steps
    means = run.task.ordered(summarize(_host_pairs(sums))) if sums is not None else {}
    return steps_done, position, means


def _log_epoch(run: _Run, epoch: int, train: dict[str, float], held_out: dict[str, float]) -> None:
    step = int(jax.device_get(run.state.step))
    row = {
        "epoch": epoch + 1,
        "step": step,
        "lr": float(run.schedule(step)),
        **{f"train_{k}": v for k, v in train.items()},
        **{f"eval_{k}": v for k, v in held_out.items()},
    }
    run.history.append(row)
    fmt = lambda metrics: " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    _log(f"epoch {epoch + 1}/{run.config.epochs}: train {fmt(train)} | eval {fmt(held_out)}")
    if run.out and distributed.is_main_process():
        with open(run.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")


# -------------------------------------------------------------------------------------- fit


def fit(
    config: TrainConfig,
    *,
    task: Task | None = None,
    train_data: Source | None = None,
    eval_data: Source | None = None,
) -> dict[str, Any]:
    """Train ``config.model``; returns the final held-out metrics, ``"model"``, ``"epochs"``,
    ``"seconds"``, the trained ``"state"`` and, with ``eval_first``, the ``"initial"`` metrics.

    Without ``task``, the model's registered task is trained on ``config.data``; otherwise on the
    given sources of examples (see :mod:`jaxvision.tasks.base`).
    """
    t0 = time.perf_counter()
    run = _setup(config, task, train_data, eval_data)
    final: dict[str, float] = {}
    steps_done = run.start_epoch * run.steps_per_epoch + run.start_batch
    measure = lambda: evaluate(
        run.state, run.task, run.eval_loader, run.eval_batch, mesh=run.mesh, eval_fn=run.eval_fn
    )
    initial: dict[str, float] = {}
    try:
        if config.eval_first and run.start_epoch == 0 and run.start_batch == 0:
            initial = measure()
            _log("before training: " + " ".join(f"{k} {v:.4f}" for k, v in initial.items()))
        for epoch in range(run.start_epoch, config.epochs):
            steps_done, position, train_metrics = _train_epoch(run, epoch, steps_done)
            final = measure()
            if position < run.steps_per_epoch:  # stopped inside the epoch by max_steps
                break
            _log_epoch(run, epoch, train_metrics, final)
            run.save(epoch + 1, 0)
            if steps_done == config.max_steps:
                break
        if not final:  # resumed a finished run: measure it again
            final = measure()
    finally:
        run.train_loader.close()
        run.eval_loader.close()
    if run.out and distributed.is_main_process():
        plot_curves(run.history, run.out / "curves.png")
    return {
        "model": config.model,
        **final,
        "epochs": config.epochs,
        "seconds": round(time.perf_counter() - t0, 2),
        "state": run.state,
        **({"initial": initial} if initial else {}),
    }


# ------------------------------------------------------------------------- metrics on disk


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
    """Learning curves as a PNG, one panel per metric the task reports (train and held-out), when
    matplotlib is installed."""
    if not history:
        return False
    try:  # a Figure without pyplot: no backend switch under a running notebook's feet
        from matplotlib.figure import Figure
    except ImportError:
        return False
    names = [k[len("eval_") :] for k in history[-1] if k.startswith("eval_")]
    if not names:
        return False
    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(4.5 * len(names), 3.5))
    axes = fig.subplots(1, len(names), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for key, label in ((f"train_{name}", "train"), (f"eval_{name}", "held-out")):
            ax.plot(epochs, [r.get(key, np.nan) for r in history], marker="o", label=label)
        ax.set(xlabel="epoch", ylabel=name, title=name)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)
    return True


__all__ = ["DatasetError", "NonFiniteLossError", "TrainConfig", "evaluate", "fit"]

"""OmniVec's tasks: masked pre-training, and the five task heads trained alone or together.

One :class:`OmniVecTask` covers both objectives of :class:`jaxvision.models.omnivec.OmniVec`:

* ``objective="pretrain"``: reconstruct the masked tokens - mean squared error of the per-patch
  normalised pixels / spectrogram values (image, video, audio), Chamfer distance of each point
  group (points), cross-entropy of the masked token ids (text) - averaged over the MASKED tokens
  only; reported as ``<modality>_loss``.
* ``objective="tasks"``: cross-entropy and top-1 accuracy for image, video, audio and points
  (``<modality>_loss``, ``<modality>_top1``); for text, the summary's token cross-entropy under
  teacher forcing (``text_loss``, ``text_token_acc``) and, at evaluation, ROUGE-L F1 of the
  greedily decoded summary against the reference (``text_rougeL``, host-side).

A batch holds one modality or several: ``"image"`` (B, S, S, C), ``"video"`` (B, F, S, S, C),
``"audio"`` (B, samples), ``"points"`` (B, P, 3), ``"text"`` (B, L) ids with ``"summary"``
(B, S) ids, and a label ``"<modality>_label"`` (B,) per classified modality. ``loss`` is the sum
of the modalities' losses present in the batch. In a run over several modalities
(:class:`jaxvision.data.mixture.MixedSource`) each batch holds one, and the run's ``loss`` is
the mean over all batches.

:meth:`OmniVecTask.trainable` is what makes sequential training a schedule of ordinary runs: a
stage trains only ``trainable_parts`` (by default the backbone, its modality's encoder and its
task's head) and the engine freezes the rest bit for bit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvision.constants import CLASSIFIED_MODALITIES, MODALITIES, PAD_ID, UNK_ID
from jaxvision.errors import ConfigError
from jaxvision.models.omnivec import OBJECTIVES
from jaxvision.ops.points import chamfer_distance
from jaxvision.tasks.base import Batch, Metrics, Task, masked_mean, masked_sum
from jaxvision.tasks.classification import cross_entropy, topk_correct

# Options ``TrainConfig.task_args`` may set (see prepare).
OPTIONS = (
    "objective",
    "modalities",
    "schedule",
    "train_parts",
    "labels_per_class",
    "label_smoothing",
    "data_seed",
    "backbone_lr_scale",
    *(f"{m}_data" for m in MODALITIES),
)
CLASS_FIELDS = {"image": "num_classes", **{m: f"{m}_classes" for m in CLASSIFIED_MODALITIES[1:]}}


def input_specs(model: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """Per input of an :class:`~jaxvision.models.omnivec.OmniVec`: (shape without batch, dtype)."""
    s = model.video_size
    return {
        "image": ((model.image_size, model.image_size, model.image_channels), "float32"),
        "video": ((model.video_frames, s, s, model.video_channels), "float32"),
        "audio": ((model.audio_samples,), "float32"),
        "points": ((model.num_points, 3), "float32"),
        "text": ((model.text_length,), "int32"),
        "summary": ((model.summary_length,), "int32"),
    }


def reconstruction_loss(modality: str, out: dict[str, jax.Array]) -> jax.Array:
    """Per-example reconstruction error averaged over the masked tokens only (B,)."""
    prediction, target, masked = out["prediction"], out["target"], out["masked"]
    if modality == "text":
        weights = masked * (target != PAD_ID)
        error = optax.softmax_cross_entropy_with_integer_labels(prediction, target)  # (B, N)
    elif modality == "points":
        weights = masked
        shape = (*target.shape[:2], -1, 3)
        error = chamfer_distance(prediction.reshape(shape), target.reshape(shape))  # (B, G)
    else:
        weights = masked
        error = jnp.mean((prediction - target) ** 2, axis=-1)  # (B, N)
    return jnp.sum(error * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)


def summary_loss(logits: jax.Array, summary: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-example mean token cross-entropy and token accuracy over the real summary tokens."""
    weights = (summary != PAD_ID).astype(jnp.float32)
    count = jnp.maximum(weights.sum(axis=1), 1.0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, summary)
    correct = (jnp.argmax(logits, axis=-1) == summary).astype(jnp.float32)
    return (ce * weights).sum(axis=1) / count, (correct * weights).sum(axis=1) / count


@dataclasses.dataclass(frozen=True)
class OmniVecTask(Task):
    """What an OmniVec run trains and measures.

    ``modalities``: the data this run sees. ``specs``: ((input name, shape, dtype), ...) of the
    model (:func:`input_specs`). ``class_names``: ((modality, names), ...). ``vocabulary``: the
    text vocabulary's words by id. ``trainable_parts``: top-level parameter collections to train
    (``None``: everything in pre-training; the backbone plus the encoders and heads of
    ``modalities`` in the tasks objective). ``backbone_lr_scale``: the backbone's learning rate
    as a fraction of the others' in the tasks objective (a slower backbone forgets earlier tasks
    less).
    """

    objective: str = "tasks"
    modalities: tuple[str, ...] = MODALITIES
    specs: tuple[tuple[str, tuple[int, ...], str], ...] = ()
    class_names: tuple[tuple[str, tuple[str, ...]], ...] = ()
    vocabulary: tuple[str, ...] = ()
    trainable_parts: tuple[str, ...] | None = None
    label_smoothing: float = 0.0
    backbone_lr_scale: float = 1.0

    rng_streams = ("dropout", "drop_path", "masking")
    progress_metrics = ("loss",)
    metrics_order = ("loss",)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        unknown = sorted(set(self.modalities) - set(MODALITIES))
        if unknown or not self.modalities:
            raise ConfigError(f"modalities must be among {MODALITIES}, got {self.modalities}")

    # ------------------------------------------------------------------ batches and the model

    def example_batch(self, batch_size: int = 1) -> Batch:
        """Zeros for EVERY modality (so that initialising the model creates every part), the
        labels and the padding mask."""
        batch = {name: np.zeros((batch_size, *shape), dtype) for name, shape, dtype in self.specs}
        batch["summary"][:, 0] = 2  # a summary of one token (<eos>): the loss is defined
        for m in CLASSIFIED_MODALITIES:
            batch[f"{m}_label"] = np.zeros((batch_size,), np.int32)
        batch["mask"] = np.ones((batch_size,), np.float32)
        return batch

    def model_inputs(self, batch: Batch) -> tuple[Any, ...]:
        return ({k: batch[k] for k in (*MODALITIES, "summary") if k in batch},)

    def model_args(self) -> dict[str, Any]:
        names = dict(self.class_names)
        classes = {CLASS_FIELDS[m]: len(names[m]) for m in CLASSIFIED_MODALITIES if names.get(m)}
        return {"objective": self.objective, **classes}

    # ------------------------------------------------------------------------ loss, metrics

    def loss(self, outputs: Any, batch: Batch) -> tuple[jax.Array, Metrics]:
        mask = batch["mask"]
        total = jnp.zeros(mask.shape, jnp.float32)
        metrics: Metrics = {}
        for modality, out in outputs.items():
            if self.objective == "pretrain":
                per_example = reconstruction_loss(modality, out)
            elif modality == "text":
                if "logits" not in out:
                    continue  # no reference summary in this batch
                per_example, accuracy = summary_loss(out["logits"], batch["summary"])
                metrics["text_token_acc"] = masked_sum(accuracy, mask)
            else:
                labels = batch[f"{modality}_label"]
                per_example = cross_entropy(out, labels, label_smoothing=self.label_smoothing)
                metrics[f"{modality}_top1"] = masked_sum(topk_correct(out, labels, 1), mask)
            metrics[f"{modality}_loss"] = masked_sum(per_example, mask)
            total = total + per_example
        metrics["loss"] = masked_sum(total, mask)
        return masked_mean(total, mask), metrics

    def predict(self, outputs: Any, batch: Batch) -> Any:
        if self.objective == "pretrain":
            return outputs
        out = {}
        for modality, value in outputs.items():
            if modality == "text":
                if "tokens" in value:
                    out["text"] = value["tokens"]
            else:
                out[modality] = jax.nn.softmax(value, axis=-1)
        return out

    def evaluator(self):
        if self.objective == "tasks" and "text" in self.modalities:
            return SummaryEvaluator(self.vocabulary)
        return None

    def for_evaluation(self) -> OmniVecTask:
        return dataclasses.replace(self, label_smoothing=0.0)

    # ---------------------------------------------------------- what a run trains, headers

    def parts(self, params: Any) -> tuple[str, ...]:
        """The top-level parameter collections this run trains."""
        if self.trainable_parts is not None:
            parts = tuple(self.trainable_parts)
        elif self.objective == "pretrain":
            parts = tuple(params)
        else:
            parts = (
                "backbone",
                *(f"{m}_encoder" for m in self.modalities),
                *(f"{m}_head" for m in self.modalities),
            )
        unknown = sorted(set(parts) - set(params))
        if unknown:
            raise ConfigError(
                f"train_parts {unknown} are not parts of the model; its parts: {', '.join(params)}"
            )
        return parts

    def trainable(self, params: Any) -> Any | None:
        parts = self.parts(params)
        scale = self.backbone_lr_scale if self.objective == "tasks" else 1.0
        if set(parts) == set(params) and scale == 1.0:
            return None
        factor = lambda k: (scale if k == "backbone" else 1.0) if k in parts else 0.0
        return {k: jax.tree.map(lambda _, k=k: factor(k), v) for k, v in params.items()}

    def header(self) -> dict[str, Any]:
        return {
            "task": "omnivec",
            "objective": self.objective,
            "modalities": list(self.modalities),
            "class_names": {m: list(n) for m, n in self.class_names},
            "vocabulary": list(self.vocabulary),
            "trainable_parts": None if self.trainable_parts is None else list(self.trainable_parts),
        }


class SummaryEvaluator:
    """ROUGE-L F1 of the greedily decoded summaries against the references (host side)."""

    def __init__(self, vocabulary: tuple[str, ...]):
        from jaxvision.data.text import Vocabulary
        from jaxvision.metrics.rouge import RougeL

        self.vocabulary = Vocabulary(list(vocabulary))
        self.rouge = RougeL()
        self.examples: list[tuple[str, str]] = []  # (prediction, reference), kept for reports

    def update(self, predictions: Any, batch: Any) -> None:
        if "text" not in predictions:
            return
        real = np.asarray(batch["mask"]) > 0
        tokens = np.asarray(predictions["text"])[real]
        # The embedding table may be larger than the vocabulary: ids past it are unknown words.
        tokens = np.where(tokens < len(self.vocabulary), tokens, UNK_ID)
        references = np.asarray(batch["summary"])[real]
        pairs = [
            (self.vocabulary.decode(p), self.vocabulary.decode(r))
            for p, r in zip(tokens, references, strict=True)
        ]
        self.rouge.update([p for p, _ in pairs], [r for _, r in pairs])
        self.examples += pairs

    def result(self) -> dict[str, float]:
        if not self.examples:
            return {}
        return {"text_rougeL": self.rouge.result()["rougeL"]}


# ---------------------------------------------------------------------------------- data


def data_sizes(model: Any, modality: str) -> dict[str, int]:
    """The sizes :func:`jaxvision.data.modalities.load_modality` makes ``modality`` at for
    ``model`` (an OmniVec)."""
    return {
        "image": {"image_size": model.image_size},
        "video": {
            "num_frames": model.video_frames,
            "frame_size": model.video_size,
            "channels": model.video_channels,
        },
        "audio": {"sample_rate": model.sample_rate, "num_samples": model.audio_samples},
        "points": {"num_points": model.num_points},
        "text": {"document_length": model.text_length, "summary_length": model.summary_length},
    }[modality]


def parse_modalities(value: Any) -> tuple[str, ...]:
    """``"image,audio"`` or a sequence -> a tuple in MODALITIES order (ConfigError if unknown)."""
    if value is None:
        return MODALITIES
    items = value.split(",") if isinstance(value, str) else list(value)
    items = [m.strip() for m in items if m.strip()]
    unknown = sorted(set(items) - set(MODALITIES))
    if unknown or not items:
        raise ConfigError(f"unknown modalities {unknown or items}; choose from {MODALITIES}")
    return tuple(m for m in MODALITIES if m in items)


def load_split(
    model: Any,
    modality: str,
    spec: str,
    *,
    data_seed: int = 0,
    vocabulary: tuple[str, ...] = (),
) -> tuple[Any, Any]:
    """(train, val) :class:`~jaxvision.data.modalities.ModalityData` of ``modality``, sized for
    ``model``; the val split uses the train split's classes and vocabulary."""
    from jaxvision.data.modalities import load_modality
    from jaxvision.data.text import Vocabulary

    sizes = data_sizes(model, modality)
    vocab = {"vocabulary": Vocabulary(list(vocabulary))} if vocabulary else {}
    train = load_modality(modality, spec, "train", seed=data_seed, **vocab, **sizes)
    if modality == "text":
        vocab = {"vocabulary": train.vocabulary}
        if len(train.vocabulary) > model.vocab_size:
            raise ConfigError(
                f"the text vocabulary has {len(train.vocabulary)} words, more than the model's "
                f"vocab_size {model.vocab_size}; pass --model-arg vocab_size="
                f"{len(train.vocabulary)}"
            )
    names = {"class_names": train.class_names} if modality != "text" else {}
    val = load_modality(modality, spec, "val", seed=data_seed, **names, **vocab, **sizes)
    return train, val


def _make_task(model: Any, args: dict[str, Any], datasets: dict[str, Any]) -> OmniVecTask:
    parts = args.get("train_parts")
    if isinstance(parts, str):
        parts = tuple(p.strip() for p in parts.split(",") if p.strip())
    text = datasets.get("text")
    return OmniVecTask(
        objective=args.get("objective", "tasks"),
        modalities=tuple(datasets),
        specs=tuple((k, shape, dtype) for k, (shape, dtype) in input_specs(model).items()),
        class_names=tuple((m, tuple(d.class_names)) for m, d in datasets.items() if m != "text"),
        vocabulary=tuple(text.vocabulary.tokens) if text is not None else (),
        trainable_parts=None if parts is None else tuple(parts),
        label_smoothing=float(args.get("label_smoothing", 0.0)),
        backbone_lr_scale=float(args.get("backbone_lr_scale", 1.0)),
    )


def prepare(config: Any, info: Any, image_size: int):
    """(task, train source, held-out source) for an OmniVec run.

    ``config.task_args``: ``objective`` (``tasks`` or ``pretrain``), ``modalities`` (default all
    five), ``schedule`` (``alternate``, default, or ``shuffle`` - see
    :class:`~jaxvision.data.mixture.MixedSource`), ``train_parts`` (the top-level parameter
    collections to train; default: see :meth:`OmniVecTask.parts`), ``labels_per_class`` (keep
    only that many training examples per class: low-data fine-tuning), ``backbone_lr_scale``
    (the backbone's learning rate relative to the rest), ``label_smoothing``,
    ``data_seed`` (the generated data's seed, default 0) and ``<modality>_data`` (``synthetic``,
    the default, or a path: see :func:`jaxvision.data.modalities.load_modality`).
    """
    from jaxvision.data.mixture import MixedSource
    from jaxvision.data.modalities import ModalitySource
    from jaxvision.registry import build_model

    args = dict(config.task_args or {})
    unknown = sorted(set(args) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"unknown OmniVec option(s): {', '.join(unknown)}; known: {OPTIONS}")
    if config.data not in (None, "synthetic"):
        raise ConfigError(
            "OmniVec reads one data set per modality: give each with the task options "
            f"{', '.join(f'{m}_data' for m in MODALITIES)} instead of --data"
        )
    model, _ = build_model(config.model, image_size=image_size, model_args=config.model_args)
    modalities = parse_modalities(args.get("modalities"))
    train, val = {}, {}
    for m in modalities:
        train[m], val[m] = load_split(
            model, m, args.get(f"{m}_data", "synthetic"), data_seed=int(args.get("data_seed", 0))
        )
        if args.get("labels_per_class") and m != "text":
            train[m] = train[m].subset_per_class(int(args["labels_per_class"]), seed=config.seed)
    task = _make_task(model, args, train)
    schedule = args.get("schedule", "alternate")
    train_sources = {m: ModalitySource(d, augment=True) for m, d in train.items()}
    val_sources = {m: ModalitySource(d) for m, d in val.items()}
    if len(modalities) == 1:
        return task, train_sources[modalities[0]], val_sources[modalities[0]]
    return (
        task,
        MixedSource(train_sources, schedule=schedule),
        MixedSource(val_sources, schedule=schedule),
    )


def from_header(header: dict[str, Any], image_size: int) -> OmniVecTask:
    """The task a checkpoint was trained for."""
    from jaxvision.registry import build_model

    objective = header.get("objective", "tasks")
    model_args = {**(header.get("model_args") or {}), "objective": objective}
    model, _ = build_model(header["model"], image_size=image_size, model_args=model_args)
    names = header.get("class_names") or {}
    return OmniVecTask(
        objective=objective,
        modalities=tuple(header.get("modalities") or MODALITIES),
        specs=tuple((k, shape, dtype) for k, (shape, dtype) in input_specs(model).items()),
        class_names=tuple((m, tuple(n)) for m, n in names.items()),
        vocabulary=tuple(header.get("vocabulary") or ()),
        trainable_parts=None,
    )


def eval_source(task: OmniVecTask, spec: str | None, split: str, info: Any, **_: Any):
    """OmniVec is evaluated per modality by ``jaxvision omnivec eval``."""
    raise ConfigError("evaluate OmniVec checkpoints with `jaxvision omnivec eval`")

"""A task that is not classification, written against the public API only: regress each digit
image's mean ink (the fraction of the 8x8 bitmap that is set), with a host-side R^2 evaluator.

Used by tests/train/test_custom_task.py in-process and, run as a script, in subprocesses (SIGKILL
and resume, 8 simulated devices): ``python ink_task.py --output-dir DIR [--epochs N] ...`` prints
the final metrics as one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import jax.numpy as jnp
import numpy as np

import jaxvision
from jaxvision.data import eval_transform, load_dataset
from jaxvision.tasks import Task, masked_mean, masked_sum
from jaxvision.train.loop import TrainConfig, fit

SIZE = 16


class InkSource:
    """Digits as ``{"image": (16, 16, 3) float32, "ink": () float32}``; training flips at random
    (a mirrored digit has the same ink)."""

    def __init__(self, split: str):
        self.ds = load_dataset("digits", split)
        self.pre = jaxvision.model_info("tiny_test_cnn").preprocessing

    def __len__(self) -> int:
        return len(self.ds)

    def eval_example(self, index: int) -> dict[str, np.ndarray]:
        img = self.ds.image(index)
        ink = np.asarray(img, np.float32)[..., 0].mean() / 255.0
        image = eval_transform(img, SIZE, self.pre, centre_crop=False)
        return {"image": image, "ink": np.float32(ink)}

    def train_example(self, index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        example = self.eval_example(index)
        if rng.random() < 0.5:
            example["image"] = example["image"][:, ::-1].copy()
        return example


class R2Evaluator:
    """Coefficient of determination over the whole split: not a sum of per-batch terms."""

    def __init__(self):
        self.pred, self.true = [], []

    def update(self, predictions, batch):
        real = batch["mask"] > 0
        self.pred.append(np.asarray(predictions)[real])
        self.true.append(np.asarray(batch["ink"])[real])

    def result(self):
        pred, true = np.concatenate(self.pred), np.concatenate(self.true)
        return {"r2": float(1 - np.sum((pred - true) ** 2) / np.sum((true - true.mean()) ** 2))}


@dataclasses.dataclass(frozen=True)
class InkTask(Task):
    image_size: int = SIZE
    rng_streams = ("dropout", "drop_path")

    def example_batch(self, batch_size=1):
        return {
            "image": np.zeros((batch_size, self.image_size, self.image_size, 3), np.float32),
            "ink": np.zeros((batch_size,), np.float32),
            "mask": np.ones((batch_size,), np.float32),
        }

    def loss(self, outputs, batch):
        pred = outputs[:, 0].astype(jnp.float32)
        err = pred - batch["ink"]
        metrics = {
            "loss": masked_sum(err**2, batch["mask"]),
            "mae": masked_sum(jnp.abs(err), batch["mask"]),
        }
        return masked_mean(err**2, batch["mask"]), metrics

    def predict(self, outputs, batch):
        return outputs[:, 0]

    def evaluator(self):
        return R2Evaluator()

    def model_args(self):
        return {"num_classes": 1}  # one output: the ink


def train(**config):
    base = dict(model="tiny_test_cnn", data="ink", batch_size=64, lr=1e-2, progress=False)
    return fit(
        TrainConfig(**{**base, **config}),
        task=InkTask(),
        train_data=InkSource("train"),
        eval_data=InkSource("test"),
    )


if __name__ == "__main__":
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    import tiny_model

    tiny_model.register()
    p = argparse.ArgumentParser()
    p.add_argument("--output-dir")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--checkpoint-every", type=int, default=0)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()
    result = train(
        output_dir=args.output_dir,
        epochs=args.epochs,
        checkpoint_every=args.checkpoint_every,
        max_steps=args.max_steps,
        resume=args.resume,
        optimizer="sgd",
        lr=0.05,
    )
    result.pop("state")
    result.pop("seconds")
    print(json.dumps(result), flush=True)

"""Train ultralytics' own YOLOv8n from scratch on the exported shapes data (the images
``jaxvision train yolov8n_det --data shapes`` trains on), within a wall-time budget, and print its
held-out box mAP@0.5 and mAP@0.5:0.95 and the time as one JSON line.

    jaxvision data shapes --output runs/shapes_yolo
    python benchmarks/ultralytics_shapes.py runs/shapes_yolo/data.yaml --minutes 16 --epochs 40

Needs the reference extra (ultralytics 8.4.x). Nothing is downloaded: YOLO_OFFLINE is set and
plots (which would fetch a font) are off.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", help="data.yaml written by `jaxvision data shapes`")
    p.add_argument("--minutes", type=float, required=True, help="wall-time budget for training")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--project", default="runs/ultralytics")
    args = p.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    t0 = time.perf_counter()
    model = YOLO("yolov8n.yaml")  # from scratch: random initialisation, no weights
    model.train(
        data=args.data,
        imgsz=args.imgsz,
        epochs=args.epochs,
        time=args.minutes / 60,  # hours; ultralytics fits the epochs into it
        batch=args.batch,
        device="cpu",
        workers=2,
        plots=False,
        seed=0,
        project=args.project,
        name="shapes",
        exist_ok=True,
        verbose=False,
    )
    seconds = time.perf_counter() - t0
    metrics = model.val(data=args.data, imgsz=args.imgsz, batch=args.batch, plots=False)
    print(
        json.dumps(
            {
                "trainer": "ultralytics",
                "map50": round(float(metrics.box.map50), 6),
                "map": round(float(metrics.box.map), 6),
                "train_seconds": round(seconds, 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()

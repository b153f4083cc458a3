#!/usr/bin/env bash
# The GPU target of the benchmarks issue, in one run on a lent GPU (one command, ~10 minutes):
#
#   training throughput at a batch that fills the GPU, bfloat16, 224 px, jaxvision beside the
#   PyTorch reference in eager mode and under torch.compile (each in its own process):
#     vit_b16 (target: MFU >= 40% of the bf16 matmul peak measured in the same run),
#     efficientnet_b0 and yolov8n_cls (ultralytics must be importable for YOLOv8's column);
#   then inference at the same batch for the three.
#
# Usage: benchmarks/run_gpu_targets.sh [RESULTS_FILE] (default benchmarks/results/gpu_targets.jsonl)
# Environment: PYTHON (default python), BATCH (default 256), SIZE (default 224), ITERS (20),
# WARMUP (3), MODELS (default "vit_b16 efficientnet_b0 yolov8n_cls", in priority order: each
# model's records are appended as soon as it is measured, so a run cut short keeps the first).
# A smoke test on CPU: PYTHON=.venv/bin/python BATCH=2 SIZE=32 ITERS=2 WARMUP=1 \
#     MODELS=yolov8n_cls benchmarks/run_gpu_targets.sh /tmp/gpu_smoke.jsonl
# The "util" column is the MFU: analytic FLOPs of the step (3x the forward for training) x
# images/s over the bf16 8192^3 matmul peak of the same run; "ratio vs compiled" is jaxvision
# over torch.compile.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
OUT=${1:-benchmarks/results/gpu_targets.jsonl}
BATCH=${BATCH:-256}
SIZE=${SIZE:-224}
ITERS=${ITERS:-20}
WARMUP=${WARMUP:-3}
read -r -a MODELS <<<"${MODELS:-vit_b16 efficientnet_b0 yolov8n_cls}"

# What the machine has: the results are only as good as the versions behind them.
"$PYTHON" -m jaxvision env
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader || true
"$PYTHON" - <<'EOF'
import importlib.metadata as md
for pkg in ("torch", "timm", "torchvision", "ultralytics", "jax-cuda12-plugin", "jax-cuda13-plugin"):
    try:
        print(f"{pkg} {md.version(pkg)}")
    except md.PackageNotFoundError:
        print(f"{pkg} not installed")
EOF

bench() {
    "$PYTHON" -m jaxvision.bench --output "$OUT" --dtype bfloat16 --image-size "$SIZE" \
        --iters "$ITERS" --warmup "$WARMUP" --torch-compile "$@"
}
for model in "${MODELS[@]}"; do
    bench "$model" --mode train --train-batch-size "$BATCH"
done
for model in "${MODELS[@]}"; do
    bench "$model" --mode inference --batch-size "$BATCH"
done

"$PYTHON" -m jaxvision.bench --from "$OUT" --markdown

#!/usr/bin/env bash
# Measures the targets of the benchmarks issue on this machine, float32, 224 px, jaxvision and the
# PyTorch reference (timed in a worker process of its own, after JAX), as many threads as cores:
#
#   inference, batch 16: efficientnet_b0, vit_b16, yolov8n_cls        (target: ratio >= 1.0)
#   train step (SGD momentum), batch 8: efficientnet_b0, vit_s16, yolov8n_cls   (ratio >= 1.0)
#   train-step compile time, smallest and largest variant of each family, and vit_h14 with
#   scanned blocks (target: under 10 s)
#   the same train steps started a second time from the persistent compilation cache (a fresh
#   cache folder, filled by the first of two runs; target: under 2 s of compiling)
#   which library runs every convolution and dot of the three train steps (--list-fallbacks,
#   printed; the counts of Eigen fallbacks go into the results file)
#
# Usage: benchmarks/run_targets.sh [RESULTS_FILE] (default benchmarks/results/targets.jsonl).
# Extra options go to every command through BENCH_ARGS, e.g. BENCH_ARGS="--iters 20".
# The Markdown table of everything in RESULTS_FILE is printed at the end; it is what
# benchmarks/README.md shows. Run it on an otherwise idle machine: PyTorch's OpenMP threads
# degrade badly when other processes compete for the cores (see the README).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
OUT=${1:-benchmarks/results/targets.jsonl}
read -r -a EXTRA <<<"${BENCH_ARGS:-}"
bench() { "$PYTHON" -m jaxvision.bench --output "$OUT" "${EXTRA[@]}" "$@"; }

bench efficientnet_b0 vit_b16 yolov8n_cls --mode inference --batch-size 16
bench efficientnet_b0 vit_s16 yolov8n_cls --mode train --train-batch-size 8

# Compile time alone: abstract inputs, nothing allocated, so the largest variants cost no memory.
bench efficientnet_b0 efficientnet_b7 vit_ti16 vit_h14 yolov8n_cls yolov8x_cls \
    --mode train --train-batch-size 8 --compile-only --no-torch
bench vit_h14 --model-arg scan_blocks=True --mode train --train-batch-size 8 --compile-only --no-torch

# Second start-up: the first command fills a fresh cache, the second loads from it (its compile
# column is then the time to load the executable; trace and lower are paid every time).
JAXVISION_CACHE_DIR=$(mktemp -d)
export JAXVISION_CACHE_DIR
for _ in 1 2; do
    bench efficientnet_b0 vit_s16 yolov8n_cls --mode train --train-batch-size 8 --compile-only \
        --no-torch --compilation-cache
done
rm -rf "$JAXVISION_CACHE_DIR"
unset JAXVISION_CACHE_DIR

# Where the train steps leave YNNPACK for Eigen.
bench efficientnet_b0 vit_s16 yolov8n_cls --mode train --train-batch-size 8 --compile-only \
    --no-torch --list-fallbacks

"$PYTHON" -m jaxvision.bench --from "$OUT" --markdown

#!/usr/bin/env bash
# The GPU figures of docs/performance.md in one go, each bench with its own time limit so one failure
# or overrun leaves the others' tables: bench/gpu_figures.sh OUT_DIR [PYTHON]
# Writes OUT_DIR/<bench>.txt (stdout and stderr) and OUT_DIR/environment.txt.
set -uo pipefail
out="${1:?usage: bench/gpu_figures.sh OUT_DIR [PYTHON]}"
python="${2:-.venv/bin/python}"
cd "$(dirname "$0")/.."
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  "$python" -c 'import sys, torch, transformers; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)'
} >"$out/environment.txt" 2>&1

run() {  # run NAME SECONDS ARGS...: one bench under `timeout`, its output kept whatever happens
  local name="$1" limit="$2"
  shift 2
  local started=$SECONDS
  timeout --kill-after=10 "$limit" "$python" "$@" >"$out/$name.txt" 2>&1
  echo "$name: exit $? after $((SECONDS - started)) s" | tee -a "$out/environment.txt"
}

run loss_bench 60 -m bench.loss_bench
run serve_bench 170 -m bench.serve_bench --graphs both
run train_bench 270 -m bench.train_bench --pages 100

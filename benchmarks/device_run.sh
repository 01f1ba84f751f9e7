#!/usr/bin/env bash
# One GPU session: train every recipe in parallel within a time budget, then evaluate them all.
# Usage (on the device machine, from the repo root): bash benchmarks/device_run.sh SECONDS OUTDIR
set -u
budget=${1:-330}
out=${2:-${OUT:-runs/device}}
mkdir -p "$out" runs/logs
export PYTHONPATH=$PWD FEWSHOT_CACHE_DIR=${FEWSHOT_CACHE_DIR:-/tmp/fewshot-cache} PYTHONUNBUFFERED=1
data=.data/omniglot
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch; print(torch.__version__)"; nproc; } > "$out/machine.txt" 2>&1
(nvidia-smi dmon -s u -d 1 > "$out/gpu_util_throughput.txt" 2>&1 &)
python3 benchmarks/maml_throughput.py --device cuda --iterations 300 --loop-iterations 20 --cuda-graph > "$out/maml_throughput.jsonl" 2>&1
pkill -f "nvidia-smi dmon" || true
cat "$out/maml_throughput.jsonl"
extra=()
ratio=$(python3 -c "import json,sys; print([json.loads(l) for l in open('$out/maml_throughput.jsonl') if 'loop_over_batched' in l][0]['loop_over_batched'])" 2>/dev/null || echo 1)
python3 -c "import sys; sys.exit(0 if float('$ratio') >= 1 else 1)" || extra=(--extra-args=--no-batch-tasks)
echo "loop/batched ratio $ratio; extra: ${extra[*]:-none}"
(nvidia-smi dmon -s u -d 5 > "$out/gpu_util.txt" 2>&1 &)
python3 benchmarks/run_recipes.py --device cuda --max-seconds "$budget" --data-dir "$data" --log-dir runs/logs "${extra[@]}" 2>&1 | tee "$out/train.txt"
tar czf "$out/checkpoints.tgz" checkpoints/vinyals checkpoints/lake runs/logs 2>/dev/null
timeout 175 python3 benchmarks/accuracy.py --evaluate --device cuda --data-dir "$data" --jobs 16 --results "$out/accuracy.json" > "$out/eval.txt" 2>&1
python3 benchmarks/accuracy.py --results "$out/accuracy.json" > /dev/null 2>&1; cp benchmarks/results.md "$out/" 2>/dev/null
pkill -f "nvidia-smi dmon" || true
tail -40 "$out/eval.txt"

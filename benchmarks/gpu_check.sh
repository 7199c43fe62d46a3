#!/usr/bin/env bash
# Issue 26 point 7: every CUDA path and the speed table, in one device call of at most 5 minutes.
# Run from the project root ON the GPU machine (the device tool copies the repo there):
#     bash benchmarks/gpu_check.sh            # with the device tool: timeout_s about 300
# $OUT is the device tool's output folder; everything lands in $OUT/gpu_check.txt (PASS/FAIL per
# path first, then each log). The paths run side by side on the one GPU (tiny networks), then the
# speed of training (256 and 1024, fp32 and bf16) and of generation at 1024.
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
export LOGS=$(mktemp -d)
START=$(date +%s)
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%FT%TZ)"; } > $LOGS/00-gpu.log 2>&1
bash "$HERE/gpu/paths.sh"                                                       # ~100 s, in parallel
echo "paths done after $(( $(date +%s) - START )) s" >> $LOGS/00-gpu.log
timeout 90 python3 "$HERE/gpu/train_speed_gpu.py" --seconds 3 > $LOGS/90-train_speed.log 2>&1
echo "rc=$?" >> $LOGS/90-train_speed.log
timeout 60 python3 benchmarks/pretrained_speed.py --device cuda --precisions fp32,bf16,fp16 --batches 8,32 \
    --repeats 5 > $LOGS/91-gen1024.log 2>&1
echo "rc=$?" >> $LOGS/91-gen1024.log
# Issue 28 point 5: describe (G on the GPU, faces measured by 8 CPU processes) and the studio's first
# page of 32 faces at 1024, both with the official-size G_paper.
timeout 60 python3 benchmarks/describe_speed.py --device cuda --candidates 128 --measure-workers 8 \
    > $LOGS/92-describe.log 2>&1
echo "rc=$?" >> $LOGS/92-describe.log
timeout 45 python3 benchmarks/studio_speed.py --first-page-1024 --repeats 1 --device cuda > $LOGS/93-studio.log 2>&1
echo "rc=$?" >> $LOGS/93-studio.log
echo "total $(( $(date +%s) - START )) s" >> $LOGS/00-gpu.log
cd $LOGS && { grep -h "^CHECK" *.log | sort; for f in *.log; do echo "==> $f"; cat "$f"; done; } > $OUT/gpu_check.txt
grep "^CHECK" $OUT/gpu_check.txt; tail -n 40 $OUT/gpu_check.txt

#!/usr/bin/env bash
# Tiny runs through every CUDA path of issue 26, side by side on one GPU; each writes
# $LOGS/<name>.log ending in a line "CHECK <name> PASS|FAIL <why>". Called by benchmarks/gpu_check.sh.
HERE="$(cd "$(dirname "$0")" && pwd)"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
P=python3; W=$(mktemp -d); PROBE="$P $HERE/probe.py"
$P -c "
import numpy as n; from progan.data.store import write_store as w; r = n.random.default_rng(0); y, x = n.mgrid[0:16, 0:16] / 15
a = r.random((40, 3, 1, 1)); w('$W/st', (255 * n.stack([a[:, 0] * x, a[:, 1] * y, a[:, 2] * (1 - x) * y], 1)).astype(n.uint8))" || exit 1
N="--data $W/st --latent-size 16 --fmap-base 64 --fmap-max 16 --batch 8 --no-progress --grid-size 8"
C="$N --training-kimg 0.08 --transition-kimg 0.08 --kimg 0.48 --tick-kimg 0.08"
# check NAME WANT_RC PATTERN...: the log's last rc= must be WANT_RC and every pattern found.
check() { local n=$1 want=$2 log=$LOGS/$1.log; shift 2; local rc; rc=$(grep -o "^rc=[0-9]*" $log | tail -1 | cut -d= -f2)
  local why="rc=$rc (want $want)"; local ok=1; [ "$rc" = "$want" ] || ok=0
  for p in "$@"; do grep -q -- "$p" $log || { ok=0; why="$why; missing '$p'"; }; done
  if grep -q "Traceback" $log && [ "$want" = 0 ]; then ok=0; why="$why; traceback"; fi
  [ $ok = 1 ] && echo "CHECK $n PASS $why" >> $log || echo "CHECK $n FAIL $why" >> $log; }
job() { local n=$1 t=$2; shift 2; ( timeout $t "$@" > $LOGS/$n.log 2>&1; echo "rc=$?" >> $LOGS/$n.log ) ; }
# 1. --precision auto (bf16 on an H200) through both fades; fp32 and fp16 too (26.1).
( job 10-auto 120 $PROBE train $C --outdir $W/rauto; check 10-auto 0 "Precision: bf16" "res 16" "Done:" ) &
( job 11-fp32 120 $PROBE train $C --precision fp32 --device cuda:0 --outdir $W/r32
  check 11-fp32 0 "dev cuda:0" "res 16" "Done:" ) &
# 2. fp16 through the fades, then generate and evaluate in fp16; the resume bit for bit (26.1, 26.3).
( job 12-fp16 120 $PROBE train $C --precision fp16 --outdir $W/r16
  R=$(ls -d $W/r16/0* | head -1)
  timeout 60 $P -m progan generate $R --precision fp16 --device cuda --grid $W/g.png --seeds 0-15 >> $LOGS/12-fp16.log 2>&1
  echo "gen rc=$?" >> $LOGS/12-fp16.log
  timeout 60 $P -m progan evaluate $R --metrics swd,msssim --num 256 --device cuda >> $LOGS/12-fp16.log 2>&1
  echo "eval rc=$?" >> $LOGS/12-fp16.log
  check 12-fp16 0 "res 16" "Done:" "gen rc=0" "eval rc=0" ) &
( job 13-fp16-resume 150 $P $HERE/fp16_resume.py $W/st $W/rres; check 13-fp16-resume 0 "bit-identical: True" ) &
# 3. --deterministic (CUBLAS_WORKSPACE_CONFIG set by progan) (26.5).
( job 14-deterministic 120 $PROBE train $C --deterministic --precision fp32 --outdir $W/rdet
  check 14-deterministic 0 "CUBLAS :4096:8" "Done:" ) &
# 4. --compile through 5 phases: compiled to the end, no fallback line (26.4).
( job 15-compile 200 env TORCH_LOGS=recompiles $PROBE train $C --compile --precision bf16 --outdir $W/rcomp
  if grep -q "torch.compile failed" $LOGS/15-compile.log; then echo "FALLBACK" >> $LOGS/15-compile.log; fi
  check 15-compile 0 "Done:"; grep -q FALLBACK $LOGS/15-compile.log && sed -i 's/^CHECK 15-compile PASS/CHECK 15-compile FAIL fallback;/' $LOGS/15-compile.log ) &
# 5. A timed run (26.2 on one rank; the many-rank plan is tested with gloo ranks on the CPU).
( job 16-timed 120 $PROBE train $N --minutes 1 --tick-kimg 0.2 --outdir $W/rtime; check 16-timed 0 "budget" ) &
# 6. CPU -> CUDA resume: one warning line, then on (26.3).
( timeout 100 $P -m progan train $C --device cpu --precision fp32 --kimg 0.16 --outdir $W/rcpu > $LOGS/17-cpu-to-cuda.log 2>&1
  R=$(ls -d $W/rcpu/0* | head -1); job 17-tmp 100 $PROBE train --resume $R --kimg 0.32 --device cuda --no-progress
  cat $LOGS/17-tmp.log >> $LOGS/17-cpu-to-cuda.log; rm -f $LOGS/17-tmp.log
  check 17-cpu-to-cuda 0 "saved its random state on another kind of device" "Done:" ) &
# 7. Out of memory (a 71 MB cap, activations of 32768 images at 4x4): one line, exit 2, a snapshot (26.5).
( job 18-oom 120 env PROGAN_GPU_MEMORY_FRACTION=0.0005 $PROBE train $N --batch 32768 --kimg 400 --outdir $W/room
  check 18-oom 2 "out of CUDA memory" ) &
# 8. More --gpus than GPUs: one line, exit 2 (or, on a machine with 2 GPUs, an NCCL run) (26.5).
( n=$($P -c "import torch; print(torch.cuda.device_count())")
  job 19-gpus 120 $P -m progan train $C --gpus 2 --outdir $W/rg2
  if [ "$n" -ge 2 ]; then check 19-gpus 0 "Done:"; else check 19-gpus 2 "this machine has $n CUDA GPU"; fi ) &
# 9. --clock cpu on a GPU is refused (Python API; not a CLI flag).
( job 20-clock 60 $P -c "
from progan.runspec import TrainOptions, resolve_run; from progan.errors import UserError
try: resolve_run(TrainOptions(data='$W/st', minutes=1, clock='cpu', device='cuda')); print('accepted')
except UserError as e: print('refused:', e)"; check 20-clock 0 "refused: --clock cpu" ) &
wait

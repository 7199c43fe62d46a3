#!/usr/bin/env bash
# Issue 29: build the portraits model and its oracle from nothing, then measure the dream on them:
# the README's command sequence ("Portraits with known truth") as one script, so a session that
# starts on a fresh machine (where the last model is gone) can launch it first and work beside it.
#
#     bash benchmarks/dream_build.sh WORKDIR           # the README's figures: about 1 h 40 min on 2 cores
#     PORTRAITS=300 MINUTES=2 EPOCHS=1 SAMPLES=200 CANDIDATES=64 TAG=smoke bash benchmarks/dream_build.sh /tmp/dream   # a smoke run
#     MINUTES=90 FINAL_SHARE=0.8 TAG=dream-357kimg bash benchmarks/dream_build.sh WORKDIR   # the third build (64x64 most of the time)
#     MINUTES=80 FINAL_SHARE=0.8 FMAP_BASE=2048 TAG=dream-wide bash benchmarks/dream_build.sh WORKDIR   # the fifth (a wider 64x64 block)
#     D_MIRROR=1 TAG=dream-mirror bash benchmarks/dream_build.sh WORKDIR   # the seventh: D also sees the image minus its mirror image
#     D_MIRROR=1 LR=0.001 D_LR_RATIO=3 TAG=dream-ttur bash benchmarks/dream_build.sh WORKDIR   # the eighth: and D at 3x G's rate
#     MINUTES=85 FINAL_SHARE=0.7 FMAP_BASE=2048 D_MIRROR=1 TAG=dream-wide-mirror bash benchmarks/dream_build.sh WORKDIR   # the ninth
#     MINUTES=75 FINAL_SHARE=0.7 FMAP_BASE=2048 D_MIRROR=1 BATCH=32 SNAPSHOT_TICKS=3 TAG=dream-batch32 bash benchmarks/dream_build.sh WORKDIR   # the tenth
#     MINUTES=80 FINAL_SHARE=0.5 FMAP_BASE=2048 D_MIRROR=1 BATCH=32 SNAPSHOT_TICKS=3 TAG=dream-share50 bash benchmarks/dream_build.sh WORKDIR   # the eleventh
#
# Everything lands in WORKDIR (stores, run, oracle, the classifier describe uses, picks/best.png, log.txt with each step's wall time); dream.py
# writes benchmarks/results/$TAG.json and its pictures. Each step is skipped when its output is
# already there, so a stopped build continues where it stopped (the training itself resumes from
# its last snapshot only through `progan train --resume`, which this script does not do).
set -euo pipefail
WORK=${1:?usage: bash benchmarks/dream_build.sh WORKDIR}
PORTRAITS=${PORTRAITS:-10000} MINUTES=${MINUTES:-85} EPOCHS=${EPOCHS:-6} SAMPLES=${SAMPLES:-2000}
CANDIDATES=${CANDIDATES:-500}
FINAL_SHARE=${FINAL_SHARE:-}  # e.g. 0.8: `train --final-share`, the 64x64 phases' share of the time
FMAP_BASE=${FMAP_BASE:-1024}  # 2048: twice the feature maps at 32x32 and 64x64 (64 at 64x64), at about half the speed
LR=${LR:-0.002}  # the learning rate (G's, and D's unless D_LR_RATIO)
D_LR_RATIO=${D_LR_RATIO:-1}  # e.g. 3: `train --d-lr-ratio 3` (not the paper: D's rate 3x G's, two time-scales)
D_MIRROR=${D_MIRROR:-0}  # 1: `train --d-mirror-difference` (not the paper: D also sees the image minus its mirror image)
BATCH=${BATCH:-16}  # the minibatch at every resolution (32: the official 1-GPU table's at 64x64)
SNAPSHOT_TICKS=${SNAPSHOT_TICKS:-}  # e.g. 3: a snapshot every 12 kimg (the default 10 ticks: 40 kimg)
BLUR=${BLUR:-0}  # e.g. 1: the oracle and the classifier trained with `attributes fit --blur 1`
TAG=${TAG:-dream-build}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY=${PYTHON:-$ROOT/.venv/bin/python}
mkdir -p "$WORK"
log() { echo "$(date -u +%FT%TZ) $*" | tee -a "$WORK/log.txt"; }
step() {  # step NAME OUTPUT COMMAND...: run unless OUTPUT exists, and log its wall time
    local name=$1 out=$2; shift 2
    if [ -e "$out" ]; then log "$name: $out exists, skipped"; return; fi
    local t=$(date +%s)
    "$@"
    log "$name: $(( $(date +%s) - t )) s"
}
progan() { "$PY" -m progan "$@"; }

step "portraits store" "$WORK/portraits64" progan prepare --portraits "$PORTRAITS" "$WORK/portraits64" --resolution 64
step "held-out store" "$WORK/heldout64" progan prepare --portraits 64 "$WORK/heldout64" --resolution 64 --seed 7
step "training ($MINUTES min)" "$WORK/runs/00000-portraits64w" \
    progan train --data "$WORK/portraits64" --name portraits64w --outdir "$WORK/runs" --minutes "$MINUTES" \
    --batch "$BATCH" ${SNAPSHOT_TICKS:+--snapshot-ticks "$SNAPSHOT_TICKS"} --lr "$LR" --d-lr-ratio "$D_LR_RATIO" --latent-size 128 --fmap-base "$FMAP_BASE" --fmap-max 128 --mirror --no-labels ${FINAL_SHARE:+--final-share "$FINAL_SHARE"} \
    $( [ "$D_MIRROR" = 1 ] && echo --d-mirror-difference )
step "oracle ($EPOCHS epochs)" "$WORK/oracle.attributes" \
    progan attributes fit "$WORK/portraits64" --out "$WORK/oracle.attributes" --epochs "$EPOCHS" --blur "$BLUR"
# The product's own classifier for `describe --attributes --prefer-attributes`: other portraits
# (another seed), so that it is not the oracle that judges it.
step "classifier store" "$WORK/judge64" progan prepare --portraits $((PORTRAITS / 2)) "$WORK/judge64" --resolution 64 --seed 11
step "classifier" "$WORK/judge.attributes" \
    progan attributes fit "$WORK/judge64" --out "$WORK/judge.attributes" --epochs 12 --seed 1 --blur "$BLUR"
t=$(date +%s)
"$PY" "$ROOT/benchmarks/dream.py" --snapshot "$WORK/runs/00000-portraits64w" --oracle "$WORK/oracle.attributes" \
    --store "$WORK/portraits64" --heldout "$WORK/heldout64" --samples "$SAMPLES" \
    --direction-samples "$SAMPLES" --candidates "$CANDIDATES" --attributes "$WORK/judge.attributes" --tag "$TAG"
log "dream.py: $(( $(date +%s) - t )) s; benchmarks/results/$TAG.json"
# The README's picture: the product's own commands, the classifier's directions merged into the
# snapshot's (after dream.py, which fits the rules' directions there first), then describe.
t=$(date +%s)
progan directions "$WORK/runs/00000-portraits64w" --attributes "$WORK/judge.attributes" --samples "$SAMPLES"
progan describe "$WORK/runs/00000-portraits64w" "a round face with red hair and blue eyes" \
    --attributes "$WORK/judge.attributes" --prefer-attributes --candidates "$CANDIDATES" --top 16 --refine 16 \
    --out "$WORK/picks" --no-progress
log "directions --attributes and describe --refine 16: $(( $(date +%s) - t )) s; $WORK/picks/best.png (docs/images/dream-best.png)"
# The edit that keeps what was not asked for, along the same classifier's directions.
t=$(date +%s)
progan edit "$WORK/runs/00000-portraits64w" --seed 20000000 --set red_hair=+2 --keep-with "$WORK/judge.attributes" \
    --out "$WORK/picks/edit-red-hair-kept.png"
log "edit --keep-with: $(( $(date +%s) - t )) s; $WORK/picks/edit-red-hair-kept.png"

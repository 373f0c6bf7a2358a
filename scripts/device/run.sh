#!/usr/bin/env bash
# One GPU session (what we ran on the lent H100; see the README's "GPU runs"): trains the style networks
# and the SR networks side by side on one GPU for a fixed time, then times the paper's Table 1 and
# compares the networks with the optimisation baseline, and packs everything into $OUT.
# Needs .device/ from `python scripts/device/prep.py` (carried along) and a python with torch.
# Knobs (env): MODE=paper, TRAIN_MIN=6.0 (minutes per training job), SPEED_SIZES="256 512 1024",
# COMPARE_STEPS=500, DEADLINE=575 (seconds after start by which everything is packed).
set -u
T0=$(date +%s)
MODE=${MODE:-paper}; TRAIN_MIN=${TRAIN_MIN:-6.0}; SPEED_SIZES=${SPEED_SIZES:-256 512 1024}
COMPARE_STEPS=${COMPARE_STEPS:-500}; DEADLINE=${DEADLINE:-575}; OUT=${OUT:-out/device}
PY=${PY:-python3}
left() { local l=$(( DEADLINE - ($(date +%s) - T0) - ${1:-0} )); echo $(( l > 10 ? l : 10 )); }
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 PERCEPTLIB_OFFLINE=1 PERCEPTLIB_CACHE=/tmp/plcache
export PERCEPTLIB_VGG16_CAFFE=$PWD/.device/vgg16_caffe_conv4_3.pt OMP_NUM_THREADS=2 MPLBACKEND=Agg
R=runs; rm -rf $R; mkdir -p $R/logs $OUT
exec > >(tee $R/logs/run.log) 2>&1
echo "start $(date -u +%FT%TZ) mode=$MODE train_min=$TRAIN_MIN"
nvidia-smi -L 2>/dev/null; $PY -c "import torch, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
# fail fast: the package, the weights export and CUDA
$PY - <<'PY' || { echo "SETUP FAILED"; cp $R/logs/run.log $OUT/; exit 3; }
import torch
from perceptlib.vgg import LossNetwork
from perceptlib.style import StyleDataset
dev = "cuda" if torch.cuda.is_available() else "cpu"
net = LossNetwork(["relu4_3"], weights="caffe").to(dev)
print("loss network ok on", dev, net.weights_info.source)
PY
( while true; do nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null | sed "s/^/$(( $(date +%s) - T0 ))s /"; sleep 20; done ) > $R/logs/gpu.log 2>&1 &
MON=$!
TS=(--train-set .device/train --mode $MODE --max-minutes $TRAIN_MIN --no-progress)
style() { $PY -m perceptlib train-style --style .device/styles/$1.png --out $R/style_$1 "${TS[@]}" \
          --checkpoint-every 500 --log-every 50 > $R/logs/style_$1.log 2>&1; }
sr() { local name=$1; shift; $PY -m perceptlib train-sr --out $R/$name "${TS[@]}" --workers 2 \
          --checkpoint-every 500 --log-every 50 "$@" > $R/logs/$name.log 2>&1; }
PIDS=()
style starry_night & PIDS+=($!); style great_wave & PIDS+=($!)
sr sr_x4_pixel --scale 4 --loss pixel & PIDS+=($!); sr sr_x4_feat --scale 4 --loss feat & PIDS+=($!)
sr sr_x8_pixel --scale 8 --loss pixel & PIDS+=($!); sr sr_x8_feat --scale 8 --loss feat & PIDS+=($!)
for lam in 1e5 1e6 1e7; do sr sr_x4_feat_pix$lam --scale 4 --loss feat --pixel-weight $lam & PIDS+=($!); done
wait "${PIDS[@]}"
echo "training done at $(( $(date +%s) - T0 )) s"; tail -n 2 $R/logs/*.log
# Table 1 (no other job on the GPU now), then networks vs optimisation
timeout $(left 110) $PY benchmarks/style_speed.py --sizes $SPEED_SIZES --model $R/style_starry_night \
    --style .device/styles/starry_night.png --content .device/content/chelsea.png --budget 20 --out $R/style_speed.json > $R/logs/style_speed.log 2>&1; echo "speed rc=$? at $(( $(date +%s) - T0 )) s"
cat $R/logs/style_speed.log | tail -8
timeout $(left 25) $PY scripts/style_compare.py --models $R/style_starry_night $R/style_great_wave \
    --content-dir .device/content --size 256 --steps $COMPARE_STEPS --out $R/style_compare \
    > $R/logs/style_compare.log 2>&1; echo "compare rc=$? at $(( $(date +%s) - T0 )) s"
kill $MON 2>/dev/null
# pack: style checkpoint.pt (optimiser state, 20 MB each) and the lambda runs' checkpoint.pt stay behind
cp $R/logs/run.log $OUT/run.log
tar cf - --exclude="style_*/checkpoint.pt" --exclude="sr_x4_feat_pix*/checkpoint.pt" --exclude="sr_x8_*/checkpoint.pt" $R \
    | split -b 15M - $OUT/runs.tar.part-
ls -la $OUT; echo "packed at $(( $(date +%s) - T0 )) s"

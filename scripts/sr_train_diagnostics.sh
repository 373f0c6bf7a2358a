#!/usr/bin/env bash
# Short x4 l_feat runs that change one thing at a time from the paper's recipe (CPU mode: 96^2 HR patches,
# batch 4). Usage: bash scripts/sr_train_diagnostics.sh [STEPS] [NAME ...]   (default 1500 steps, all)
# Writes results/sr_diagnostics/<name>/ (config, history; weights git-ignored). Evaluate them with
# `python scripts/sr_diagnostics.py --models results/sr_diagnostics/* --out results/sr_diagnostics/eval.json`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
STEPS=${1:-1500}; shift || true
PY=${PYTHON:-.venv/bin/python}
declare -A VARIANT=(
  [paper]=""                                    # BN, deconv, (tanh+1)/2, Caffe relu2_2, no TV
  [nearest_conv]="--upsample nearest-conv"      # the usual checkerboard cure
  [instance]="--norm instance"
  [instance_fp32]="--norm instance --precision off"   # is a divergence of the instance-norm run bf16's doing?
  [no_norm]="--norm none"
  [tv]="--tv-weight 10"                         # TV (the paper is silent for SR): ~1 % of the loss
  [tanh150]="--head tanh150"
  [torchvision]="--vgg-weights torchvision"
  [no_norm_nearest]="--norm none --upsample nearest-conv"   # the two changes that helped, together
)
NAMES=("$@"); [ ${#NAMES[@]} -eq 0 ] && NAMES=(paper nearest_conv instance no_norm tv tanh150 torchvision)
for name in "${NAMES[@]}"; do
  "$PY" -m perceptlib train-sr --mode cpu --scale 4 --loss feat --steps "$STEPS" --checkpoint-every 250 \
    --out "results/sr_diagnostics/$name" --no-progress ${VARIANT[$name]} || echo "$name failed (exit $?)"
done

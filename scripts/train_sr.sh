#!/usr/bin/env bash
# The SR networks with the working recipe (--recipe impl: no normalisation, nearest + conv upsampling; CPU mode:
# 96^2 HR patches, batch 4), 50k steps each, resumable: every call continues each unfinished network from its
# checkpoint for up to MINUTES minutes.
# Usage: bash scripts/train_sr.sh MINUTES [RUN ...]   (RUN: x4_feat x4_pixel x8_feat x8_pixel; default all four;
# a suffix _tv<W> adds a total-variation term of weight W, e.g. x4_feat_tv300, the l_feat x4 line forked from
# x4_feat with `perceptlib fork ... --set tv_weight=300`)
# Writes results/sr_impl_<RUN>/ (model.pt, checkpoint.pt, config.json, history.json).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MINUTES=${1:?minutes per network for this call}; shift
PY=${PYTHON:-.venv/bin/python}
COMPILE=${COMPILE:---compile}   # COMPILE=--no-compile for eager steps (same math, ~1.4x slower on a CPU)
STEPS=${STEPS:-50000}
RUNS=("$@"); [ ${#RUNS[@]} -eq 0 ] && RUNS=(x4_feat x4_pixel x8_feat x8_pixel)
for r in "${RUNS[@]}"; do
  scale=${r%%_*}; scale=${scale#x}; rest=${r#*_}; loss=${rest%%_*}; extra=()
  case "$rest" in *_tv*) extra=(--tv-weight "${rest##*_tv}") ;; esac
  "$PY" -m perceptlib train-sr --recipe impl --mode cpu --scale "$scale" --loss "$loss" --steps "$STEPS" \
    --checkpoint-every 250 --max-minutes "$MINUTES" --no-progress $COMPILE "${extra[@]}" --out "results/sr_impl_$r"
done

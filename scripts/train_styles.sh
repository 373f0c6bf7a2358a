#!/usr/bin/env bash
# The six style networks with the working recipe (--recipe impl, CPU mode: 128^2 crops, batch 4), 10k steps
# each, resumable: every call continues each unfinished network from its checkpoint for up to MINUTES minutes.
# Usage: bash scripts/train_styles.sh MINUTES [STYLE ...]   (default: all six, in this order)
# Writes results/style_<name>/ (model.pt, checkpoint.pt, config.json, history.json, style.png, style.json).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MINUTES=${1:?minutes per style for this call}; shift
PY=${PYTHON:-.venv/bin/python}
COMPILE=${COMPILE:---compile}   # COMPILE=--no-compile for eager steps (same math, ~1.4x slower on a CPU)
STEPS=${STEPS:-10000}
STYLES=("$@"); [ ${#STYLES[@]} -eq 0 ] && STYLES=(starry_night great_wave kandinsky_composition_viii cafe_terrace night_cafe langlois_bridge)
for s in "${STYLES[@]}"; do
  "$PY" -m perceptlib train-style --style "$s" --recipe impl --mode cpu --steps "$STEPS" --checkpoint-every 100 \
    --max-minutes "$MINUTES" --no-progress $COMPILE --out "results/style_$s"
done

#!/usr/bin/env bash
# Short Starry Night runs that change one thing at a time from the paper's recipe (CPU mode: 128^2, batch 4).
# Usage: bash scripts/style_diagnostics.sh [STEPS] [NAME ...]   (default 1000 steps, all variants)
# Writes results/style_diagnostics/<name>/ (config, history; weights are git-ignored).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
STEPS=${1:-1000}; shift || true
PY=${PYTHON:-.venv/bin/python}
declare -A VARIANT=(
  [paper]=""                                                     # BN, (tanh+1)/2, style 5, lr 1e-3
  [paper_tanh150]="--head tanh150"                               # the official code's output head
  [official]="--norm instance --head tanh150"                    # the official code's defaults
  [paper_pystiche]="--style-weight 3 --style-size 512 --tv-weight 0.65025"  # released Starry Night: style 3, 512 px, TV 1e-5 (0-255)
)
NAMES=("$@"); [ ${#NAMES[@]} -eq 0 ] && NAMES=(paper paper_tanh150 official paper_pystiche)
for name in "${NAMES[@]}"; do
  "$PY" -m perceptlib train-style --style starry_night --mode cpu --steps "$STEPS" --checkpoint-every 100 \
    --out "results/style_diagnostics/$name" --no-progress ${VARIANT[$name]}
done

#!/usr/bin/env bash
# Half width (16/32/64 filters, the official code's instance-norm models) vs full width (32/64/128, the paper's
# Table 1): the impl recipe otherwise unchanged, STEPS steps (default 1000, CPU mode: 128^2 crops, batch 4) for
# two paintings, then each network's Fig. 5 score (L-BFGS evaluations matching its loss) at 256^2.
# Usage: bash scripts/style_width.sh [STYLE ...]   (default: starry_night great_wave)
# Writes results/style_width/<style>_c<width>/ (config, history, style image; the weights are deleted after
# scoring: these are comparison runs, not networks to use) and results/style_width/eval.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-.venv/bin/python}
STEPS=${STEPS:-1000}
STYLES=("$@"); [ ${#STYLES[@]} -eq 0 ] && STYLES=(starry_night great_wave)
for s in "${STYLES[@]}"; do
  for c in 16 32; do
    out="results/style_width/${s}_c$c"
    "$PY" -m perceptlib train-style --style "$s" --recipe impl --mode cpu --steps "$STEPS" --channels "$c" \
      --checkpoint-every 100 --no-progress --out "$out"
    "$PY" scripts/style_diag_eval.py "$out" --size 256 --out results/style_width/eval.json
    rm -f "$out/model.pt" "$out/checkpoint.pt"
  done
done

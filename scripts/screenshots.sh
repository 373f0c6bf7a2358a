#!/usr/bin/env bash
# Regenerate the README's gallery (docs/gallery/*.png) from the browser tests' screenshots: JupyterLab in
# headless chromium runs the widget notebooks in quick mode, changes the widgets (before/after shots) and
# opens the committed notebooks for their key figures (tests/widget_cases.py lists both). The images are
# trimmed, downscaled and palette-quantised (< 150 KB each). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/python -m perceptlib data fetch --sets set5 set14 content styles
source scripts/chromium.sh
export PERCEPTLIB_BROWSER=1 PERCEPTLIB_MODE=quick PERCEPTLIB_REQUIRE_WEIGHTS=1 MPLBACKEND=Agg
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
PERCEPTLIB_GALLERY="$tmp" .venv/bin/python -m pytest -m browser tests/test_browser.py -p no:cacheprovider "$@"
mkdir -p docs/gallery
rm -f docs/gallery/*.png
cp "$tmp"/*.png docs/gallery/
ls -l docs/gallery/*.png

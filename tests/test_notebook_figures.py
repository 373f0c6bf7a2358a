"""Every figure the notebooks draw (quick mode) has readable text and legends off the data, and every file
of ``results/`` the notebooks open is committed.

Each notebook runs in a kernel (nbclient, cwd ``notebooks/``) on an in-memory copy with one cell put in
front and one after. The first patches ``FigureCanvasBase.print_figure`` (what the inline backend's
display and ``savefig`` go through) to run :func:`perceptlib.figcheck.figure_problems` on each figure
shown, and adds an audit hook that records every ``open`` of a path under ``results/``. The last prints
both as JSON. The executed copy is written to pytest's tmp_path for inspection.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["00_quickstart", "00b_data_and_metrics", "01_feature_and_style_reconstruction", "02_super_resolution",
             "03_style_transfer"]
MARK = "@@figcheck@@"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# Runs first in the kernel, called with {code cell source: its indices in the original notebook} and results/.
SETUP = r'''
def _figcheck_setup(cells, results):
    import os, sys
    import matplotlib.backend_bases as bb
    from IPython import get_ipython
    from perceptlib.figcheck import figure_problems

    state = {"cell": None, "figures": [], "opened": {}}
    pending = {src: list(ix) for src, ix in cells.items()}

    def pre_run_cell(info):
        queue = pending.get(info.raw_cell)
        state["cell"] = queue.pop(0) if queue else None

    get_ipython().events.register("pre_run_cell", pre_run_cell)
    original = bb.FigureCanvasBase.print_figure

    def print_figure(self, *args, **kwargs):
        fig = self.figure
        done = fig.__dict__.setdefault("_figcheck_cells", set())
        if state["cell"] not in done:
            done.add(state["cell"])
            try:
                problems = figure_problems(fig)
            except Exception as e:  # a check that breaks is a failure too, not a pass
                problems = [f"figure_problems raised {e!r}"]
            title = fig.get_suptitle() or next((ax.get_title() for ax in fig.axes if ax.get_title()), "")
            state["figures"].append({"cell": state["cell"], "title": title, "problems": problems})
        return original(self, *args, **kwargs)

    bb.FigureCanvasBase.print_figure = print_figure
    prefix = os.path.realpath(results) + os.sep

    def audit(event, args):
        if event != "open" or isinstance(args[0], int):
            return
        try:
            path = os.path.realpath(os.fsdecode(args[0]))
            if path.startswith(prefix):
                mode = args[1] if isinstance(args[1], str) else "os.open"
                state["opened"].setdefault(path, set()).add(mode or "r")
        except Exception:  # an audit hook that raises would abort the open
            pass

    sys.addaudithook(audit)
    return state
'''

REPORT = r'''
import json as _figcheck_json, os as _figcheck_os
print(MARK + _figcheck_json.dumps({
    "figures": _figcheck_state["figures"],
    "opened": {p: sorted(m) for p, m in _figcheck_state["opened"].items() if _figcheck_os.path.isfile(p)}}))
'''


def _run(name: str, tmp_path: Path) -> dict:
    """Execute notebook ``name`` instrumented; return ``{"figures": [...], "opened": {path: modes}}``."""
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    cells: dict[str, list[int]] = {}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cells.setdefault(cell.source, []).append(i)
    setup = SETUP + f"_figcheck_state = _figcheck_setup({cells!r}, {str(ROOT / 'results')!r})\ndel _figcheck_setup\n"
    nb.cells.insert(0, nbformat.v4.new_code_cell(setup))
    nb.cells.append(nbformat.v4.new_code_cell(REPORT.replace("MARK", repr(MARK))))
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT / "notebooks")}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    line = next(ln for ln in text.splitlines() if ln.startswith(MARK))
    return json.loads(line[len(MARK):])


def _untracked(paths: list[str]) -> dict[str, str]:
    """Of ``paths`` (absolute, under ROOT), those git does not track: ``{relative path: why}``."""
    rel = [os.path.relpath(p, ROOT) for p in paths]
    if not rel:
        return {}
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--", *rel], check=True,
                             capture_output=True, text=True).stdout.split("\0")
    missing = sorted(set(rel) - set(tracked))
    if not missing:
        return {}
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-z", "--", *missing],
                             capture_output=True, text=True).stdout.split("\0")
    return {p: "untracked, ignored by .gitignore" if p in ignored else "untracked" for p in missing}


@pytest.fixture
def kernel_env(monkeypatch):
    monkeypatch.setenv("PERCEPTLIB_MODE", "quick")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_figures_and_results(name, tmp_path, kernel_env):
    report = _run(name, tmp_path)
    assert report["figures"], f"{name}: no figure was drawn (is the instrumentation still hooked in?)"
    bad = [f"cell {f['cell']} {f['title']!r}: {p}" for f in report["figures"] for p in f["problems"]]
    assert not bad, f"{name}: {len(bad)} figure problems in {len(report['figures'])} figures:\n" + "\n".join(bad)
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: cannot check that the results files are committed")
    untracked = _untracked(sorted(report["opened"]))
    assert not untracked, f"{name} opens results files that are not committed:\n" + "\n".join(
        f"{p} ({why}; opened {','.join(report['opened'][str(ROOT / p)])})" for p, why in untracked.items())

"""Kernel-level widget tests (no browser): execute each notebook that has widgets in quick mode with nbclient,
then, in the same kernel, set the app's controls, click Run and check that the result, the loss terms, the
figure and the Output widget follow the new values.

nbclient plays the front end: it routes what the click displays into ``app.out.outputs``, including the
traceback that ipywidgets' ``interactive`` shows instead of raising. So a broken callback fails here through
the outputs and an unchanged ``app.result``, although ``click()`` itself never raises.

The widgets are listed in widget_cases.py; ``pytest -k 01-style`` picks one.
"""
from __future__ import annotations

import json
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipywidgets")

from widget_cases import CASES, JSONABLE, KEY_FIGURES, NOTEBOOKS, WidgetCase, check_terms, missing_items  # noqa: E402,E501

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MARK = "@@pl-probe@@"
# Runs in the kernel: what the app shows now, as one JSON line.
PROBE = r'''
def _pl_probe(app, jsonable):
    import hashlib, io, json
    from matplotlib.figure import Figure
    fig = app.result
    d = {"is_figure": isinstance(fig, Figure), "result_id": id(fig), "titles": [], "fig_md5": None,
         "run": app.last_run, "controls": {k: repr(w.value) for k, w in app.controls.items()}, "outputs": []}
    if d["is_figure"]:
        d["titles"] = [ax.get_title() for ax in fig.axes] + [fig.get_suptitle()]
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        d["fig_md5"] = hashlib.md5(buf.getvalue()).hexdigest()
    for o in app.out.outputs:
        data = o.get("data", {})
        images = sorted(k for k in data if k.startswith("image/"))
        d["outputs"].append({
            "type": o["output_type"], "mime": sorted(data),
            "image_md5": hashlib.md5(str(data[images[0]]).encode()).hexdigest() if images else None,
            "error": f"{o.get('ename')}: {o.get('evalue')}" if o["output_type"] == "error" else None,
            "text": "".join(o.get("text", "")) if o["output_type"] == "stream" else None})
    print("@@pl-probe@@" + json.dumps(d, default=jsonable))
'''


class Kernel:
    """One notebook executed top to bottom in a live kernel; ``run`` executes more cells in it."""

    def __init__(self, notebook: str):
        path = NOTEBOOKS / notebook
        self.hung = None
        self.nb = nbformat.read(path, as_version=4)
        self.client = nbclient.NotebookClient(self.nb, timeout=600, kernel_name="python3",
                                              resources={"metadata": {"path": str(path.parent)}})
        self._ctx = self.client.setup_kernel()
        self._ctx.__enter__()
        t0 = time.perf_counter()
        try:
            for i, cell in enumerate(list(self.nb.cells)):
                if cell.cell_type == "code":
                    self.client.execute_cell(cell, i)
        except BaseException:
            self.close()
            raise
        self.seconds = time.perf_counter() - t0
        self.run(PROBE)

    def run(self, code: str, timeout: int = 120) -> str:
        """Execute ``code`` as a new cell; return its stdout (raises on an error in the cell itself, and
        after ``timeout`` s: a quick-mode Run takes seconds, so a hung callback fails fast)."""
        if self.hung:
            pytest.fail(f"the kernel is still busy with a cell that timed out: {self.hung}", pytrace=False)
        cell = nbformat.v4.new_code_cell(code)
        self.nb.cells.append(cell)
        self.client.timeout = timeout
        try:
            self.client.execute_cell(cell, len(self.nb.cells) - 1)
        except nbclient.exceptions.CellTimeoutError:
            self.hung = code.splitlines()[-1]
            raise
        return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")

    def probe(self, app: str) -> dict:
        out = self.run(f"_pl_probe({app}, {JSONABLE})")
        return json.loads(out.split(MARK, 1)[1])

    def close(self):
        self._ctx.__exit__(None, None, None)


@pytest.fixture(scope="module")
def kernels(real_weights):
    """Notebook -> its executed Kernel, started on first use and shared by that notebook's cases."""
    started: dict[str, Kernel] = {}

    def get(notebook: str) -> Kernel:
        if notebook not in started:
            started[notebook] = Kernel(notebook)
        return started[notebook]

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PERCEPTLIB_MODE", "quick")
        mp.setenv("MPLBACKEND", "Agg")
        yield get
    for k in started.values():
        k.close()


def errors(probe: dict) -> list[str]:
    return [o["error"] for o in probe["outputs"] if o["type"] == "error"]


def images(probe: dict) -> list[str]:
    return [o["image_md5"] for o in probe["outputs"] if o["image_md5"]]


def test_registry_names_existing_notebooks_cells_and_factories():
    import perceptlib.widgets as widgets

    assert len({c.id for c in CASES}) == len(CASES)
    for c in CASES:
        nb = nbformat.read(NOTEBOOKS / c.notebook, as_version=4)
        hits = [cell for cell in nb.cells if cell.cell_type == "code" and c.cell in cell.source]
        assert len(hits) == 1, f"{c.id}: {c.cell!r} is in {len(hits)} code cells of {c.notebook}, want 1"
        assert c.factory + "(" in hits[0].source and callable(getattr(widgets, c.factory))
        assert set(c.changes) and all(u.css.startswith("pl-") for u in c.ui)
    assert len({f.name for f in KEY_FIGURES}) == len(KEY_FIGURES)
    for f in KEY_FIGURES:  # the browser test's gallery figures: the cells exist
        nb = nbformat.read(NOTEBOOKS / f.notebook, as_version=4)
        hits = [cell for cell in nb.cells if cell.cell_type == "code" and f.cell in cell.source]
        assert len(hits) == 1, f"{f.name}: {f.cell!r} is in {len(hits)} code cells of {f.notebook}, want 1"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_widget_run_follows_the_controls(case: WidgetCase, kernels):
    kernel = kernels(case.notebook)
    before = kernel.probe(case.app)
    assert not errors(before), f"{case.id}: the app already shows an error after the notebook ran: {errors(before)}"
    for name in case.changes:
        assert name in before["controls"], f"{case.id}: no control {name!r}; controls: {sorted(before['controls'])}"

    t0 = time.perf_counter()
    kernel.run(f"for _k, _v in {case.changes!r}.items():\n"
               f"    {case.app}.controls[_k].value = _v\n"
               f"{case.app}.manual_button.click()")
    seconds = time.perf_counter() - t0
    after = kernel.probe(case.app)  # a separate cell: nbclient fills the Output widget after a cell ends

    # the callback ran without an error (ipywidgets shows it in the Output widget instead of raising)
    assert not errors(after), f"{case.id}: the Run callback failed: {errors(after)}"
    # a new result and a new figure, shown in the app's Output widget
    assert after["is_figure"], f"{case.id}: app.result is not a Figure after Run"
    assert after["result_id"] != before["result_id"] and after["fig_md5"] != before["fig_md5"], \
        f"{case.id}: app.result did not change after Run"
    assert images(after), f"{case.id}: the Output widget shows no image: {after['outputs']}"
    assert set(images(after)).isdisjoint(images(before)), f"{case.id}: the Output widget still shows the old image"
    # the run is the one the new values ask for: last_run, its loss terms, and a figure title say so
    run = after["run"] or {}
    wrong = missing_items(case.run, run)
    assert not wrong, f"{case.id}: " + "; ".join(wrong)
    if case.steps is not None:
        assert len(run.get("history") or []) == case.steps, f"{case.id}: history {run.get('history')}"
    if case.terms:
        check_terms(run.get(case.terms_key), case.terms, case.total_term, case.absent_terms)
    if case.title is not None:
        assert any(case.title in t for t in after["titles"]), f"{case.id}: no title has {case.title!r}: {after['titles']}"
        assert not any(case.title in t for t in before["titles"]), f"{case.id}: the old figure had it too"
    print(f"{case.id}: notebook ran in {kernel.seconds:.1f} s, Run with {case.changes} in {seconds:.1f} s")

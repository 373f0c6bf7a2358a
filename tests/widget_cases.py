"""The notebooks' widgets, one entry each: shared by the kernel-level tests (test_widgets_kernel.py, nbclient)
and the browser tests (test_browser.py, JupyterLab in headless Chromium).

Every app is a ``perceptlib.widgets`` factory's ``ipywidgets.interactive`` (built by ``widgets._app``) with a
Run button: ``app.controls`` (name -> widget, each with a ``pl-*`` CSS class), ``app.manual_button``
(``pl-run``), ``app.out`` (the Output widget that shows the figure), ``app.result`` (the Figure) and
``app.last_run`` (a dict describing the run; each factory has its own keys).

To add a widget (e.g. notebook 02's or 03's): append a :class:`WidgetCase` to ``CASES``: the notebook, the kernel
name of the app object after the notebook ran, the source line of the cell that displays it, the control values
to set (kernel test) and a change through the real controls (browser test), and what ``app.last_run`` and the
figure must then say. Nothing else needs to change. Both tests always check that Run ran without an error (the
Output widget shows no traceback) and that ``app.result`` and the shown image changed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


@dataclass(frozen=True)
class UI:
    """One action on a real control inside the app (browser test).

    ``kind``: ``"select"`` (a Dropdown: pick the option labelled ``value``), ``"select_multiple"`` (a
    SelectMultiple: exactly the options labelled ``value``, a tuple), ``"slider"`` (focus the handle and press
    ArrowRight ``value`` times, ArrowLeft if negative; one press = one ``step``), ``"checkbox"`` (set it to
    ``value``). ``css`` is the control's ``pl-*`` class, ``nth`` which of the app's controls with that class (in
    the factory's order), ``readout`` the slider's readout text expected afterwards.
    """

    kind: str
    css: str
    value: object
    nth: int = 0
    readout: str | None = None


@dataclass(frozen=True)
class WidgetCase:
    id: str
    notebook: str  # under notebooks/
    factory: str  # the perceptlib.widgets factory that built the app
    app: str  # kernel expression for the app object once the notebook has run
    cell: str  # a line of the code cell whose output shows the app (unique in the notebook)
    changes: dict  # kernel test: control name -> value, set before clicking Run
    ui: tuple[UI, ...]  # browser test: a change through the real controls
    # what app.last_run must hold afterwards (a subset: nested dicts compare by their listed keys only;
    # tensors and other objects appear as "<Tensor (1, 3, 64, 64)>"-style strings)
    run: dict = field(default_factory=dict)  # kernel test
    ui_run: dict = field(default_factory=dict)  # browser test
    title: str | None = None  # kernel test: text a title of the new figure has (and the old one had not)
    # loss terms last_run[terms_key] must hold, term -> weight; with ``total_term`` the weighted sum of the terms
    # must equal last_run[terms_key][total_term] (so the weight demonstrably entered the loss)
    terms: dict = field(default_factory=dict)  # kernel test
    ui_terms: dict = field(default_factory=dict)  # browser test
    terms_key: str = "final"
    total_term: str | None = None
    absent_terms: tuple[str, ...] = ()  # terms of the previous run that must be gone
    steps: int | None = None  # kernel test: len(app.last_run["history"])
    screenshot: str | None = None  # file name stem for the browser test's before/after screenshots
    gallery_before: bool = False  # the README gallery gets the "after" shot, and with this the "before" one
    container: str = ".widget-interact"  # browser test: the app's root element in the cell's output


CASES: list[WidgetCase] = [
    WidgetCase(
        id="01-reconstruction",
        notebook="01_feature_and_style_reconstruction.ipynb",
        factory="reconstruction_app",
        app="app",
        cell="app = reconstruction_app(",
        # after Run All the notebook itself left layer 1 = conv3_3 with distance l1 (its "driven from code" cell)
        changes={"layer1": "relu2_2", "layer2": "relu1_2", "weight2": 10.0, "distance": "l1+l2", "image": "coffee",
                 "steps": 3},
        ui=(UI("select", "pl-layer", "relu2_2", nth=0), UI("select", "pl-layer", "relu1_2", nth=1),
            UI("slider", "pl-weight", 4, nth=1, readout="10.0")),  # 4 steps of 10^0.25: 1 -> 10
        run={"label": "1*relu2_2+10*relu1_2 [l1+l2]",
             "spec": {"image": "coffee", "distance": "l1+l2", "steps": 3,
                      "layers": [["relu2_2", 1.0], ["relu1_2", 10.0]]}},
        ui_run={"label": "1*relu2_2+10*relu1_2 [l1]",
                "spec": {"distance": "l1", "layers": [["relu2_2", 1.0], ["relu1_2", 10.0]]}},
        title="1*relu2_2+10*relu1_2 [l1+l2]",
        terms={"feat/relu2_2": 1.0, "feat/relu1_2": 10.0},
        ui_terms={"feat/relu2_2": 1.0, "feat/relu1_2": 10.0},
        total_term="feat",
        absent_terms=("feat/conv3_3",),
        steps=3,
        screenshot="01_reconstruction_app",
        gallery_before=True,
    ),
    WidgetCase(
        id="01-style",
        notebook="01_feature_and_style_reconstruction.ipynb",
        factory="style_reconstruction_app",
        app="style_app",
        cell="style_app = style_reconstruction_app(",
        changes={"layers": ("relu2_1", "relu1_1"), "steps": 4, "init": "grey"},
        ui=(UI("select_multiple", "pl-layer", ("relu1_1", "relu2_1")),
            UI("slider", "pl-steps", 40, readout="50")),  # quick mode's 10 steps + 40
        run={"label": "relu1_1+relu2_1",
             "spec": {"task": "style", "init": "grey", "steps": 4, "layers": [["relu1_1", 1.0], ["relu2_1", 1.0]]}},
        ui_run={"label": "relu1_1+relu2_1 [noise]",
                "spec": {"task": "style", "init": "noise", "steps": 50,
                         "layers": [["relu1_1", 1.0], ["relu2_1", 1.0]]}},
        title="relu1_1+relu2_1",
        terms={"style/relu1_1": 1.0, "style/relu2_1": 1.0},
        ui_terms={"style/relu1_1": 1.0, "style/relu2_1": 1.0},
        total_term="style",
        absent_terms=("style/relu3_3",),
        steps=4,
        screenshot="01_style_app",
    ),
    WidgetCase(
        id="02-sr-compare",
        notebook="02_super_resolution.ipynb",
        factory="sr_compare_app",
        app="compare_app",
        cell="compare_app = sr_compare_app(",
        # the notebook's own cell left two x4 models on a crop, histogram-matched ("... + h.m." panels)
        changes={"hist_match": False, "size": 48},
        ui=(UI("checkbox", "pl-histmatch", False), UI("slider", "pl-crop-size", -6, readout="48")),  # 96 - 6 * 8
        run={"hist_match": False, "box": [..., ..., 48],
             "psnr": {"x4 l_pixel (paper recipe, H100)": ..., "x4 l_feat (paper recipe, H100)": ...}},
        ui_run={"hist_match": False, "box": [..., ..., 48], "psnr": {"x4 l_feat (paper recipe, H100)": ...}},
        title="x4 l_feat (paper recipe, H100)\n",  # the model's panel without "+ h.m."
        screenshot="02_sr_compare_app",
    ),
    WidgetCase(
        id="02-sr-train",
        notebook="02_super_resolution.ipynb",
        factory="sr_train_app",
        app="train_app",
        cell="train_app = sr_train_app(",
        # the notebook's own cell left relu2_2 + 1e6 pixel at the paper's patch size (a CPU runs the quick size)
        changes={"layer1": "relu1_2", "weight1": 10.0, "patch": 48, "steps": 3},
        ui=(UI("select", "pl-layer", "relu1_2", nth=0), UI("slider", "pl-weight", 4, nth=0, readout="10.0")),
        run={"label": "10*relu1_2 + 1e+06*pixel"},
        ui_run={"label": "10*relu1_2 + 1e+06*pixel"},
        title="loss: 10*relu1_2 + 1e+06*pixel",
        screenshot="02_sr_train_app",
    ),
    WidgetCase(
        id="03-style-transfer",
        notebook="03_style_transfer.ipynb",
        factory="style_transfer_app",
        app="app",
        cell="app = style_transfer_app(",
        # the notebook's own cell ran it once with the config's four style layers and style weight 5
        changes={"style_layers": ("relu2_2", "relu1_2"), "style_weight": 100.0, "steps": 3},
        ui=(UI("select_multiple", "pl-layer", ("relu1_2", "relu2_2")), UI("slider", "pl-style-weight", 4, readout="56.2")),  # 5 -> 10^1.75 on the 0.25 grid
        run={"style_layers": ["relu1_2", "relu2_2"], "method": "optimise"},
        ui_run={"style_layers": ["relu1_2", "relu2_2"]},
        title="s 100 tv",  # the caption's "weights c ... s <style weight> tv ..."
        terms={"style/relu1_2": 1.0, "style/relu2_2": 1.0},
        ui_terms={"style/relu1_2": 1.0, "style/relu2_2": 1.0},
        terms_key="terms",
        absent_terms=("style/relu3_3", "style/relu4_3"),
        screenshot="03_style_transfer_app",
    ),
]

# Runs in the kernel (a lambda, so that it also fits a user expression): app.last_run as JSON-able data.
JSONABLE = ("lambda o: f'<{type(o).__name__} {tuple(o.shape)}>' if hasattr(o, 'shape') "
            "else (sorted(o) if isinstance(o, (set, frozenset)) else repr(o)[:200])")


def missing_items(expected, actual, path: str = "last_run") -> list[str]:
    """Where ``actual`` differs from ``expected`` (dicts: only the keys ``expected`` lists; tuples = lists;
    ``...`` matches any value that is present)."""
    if expected is ...:
        return [] if actual is not None else [f"{path} is missing"]
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path} = {actual!r}, want a dict with {expected!r}"]
        return [m for k, v in expected.items() for m in missing_items(v, actual.get(k), f"{path}[{k!r}]")]
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        if len(expected) == len(actual):
            return [m for i, (e, a) in enumerate(zip(expected, actual)) for m in missing_items(e, a, f"{path}[{i}]")]
    elif isinstance(expected, float) and isinstance(actual, (int, float)):
        if math.isclose(expected, actual, rel_tol=1e-6):
            return []
    elif expected == actual:
        return []
    return [f"{path} = {actual!r}, want {expected!r}"]


def notebooks_with_widgets() -> list[str]:
    return list(dict.fromkeys(c.notebook for c in CASES))


def cases_for(notebook: str) -> list[WidgetCase]:
    return [c for c in CASES if c.notebook == notebook]


def check_terms(final: dict | None, terms: dict, total_term: str | None, absent: tuple = ()):
    """The loss terms name the chosen layers and the weights entered the total: total = sum(w * term)."""
    assert final, "the run reported no loss terms"
    missing = [t for t in terms if t not in final]
    assert not missing, f"loss terms {missing} missing from {final}"
    assert not [t for t in absent if t in final], f"terms of the previous run {absent} still in {final}"
    if total_term:
        weighted = sum(w * final[t] for t, w in terms.items())
        assert math.isclose(final[total_term], weighted, rel_tol=2e-4), (
            f"{total_term} = {final[total_term]} but sum(weight * term) = {weighted} for {terms}: {final}")


@dataclass(frozen=True)
class KeyFigure:
    """A committed figure the browser tests open in JupyterLab (saved outputs, nothing executed), check that
    it renders and screenshot it for the README's gallery (docs/gallery/<name>.png)."""

    notebook: str
    cell: str  # a line of the code cell that draws it (unique in the notebook)
    name: str
    caption: str
    nth: int = 0  # which image of that cell's outputs


KEY_FIGURES: list[KeyFigure] = [
    KeyFigure("00_quickstart.ipynb", "fig = plot_loss_table(", "00_loss_table",
              "00 · which VGG-16 layer notices which distortion"),
    KeyFigure("00b_data_and_metrics.ipynb", "fig = plot_metric_bars(", "00b_bicubic_baseline",
              "00b · bicubic baseline PSNR on the stand-in sets vs the paper"),
    KeyFigure("01_feature_and_style_reconstruction.ipynb", "fig3 = {p: {s.label: runs[s]", "01_fig3_feature_reconstruction",
              "01 · Fig. 3: feature reconstruction from one layer"),
    KeyFigure("01_feature_and_style_reconstruction.ipynb", "fig4 = {s: {", "01_fig4_style_reconstruction",
              "01 · Fig. 4: style reconstruction from Gram matrices"),
    KeyFigure("02_super_resolution.ipynb", "histogram_match(", "02_sr_x4",
              "02 · ×4 super-resolution: bicubic, ℓ_pixel, ℓ_feat"),
    KeyFigure("03_style_transfer.ipynb", "display(plot_table1(", "03_table1_speed",
              "03 · Table 1: seconds per image, trained network vs optimisation"),
]

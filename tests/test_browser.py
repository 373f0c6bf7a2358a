"""Browser end-to-end tests (``pytest -m browser``): a real JupyterLab in headless Chromium.

One JupyterLab server per session serves a temporary copy of the notebooks (loopback only, isolated HOME and
Jupyter directories, no news, ``?reset`` workspace). For each notebook with widgets (widget_cases.py): Run All
through the menu in quick mode, change layers and loss weights through the real controls (found by their
``pl-*`` classes), click Run, and check that the figure in the app's Output widget is redrawn and that the
kernel's run is the one the controls ask for (label and loss terms; the figure's title is pixels, so the
label is read from the kernel that drew it). A second test opens the committed notebooks and checks that the
key figures render. Element screenshots go to out/browser/ (failures: ``FAILED-*``); with
``PERCEPTLIB_GALLERY=<dir>`` (scripts/screenshots.sh) small copies are written there for the README.

Needs Debian's ``chromium`` (apt-get install chromium) and ``playwright`` (pinned in constraints.txt; its own
browser download is not used). Without them these tests skip, unless ``PERCEPTLIB_BROWSER=1`` (set by
scripts/test.sh, so CI fails instead). ``PERCEPTLIB_CHROMIUM`` overrides the browser binary.
"""
from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from widget_cases import (JSONABLE, KEY_FIGURES, NOTEBOOKS, ROOT, UI, cases_for, check_terms, missing_items,
                          notebooks_with_widgets)

pytestmark = [pytest.mark.browser]

TOKEN = "perceptlib-browser-test"
SHOTS = ROOT / "out" / "browser"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
HOW_TO = ("browser tests need Debian's chromium and playwright: `sudo apt-get install chromium` and "
          "`pip install -c constraints.txt playwright`, or run `bash scripts/test.sh`, which installs both")
RUN_ALL_TIMEOUT_MS = 180_000  # Run All of a quick-mode notebook on 2 busy cores
RUN_TIMEOUT_MS = 90_000  # one click on Run (quick sizes)


def chromium_path() -> str | None:
    """$PERCEPTLIB_CHROMIUM when set (only that), else Debian's binary, else one on the PATH."""
    override = os.environ.get("PERCEPTLIB_CHROMIUM")
    candidates = [override] if override else ["/usr/lib/chromium/chromium", shutil.which("chromium"),
                                              shutil.which("chromium-browser")]
    for p in candidates:
        if p and os.access(p, os.X_OK):
            return p
    return None


def require_or_skip(why: str):
    if os.environ.get("PERCEPTLIB_BROWSER") == "1":
        pytest.fail(f"PERCEPTLIB_BROWSER=1 but {why}; {HOW_TO}", pytrace=False)
    pytest.skip(f"{why}; {HOW_TO}")


@pytest.fixture(scope="session")
def playwright_chromium():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_or_skip("playwright is not installed")
    exe = chromium_path()
    if exe is None:
        require_or_skip(f"no chromium binary ({os.environ.get('PERCEPTLIB_CHROMIUM') or '/usr/lib/chromium/chromium'})")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server on a temporary copy of the repository's notebooks (quick mode)."""

    def __init__(self, tmp: Path):
        from perceptlib.sources.paths import cache_dir

        self.root = tmp / "root"
        (self.root / "notebooks").mkdir(parents=True)
        (self.root / "out").mkdir()
        shutil.copy(ROOT / "pyproject.toml", self.root)  # the notebooks find their root by it
        for nb in NOTEBOOKS.glob("*.ipynb"):
            shutil.copy(nb, self.root / "notebooks")
        if (ROOT / "results").is_dir():  # committed results/checkpoints, read only in quick mode
            (self.root / "results").symlink_to(ROOT / "results")
        j = tmp / "jupyter"
        self.runtime = j / "runtime"
        env = dict(os.environ, HOME=str(tmp / "home"), JUPYTER_CONFIG_DIR=str(j / "config"),
                   JUPYTER_DATA_DIR=str(j / "data"), JUPYTER_RUNTIME_DIR=str(self.runtime),
                   IPYTHONDIR=str(j / "ipython"), MPLCONFIGDIR=str(j / "mpl"),
                   JUPYTERLAB_SETTINGS_DIR=str(j / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(j / "workspaces"),
                   PERCEPTLIB_CACHE=str(cache_dir(create=False)),  # weights and images stay where they are
                   PERCEPTLIB_MODE="quick", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
        env.pop("JUPYTER_PATH", None)
        settings = {"apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
                    "notebook-extension/tracker": {"windowingMode": "none"},  # render every cell
                    "docmanager-extension/plugin": {"autosave": False}}
        for name, value in settings.items():
            ext, plugin = name.split("/")
            f = j / "settings" / f"@jupyterlab/{ext}" / f"{plugin}.jupyterlab-settings"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(value))
        (tmp / "home").mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "jupyterlab.log"
        self._log = open(self.log_path, "wb")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={self.port}",
             "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}",
             f"--ServerApp.root_dir={self.root}", "--LabApp.news_url=", "--ServerApp.terminals_enabled=False"],
            env=env, cwd=self.root, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited ({self.proc.returncode}):\n{self.log()}")
            try:
                self.api("status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(f"jupyter lab did not answer in 90 s:\n{self.log()}")
                time.sleep(0.25)
        self.start_seconds = time.perf_counter() - t0

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                     headers={"Authorization": f"token {TOKEN}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def notebook_url(self, notebook: str) -> str:
        return f"{self.url}/lab/tree/notebooks/{notebook}?reset&token={TOKEN}"

    def shutdown_kernels(self):
        for s in self.api("sessions"):
            self.api(f"sessions/{s['id']}", method="DELETE")

    def kernel_eval(self, notebook: str, expr: str):
        """The JSON string ``expr`` evaluates to in the kernel of ``notebook``'s session (beside the browser),
        decoded."""
        from jupyter_client import BlockingKernelClient

        kids = [s["kernel"]["id"] for s in self.api("sessions") if s["path"].endswith(notebook)]
        assert len(kids) == 1, f"{len(kids)} kernels for {notebook}"
        kc = BlockingKernelClient(connection_file=str(self.runtime / f"kernel-{kids[0]}.json"))
        kc.load_connection_file()
        kc.start_channels()
        try:
            msg_id = kc.execute("", silent=True, store_history=False,
                                user_expressions={"r": expr})
            while True:
                reply = kc.get_shell_msg(timeout=RUN_TIMEOUT_MS / 1000)
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
        finally:
            kc.stop_channels()
        r = reply["content"]["user_expressions"]["r"]
        assert r["status"] == "ok", f"{expr}: {r.get('ename')}: {r.get('evalue')}"
        return json.loads(ast.literal_eval(r["data"]["text/plain"]))

    def log(self, n: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="session")
def lab(playwright_chromium, real_weights, tmp_path_factory):
    server = Lab(tmp_path_factory.mktemp("jupyterlab"))
    print(f"jupyter lab on {server.url} answered after {server.start_seconds:.1f} s")
    yield server
    server.close()


@pytest.fixture
def page(lab, playwright_chromium):
    context = playwright_chromium.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    context.close()
    lab.shutdown_kernels()  # the next test starts from fresh kernels


def shot(locator, name: str, gallery_width: int | None = None) -> Path:
    """Element screenshot to out/browser/<name>.png; with $PERCEPTLIB_GALLERY also a small copy there."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    png = locator.screenshot(path=str(path), animations="disabled")
    gallery = os.environ.get("PERCEPTLIB_GALLERY")
    if gallery and gallery_width:
        save_small_png(png, Path(gallery) / f"{name}.png", gallery_width)
    return path


def save_small_png(png: bytes, dest: Path, width: int, max_bytes: int = 150_000):
    """Trim the white margin, downscale to ``width`` px and quantise to a 256-colour palette (README images
    stay small)."""
    from PIL import Image, ImageChops

    im = Image.open(io.BytesIO(png)).convert("RGB")
    box = ImageChops.difference(im, Image.new("RGB", im.size, "white")).point(lambda v: 255 if v > 8 else 0).getbbox()
    if box:
        im = im.crop((max(0, box[0] - 4), max(0, box[1] - 4), min(im.width, box[2] + 4), min(im.height, box[3] + 4)))
    while True:
        if im.width > width:
            im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
        buf = io.BytesIO()
        im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            buf, format="PNG", optimize=True)
        if buf.tell() <= max_bytes or width < 300:
            break
        width = int(width * 0.85)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(buf.getvalue())


@contextlib.contextmanager
def screenshots_on_failure(page, name: str, lab: Lab, locator=None):
    try:
        yield
    except BaseException:
        SHOTS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            page.screenshot(path=str(SHOTS / f"FAILED-{name}-page.png"))
        if locator is not None:
            with contextlib.suppress(Exception):
                locator.screenshot(path=str(SHOTS / f"FAILED-{name}-element.png"), timeout=10_000)
        print(f"screenshots: {SHOTS}/FAILED-{name}-*.png\n--- jupyter lab log (tail) ---\n{lab.log()}")
        raise


def open_notebook(page, lab: Lab, notebook: str):
    from playwright.sync_api import expect

    page.goto(lab.notebook_url(notebook))
    expect(page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first).to_be_visible()
    # the status bar, not the toolbar's indicator (that one says idle before the kernel exists)
    expect(page.locator("#jp-main-statusbar")).to_contain_text("| Idle", timeout=90_000)


def code_cell(page, source_line: str):
    """The notebook's code cell whose source contains ``source_line`` (exactly one)."""
    from playwright.sync_api import expect

    cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell").filter(
        has=page.locator(".jp-InputArea", has_text=source_line))
    expect(cells).to_have_count(1)
    return cells


# Resolves to "done" when every code cell has an execution count, "error" when an output shows a traceback.
RUN_ALL_STATE = """() => {
  const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
  if (!nb) return false;
  if ([...nb.querySelectorAll('.jp-OutputArea-output')].some(o => o.textContent.includes('Traceback (most recent call last)')))
    return 'error';
  const prompts = [...nb.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
  return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent)) ? 'done' : false;
}"""

# Resolves when the app's figure <img> differs from ``before`` (or appears), or the app shows a traceback.
REDRAWN = """([app, before]) => {
  if (app.textContent.includes('Traceback (most recent call last)')) return 'error';
  const img = app.querySelector('.widget-output img');
  return img && img.complete && img.naturalWidth > 0 && img.src !== before ? 'redrawn' : false;
}"""


def run_all(page):
    page.click("#jp-MainMenu >> text=Run")
    page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
    state = page.wait_for_function(RUN_ALL_STATE, timeout=RUN_ALL_TIMEOUT_MS).json_value()
    errors = page.locator(".jp-OutputArea-output", has_text="Traceback (most recent call last)")
    assert state == "done", "Run All stopped on an error:\n" + "\n".join(errors.all_inner_texts())[-3000:]


def act(app, ui: UI):
    from playwright.sync_api import expect

    control = app.locator(f".{ui.css}").nth(ui.nth)
    if ui.kind == "select":
        control.locator("select").select_option(label=ui.value)
    elif ui.kind == "select_multiple":
        control.locator("select").select_option(label=list(ui.value))
    elif ui.kind == "checkbox":
        control.locator("input[type=checkbox]").set_checked(bool(ui.value))
    elif ui.kind == "slider":
        control.locator(".noUi-handle").focus()
        for _ in range(abs(ui.value)):
            control.page.keyboard.press("ArrowRight" if ui.value > 0 else "ArrowLeft")
    else:
        raise ValueError(f"unknown UI action {ui.kind!r}")
    if ui.readout is not None:
        expect(control.locator(".widget-readout")).to_have_text(ui.readout)


@pytest.mark.timeout(300)  # 01: ~20 s, 02: ~50 s here (2 busy cores); the first includes the server start
@pytest.mark.parametrize("notebook", notebooks_with_widgets())
def test_widgets_in_jupyterlab(notebook, lab, page):
    from playwright.sync_api import expect

    t0 = time.perf_counter()
    with screenshots_on_failure(page, Path(notebook).stem, lab):
        open_notebook(page, lab, notebook)
        t_open = time.perf_counter()
        run_all(page)
        t_run_all = time.perf_counter()
    timings = [f"open {t_open - t0:.1f} s", f"Run All {t_run_all - t_open:.1f} s"]
    for case in cases_for(notebook):
        app = code_cell(page, case.cell).locator(case.container)
        with screenshots_on_failure(page, case.id, lab, app):
            t1 = time.perf_counter()
            expect(app).to_have_count(1)
            expect(app.locator(".pl-run")).to_be_visible()
            img = app.locator(".widget-output img")
            before = img.get_attribute("src") if img.count() else None
            shot(app, f"{case.screenshot or case.id}_before", gallery_width=560 if case.gallery_before else None)
            for ui in case.ui:
                act(app, ui)
            app.locator(".pl-run").click()
            state = page.wait_for_function(REDRAWN, arg=[app.element_handle(), before],
                                           timeout=RUN_TIMEOUT_MS).json_value()
            assert state == "redrawn", f"{case.id}: the Run callback failed:\n" + \
                "\n".join(app.locator(".widget-output").all_inner_texts())[-3000:]
            expect(img).to_have_count(1)
            # the run the kernel made (and drew) is the one the controls ask for
            run = lab.kernel_eval(notebook, f"__import__('json').dumps({case.app}.last_run, default={JSONABLE})")
            wrong = missing_items(case.ui_run, run or {})
            assert not wrong, f"{case.id}: " + "; ".join(wrong)
            if case.ui_terms:
                check_terms((run or {}).get(case.terms_key), case.ui_terms, case.total_term, case.absent_terms)
            shot(app, f"{case.screenshot or case.id}_after", gallery_width=560)
            timings.append(f"{case.id} {time.perf_counter() - t1:.1f} s")
    print(f"{notebook}: " + ", ".join(timings))


@pytest.mark.timeout(180)  # ~20-25 s here (5 notebooks)
def test_key_figures_render(lab, page):
    """The committed notebooks open in JupyterLab and their key figures render (nothing is executed)."""
    from playwright.sync_api import expect

    for notebook in dict.fromkeys(f.notebook for f in KEY_FIGURES):
        with screenshots_on_failure(page, f"figures-{Path(notebook).stem}", lab):
            open_notebook(page, lab, notebook)
            for fig in (f for f in KEY_FIGURES if f.notebook == notebook):
                img = code_cell(page, fig.cell).locator(".jp-OutputArea-output img").nth(fig.nth)
                expect(img).to_be_visible()
                img.scroll_into_view_if_needed()
                width = img.evaluate("i => i.decode().then(() => i.naturalWidth)")
                assert width > 100, f"{fig.name}: image {width} px wide"
                height = img.bounding_box()["height"]  # JupyterLab scrolls inside; taller shots come out clipped
                assert height < 900, f"{fig.name}: {height:.0f} px tall, too tall for a screenshot; pick another"
                shot(img, fig.name, gallery_width=720)
        lab.shutdown_kernels()

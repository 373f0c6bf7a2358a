"""Faults: a full disk during a checkpoint write, two runs on one folder, fetches killed (SIGKILL) during the
download or the extraction, and packages with the wrong sha256. No network: a local http.server on 127.0.0.1
(which can hold a file half-sent, or corrupt it) and tiny packages built here."""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from perceptlib import data
from perceptlib.cli import main
from perceptlib.sources import data_sources, download
from perceptlib.sources.deb import download_deb
from perceptlib.sources.download import FetchError, pip_download, sha256_file
from perceptlib.runlock import LOCK_FILE, RunLockedError
from perceptlib.train import CheckpointError, CheckpointWriteError, load_checkpoint

import ddp_worker
from conftest import load_asset
from test_data import _fake_apt, _tiny_sources, make_deb, sha

pytestmark = pytest.mark.usefixtures("one_thread")

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
HOST = socket.gethostname()


def py_env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}", **extra}


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# -- disk full ------------------------------------------------------------------------------------------

def test_disk_full_stops_with_path_and_free_space_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    ref, _ = ddp_worker.run(tmp_path / "ref", 6)
    out = tmp_path / "run"
    real_fsync, writes = os.fsync, []

    def fsync(fd):  # the second checkpoint.pt write hits a full disk
        if ".checkpoint.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            writes.append(fd)
            if len(writes) >= 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(CheckpointWriteError) as e:
        ddp_worker.run(out, 6)
    msg = str(e.value)
    assert isinstance(e.value, OSError) and isinstance(e.value, CheckpointError) and e.value.errno == errno.ENOSPC
    assert f"cannot write {out / 'checkpoint.pt'}" in msg and "No space left on device" in msg
    assert re.search(r"[\d.]+ [kMG]?B free of [\d.]+ [kMG]?B", msg) and "unchanged" in msg
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2  # the previous one, loadable
    assert not list(out.glob(".*.tmp")) and not (out / LOCK_FILE).exists()
    monkeypatch.setattr(os, "fsync", real_fsync)
    model, hist = ddp_worker.run(out, 6)  # space freed: resumes from step 2 to the same end
    assert same_weights(model, ref) and hist.steps_run == 4


def test_file_size_limit_in_a_subprocess(tmp_path):
    out = tmp_path / "run"
    ddp_worker.run(out, 2)
    limit = (out / "checkpoint.pt").stat().st_size // 2
    code = ("import resource, sys, torch, ddp_worker\n"
            "torch.set_num_threads(1)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))\n"
            "ddp_worker.run(sys.argv[1], 6)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(out), str(limit)], env=py_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("perceptlib.train.CheckpointWriteError: cannot write") and str(out / "checkpoint.pt") in last
    assert "File too large (file size limit" in last and "free of" in last
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2
    assert not list(out.glob(".*.tmp")) and not (out / LOCK_FILE).exists()


# -- two runs, one folder ---------------------------------------------------------------------------------

@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    for name in ("chelsea", "coffee"):
        arr = (load_asset(name, 64)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(arr).save(d / f"{name}.png")
    return d


def test_second_run_on_a_held_folder_is_refused_then_a_dead_holder_is_replaced(tmp_path, photos, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom perceptlib.runlock import RunLock\n"
         "RunLock(sys.argv[1], 'test holder').acquire()\nprint('held', flush=True)\ntime.sleep(120)", str(out)],
        env=py_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t = time.perf_counter()
        with pytest.raises(RunLockedError, match=rf"{re.escape(str(out))} is in use by another training run "
                                                 rf"\(pid {holder.pid} on {re.escape(HOST)} since .* \(test holder\)\)"):
            ddp_worker.run(out, 2)
        assert time.perf_counter() - t < 5 and not (out / "checkpoint.pt").exists()
        args = ["train-sr", "--mode", "quick", "--loss", "pixel", "--steps", "1", "--train-set", str(photos),
                "--out", str(out), "--no-progress", "--device", "cpu", "--channels", "4", "--blocks", "1",
                "--patch-size", "24"]
        capsys.readouterr()
        assert main(args) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "train-sr: error: RunLockedError:" in err and f"pid {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait()
    assert (out / LOCK_FILE).is_file()  # SIGKILL: the file stays, the flock is gone
    with pytest.warns(UserWarning, match=rf"replacing the stale lock .*pid {holder.pid} on"):
        _, hist = ddp_worker.run(out, 2)
    assert hist.step[-1] == 2 and not (out / LOCK_FILE).exists()


def _lock_file(out: Path, **rec) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / LOCK_FILE).write_text(json.dumps({"host": HOST, "started": "2020-01-01 00:00:00", **rec}))


def test_stale_foreign_and_unlocked_live_lock_files(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "run"
    _lock_file(out, pid=dead.pid, what="old run")
    with pytest.warns(UserWarning, match=rf"replacing the stale lock {re.escape(str(out / LOCK_FILE))} of "
                                         rf"pid {dead.pid} on .* \(old run\) \(no such process any more\)"):
        ddp_worker.run(out, 2)
    assert not (out / LOCK_FILE).exists()
    _lock_file(out, pid=dead.pid, host="elsewhere.example")  # cannot be checked from here: refused
    with pytest.raises(RunLockedError, match=rf"another host; .*If it is gone, delete {re.escape(str(out / LOCK_FILE))}"):
        ddp_worker.run(out, 4)
    live = subprocess.Popen(["sleep", "60"])  # alive, but not holding the flock (e.g. flock not shared)
    try:
        _lock_file(out, pid=live.pid)
        with pytest.raises(RunLockedError, match="still running but does not hold the lock"):
            ddp_worker.run(out, 4)
    finally:
        live.kill()
        live.wait()
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2


def test_lock_is_released_on_an_exception(tmp_path):
    class Boom(ddp_worker.SlowLoss):
        def __call__(self, model, batch):
            raise KeyboardInterrupt("killed")

    cfg = ddp_worker.BASE
    with pytest.raises(KeyboardInterrupt):
        ddp_worker.train(ddp_worker.tiny_model(), Boom(cfg), ddp_worker.PairSet(), cfg, tmp_path, progress=False)
    assert not (tmp_path / LOCK_FILE).exists()


# -- fetches: a local http server that can hold a file half-sent or corrupt it ----------------------------

class Server:
    """``root`` over http://127.0.0.1; ``hold``: a path sent half-way, then held open (``holding`` set) until
    ``release``; ``corrupt[path]``: how many next responses for it get a flipped first byte."""

    def __init__(self, root: Path) -> None:
        self.root, self.hold, self.corrupt, self.requests = root, None, {}, []
        self.holding, self.release = threading.Event(), threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                rel = urllib.parse.unquote(self.path.split("?")[0]).strip("/")
                server.requests.append(rel)
                path = server.root / rel
                path = path / "index.html" if path.is_dir() else path
                if not path.is_file():
                    return self.send_error(404)
                body = path.read_bytes()
                if server.corrupt.get(rel, 0) > 0:
                    server.corrupt[rel] -= 1
                    body = bytes([body[0] ^ 1]) + body[1:]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "text/html" if path.suffix == ".html" else "application/octet-stream")
                self.end_headers()
                try:
                    if rel == server.hold:
                        self.wfile.write(body[:len(body) // 2])
                        self.wfile.flush()
                        server.holding.set()
                        server.release.wait(60)
                        return
                    self.wfile.write(body)
                except OSError:  # the client was killed
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "src" / "mirror")
    yield s
    s.close()


def kill_group(p: subprocess.Popen) -> None:
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(30)


FETCH = """
import sys, time
from pathlib import Path
from test_data import _tiny_sources
from perceptlib.cli import main
from perceptlib.sources import data_sources
data_sources.SOURCES, data_sources.SPLIT = _tiny_sources(Path(sys.argv[1]))
data_sources.expected_manifest = lambda: []
if sys.argv[3:] == ["slow-extract"]:  # stop for a minute after the first rule's images are written
    apply = data_sources._apply
    def slow(*a, **k):
        out = apply(*a, **k)
        print("applied", flush=True)
        time.sleep(60)
        return out
    data_sources._apply = slow
sys.exit(main(["data", "fetch", "--cache", sys.argv[2]]))
"""


@pytest.fixture
def tiny_data(tmp_path, monkeypatch, server):
    """The tiny packages of test_data on the local server (and a failing fake apt-get); returns the reference
    manifest of an uninterrupted fetch and a function running ``data fetch`` in a subprocess."""
    sources, split = _tiny_sources(tmp_path / "src")
    monkeypatch.setattr(data_sources, "SOURCES", sources)
    monkeypatch.setattr(data_sources, "SPLIT", split)
    monkeypatch.setattr(data_sources, "expected_manifest", lambda: [])
    _fake_apt(tmp_path, monkeypatch, None)
    monkeypatch.setenv("PERCEPTLIB_DEBIAN_MIRROR", (tmp_path / "src" / "mirror").as_uri())
    ref = json.loads((data.fetch(cache=tmp_path / "ref", progress=False) / "manifest.json").read_text())
    monkeypatch.setenv("PERCEPTLIB_DEBIAN_MIRROR", server.url)

    def fetch(*extra: str, **popen) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", FETCH, str(tmp_path / "src"), str(tmp_path / "cache"), *extra],
                                env=py_env(), start_new_session=True, text=True, **popen)
    return ref, fetch


def _images(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in root.glob("*/*")
            if p.parent.name != "packages" and p.is_file()}


def test_data_fetch_killed_during_download_then_rerun(tmp_path, monkeypatch, server, tiny_data):
    ref, fetch = tiny_data
    server.hold = "pool/main/t/tiny/tiny_1.0_all.deb"
    p = fetch(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert server.holding.wait(60), "the download never started"
    cache = tmp_path / "cache"
    for _ in range(100):
        if partial := list((cache / "packages").glob(".deb.*@*/tiny_1.0_all.deb.part")):
            break
        time.sleep(0.05)
    kill_group(p)
    server.release.set()
    assert len(partial) == 1  # the half-downloaded file was in its temp folder, never at its final name
    assert not list((cache / "packages").glob("*.deb")) and not (cache / "manifest.json").exists()
    monkeypatch.setattr(data_sources, "expected_manifest", lambda: ref["images"])
    assert not _images(cache) and not any(data.set_info(s, cache=cache)["available"] for s in ("set5", "styles"))
    server.hold = None
    p = fetch(stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    assert json.loads((cache / "manifest.json").read_text()) == ref
    assert _images(cache) == _images(tmp_path / "ref")
    assert not list((cache / "packages").iterdir())  # the dead fetch's temp folder is gone too


def test_data_fetch_killed_during_extraction_then_rerun(tmp_path, monkeypatch, server, tiny_data):
    ref, fetch = tiny_data
    p = fetch("slow-extract", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert p.stdout.readline().strip() == "applied"
    kill_group(p)
    p.stdout.close()
    cache, want = tmp_path / "cache", _images(tmp_path / "ref")
    got = _images(cache)
    assert got and set(got) < set(want) and all(want[k] == v for k, v in got.items())  # complete files only
    assert not (cache / "manifest.json").exists()  # so the next fetch redoes this package
    monkeypatch.setattr(data_sources, "expected_manifest", lambda: ref["images"])
    assert data.set_info("set5", cache=cache)["available"]  # its 2 images are complete (and correct)
    assert not data.set_info("styles", cache=cache)["available"]
    monkeypatch.setattr(data_sources, "expected_manifest", lambda: [])
    pkg = cache / "packages" / "tiny_1.0_all.deb"  # downloaded and verified before the extraction
    assert sha256_file(pkg) == data_sources.SOURCES["tiny"].pkg.sha256
    (tmp_path / "src" / "mirror" / "pool" / data_sources.SOURCES["tiny"].pkg.pool).unlink()  # the rerun must reuse it
    p = fetch(stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    assert json.loads((cache / "manifest.json").read_text()) == ref and _images(cache) == want
    assert not list((cache / "packages").iterdir())


def test_deb_with_wrong_sha256_is_fetched_once_more_then_refused(tmp_path, server):
    deb = make_deb({"usr/share/tiny/a.png": b"a"})
    pool = "main/t/tiny/tiny_0.1-1_all.deb"
    (server.root / "pool" / pool).parent.mkdir(parents=True)
    (server.root / "pool" / pool).write_bytes(deb)
    rel = f"pool/{pool}"
    server.corrupt[rel] = 1  # a transfer error: the second download is good
    with pytest.warns(UserWarning, match=r"tiny=0\.1-1: download of .* gave sha256 \w+, expected .*once more"):
        path = download_deb("tiny", "0.1-1", sha(deb), tmp_path / "dl", pool, use_apt=False, mirror=server.url)
    assert path.read_bytes() == deb and server.requests.count(rel) == 2
    path.unlink()
    server.corrupt[rel], server.requests[:] = 5, []
    bad = sha(bytes([deb[0] ^ 1]) + deb[1:])
    with pytest.warns(UserWarning), pytest.raises(FetchError) as e:
        download_deb("tiny", "0.1-1", sha(deb), tmp_path / "dl", pool, use_apt=False, mirror=server.url)
    assert str(e.value).count(f"gave sha256 {bad}, expected {sha(deb)}") == 2 and "sha256 mismatch" in str(e.value)
    assert server.requests.count(rel) == 2 and list((tmp_path / "dl").iterdir()) == []


def test_pip_download_with_wrong_sha256_is_fetched_once_more(tmp_path, monkeypatch):
    payloads = [b"corrupt", b"good"]

    def run(cmd, **kw):
        Path(cmd[cmd.index("-d") + 1], "pkg-1.0.tar.gz").write_bytes(payloads.pop(0))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(download.subprocess, "run", run)
    with pytest.warns(UserWarning, match=rf"expected {sha(b'good')}, got {sha(b'corrupt')}.*once more"):
        assert pip_download("pkg==1.0", tmp_path, sha(b"good"), "pkg-1.0.tar.gz").read_bytes() == b"good"


def _wheel(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("tinypkg/__init__.py", "")
        z.writestr("tinypkg/blob.bin", os.urandom(300_000))
        z.writestr("tinypkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n")
        z.writestr("tinypkg-1.0.dist-info/WHEEL",
                   "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("tinypkg-1.0.dist-info/RECORD", "")


def test_pip_download_killed_half_way_then_rerun(tmp_path, server):
    whl = "tinypkg-1.0-py3-none-any.whl"
    (server.root / "files").mkdir(parents=True)
    _wheel(server.root / "files" / whl)
    (server.root / "simple" / "tinypkg").mkdir(parents=True)
    (server.root / "simple" / "tinypkg" / "index.html").write_text(
        f'<html><body><a href="../../files/{whl}">{whl}</a></body></html>\n')
    want = sha256_file(server.root / "files" / whl)
    env = {k: v for k, v in py_env().items() if not k.startswith("PIP_")}
    env.update(PIP_INDEX_URL=f"{server.url}/simple", PIP_CONFIG_FILE=os.devnull, PIP_NO_INPUT="1",
               PIP_CACHE_DIR=str(tmp_path / "pipcache"), TMPDIR=str(tmp_path))
    code = ("import sys\nfrom perceptlib.sources.download import pip_download\n"
            "print(pip_download('tinypkg==1.0', sys.argv[1], sys.argv[2], sys.argv[3]))\n")
    cmd = [sys.executable, "-c", code, str(tmp_path / "dl"), want, whl]
    server.hold = f"files/{whl}"
    p = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if not server.holding.wait(60):
        kill_group(p)
        pytest.fail(p.stdout.read().decode()[-2000:])
    kill_group(p)  # the script and its pip child
    p.stdout.close()
    server.release.set()
    left = list((tmp_path / "dl").iterdir())
    assert [x.name.split("@")[0] for x in left] == [f".pip.{p.pid}"]  # only the dead fetch's temp folder
    server.hold = None
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(x.name for x in (tmp_path / "dl").iterdir()) == [whl]
    assert sha256_file(tmp_path / "dl" / whl) == want


WEIGHTS = """
import sys, time, torch
from pathlib import Path
from perceptlib import weights
weights.CONV_CHANNELS = (4, 4, 8, 8, 8, 8, 8, 16, 16, 16, 16, 16, 16)
g, sd, cin = torch.Generator().manual_seed(0), {}, 3
for name, cout in zip(weights.CONV_NAMES, weights.CONV_CHANNELS):
    sd[f"{name}.weight"], sd[f"{name}.bias"] = torch.randn(cout, cin, 3, 3, generator=g), torch.randn(cout, generator=g)
    cin = cout
weights.CONTENT_SHA256["torchvision"] = weights.state_dict_sha256(sd)
if sys.argv[2:] == ["slow"]:  # the converted file is written to its temp name, then a minute's pause
    save = torch.save
    def slow(obj, f):
        save(obj, f)
        print("written", flush=True)
        time.sleep(60)
    torch.save = slow
print(weights._cached("torchvision", Path(sys.argv[1]), lambda cache: (sd, "fake source"))[1].path)
"""


def test_weights_cache_write_killed_then_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    p = subprocess.Popen([sys.executable, "-c", WEIGHTS, str(cache), "slow"], env=py_env(), start_new_session=True,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "written"
    kill_group(p)
    p.stdout.close()
    names = sorted(x.name for x in cache.iterdir())
    assert "vgg16_torchvision.pt" not in names and len(names) == 2  # the sidecar and the unrenamed temp file
    assert names[0].startswith(f".vgg16_torchvision.pt.{p.pid}@") and names[1] == "vgg16_torchvision.source"
    proc = subprocess.run([sys.executable, "-c", WEIGHTS, str(cache)], env=py_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(x.name for x in cache.iterdir()) == ["vgg16_torchvision.pt", "vgg16_torchvision.source"]
    again = subprocess.run([sys.executable, "-c", WEIGHTS, str(cache)], env=py_env(), capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and "damaged" not in again.stderr  # reused: its content hash checks out

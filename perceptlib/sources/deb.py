"""Pinned packages without installing them: Debian ``.deb`` files and PyPI wheels.

A ``.deb`` is an ``ar`` archive (``!<arch>\\n`` then 60-byte member headers) holding
``debian-binary``, ``control.tar.*`` and ``data.tar.*``. :func:`deb_extract` streams the data tar
once and returns the wanted members' bytes; nothing is installed and nothing is written.

:func:`download_deb` runs ``apt-get download NAME=VER`` (after ``apt-get update`` when apt does not
know the package) and, where apt-get is missing or fails, fetches the same file from a Debian mirror
by its pool path. :func:`fetch_wheel` runs ``pip download`` with fixed platform flags, so the same
wheel (same hash) comes on any platform. Every file is checked against a pinned sha256 before it is kept
(a mismatch from the mirror is deleted and downloaded once more, then refused); downloads go to a temp
folder and are renamed into place only when complete and verified.
"""
from __future__ import annotations

import importlib.metadata
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from .download import FetchError, pip_download, remove_stale_temps, sha256_file, temp_prefix

__all__ = [
    "Package", "fetch_package", "package_files", "ArMember", "read_ar", "deb_extract", "download_deb",
    "fetch_wheel", "zip_extract", "installed_files", "WHEEL_FLAGS", "DEBIAN_MIRROR", "MIRROR_ENV",
]

MIRROR_ENV = "PERCEPTLIB_DEBIAN_MIRROR"
DEBIAN_MIRROR = "https://deb.debian.org/debian"
_AR_MAGIC = b"!<arch>\n"
# Always used for wheels, so the same file (same sha256) comes on any platform and Python.
WHEEL_FLAGS = ("--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--platform",
               "manylinux2014_x86_64", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311")


@dataclass(frozen=True)
class Package:
    """A pinned package file: ``kind`` "deb" (fetched by Debian ``pool`` path) or "wheel" (PyPI)."""

    name: str
    kind: str
    version: str
    sha256: str
    filename: str
    size: int
    pool: str = ""

    @property
    def spec(self) -> str:
        """``"name=version"`` (deb, as apt-get takes it) or ``"name==version"`` (wheel)."""
        return f"{self.name}={self.version}" if self.kind == "deb" else f"{self.name}=={self.version}"


def fetch_package(pkg: Package, dest: str | os.PathLike, progress: Callable[[int], None] | None = None) -> Path:
    """Download ``pkg`` into ``dest`` (sha256 checked; reused if there). ``progress(n)`` adds up to ``pkg.size``."""
    done = [0]

    def step(n: int) -> None:
        done[0] += n
        if progress:
            progress(n)

    if pkg.kind == "deb":
        path = download_deb(pkg.name, pkg.version, pkg.sha256, dest, pkg.pool, progress=step)
    else:
        path = fetch_wheel(pkg.name, pkg.version, pkg.sha256, pkg.filename, dest, WHEEL_FLAGS)
    if progress and pkg.size > done[0]:
        progress(pkg.size - done[0])
    return path


def package_files(path: str | os.PathLike, kind: str, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """``{name: bytes}`` of the wanted files of a ``.deb`` (``kind="deb"``) or wheel (``"wheel"``)."""
    return deb_extract(path, wanted) if kind == "deb" else zip_extract(path, wanted)


@dataclass(frozen=True)
class ArMember:
    """One ``ar`` member: its ``name`` and the byte ``offset``/``size`` of its data in the archive."""

    name: str
    offset: int
    size: int


def read_ar(f: BinaryIO) -> list[ArMember]:
    """List the members of the ``ar`` archive open in ``f`` (GNU ``name/`` and BSD ``#1/N`` names)."""
    f.seek(0)
    if f.read(8) != _AR_MAGIC:
        raise ValueError("not an ar archive (a .deb starts with '!<arch>\\n')")
    members: list[ArMember] = []
    while True:
        head = f.read(60)
        if not head:
            return members
        if len(head) < 60 or head[58:60] != b"`\n":
            raise ValueError(f"corrupt ar header after {len(members)} members")
        name = head[:16].decode("ascii", "replace").rstrip()
        try:
            size = int(head[48:58].decode("ascii").strip())
        except ValueError:
            raise ValueError(f"corrupt ar header: bad size field {head[48:58]!r}") from None
        offset = f.tell()
        if name.startswith("#1/"):  # BSD: the name is the first N bytes of the data
            n = int(name[3:])
            name, offset, size = f.read(n).decode("utf-8").rstrip("\0"), offset + n, size - n
        name = name.rstrip("/")
        end = f.seek(0, io.SEEK_END)
        if offset + size > end:
            raise ValueError(f"truncated ar archive: member {name!r} needs {size} bytes past offset {offset}")
        members.append(ArMember(name, offset, size))
        f.seek(offset + size + ((offset + size) % 2))  # data is padded to an even offset


class _Slice(io.RawIOBase):
    """A read-only window ``[offset, offset + size)`` of a binary file."""

    def __init__(self, f: BinaryIO, offset: int, size: int) -> None:
        self.f, self.pos, self.end = f, offset, offset + size

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[override]
        self.f.seek(self.pos)
        n = self.f.readinto(memoryview(buf)[: max(0, self.end - self.pos)])
        self.pos += n or 0
        return n or 0


def deb_extract(path: str | os.PathLike, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """``{name: bytes}`` of the regular files in ``path``'s data tar for which ``wanted(name)``.

    Names lose their leading ``./`` (``"usr/share/..."``). The data tar may be xz, gz, bz2 or
    uncompressed; a zstd data tar raises ``ValueError`` unless ``zstandard`` is installed.
    """
    out: dict[str, bytes] = {}
    with open(path, "rb") as f:
        data = [m for m in read_ar(f) if m.name.startswith("data.tar")]
        if not data:
            raise ValueError(f"{path}: no data.tar member (not a Debian package?)")
        member = data[0]
        raw: BinaryIO = io.BufferedReader(_Slice(f, member.offset, member.size), 1 << 20)
        mode = {"data.tar.xz": "r|xz", "data.tar.gz": "r|gz", "data.tar.bz2": "r|bz2", "data.tar": "r|"}
        if member.name == "data.tar.zst":
            try:
                import zstandard  # type: ignore[import-not-found]
            except ImportError:
                raise ValueError(f"{path}: data.tar.zst needs the 'zstandard' module") from None
            raw, tar_mode = zstandard.ZstdDecompressor().stream_reader(raw), "r|"
        elif member.name in mode:
            tar_mode = mode[member.name]
        else:
            raise ValueError(f"{path}: unsupported data member {member.name!r}")
        with tarfile.open(fileobj=raw, mode=tar_mode) as tar:
            for info in tar:
                name = info.name[2:] if info.name.startswith("./") else info.name.lstrip("/")
                if info.isfile() and wanted(name):
                    fobj = tar.extractfile(info)
                    assert fobj is not None
                    out[name] = fobj.read()
    return out


def _tail(proc: subprocess.CompletedProcess) -> str:
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    return " / ".join(line for line in lines if not line.startswith("W:"))[-300:] or f"exit code {proc.returncode}"


def _apt_download(name: str, version: str, tmp: Path) -> tuple[Path | None, str]:
    """Run ``apt-get download`` in ``tmp``; return (file or None, description of what happened)."""
    cmd = ["apt-get", "download", f"{name}={version}"]
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
    if proc.returncode != 0 and ("Unable to locate" in proc.stderr or "was not found" in proc.stderr):
        subprocess.run(["apt-get", "update"], capture_output=True, text=True)
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
    found = sorted(tmp.glob(f"{name}_*.deb"))
    if proc.returncode != 0 or not found:
        return None, f"`{' '.join(cmd)}` failed: {_tail(proc)}"
    return found[0], f"`{' '.join(cmd)}`"


def _mirror_download(url: str, target: Path, progress: Callable[[int], None] | None) -> None:
    with urllib.request.urlopen(url, timeout=60) as r, open(target, "wb") as f:
        while block := r.read(1 << 20):
            f.write(block)
            if progress:
                progress(len(block))


def download_deb(
    name: str,
    version: str,
    sha256: str,
    dest: str | os.PathLike,
    pool: str,
    *,
    use_apt: bool | None = None,
    mirror: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Fetch ``name=version`` into ``dest`` and check its sha256; returns the ``.deb`` path.

    ``pool`` is the archive path (``"main/p/palapeli/palapeli-data_22.12.3-1_all.deb"``) used
    under ``mirror`` (default ``$PERCEPTLIB_DEBIAN_MIRROR`` or deb.debian.org; any urllib URL,
    ``file://`` included) when apt-get is missing (``use_apt=None`` looks on PATH), fails or gives
    another build. A file already in ``dest`` with the right hash is reused (no download); one with
    another hash is deleted. A mirror download with the wrong hash is deleted and repeated once.
    ``progress(nbytes)`` is called while downloading from the mirror. Raises :class:`FetchError`
    naming the package, the version, every command tried and the expected and actual sha256.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / Path(pool).name
    if target.exists():
        if sha256_file(target) == sha256:
            return target
        target.unlink()
    if use_apt is None:
        use_apt = shutil.which("apt-get") is not None
    base = (mirror or os.environ.get(MIRROR_ENV) or DEBIAN_MIRROR).rstrip("/")
    url = f"{base}/pool/{pool}"
    tried: list[str] = []
    remove_stale_temps(dest, "deb")  # left by a killed fetch
    with tempfile.TemporaryDirectory(dir=dest, prefix=temp_prefix("deb")) as tmp_name:
        tmp = Path(tmp_name)
        os.chmod(tmp, 0o755)  # as root, apt-get still warns that its _apt user cannot write here (harmless)
        if use_apt:
            got, what = _apt_download(name, version, tmp)
            if got is not None:
                digest = sha256_file(got)
                if digest == sha256:
                    shutil.move(str(got), target)
                    return target
                what += f" gave sha256 {digest}, expected {sha256}"
                got.unlink()
            tried.append(what)
        part = tmp / (target.name + ".part")
        for attempt in range(2):  # a second download only after a hash mismatch
            try:
                _mirror_download(url, part, progress)
            except (OSError, ValueError) as e:  # URLError and HTTPError are OSErrors
                tried.append(f"download of {url} failed: {e}")
                break
            digest = sha256_file(part)
            if digest == sha256:
                shutil.move(str(part), target)
                return target
            part.unlink()
            tried.append(f"download of {url} gave sha256 {digest}, expected {sha256}")
            if attempt == 0:
                warnings.warn(f"{name}={version}: {tried[-1]}; deleted, downloading it once more", stacklevel=2)
    if any("gave sha256" in t for t in tried):
        raise FetchError(f"sha256 mismatch for Debian package {name}={version} (file deleted, never used): "
                         + "; ".join(tried))
    raise FetchError(f"could not download Debian package {name}={version}: " + "; ".join(tried))


def fetch_wheel(dist: str, version: str, sha256: str, filename: str, dest: str | os.PathLike,
                flags: tuple[str, ...] = ()) -> Path:
    """``pip download --no-deps dist==version`` with ``flags`` into ``dest``, sha256 checked (reused if there)."""
    req = f"{dist}=={version}"
    try:
        return pip_download(req, dest, sha256, filename, extra_args=tuple(flags))
    except FetchError as e:
        msg = str(e)
        if "pip download" not in msg:
            msg += f" (command: python -m pip download --no-deps -d {dest} {' '.join(flags)} {req})"
        raise FetchError(msg) from e


def zip_extract(path: str | os.PathLike, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """``{name: bytes}`` of the files in the zip (wheel) at ``path`` for which ``wanted(name)``."""
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist() if not n.endswith("/") and wanted(n)}


def installed_files(dist: str, version: str, members: list[str]) -> dict[str, bytes] | None:
    """Bytes of ``members`` (paths as in the wheel) from an installed ``dist`` of exactly ``version``.

    None when the distribution is not installed, has another version or lacks a file.
    """
    try:
        d = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
    if d.version != version:
        return None
    out: dict[str, bytes] = {}
    for m in members:
        p = Path(str(d.locate_file(m)))
        if not p.is_file():
            return None
        out[m] = p.read_bytes()
    return out

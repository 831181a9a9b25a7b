"""One process per experiment: an advisory lock file next to the checkpoint.

The lock is an OS file lock (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on
Windows) on ``NAME_HASH.lock``, so it disappears with its process: a crashed or
killed owner never leaves the experiment stuck. The file also records who holds it
(host, pid, start time) for the message a second process prints.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt


def _lock(file, blocking: bool) -> None:
    """Exclusive OS lock on an open file; OSError when ``blocking`` is False and
    another process holds it."""
    if fcntl is not None:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        file.seek(0)
        msvcrt.locking(file.fileno(), msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK, 1)


def _unlock(file) -> None:
    if fcntl is not None:
        fcntl.flock(file.fileno(), fcntl.LOCK_UN)
    else:
        file.seek(0)
        msvcrt.locking(file.fileno(), msvcrt.LK_UNLCK, 1)


@contextlib.contextmanager
def blocking_file_lock(path: Path):
    """Hold an exclusive OS lock on ``path`` for the ``with`` block, waiting for it
    (used to serialise the creation of a brand-new SQLite MLflow store, whose
    schema migration races when two processes do it at once)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as file:
        _lock(file, blocking=True)
        try:
            yield
        finally:
            _unlock(file)


class ExperimentLockedError(RuntimeError):
    """Another live process is training this experiment."""


class ExperimentLock:
    """Context manager holding the lock of one experiment.

    Args:
        path: the lock file (``checkpoints/NAME_HASH.lock``).
    Raises:
        ExperimentLockedError: on enter, when another process holds the lock; the
            message says which process and what to do.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file = None

    def __enter__(self) -> "ExperimentLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+")
        try:
            _lock(file, blocking=False)
        except OSError:
            file.seek(0)
            try:
                owner = json.loads(file.read() or "{}")
            except json.JSONDecodeError:
                owner = {}
            file.close()
            raise ExperimentLockedError(
                f"this experiment is already being trained by pid {owner.get('pid', '?')} on host "
                f"{owner.get('host', '?')} (since {owner.get('started', '?')}); lock file {self.path}. "
                "Wait for it to finish (this command then skips it), or stop that process first."
            ) from None
        file.seek(0)
        file.truncate()
        file.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                               "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        file.flush()
        self._file = file
        return self

    def __exit__(self, *exc_info) -> None:
        if self._file is None:
            return
        try:
            self._file.seek(0)
            self._file.truncate()
            _unlock(self._file)
        finally:
            self._file.close()
            self._file = None

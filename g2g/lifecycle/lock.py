"""One process per experiment: an advisory lock file next to the checkpoint.

The lock is a :class:`filelock.FileLock` (an OS lock: ``flock`` on POSIX,
``LockFileEx`` on Windows) on ``NAME_HASH.lock``, so it disappears with its process:
a crashed or killed owner never leaves the experiment stuck. While held, the file
records who holds it (host, pid, start time) for the message a second process prints.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from filelock import FileLock, Timeout


class ExperimentLockedError(RuntimeError):
    """Another live process is training this experiment."""


class ExperimentLock:
    """Context manager holding the lock of one experiment.

    Args:
        path: the lock file (``checkpoints/LABEL_HASH/lock``).
        wait: wait for a process that holds it to let it go (a job of a sweep whose run
            another job of the sweep trains), logging once who holds it.
    Raises:
        ExperimentLockedError: on enter, when another process holds the lock and
            ``wait`` is off; the message says which process and what to do.
    """

    def __init__(self, path: Path, wait: bool = False) -> None:
        self.path = Path(path)
        self.wait = wait
        self._descriptor: int | None = None
        self._lock = FileLock(self.path, blocking=False, on_acquired=self._record_owner)

    def _record_owner(self, descriptor: int) -> None:
        """Write who holds the lock into the locked file (called by filelock right
        after it acquired the lock, with its still-locked descriptor)."""
        owner = {"pid": os.getpid(), "host": socket.gethostname(),
                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(descriptor, 0)
        os.lseek(descriptor, 0, os.SEEK_SET)
        os.write(descriptor, json.dumps(owner).encode())
        self._descriptor = descriptor

    def _owner(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):  # unreadable while locked (Windows) or half written
            return {}

    def __enter__(self) -> ExperimentLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except Timeout:  # (a TimeoutError, so an OSError: caught first)
            owner = self._owner()
            if self.wait:
                logging.getLogger(__name__).warning(
                    "this run is being trained by pid %s on host %s (since %s); waiting for it to end (lock file %s)",
                    owner.get("pid", "?"), owner.get("host", "?"), owner.get("started", "?"), self.path)
                self._lock.acquire(blocking=True)
                return self
            raise ExperimentLockedError(
                f"this experiment is already being trained by pid {owner.get('pid', '?')} on host "
                f"{owner.get('host', '?')} (since {owner.get('started', '?')}); lock file {self.path}. "
                "Wait for it to finish (this command then skips it), or stop that process first."
            ) from None
        except OSError as error:  # a full disk, a read-only folder: say where
            if error.filename is None:
                error.filename = str(self.path)
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        if not self._lock.is_locked:
            return
        try:
            if self._descriptor is not None:
                os.ftruncate(self._descriptor, 0)  # nobody holds it any more
        finally:
            self._descriptor = None
            self._lock.release()

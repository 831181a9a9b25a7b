"""File helpers shared by every package.

- :func:`expand_path`: what a path a person typed means (``~`` and ``$NAME`` expanded as
  a shell would), for config path keys and the command-line tools' path arguments.
- :func:`atomic_write`: atomic file writes for every package that saves state
  (checkpoints, markers, the ResNet feature cache): a crash at any moment leaves either
  the old file or the new one, never a torn file.
- :func:`prepare_once`: what several jobs create on first use in a shared folder (data
  sets, the feature cache, downloaded weights) is made by one of them, under a file lock,
  while the others wait and then use it.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)


#: ``$NAME`` or ``${NAME}``, as a shell writes an environment variable
_VARIABLE = re.compile(r"\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})")


def expand_path(path: str | os.PathLike) -> str:
    """``path`` as a shell would read it: a leading ``~`` or ``~user`` becomes that home
    folder, then every ``$NAME`` and ``${NAME}`` becomes the environment variable's value
    (the home folder itself is not expanded again). Nothing else changes: a relative
    path stays relative, and a ``$`` not followed by a variable name stays as it is.

    Raises:
        ValueError: a ``$NAME`` whose environment variable is not set (a shell would make
            it empty; kept as written it would become a folder literally named ``$NAME``).
    """
    text = os.fspath(path)
    head = ""
    if text.startswith("~"):
        tilde, slash, rest = text.partition("/")
        head, text = os.path.expanduser(tilde) + slash, rest
    unset = sorted({a or b for a, b in _VARIABLE.findall(text) if (a or b) not in os.environ})
    if unset:
        raise ValueError(f"the environment variable{'s' if len(unset) > 1 else ''} "
                         f"{', '.join(unset)} {'are' if len(unset) > 1 else 'is'} not set")
    return head + _VARIABLE.sub(lambda match: os.environ[match.group(1) or match.group(2)], text)


def path_argument(text: str) -> Path:
    """``type=`` of a command-line path argument (argparse): :func:`expand_path`, so
    ``--root '~/data'`` and ``--out '$HOME/report'`` mean what they would unquoted. The
    shell has already expanded what it was asked to, so a path that exists as written,
    or a ``$NAME`` whose variable is not set, is taken as written (a file or folder name
    may hold a ``$``); only a leading ``~`` is expanded then."""
    if os.path.lexists(text):
        return Path(text)
    try:
        return Path(expand_path(text))
    except ValueError:
        return Path(os.path.expanduser(text))


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new file ``.NAME.RANDOM.tmp`` beside ``path``, opened for writing, with the
    mode any new file gets (0o666 less the umask; ``tempfile.mkstemp`` would force 0600)."""
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through a temporary file in the same folder (``.NAME.*.tmp``):
    ``write(file)`` fills it, it is fsynced and renamed over ``path``, and the folder
    is fsynced. On any error the temporary file is removed and the old ``path`` kept.
    The file's permissions follow the umask, like any file the process creates."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = _create_temporary(path)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_write`).

    The object is serialised in memory first and written with ordinary file writes, so a
    full disk or a read-only folder raises an :class:`OSError` that names ``path`` and its
    errno (``torch.save`` into a file would raise a bare ``RuntimeError`` from its C++
    writer instead)."""
    import io

    import torch  # only savers of tensors need it

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    try:
        atomic_write(path, lambda file: file.write(buffer.getbuffer()))
    except OSError as error:
        if error.filename is None:
            error.filename = str(path)
        raise


def remove_stale_temporary_files(folder: Path) -> list[Path]:
    """Delete the temporary files (``.NAME.*.tmp``) that an atomic write killed hard
    (SIGKILL, power loss) left in ``folder`` and its subfolders. Call it only while no
    write into ``folder`` can be under way (holding the lock of the run that owns it).

    Returns:
        The files removed (each logged).
    """
    import logging

    stale = sorted(Path(folder).glob("**/.*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
        logging.getLogger(__name__).warning("removed %s, left by a save that was killed before it finished", path)
    return stale


@contextmanager
def preparation_lock(lock_path: Path, what: str) -> Iterator[None]:
    """Hold the OS file lock ``lock_path`` (:class:`filelock.FileLock`: ``flock`` on
    POSIX, so it goes with its process and a killed job never leaves it stuck), creating
    its folder. When another process holds it, log once that this one waits, naming
    ``what`` it prepares and the lock file, then wait for it as long as it takes.

    Raises:
        OSError: the lock file cannot be created (a read-only folder), naming it.
    """
    lock_path = Path(lock_path)
    lock = FileLock(lock_path)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(blocking=False)
        except Timeout:  # (a TimeoutError, so an OSError: caught first)
            log.info("waiting for another job to prepare %s (lock file %s)", what, lock_path)
            lock.acquire()
    except OSError as error:
        if error.filename is None:
            error.filename = str(lock_path)
        raise
    try:
        yield
    finally:
        lock.release()


def prepare_once(lock_path: Path, ready: Callable[[], bool], prepare: Callable[[], object], what: str) -> None:
    """Make sure something several jobs need is on disk, made once by one of them.

    ``ready()`` is asked first without the lock (what is already there costs no lock,
    and a read-only folder that holds it works); when it says no, ``prepare()`` runs
    under :func:`preparation_lock`, but only when ``ready()`` still says no once the
    lock is held: a job that waited for another finds the work done and does not redo
    it. ``prepare`` must write each file through a temporary name (:func:`atomic_write`),
    so that ``ready`` never sees a half-written file, also after a crash.

    Args:
        lock_path: the lock file, in or beside what is prepared.
        ready: whether the thing is complete on disk.
        prepare: makes it (its errors propagate, the lock is let go).
        what: what is prepared, for the waiting message.
    """
    if ready():
        return
    with preparation_lock(lock_path, what):
        if not ready():
            prepare()

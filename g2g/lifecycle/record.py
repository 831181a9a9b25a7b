"""The run record: one object owns one run's folder and is the only place that says
what state the run is in.

A run (one model trained under one result-affecting config) has one folder::

    CHECKPOINT_DIR/LABEL_HASH/
        record.json      status, epochs done, MLflow run (and parent) id, store and
                         experiment, the per-epoch history, the summary, the error
        checkpoint.pth   the last checkpoint (the whole training state)
        lock             held while a process trains the run (:mod:`g2g.lifecycle.lock`)
        fold1/, ...      cross-validation: each fold is a run folder of its own

LABEL follows the original scripts' naming convention and HASH is a short hash of every
result-affecting setting (:func:`g2g.lifecycle.checkpoint.config_hash`), so two runs that
could differ never share a folder.

Statuses (:data:`STATUSES`) and who sets them:

- ``NEW``: no record file yet (nothing has run).
- ``RUNNING``: set by :meth:`RunRecord.start` once the MLflow run exists, under the lock.
  A record found ``RUNNING`` by a process that holds the lock is an orphan (its process
  was killed hard): the next start closes its MLflow run KILLED (:func:`close_orphans`).
- ``FINISHED``, ``FAILED``, ``KILLED``: set only by :class:`RunGuard` (the one guard
  around a run), together with the MLflow run's status.
- ``PRUNED``: a hyperparameter search stopped the run after an epoch because it was
  unpromising (:mod:`g2g.search`); also set only by the guard. Its MLflow run ends
  ``KILLED`` with the tag :data:`g2g.tracking.names.TAG_PRUNED` (MLflow has no pruned
  status), which the sweep's end does not count as a failure. Like ``KILLED``, a later
  start with the same config resumes it from its checkpoint.

What a start does with a record (:meth:`RunRecord.plan`): ``FINISHED`` with the epochs
asked for is skipped; ``FINISHED`` with fewer epochs is extended (it continues from its
checkpoint into the same MLflow run); a record with more epochs than asked for answers
from its history (the metrics after the asked epoch, said as such); anything else
resumes from its checkpoint, or starts anew when there is none. To train a finished run
again, delete its folder: ``python -m g2g.run forget CHECKPOINT_DIR/LABEL_HASH`` (or
``rm -r`` it).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from g2g.files import atomic_write

log = logging.getLogger(__name__)

#: every status a run record can have (``NEW``: no record file yet)
STATUSES = ("NEW", "RUNNING", "FINISHED", "FAILED", "KILLED", "PRUNED")
#: the statuses only :class:`g2g.lifecycle.guard.RunGuard` sets
TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED", "PRUNED")

RECORD_FILE = "record.json"
CHECKPOINT_FILE = "checkpoint.pth"
LOCK_FILE = "lock"


class RecordError(RuntimeError):
    """A run record that cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class Plan:
    """What a start does with a run (see :meth:`RunRecord.plan`).

    action: ``train`` (new, resumed or extended), ``finished`` (skip: done with these
    epochs) or ``answer`` (done past these epochs: answer from the history).
    summary: for ``finished`` and ``answer``, the summary to return.
    """

    action: str
    summary: dict | None = None


class RunRecord:
    """The state of one run, kept in ``folder/record.json`` (see the module doc).

    Args:
        folder: ``CHECKPOINT_DIR/LABEL_HASH`` (a fold's: ``.../LABEL_HASH/foldK``).
        label: the name in logs and MLflow tags (default: the folder's name).
    """

    def __init__(self, folder: Path, label: str | None = None) -> None:
        self.folder = Path(folder)
        self.label = label or self.folder.name
        self.state: dict = {}
        self.damaged: str | None = None

    def __repr__(self) -> str:
        return f"RunRecord({str(self.folder)!r}, status={self.status})"

    # where things are
    @property
    def path(self) -> Path:
        """``record.json``."""
        return self.folder / RECORD_FILE

    @property
    def checkpoint(self) -> Path:
        """``checkpoint.pth``."""
        return self.folder / CHECKPOINT_FILE

    @property
    def lock_file(self) -> Path:
        """``lock``."""
        return self.folder / LOCK_FILE

    def fold(self, fold: int) -> RunRecord:
        """The record of cross-validation fold ``fold`` (folder ``foldK``, label ``LABEL_HASH_foldK``)."""
        return RunRecord(self.folder / f"fold{fold}", f"{self.label}_fold{fold}")

    # reading
    def read(self) -> RunRecord:
        """Load ``record.json`` (nothing when it does not exist). A file that cannot be
        parsed is reported (:attr:`damaged` says why) and read as no record: the run
        starts over from its checkpoint, and the orphaned MLflow run is found by its tags
        (:func:`close_orphans`)."""
        self.state, self.damaged = {}, None
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return self
        try:
            state = json.loads(text)
            if not isinstance(state, dict) or state.get("status") not in STATUSES:
                raise ValueError(f"no valid status in {str(text)[:80]!r}")
        except ValueError as error:
            self.damaged = f"{type(error).__name__}: {error}"
            log.warning("the run record %s is damaged (%s); it is read as no record: the run continues from "
                        "its checkpoint if it has one, and its MLflow run is found by its tags", self.path,
                        self.damaged)
            return self
        self.state = state
        return self

    @property
    def status(self) -> str:
        return self.state.get("status", "NEW")

    @property
    def epochs_done(self) -> int:
        return int(self.state.get("epochs_done", 0))

    @property
    def run_id(self) -> str | None:
        return self.state.get("run_id")

    @property
    def history(self) -> list[dict]:
        return list(self.state.get("history", []))

    @property
    def summary(self) -> dict:
        return dict(self.state.get("summary") or {})

    def plan(self, epochs: int) -> Plan:
        """What to do for a request of ``epochs`` epochs (see the module doc); call
        :meth:`read` first."""
        if self.status == "FINISHED" and self.epochs_done == epochs:
            return Plan("finished", {**self.summary, **self._identity()})
        history = [row for row in self.history if row.get("epoch") == epochs]
        past = self.epochs_done > epochs or (self.epochs_done == epochs and self.state.get("mid_epoch", False))
        if past and history and self.status != "RUNNING":
            row = history[0]
            summary = {**{k: v for k, v in self.summary.items() if k in _IDENTITY}, **self._identity(),
                       **row, "answered_from_epoch": epochs, "epochs_done": self.epochs_done}
            return Plan("answer", summary)
        return Plan("train")

    def _identity(self) -> dict:
        return {key: self.state[key] for key in _IDENTITY if key in self.state}

    # writing
    def _write(self, **changes) -> None:
        """Write the state with ``changes``; the in-memory state changes only once the
        file is written, so it never says more than the disk."""
        state = {**self.state, **changes, "updated": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(state, indent=2, default=str).encode()
        atomic_write(self.path, lambda file: file.write(text))
        self.state = state

    def start(self, *, run_id: str, tracking_uri: str, experiment: str, experiment_id: str,
              parent_run_id: str | None, epochs: int) -> None:
        """The run is training now (status ``RUNNING``), logged to MLflow run ``run_id``.
        Call it holding the lock, right after the MLflow run exists."""
        self._write(status="RUNNING", run_id=run_id, tracking_uri=tracking_uri, experiment=experiment,
                    experiment_id=experiment_id, parent_run_id=parent_run_id, epochs=epochs,
                    checkpoint=str(self.checkpoint), error=None, epochs_done=self.epochs_done,
                    history=self.history)

    def epoch_done(self, epochs_done: int, history: list[dict]) -> None:
        """After a checkpoint was written: ``epochs_done`` epochs and their metrics."""
        self._write(epochs_done=epochs_done, history=history, mid_epoch=False)

    def stopped_mid_epoch(self) -> None:
        """After a checkpoint written inside epoch ``epochs_done + 1`` (a stop)."""
        self._write(mid_epoch=True)

    def end(self, status: str, *, summary: dict | None = None, error: str | None = None) -> None:
        """Set a terminal status (only :class:`g2g.lifecycle.guard.RunGuard` calls this)."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"status must be one of {TERMINAL_STATUSES}, not {status!r}")
        self._write(status=status, error=error, **({} if summary is None else {"summary": summary}))


#: the keys of a record that say where its run is logged
_IDENTITY = ("run_id", "tracking_uri", "experiment", "experiment_id", "checkpoint")


def forget(folder: Path) -> Path:
    """Delete a run's folder (record, checkpoint, folds), so the next start trains it
    anew. Refuses a folder that is not a run folder, or one whose run is training now.

    Raises:
        RecordError: not a run folder, or locked by a live process.
    """
    from g2g.lifecycle.lock import ExperimentLock, ExperimentLockedError

    record = RunRecord(Path(folder)).read()
    if not record.path.exists() and not record.checkpoint.exists():
        raise RecordError(f"{folder} is not a run folder (it has no {RECORD_FILE} or {CHECKPOINT_FILE}); run "
                          "folders are CHECKPOINT_DIR/LABEL_HASH, named in the log of the run")
    try:
        with ExperimentLock(record.lock_file):
            shutil.rmtree(record.folder)
    except ExperimentLockedError as error:
        raise RecordError(f"{folder} is being trained now: {error}") from None
    return record.folder

"""The one guard that ends a run: its MLflow status, its record and what the process
reports are set here and nowhere else.

::

    with RunGuard(record, logger) as guard:
        ...                       # train
        guard.succeed(summary)    # the last statement of a run that finished

On leaving the block:

- ``succeed`` was called and nothing raised: the record becomes ``FINISHED`` with the
  summary, then the MLflow run ``FINISHED``. If writing the record fails (a full disk,
  a read-only folder), the MLflow run ends ``FAILED`` with the error and the error goes
  on to the caller: nothing claims FINISHED that did not finish.
- an exception (also one raised while writing a checkpoint, the record or the metrics):
  ``KILLED`` for a stop by a signal (:class:`KeyboardInterrupt`, so also
  :class:`g2g.lifecycle.signals.TrainingInterrupted`), ``FAILED`` for anything else; the reason
  goes into the record and the MLflow tag :data:`g2g.tracking.names.TAG_ERROR`. Each
  write is tried on its own (a store that fails does not keep the record from being
  written, nor the other way round), a failure while doing so is logged, and the
  original exception always goes on to the caller, whose exit status says what happened
  (:func:`g2g.lifecycle.errors.exit_code`).
- :class:`RunPruned` (a hyperparameter search's pruner stopped the run after an epoch,
  whose metrics and checkpoint were saved): the record becomes ``PRUNED`` and the MLflow
  run ``KILLED`` with the reason in the tag :data:`g2g.tracking.names.TAG_PRUNED` (not
  :data:`~g2g.tracking.names.TAG_ERROR`: a pruned run is not a failure); the exception
  goes on to the job, which tells the search.
- the block left without ``succeed`` and without an exception: ``FAILED`` (a run that
  did not say it finished has not).
"""

from __future__ import annotations

import logging

from g2g.lifecycle.record import RunRecord
from g2g.tracking.names import TAG_ERROR, TAG_PRUNED
from g2g.tracking.run_logger import RunLogger

log = logging.getLogger(__name__)

#: longest error text kept in the record and the MLflow tag (MLflow allows 8000)
ERROR_LENGTH = 2000


class RunPruned(Exception):
    """A hyperparameter search pruned the run after an epoch (:mod:`g2g.search`): its
    metrics and checkpoint of that epoch are saved. The message says which pruner, at
    which epoch, on which value."""


def status_of(error: BaseException | None) -> str:
    """The terminal status of the run record when ``error`` ended the run (None: none did)."""
    if error is None:
        return "FINISHED"
    if isinstance(error, RunPruned):
        return "PRUNED"
    return "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"


def describe(error: BaseException) -> str:
    """The reason kept for a run that ``error`` ended, cut to :data:`ERROR_LENGTH`:
    ``stopped: ...`` for a stop by a signal, else ``Type: message``."""
    if isinstance(error, KeyboardInterrupt):
        text = str(error) or "interrupted at once (SIGINT); it resumes from its last checkpoint, if it has one"
        return f"stopped: {text}"[:ERROR_LENGTH]
    if isinstance(error, RunPruned):
        return f"pruned: {error}"[:ERROR_LENGTH]
    return f"{type(error).__name__}: {error}"[:ERROR_LENGTH]


class RunGuard:
    """Sets the terminal state of one run (see the module doc).

    Args:
        record: the run's record (status ``RUNNING``).
        logger: the run's MLflow logger (its :meth:`~RunLogger.end` flushes what the
            store did not take and sets the MLflow status).
    """

    def __init__(self, record: RunRecord, logger: RunLogger) -> None:
        self.record = record
        self.logger = logger
        self._summary: dict | None = None

    def __enter__(self) -> RunGuard:
        return self

    def succeed(self, summary: dict) -> None:
        """The run finished with ``summary``: it ends FINISHED when the block is left."""
        self._summary = summary

    def __exit__(self, kind, error, traceback) -> bool:
        if error is None and self._summary is None:
            error = RuntimeError("the run ended without a result")
        if error is None:
            try:
                self.record.end("FINISHED", summary=self._summary)
            except BaseException as failure:  # the record is the truth: the run is not finished
                self._end_failed(failure)
                raise
            self.logger.end("FINISHED")
            return False
        self._end_failed(error)
        return False  # the error goes on

    def _end_failed(self, error: BaseException) -> None:
        status, reason = status_of(error), describe(error)
        try:
            self.logger.error_tag(reason, TAG_PRUNED if status == "PRUNED" else TAG_ERROR)
        except Exception as failure:  # noqa: BLE001 (each write on its own: the original error goes on)
            log.error("could not tag MLflow run %s with its error (%s)", self.logger.run_id, failure)
        try:
            self.logger.end("KILLED" if status == "PRUNED" else status)  # MLflow has no pruned status
        except Exception as failure:  # noqa: BLE001 (each write on its own: the original error goes on)
            log.error("could not end MLflow run %s %s (%s)", self.logger.run_id, status, failure)
        try:
            self.record.end(status, error=reason)
        except Exception as failure:  # noqa: BLE001 (each write on its own: the original error goes on)
            log.error("could not write the run record %s (%s: %s); it still says %s", self.record.path,
                      type(failure).__name__, failure, self.record.status)

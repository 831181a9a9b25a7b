"""SIGINT/SIGTERM during training: stop after the current step, save, exit resumable.

In a job that submitit started on SLURM (``hydra/launcher=slurm``), the signal SLURM sends
before a job's time limit or when it preempts the job (SIGUSR2: submitit asks for it with
``--signal``; :func:`preemption_signal`) stops the run the same way, and only then, once the
run's guard has ended it KILLED with its checkpoint saved, goes to submitit's own handler,
which requeues the job (``scontrol requeue``): the requeued job resumes from the checkpoint
into the same MLflow run (docs/cluster.md). Without this, submitit's handler would end the
process where it stands (``sys.exit`` in the middle of a step).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator

from g2g.training.trainer import Trainer

log = logging.getLogger(__name__)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint; the same command
    resumes. ``signal_number`` is the signal that asked for it (``run.py`` exits with
    128 + it)."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.signal_number = signal_number


def slurm_job() -> bool:
    """Whether this process is a job that submitit started on SLURM."""
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm"


def preemption_signal() -> int | None:
    """The signal of a SLURM job's time limit or preemption in a job that submitit started
    on SLURM (SIGUSR2, or ``SUBMITIT_PREEMPT_SIGNAL``), else None."""
    if not slurm_job():
        return None
    from submitit import JobEnvironment

    return int(JobEnvironment._usr_sig())


def stop_signals() -> tuple[int, ...]:
    """The signals that stop a run after its current step: SIGINT, SIGTERM, and in a SLURM
    job its :func:`preemption_signal`."""
    preempt = preemption_signal()
    return (signal.SIGINT, signal.SIGTERM) + ((preempt,) if preempt is not None else ())


class StopRequest:
    """Signals received by the job running now (SIGINT, SIGTERM), whatever it was doing;
    kept only inside :func:`job_signals` (``active``)."""

    received: list[int] = []
    active = False


@contextlib.contextmanager
def job_signals() -> Iterator[None]:
    """For a whole job: SIGINT/SIGTERM outside training are remembered
    (:attr:`StopRequest.received`) instead of killing the process where it stands, so
    every stop goes through the run's guard: a run that has not started training yet
    stops right after its first step with a checkpoint (:func:`stop_on_signals` sees the
    request), one that has finished stays finished. A second SIGINT raises
    :class:`KeyboardInterrupt` at once. Handlers only in the main thread; the previous
    ones are restored on exit."""
    StopRequest.received, StopRequest.active = [], True
    if threading.current_thread() is not threading.main_thread():
        try:
            yield
        finally:
            StopRequest.active = False
        return

    def remember(signal_number, frame):
        if StopRequest.received and signal_number == signal.SIGINT:
            raise KeyboardInterrupt
        StopRequest.received.append(signal_number)
        log.warning("%s received: this job stops at its next step, after saving a checkpoint "
                    "(press Ctrl-C again to stop at once)", signal.Signals(signal_number).name)

    previous = {number: signal.signal(number, remember) for number in stop_signals()}
    try:
        yield
    finally:
        StopRequest.active = False
        for number, handler in previous.items():
            signal.signal(number, handler)
        _requeue_after_preemption(previous)


def _requeue_after_preemption(previous: dict) -> None:
    """A SLURM job stopped by its time limit or preemption (its run ended, checkpoint
    saved): hand the signal to submitit's handler, which requeues the job and exits."""
    preempt = preemption_signal()
    handler = previous.get(preempt)
    if preempt in StopRequest.received and callable(handler):
        log.warning("%s: SLURM time limit or preemption; the checkpoint is saved, submitit requeues the job",
                    signal.Signals(preempt).name)
        handler(preempt, None)


@contextlib.contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[list[int]]:
    """SIGINT/SIGTERM set ``trainer.stop_requested``, so it stops after its current
    step (a second SIGINT interrupts at once); a signal the job received before (see
    :func:`job_signals`) stops it after its first step. Yields the list of signal
    numbers received so far. Handlers are only installed in the main thread, and the previous
    ones are restored on exit."""
    received: list[int] = StopRequest.received if StopRequest.active else []
    trainer.stop_requested = bool(received)  # a signal that came before training: stop after the first step
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def request_stop(signal_number, frame):
        if received and signal_number == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signal_number)
        trainer.stop_requested = True
        log.warning("%s received: stopping after the current step and saving a checkpoint "
                    "(press Ctrl-C again to stop at once)", signal.Signals(signal_number).name)

    previous = {number: signal.signal(number, request_stop) for number in stop_signals()}
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)

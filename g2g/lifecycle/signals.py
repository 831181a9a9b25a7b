"""SIGINT/SIGTERM during training: stop after the current step, save, exit resumable."""

from __future__ import annotations

import contextlib
import logging
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

    previous = {number: signal.signal(number, remember) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        StopRequest.active = False
        for number, handler in previous.items():
            signal.signal(number, handler)


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

    previous = {number: signal.signal(number, request_stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)

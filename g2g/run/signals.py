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


@contextlib.contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[list[int]]:
    """SIGINT/SIGTERM set ``trainer.stop_requested``, so it stops after its current
    step (a second SIGINT interrupts at once). Yields the list of signal numbers
    received so far. Handlers are only installed in the main thread, and the previous
    ones are restored on exit."""
    received: list[int] = []
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

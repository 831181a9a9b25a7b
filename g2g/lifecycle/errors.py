"""The errors a user can act on: ``run.py`` prints their message without a traceback
and exits with :func:`exit_code`."""

from __future__ import annotations

import errno

from g2g.config.validation import ConfigError
from g2g.data.datasets import DatasetUnavailableError
from g2g.data.features import FeaturesUnavailableError
from g2g.hardware.device import DeviceUnavailableError
from g2g.hardware.precision import PrecisionUnavailableError
from g2g.lifecycle.checkpoint import CheckpointError
from g2g.lifecycle.lock import ExperimentLockedError
from g2g.tracking.store import TrackingUnavailableError
from g2g.training.trainer import NonFiniteTrainingError

#: errors whose message tells the user what to do
USER_ERRORS = (ConfigError, DeviceUnavailableError, PrecisionUnavailableError, TrackingUnavailableError,
               DatasetUnavailableError, CheckpointError, ExperimentLockedError, NonFiniteTrainingError,
               FeaturesUnavailableError)

#: exit status of a bad config value
EXIT_CONFIG_ERROR = 2
#: exit status of every other user error
EXIT_USER_ERROR = 1


def exit_code(error: BaseException) -> int:
    """The command's exit status for a user error: 2 for a bad config value, else 1."""
    return EXIT_CONFIG_ERROR if isinstance(error, ConfigError) else EXIT_USER_ERROR


#: OS errors a user can act on (the disk, the permissions), reported in one line
_OS_PROBLEMS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                errno.EROFS: "read-only file system"}


def user_message(error: BaseException) -> str | None:
    """The one-line message for an error the user can act on (:data:`USER_ERRORS`, or an
    :class:`OSError` of the disk or the permissions, with the path it concerns), else
    None (a bug: the traceback is shown)."""
    if isinstance(error, USER_ERRORS):
        return str(error)
    for candidate in (error, error.__cause__, error.__context__):
        if isinstance(candidate, OSError) and candidate.errno in _OS_PROBLEMS:
            where = f" writing {candidate.filename}" if candidate.filename else ""
            return (f"{_OS_PROBLEMS[candidate.errno]}{where}. Free space or fix the permissions there, or point "
                    "the key that names that place (checkpoint.dir, dataset.root, tracking.uri, hydra.run.dir) "
                    "elsewhere; the same command then resumes from the last checkpoint.")
    return None

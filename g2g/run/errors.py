"""The errors a user can act on: ``run.py`` prints their message without a traceback
and exits with :func:`exit_code`."""

from __future__ import annotations

from g2g.data.datasets import DatasetUnavailableError
from g2g.data.features import FeaturesUnavailableError
from g2g.run.checkpoint import CheckpointError
from g2g.run.hardware import DeviceUnavailableError
from g2g.run.lock import ExperimentLockedError
from g2g.run.validation import ConfigError
from g2g.tracking.store import TrackingUnavailableError
from g2g.training.trainer import NonFiniteTrainingError

#: errors whose message tells the user what to do
USER_ERRORS = (ConfigError, DeviceUnavailableError, TrackingUnavailableError, DatasetUnavailableError,
               CheckpointError, ExperimentLockedError, NonFiniteTrainingError, FeaturesUnavailableError)

#: exit status of a bad config value
EXIT_CONFIG_ERROR = 2
#: exit status of every other user error
EXIT_USER_ERROR = 1


def exit_code(error: BaseException) -> int:
    """The command's exit status for a user error: 2 for a bad config value, else 1."""
    return EXIT_CONFIG_ERROR if isinstance(error, ConfigError) else EXIT_USER_ERROR

"""MLflow tracking: store and experiment setup, params, per-epoch metrics, plots.

Default store: the SQLite file ``mlflow.db`` in the directory where you ran, with
artifacts in ``mlartifacts/`` beside it (an absolute location, so runs started from
anywhere find them). Browse with ``mlflow ui --backend-store-uri sqlite:///mlflow.db``
(``make ui``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

log = logging.getLogger(__name__)

#: makes the MLflow 3 UI open experiments on the training-runs view
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


class TrackingUnavailableError(RuntimeError):
    """The MLflow store cannot be reached or created."""


def default_tracking_uri(directory: str | Path = ".") -> str:
    """``sqlite:///ABS/mlflow.db`` in ``directory``."""
    return f"sqlite:///{(Path(directory).resolve() / 'mlflow.db').as_posix()}"


def _artifact_location(tracking_uri: str) -> str | None:
    """An absolute artifact folder beside a local SQLite/file store (``None`` for a
    tracking server, which decides itself)."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return None


def setup_experiment(tracking_uri: str | None, experiment: str) -> str:
    """Point MLflow at ``tracking_uri`` (default: :func:`default_tracking_uri`) and get
    or create ``experiment`` with its tags.

    Returns:
        The experiment id.
    Raises:
        TrackingUnavailableError: the store cannot be reached or created.
    """
    uri = tracking_uri or default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    try:
        existing = client.get_experiment_by_name(experiment)
        if existing is not None:
            return existing.experiment_id
        try:
            return client.create_experiment(
                experiment, artifact_location=_artifact_location(uri), tags=EXPERIMENT_TAGS
            )
        except mlflow.exceptions.MlflowException:
            # another process created it between our lookup and create
            existing = client.get_experiment_by_name(experiment)
            if existing is None:
                raise
            return existing.experiment_id
    except Exception as error:
        raise TrackingUnavailableError(
            f"MLflow store tracking.uri={uri!r} cannot be used ({type(error).__name__}: {error}). "
            "Check the URI (a running server for http://, a writable folder for sqlite:///)."
        ) from error


def flatten(container: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become their string form."""
    flat: dict[str, object] = {}
    for key, value in container.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def log_figure(figure: plt.Figure, artifact_file: str) -> None:
    """Log ``figure`` to the active run as ``artifact_file`` and close it."""
    try:
        mlflow.log_figure(figure, artifact_file)
    finally:
        plt.close(figure)

"""MLflow store and experiment setup, and batched logging of params and metrics.

Default store: the SQLite file ``mlflow.db`` in the directory where you ran, with
artifacts in ``mlartifacts/`` beside it (an absolute location, so runs started from
anywhere find them). Browse with ``mlflow ui --backend-store-uri sqlite:///mlflow.db``
(``make ui``).
"""

from __future__ import annotations

import contextlib
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from g2g.run.lock import blocking_file_lock

#: makes the MLflow 3 UI open experiments on the training-runs view
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


class TrackingUnavailableError(RuntimeError):
    """The MLflow store cannot be reached or created."""


def default_tracking_uri(directory: str | Path = ".") -> str:
    """``sqlite:///ABS/mlflow.db`` in ``directory``."""
    return f"sqlite:///{(Path(directory).resolve() / 'mlflow.db').as_posix()}"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of an ``sqlite:///PATH`` tracking URI (None for other stores)."""
    return Path(tracking_uri.removeprefix("sqlite:///")) if tracking_uri.startswith("sqlite:///") else None


def _artifact_location(tracking_uri: str) -> str | None:
    """An absolute artifact folder beside a local SQLite store (``None`` for a
    tracking server, which decides itself)."""
    database = sqlite_path(tracking_uri)
    return None if database is None else (database.parent / "mlartifacts").resolve().as_uri()


def setup_experiment(tracking_uri: str | None, experiment: str) -> str:
    """Point MLflow at ``tracking_uri`` (default: :func:`default_tracking_uri`) and get
    or create ``experiment`` with its tags.

    Returns:
        The experiment id.
    Raises:
        TrackingUnavailableError: the store cannot be reached or created.
    """
    uri = tracking_uri or default_tracking_uri()
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    mlflow.set_tracking_uri(uri)
    database = sqlite_path(uri)
    guard = contextlib.nullcontext() if database is None else blocking_file_lock(Path(f"{database}.lock"))
    try:
        with guard:
            client = MlflowClient(uri)
            existing = client.get_experiment_by_name(experiment)
            if existing is not None:
                return existing.experiment_id
            return client.create_experiment(
                experiment, artifact_location=_artifact_location(uri), tags=EXPERIMENT_TAGS
            )
    except Exception as error:
        raise TrackingUnavailableError(
            f"MLflow store tracking.uri={uri!r} cannot be used ({type(error).__name__}: {error}). "
            "Check the URI (a running server for http://, a writable folder for sqlite:///)."
        ) from error


def _check_server(uri: str, timeout_s: float = 10.0) -> None:
    """Fail fast, with a clear message, when a tracking server does not answer
    (MLflow's own client would retry with back-off for minutes)."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
            response.read()
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise TrackingUnavailableError(
            f"MLflow tracking server tracking.uri={uri!r} does not answer ({error}). Start it "
            f"(mlflow server --host HOST --port PORT ...), fix the URI, or drop tracking.uri to "
            f"log to the local SQLite file mlflow.db."
        ) from error


def log_batch_chunked(client: MlflowClient, run_id: str, params: dict | None = None,
                      metrics: dict | None = None, step: int = 0, timestamp: int | None = None) -> None:
    """Log params and metrics (name -> value) to ``run_id`` in MLflow's batch-size
    chunks (at most 100 params per request); metrics are logged at ``step`` with
    ``timestamp`` (milliseconds since the epoch; default now)."""
    timestamp = int(time.time() * 1000) if timestamp is None else timestamp
    param_items = [mlflow.entities.Param(key, str(value)) for key, value in (params or {}).items()]
    metric_items = [mlflow.entities.Metric(key, value, timestamp, step) for key, value in (metrics or {}).items()]
    for start in range(0, max(len(param_items), len(metric_items)), 100):
        client.log_batch(run_id, params=param_items[start:start + 100], metrics=metric_items[start:start + 100])

"""MLflow tracking: store and experiment setup, params, per-epoch metrics, plots.

Default store: the SQLite file ``mlflow.db`` in the directory where you ran, with
artifacts in ``mlartifacts/`` beside it (an absolute location, so runs started from
anywhere find them). Browse with ``mlflow ui --backend-store-uri sqlite:///mlflow.db``
(``make ui``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from g2g.run.lock import blocking_file_lock  # noqa: E402

log = logging.getLogger(__name__)

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


class RunLogger:
    """Logs metrics and artifacts to one MLflow run and survives a store that fails
    mid-run: training goes on, the failure is reported once, and from then on what
    could not be logged is kept under ``fallback_path`` (JSON lines, plus copies of
    the artifacts beside it) so that ``python -m g2g.tracking relog FILE`` can log it
    later.

    Args:
        run_id: the MLflow run.
        tracking_uri: its store.
        fallback_path: the JSON-lines file (created only when needed).
    """

    def __init__(self, run_id: str, tracking_uri: str, fallback_path: Path) -> None:
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.fallback_path = Path(fallback_path)
        self.offline = False

    def _record(self, entry: dict) -> None:
        self.fallback_path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.fallback_path.exists()
        with open(self.fallback_path, "a") as file:
            if new:
                file.write(json.dumps({"kind": "header", "run_id": self.run_id,
                                       "tracking_uri": self.tracking_uri}) + "\n")
            file.write(json.dumps(entry) + "\n")

    def _failed(self, error: Exception) -> None:
        if not self.offline:
            log.warning(
                "MLflow store %s failed (%s: %s); training goes on and what is not logged is kept "
                "in %s. Log it later with: python -m g2g.tracking relog %s",
                self.tracking_uri, type(error).__name__, error, self.fallback_path, self.fallback_path,
            )
        self.offline = True

    def metrics(self, values: dict[str, float], step: int) -> None:
        """Log metrics at ``step`` (or keep them in the fallback file)."""
        if not self.offline:
            try:
                mlflow.log_metrics(values, step=step)
                return
            except Exception as error:  # any store failure: network, database, server
                self._failed(error)
        self._record({"kind": "metrics", "step": step, "values": values,
                      "timestamp": int(time.time() * 1000)})

    def artifact(self, local_path: Path, artifact_path: str | None = None) -> None:
        """Log a file (or keep a copy beside the fallback file)."""
        if not self.offline:
            try:
                mlflow.log_artifact(str(local_path), artifact_path=artifact_path)
                return
            except Exception as error:
                self._failed(error)
        folder = self.fallback_path.with_suffix(".artifacts") / (artifact_path or "")
        folder.mkdir(parents=True, exist_ok=True)
        copy = folder / Path(local_path).name
        shutil.copy2(local_path, copy)
        self._record({"kind": "artifact", "local_path": str(copy), "artifact_path": artifact_path})

    def figure(self, figure: plt.Figure, artifact_file: str) -> None:
        """Log a figure as ``artifact_file`` (e.g. ``plots/x.png``) and close it."""
        try:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / Path(artifact_file).name
                figure.savefig(path, dpi=100)
                self.artifact(path, str(Path(artifact_file).parent) or None)
        finally:
            plt.close(figure)

    def end(self, status: str) -> None:
        """End the run with ``status`` (FINISHED, FAILED, KILLED)."""
        if not self.offline:
            try:
                mlflow.end_run(status)
                return
            except Exception as error:
                self._failed(error)
        while mlflow.active_run() is not None:  # forget the run locally even if the store is gone
            try:
                mlflow.end_run(status)
            except Exception:
                break
        self._record({"kind": "end", "status": status})


def relog(path: Path) -> int:
    """Log what a :class:`RunLogger` kept in ``path`` to its run; returns the number
    of entries logged and renames the file to ``*.relogged``."""
    lines = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    header, entries = lines[0], lines[1:]
    client = MlflowClient(header["tracking_uri"])
    for entry in entries:
        if entry["kind"] == "metrics":
            log_batch_chunked(client, header["run_id"], metrics=entry["values"], step=entry["step"],
                              timestamp=entry["timestamp"])
        elif entry["kind"] == "artifact":
            client.log_artifact(header["run_id"], entry["local_path"], entry["artifact_path"])
        elif entry["kind"] == "end":
            client.set_terminated(header["run_id"], entry["status"])
    Path(path).rename(Path(path).with_suffix(Path(path).suffix + ".relogged"))
    return len(entries)


def main(argv: list[str] | None = None) -> int:
    """``python -m g2g.tracking relog FILE``: log what a run could not log when its
    MLflow store failed."""
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m g2g.tracking", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    relog_parser = commands.add_parser("relog", help="log a fallback file to its MLflow run")
    relog_parser.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    count = relog(args.file)
    print(f"logged {count} entries from {args.file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

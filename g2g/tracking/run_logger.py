"""The run logger: metrics and artifacts of one MLflow run, with an offline fallback
file when the store fails mid-run, and :func:`relog` to log that file later
(``python -m g2g.tracking relog FILE``)."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
from mlflow.tracking import MlflowClient

from g2g.tracking.store import log_batch_chunked

if TYPE_CHECKING:
    import matplotlib.figure

log = logging.getLogger(__name__)


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

    def figure(self, figure: matplotlib.figure.Figure, artifact_file: str) -> None:
        """Log a figure as ``artifact_file`` (e.g. ``plots/x.png``) and close it."""
        import matplotlib.pyplot as plt  # noqa: PLC0415 (matplotlib only for runs that plot)

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

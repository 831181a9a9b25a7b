"""The run logger: metrics and artifacts of one MLflow run, retried with back-off when
the store fails, with an offline fallback file for what still fails (logged at the end
of the run when the store is back), and :func:`relog` to log that file later
(``python -m g2g.tracking relog FILE``)."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.tracking import MlflowClient

from g2g.files import atomic_write
from g2g.shell import shell_command
from g2g.tracking.names import TAG_ERROR
from g2g.tracking.store import log_batch_chunked

if TYPE_CHECKING:
    import matplotlib.figure

log = logging.getLogger(__name__)


#: seconds to wait before each new try of a store call that failed (a SQLite store
#: locked by another process, a server restarting); what still fails after the last
#: goes to the fallback file
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)


class RunLogger:
    """Logs metrics and artifacts to one MLflow run and survives a store that fails
    mid-run: training goes on.

    A failing call is tried again after each of :data:`RETRY_DELAYS_S`; only what
    still fails is kept under ``fallback_path`` (JSON lines, plus copies of the
    artifacts beside it), and the outage is reported once. While the store is out,
    each call is tried once (no waiting); the first that succeeds ends the outage. At
    :meth:`end`, the kept entries are logged to the run when the store answers again;
    otherwise ``python -m g2g.tracking relog FILE`` logs them later.

    Args:
        run_id: the MLflow run.
        tracking_uri: its store.
        fallback_path: the JSON-lines file (created only when needed).
    """

    def __init__(self, run_id: str, tracking_uri: str, fallback_path: Path) -> None:
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.fallback_path = Path(fallback_path)
        #: the last store call failed after every try (the store is out)
        self.offline = False
        #: an outage was reported (the warning is given once per run)
        self.warned = False
        #: the store's client, made once
        self.client = MlflowClient(tracking_uri)

    def _record(self, entry: dict) -> None:
        self.fallback_path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.fallback_path.exists()
        with open(self.fallback_path, "a") as file:
            if new:
                file.write(json.dumps({"kind": "header", "run_id": self.run_id,
                                       "tracking_uri": self.tracking_uri}) + "\n")
            file.write(json.dumps(entry) + "\n")

    def _call(self, action: Callable[[], object], retry_while_offline: bool = False) -> bool:
        """Run one store call, trying again after each of :data:`RETRY_DELAYS_S`
        (while the store is out, once only unless ``retry_while_offline``). Returns
        whether it succeeded."""
        delays = () if self.offline and not retry_while_offline else RETRY_DELAYS_S
        for delay in (*delays, None):
            try:
                action()
            except Exception as error:  # noqa: BLE001 (any store failure: network, database, server)
                if delay is None:
                    self._failed(error)
                    return False
                log.debug("MLflow store %s failed (%s: %s); trying again in %.1f s",
                          self.tracking_uri, type(error).__name__, error, delay)
                time.sleep(delay)
            else:
                if self.offline:
                    log.info("MLflow store %s answers again; logging to it", self.tracking_uri)
                    self.offline = False
                return True
        return False

    def _failed(self, error: Exception) -> None:
        if not self.warned:
            log.warning(
                "MLflow store %s failed (%s: %s) after %d tries; training goes on and what cannot be "
                "logged is kept in %s, to be logged at the end of the run if the store answers again "
                "(else later with: %s)",
                self.tracking_uri, type(error).__name__, error, len(RETRY_DELAYS_S) + 1,
                self.fallback_path, shell_command("python", "-m", "g2g.tracking", "relog", self.fallback_path),
            )
        elif not self.offline:
            log.info("MLflow store failed again (%s: %s); kept in %s", type(error).__name__, error,
                     self.fallback_path)
        self.offline = self.warned = True

    def metrics(self, values: dict[str, float], step: int) -> None:
        """Log metrics at ``step`` (or keep them in the fallback file)."""
        timestamp = int(time.time() * 1000)
        if not self._call(lambda: log_batch_chunked(self.client, self.run_id, metrics=values, step=step,
                                                    timestamp=timestamp)):
            self._record({"kind": "metrics", "step": step, "values": values, "timestamp": timestamp})

    def artifact(self, local_path: Path, artifact_path: str | None = None) -> None:
        """Log a file (or keep a copy beside the fallback file)."""
        if self._call(lambda: self.client.log_artifact(self.run_id, str(local_path), artifact_path)):
            return
        folder = self.fallback_path.with_suffix(".artifacts") / (artifact_path or "")
        folder.mkdir(parents=True, exist_ok=True)
        copy = folder / Path(local_path).name
        shutil.copy2(local_path, copy)
        self._record({"kind": "artifact", "local_path": str(copy), "artifact_path": artifact_path})

    def figure(self, figure: matplotlib.figure.Figure, artifact_file: str) -> None:
        """Log a figure as ``artifact_file`` (e.g. ``plots/x.png``) and close it."""
        import matplotlib.pyplot as plt  # matplotlib only for runs that plot

        try:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / Path(artifact_file).name
                figure.savefig(path, dpi=100)
                self.artifact(path, str(Path(artifact_file).parent) or None)
        finally:
            plt.close(figure)

    def error_tag(self, reason: str, key: str = TAG_ERROR) -> None:
        """Tag the run with why it did not finish (``key``: :data:`g2g.tracking.names.TAG_ERROR`,
        or :data:`~g2g.tracking.names.TAG_PRUNED` for a run a search pruned); tried once
        (a store that is out keeps it in the fallback file)."""
        if not self._call(lambda: self.client.set_tag(self.run_id, key, reason), retry_while_offline=False):
            self._record({"kind": "tag", "key": key, "value": reason})

    def end(self, status: str) -> None:
        """End the run with ``status`` (FINISHED, FAILED, KILLED), after logging what
        the fallback file kept, when the store takes it. Only
        :class:`g2g.lifecycle.guard.RunGuard` calls this."""
        if self.fallback_path.exists() and not self._call(self._relog_kept, retry_while_offline=True):
            log.warning("the MLflow store still fails: log %s later with: %s", self.fallback_path,
                        shell_command("python", "-m", "g2g.tracking", "relog", self.fallback_path))
        if not self._call(lambda: self.client.set_terminated(self.run_id, status)):
            self._record({"kind": "end", "status": status})

    def _relog_kept(self) -> None:
        count = relog(self.fallback_path)
        log.info("logged the %d entries kept in %s during the MLflow store's outage", count, self.fallback_path)


def relog(path: Path) -> int:
    """Log what a :class:`RunLogger` kept in ``path`` to its run; returns the number
    of entries logged and renames the file to ``*.relogged``. When the store fails
    part-way, the file keeps only the entries not yet logged (so running it again
    logs nothing twice) and the error is raised."""
    path = Path(path)
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    header, entries = lines[0], lines[1:]
    client = MlflowClient(header["tracking_uri"])
    for done, entry in enumerate(entries):
        try:
            if entry["kind"] == "metrics":
                log_batch_chunked(client, header["run_id"], metrics=entry["values"], step=entry["step"],
                                  timestamp=entry["timestamp"])
            elif entry["kind"] == "artifact":
                client.log_artifact(header["run_id"], entry["local_path"], entry["artifact_path"])
            elif entry["kind"] == "tag":
                client.set_tag(header["run_id"], entry["key"], entry["value"])
            elif entry["kind"] == "end":
                client.set_terminated(header["run_id"], entry["status"])
        except BaseException:
            rest = [header, *entries[done:]]
            atomic_write(path, lambda file, rest=rest: file.write("".join(json.dumps(e) + "\n" for e in rest).encode()))
            raise
    path.rename(path.with_suffix(path.suffix + ".relogged"))
    return len(entries)

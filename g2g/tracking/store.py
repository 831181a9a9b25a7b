"""MLflow store and experiment setup, MLflow's environment variables, and batched
logging of params and metrics.

Default store: the SQLite file ``mlflow.db`` in the directory where you ran, with
artifacts in ``mlartifacts/`` beside it (an absolute location, so runs started from
anywhere find them). Browse with ``mlflow ui --backend-store-uri sqlite:///mlflow.db``
(``make ui``).

SQLite URIs: a local store's file is written ``sqlite:///PATH`` (absolute:
``sqlite:////home/me/runs/mlflow.db``). g2g builds them with :func:`sqlite_uri`, so any
folder name works: SQLAlchemy, which opens the file for MLflow, reads a ``?`` in the URI
as the start of its query string and decodes ``%XX``, so those two are percent-encoded
(``q?mark`` -> ``q%3Fmark``), and :func:`sqlite_path` decodes them again. A SQLite file
given relative, with ``~`` or with ``$NAME`` (``tracking.uri``, ``MLFLOW_TRACKING_URI``,
``python -m g2g.report --tracking-uri``) is expanded as a shell would and made absolute
(:func:`absolute_tracking_uri`).

MLflow's environment variables (https://mlflow.org/docs/latest/python_api/mlflow.environment_variables.html):

- ``MLFLOW_TRACKING_URI`` is honoured as MLflow documents it when ``tracking.uri`` is
  null (the config has not chosen a store); an explicit ``tracking.uri`` wins, and the
  variable is then ignored with a warning. A relative SQLite file in either is relative
  to the directory where the command was started.
- ``MLFLOW_EXPERIMENT_NAME`` and ``MLFLOW_EXPERIMENT_ID`` are ignored with a warning:
  ``tracking.experiment`` always has a value (``g2g`` by default) and is logged as a
  param of every run, so an experiment chosen by the environment would contradict
  what the run records. Pass ``tracking.experiment=NAME`` instead.
- ``MLFLOW_RUN_ID`` and ``SERVERLESS_GPU_COMPUTE_ASSOCIATED_JOB_RUN_ID`` (variables that make
  ``mlflow.start_run`` log into an existing run) are ignored with a warning and removed
  from the process's environment: g2g writes only into runs it created, or into the
  run its own checkpoint names when it resumes.

g2g never changes these variables for other programs: :func:`setup_experiment` selects
the store without leaving ``MLFLOW_TRACKING_URI`` set behind it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote

import mlflow
from filelock import FileLock
from mlflow.entities import LifecycleStage
from mlflow.tracking import MlflowClient

from g2g.files import expand_path
from g2g.shell import shell_command

log = logging.getLogger(__name__)

#: MLflow's variable naming the store (honoured when ``tracking.uri`` is null)
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
#: MLflow's variables choosing an experiment (ignored: ``tracking.experiment`` decides)
EXPERIMENT_ENV = ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID")
#: MLflow's variables that make ``mlflow.start_run`` log into an existing run (ignored and removed)
FOREIGN_RUN_ENV = ("MLFLOW_RUN_ID", "SERVERLESS_GPU_COMPUTE_ASSOCIATED_JOB_RUN_ID")

#: makes the MLflow 3 UI open experiments on the training-runs view
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
#: the prefix of a local SQLite store's URI
SQLITE_PREFIX = "sqlite:///"
#: a ``%`` that SQLAlchemy would decode: one followed by two hex digits
_PERCENT_ESCAPE = re.compile(r"%(?=[0-9A-Fa-f]{2})")


class TrackingUnavailableError(RuntimeError):
    """The MLflow store cannot be reached or created."""


class ExperimentDeletedError(TrackingUnavailableError):
    """The experiment was deleted (it is in MLflow's trash); the message says how to
    restore it or choose another one."""


def sqlite_uri(database: str | Path) -> str:
    """The tracking URI ``sqlite:///PATH`` of the SQLite file ``database`` (give it
    absolute: ``/a/mlflow.db`` -> ``sqlite:////a/mlflow.db``), which SQLAlchemy and MLflow
    open as that file whatever characters its path holds.

    SQLAlchemy's URL parser reads ``?`` as the start of the query string and decodes
    ``%XX``, so a ``?`` is written ``%3F`` and a ``%`` followed by two hex digits ``%25``
    (:func:`sqlite_path` decodes them). Every other character, spaces and ``#``
    included, is kept as it is: MLflow creates the file's folder from the URI's text
    without decoding it, so every encoded character leaves an empty folder named with the
    code beside the real one (MLflow 3.x; for a ``?`` or ``%XX`` in a name it still does).
    """
    text = Path(database).as_posix()
    return SQLITE_PREFIX + _PERCENT_ESCAPE.sub("%25", text).replace("?", "%3F")


def _split_sqlite_uri(tracking_uri: str) -> tuple[str, str | None] | None:
    """``(database as written, query string or None)`` of a ``sqlite:///`` URI, split
    where SQLAlchemy splits it (at the first ``?``); None for every other URI."""
    if not tracking_uri.startswith(SQLITE_PREFIX):
        return None
    database, question, query = tracking_uri.removeprefix(SQLITE_PREFIX).partition("?")
    return database, query if question else None


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` tracking URI, decoded as SQLAlchemy
    decodes it (``%3F`` -> ``?``, without the query string); None for other stores."""
    parts = _split_sqlite_uri(tracking_uri)
    return None if parts is None else Path(unquote(parts[0]))


def sqlite_uri_problem(tracking_uri: str) -> str | None:
    """What is wrong with a ``sqlite:///`` URI whose ``?`` does not start SQLAlchemy
    options (``?key=value&key=value``): most likely a ``?`` in a folder or file name,
    which SQLAlchemy would cut off there (``sqlite:////a/q?mark/mlflow.db`` opens the
    file ``/a/q``). None when the URI is fine or not a SQLite URI."""
    parts = _split_sqlite_uri(tracking_uri)
    if parts is None or parts[1] is None:
        return None
    database, query = parts
    if query and all("=" in option for option in query.split("&")):
        return None
    return (f"the '?' starts the URI's query string (SQLAlchemy options key=value), and {query!r} is not one; "
            f"a '?' in a folder or file name is written %3F: {sqlite_uri(unquote(database) + '?' + unquote(query))}")


def default_tracking_uri(directory: str | Path = ".") -> str:
    """``sqlite:///ABS/mlflow.db`` in ``directory`` (:func:`sqlite_uri`)."""
    return sqlite_uri(Path(directory).resolve() / "mlflow.db")


def absolute_tracking_uri(tracking_uri: str, base: str | Path) -> str:
    """``tracking_uri`` with its SQLite file expanded as a shell would (``~``, ``$NAME``:
    :func:`g2g.files.expand_path`), made absolute against ``base``, normalised and
    written with :func:`sqlite_uri` (``sqlite:///mlflow.db`` -> ``sqlite:////BASE/mlflow.db``;
    a query string is kept); every other URI is kept as it is.

    Raises:
        ValueError: the file's path names an environment variable that is not set.
    """
    parts = _split_sqlite_uri(tracking_uri)
    if parts is None or parts[0] in ("", ":memory:"):
        return tracking_uri
    database, query = parts
    literal = unquote(database)
    if Path(literal).is_absolute() and Path(literal).parent.is_dir():  # already resolved: a folder may hold a $
        path = os.path.normpath(literal)
    else:
        path = os.path.normpath(Path(base).absolute() / expand_path(literal))
    return sqlite_uri(path) + ("" if query is None else f"?{query}")


def resolve_tracking_uri(tracking_uri: str | None, base: str | Path = ".") -> str:
    """The store to log to: ``tracking_uri`` (``tracking.uri``) when set, else
    ``MLFLOW_TRACKING_URI`` when set, else :func:`default_tracking_uri` in ``base``; a
    relative local store is made absolute against ``base`` (:func:`absolute_tracking_uri`).
    Logs nothing (see :func:`warn_ignored_environment`).

    Raises:
        ValueError: the SQLite file's path names an environment variable that is not set.
    """
    uri = tracking_uri or os.environ.get(TRACKING_URI_ENV)
    if not uri:  # g2g's own absolute path: nothing in it is for expanding (a folder may hold a $)
        return default_tracking_uri(base)
    return absolute_tracking_uri(uri, base)


def warn_ignored_environment(tracking_uri: str | None, experiment: str) -> None:
    """Say which of MLflow's environment variables this run ignores (see the module
    docstring), and remove those of :data:`FOREIGN_RUN_ENV` from the environment.

    Args:
        tracking_uri: ``tracking.uri`` as configured (before :func:`resolve_tracking_uri`).
        experiment: ``tracking.experiment``.
    """
    environment_uri = os.environ.get(TRACKING_URI_ENV)
    if tracking_uri and environment_uri and environment_uri != tracking_uri:
        log.warning("%s=%s is ignored: tracking.uri=%s is set", TRACKING_URI_ENV, environment_uri, tracking_uri)
    for name in EXPERIMENT_ENV:
        if os.environ.get(name):
            log.warning("%s=%s is ignored: g2g logs to tracking.experiment=%s (pass tracking.experiment=NAME "
                        "to choose another experiment)", name, os.environ[name], experiment)
    drop_foreign_run_environment()


def drop_foreign_run_environment() -> None:
    """Remove :data:`FOREIGN_RUN_ENV` from the environment, with a warning for each one
    set: g2g never logs into a run it did not create or resume from its checkpoint."""
    for name in FOREIGN_RUN_ENV:
        value = os.environ.pop(name, None)
        if value:
            log.warning("%s=%s is ignored: g2g logs only into runs it creates, or into the run its own "
                        "checkpoint names when it resumes", name, value)


@contextlib.contextmanager
def _environment_kept(name: str):
    """Restore the environment variable ``name`` on exit (``mlflow.set_tracking_uri``
    sets ``MLFLOW_TRACKING_URI``, which would look like the user's choice afterwards)."""
    before = os.environ.get(name)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def deleted_experiment_message(experiment_name: str, experiment_id: str, tracking_uri: str,
                               another: str = "log to another experiment: tracking.experiment=OTHER_NAME") -> str:
    """What to do about the deleted experiment ``experiment_name``: restore it (command
    line or UI), or ``another`` (the other remedy, in the words of the command at hand)."""
    restore = shell_command("mlflow", "experiments", "restore", "--experiment-id", experiment_id,
                            env={TRACKING_URI_ENV: tracking_uri})
    return (
        f"MLflow experiment {experiment_name!r} (id {experiment_id}) in the store {tracking_uri} was deleted "
        "(it is in MLflow's trash). Either restore it, with its runs:\n"
        f"  {restore}\n"
        "  (or in the MLflow UI: the experiment list, show deleted experiments, restore)\n"
        f"or {another}"
    )


def _artifact_location(tracking_uri: str) -> str | None:
    """An absolute artifact folder beside a local SQLite store (``None`` for a
    tracking server, which decides itself)."""
    database = sqlite_path(tracking_uri)
    return None if database is None else (database.parent / "mlartifacts").resolve().as_uri()


def blocking_file_lock(path: Path) -> FileLock:
    """An exclusive OS lock on ``path`` for a ``with`` block, waiting for it (used
    to serialise the creation of a brand-new SQLite MLflow store, whose schema
    migration races when two processes do it at once). Creates ``path``'s folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path)


def setup_experiment(tracking_uri: str | None, experiment: str) -> str:
    """Point MLflow at the store :func:`resolve_tracking_uri` gives for ``tracking_uri``
    (relative to the current directory) and get or create ``experiment`` with its tags.

    Returns:
        The experiment id.
    Raises:
        ExperimentDeletedError: ``experiment`` was deleted (restore it or choose another).
        TrackingUnavailableError: the store cannot be reached or created, or its URI names
            an unset environment variable or has a ``?`` that is not a query string.
    """
    source = (f"tracking.uri={tracking_uri!r}" if tracking_uri
              else f"{TRACKING_URI_ENV}={os.environ.get(TRACKING_URI_ENV)!r}")
    try:
        uri = resolve_tracking_uri(tracking_uri)
    except ValueError as error:
        raise TrackingUnavailableError(f"MLflow store {source}: {error}") from None
    problem = sqlite_uri_problem(uri)
    if problem:
        raise TrackingUnavailableError(f"MLflow store {source}: {problem}")
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    with _environment_kept(TRACKING_URI_ENV):
        mlflow.set_tracking_uri(uri)
    database = sqlite_path(uri)
    guard = contextlib.nullcontext() if database is None else blocking_file_lock(Path(f"{database}.lock"))
    try:
        with guard:
            client = MlflowClient(uri)
            existing = client.get_experiment_by_name(experiment)
            if existing is None:
                return client.create_experiment(
                    experiment, artifact_location=_artifact_location(uri), tags=EXPERIMENT_TAGS
                )
    except Exception as error:
        raise TrackingUnavailableError(
            f"MLflow store tracking.uri={uri!r} cannot be used ({type(error).__name__}: {error}). "
            "Check the URI (a running server for http://, a writable folder for sqlite:///)."
        ) from error
    if existing.lifecycle_stage == LifecycleStage.DELETED:
        raise ExperimentDeletedError(deleted_experiment_message(experiment, existing.experiment_id, uri))
    return existing.experiment_id


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


def root_cause(error: BaseException) -> str:
    """``Type: first line`` of the innermost cause of ``error`` (what the database or
    the server said, without the wrappers' text)."""
    seen = [error]
    while (seen[-1].__cause__ or seen[-1].__context__) is not None and len(seen) < 20:
        seen.append(seen[-1].__cause__ or seen[-1].__context__)
    inner = seen[-1]
    return f"{type(inner).__name__}: {(str(inner).strip().splitlines() or [''])[0]}"


@contextlib.contextmanager
def quiet_store_errors():
    """Silence the tracebacks MLflow's store logs for a failed database call while the
    caller reports the failure itself, in one line."""
    logger = logging.getLogger("mlflow.store")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)

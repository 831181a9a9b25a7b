"""``python -m g2g.tracking relog FILE``: log what a run could not log when its MLflow
store failed (the fallback file of :class:`g2g.tracking.run_logger.RunLogger`).

``python -m g2g.tracking links [--tracking-uri URI] [--url URL]``: one direct link per
experiment of the store to its training-runs page in the MLflow UI (``make ui`` prints
them before it starts the UI), since MLflow 3's home page opens on its GenAI view."""

from __future__ import annotations

import argparse

from g2g.files import path_argument


def experiment_links(tracking_uri: str, url: str) -> list[str]:
    """``NAME: URL/#/experiments/ID/runs`` for every active experiment of the store that
    has a run, in the order MLflow lists them (a store that does not exist yet: none)."""
    from mlflow.tracking import MlflowClient  # MLflow only after the arguments

    from g2g.tracking.store import sqlite_path

    database = sqlite_path(tracking_uri)
    if database is not None and not database.exists():
        return []
    client = MlflowClient(tracking_uri)
    return [f"{experiment.name}: {url.rstrip('/')}/#/experiments/{experiment.experiment_id}/runs"
            for experiment in client.search_experiments()
            if client.search_runs([experiment.experiment_id], max_results=1)]


def main(argv: list[str] | None = None) -> int:
    """``python -m g2g.tracking relog FILE`` logs what a run could not log when its
    MLflow store failed; ``python -m g2g.tracking links`` prints each experiment's link
    to its training runs in the MLflow UI."""
    parser = argparse.ArgumentParser(prog="python -m g2g.tracking", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    relog_parser = commands.add_parser("relog", help="log a fallback file to its MLflow run")
    relog_parser.add_argument("file", type=path_argument)
    links_parser = commands.add_parser("links", help="each experiment's link to its runs in the MLflow UI")
    links_parser.add_argument("--tracking-uri", default=None, help="default: sqlite:///$PWD/mlflow.db")
    links_parser.add_argument("--url", default="http://127.0.0.1:5000", help="where the MLflow UI answers")
    args = parser.parse_args(argv)
    if args.command == "links":
        from g2g.tracking.store import resolve_tracking_uri

        links = experiment_links(resolve_tracking_uri(args.tracking_uri), args.url)
        for line in links or [f"no runs yet in {resolve_tracking_uri(args.tracking_uri)}: make run trains one"]:
            print(line)
        print("(each link opens the experiment's training runs; elsewhere in the UI, MLflow's \"Model training\" "
              "switch leaves its GenAI view)")
        return 0
    from g2g.tracking.run_logger import relog  # MLflow only after the arguments

    count = relog(args.file)
    print(f"logged {count} entries from {args.file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

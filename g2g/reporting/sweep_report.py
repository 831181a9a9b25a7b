"""Comparison report of a sweep, built from MLflow alone.

    python -m g2g.report <sweep-run-id | experiment-name> [--tracking-uri URI] [--out DIR]

Collects the sweep's child runs (tag ``mlflow.parentRunId``), writes a table of
every job's final metrics and key settings (``jobs.csv``, ``jobs.md``) and plots:
test accuracy against ``p_inter`` per model with the dense baseline as a line
(``accuracy_vs_p_inter.png``, mean +- std over seeds), test accuracy against the
energy and synaptic operations of one inference (``accuracy_vs_cost.png``), and,
when the sweep varied the DST rules, a prune x grow heatmap of test accuracy per
model (``dst_rules_heatmap.png``). The files go to ``--out`` (default:
``sweep_report``) and are logged to the parent run under ``report/``.

    python -m g2g.report <experiment-name> --page docs/results.md

instead writes the results page (:mod:`g2g.reporting.results_page`) from every finished run
of the experiment, and

    python -m g2g.report <experiment-name> --page docs/results.md --section published

its published-setting section (the runs of ``conf/study/published.yaml``). The page records
the command that regenerates it, quoted for the shell.

A target that names nothing the report takes (no such experiment or run, or a run that is
not a sweep's parent, e.g. one training run of a sweep) is refused with exit status 2,
naming what the target is (and the command for the run's sweep); nothing is logged then.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from g2g.files import path_argument
from g2g.reporting import markdown
from g2g.reporting.queries import TargetError, columns, open_store, report_command, resolve_sweep, sweep_jobs
from g2g.tracking.names import TAG_ERROR

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

#: exit status when TARGET names nothing the report takes (as argparse's for bad arguments)
EXIT_BAD_TARGET = 2


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return " ".join(str(value).split())  # one table row: an error message's lines joined


def _add_job_labels(rows: list[dict]) -> None:
    """``job``: each run name without the overrides that every job of the sweep shares
    (e.g. ``model=index model.p_inter=0.1`` instead of the whole command line)."""
    token_sets = [set((row["run_name"] or "").split()) for row in rows]
    common = set.intersection(*token_sets) if token_sets and len(rows) > 1 else set()
    for row in rows:
        row["job"] = " ".join(t for t in (row["run_name"] or "").split() if t not in common) or row["run_name"]


def write_tables(rows: list[dict], folder: Path) -> list[Path]:
    """``jobs.csv`` and ``jobs.md`` with every column (:func:`g2g.reporting.queries.columns`)
    that has a value in some row (``job`` first: the run name less the overrides all
    jobs share)."""
    _add_job_labels(rows)
    headers = ["job"] + [header for header, _ in columns()
                         if header != "run_name" and any(row.get(header) is not None for row in rows)]
    csv_path, markdown_path = folder / "jobs.csv", folder / "jobs.md"
    with open(csv_path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=headers, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    markdown_path.write_text(markdown.table(headers, [[_format(row.get(h)) for h in headers] for row in rows]))
    return [csv_path, markdown_path]


def report_sweep(client: MlflowClient, parent_run_id: str, folder: Path | None = None) -> list[dict]:
    """Write the report files of a sweep into ``folder`` (a temporary one when None)
    and log them to the parent run under ``report/``. Returns the job rows."""
    from g2g.reporting.figures import SWEEP_FIGURES, save  # noqa: PLC0415 (matplotlib only for figures)

    rows = sweep_jobs(client, parent_run_id)
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(folder or temporary)
        folder.mkdir(parents=True, exist_ok=True)
        files = write_tables(rows, folder)
        for name, make in SWEEP_FIGURES:
            figure = make(rows)
            if figure is not None:
                save(figure, folder / name, dpi=120)
                files.append(folder / name)
        for path in files:
            client.log_artifact(parent_run_id, str(path), artifact_path="report")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m g2g.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="run id of a sweep's parent run, or experiment name (its latest sweep "
                                       "with jobs; with --page: every finished run of it)")
    parser.add_argument("--tracking-uri", default=None,
                        help="default: sqlite:///$PWD/mlflow.db; a relative, ~ or $NAME SQLite file means what it "
                             "would in tracking.uri")
    parser.add_argument("--out", default="sweep_report", type=path_argument,
                        help="folder for the files (default: sweep_report)")
    parser.add_argument("--page", default=None, metavar="PATH",
                        help="write the results page (e.g. docs/results.md) of experiment TARGET instead")
    parser.add_argument("--section", default="results", choices=("results", "published"),
                        help="with --page: the part of the page to regenerate: the studies (results, the "
                             "default) or the published setting (published)")
    args = parser.parse_args(argv)
    page_path = None if args.page is None else path_argument(args.page)  # the page's command keeps --page as typed
    from g2g.tracking.store import absolute_tracking_uri, default_tracking_uri  # noqa: PLC0415 (MLflow: after arguments)

    try:
        client = open_store(absolute_tracking_uri(args.tracking_uri, Path.cwd()) if args.tracking_uri
                            else default_tracking_uri())
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.page:
        from g2g.reporting.results_page import write_page  # noqa: PLC0415

        command = report_command(args.target, "--page", args.page,
                                 *(["--section", args.section] if args.section != "results" else []),
                                 tracking_uri=args.tracking_uri)
        try:
            page = write_page(client, args.target, page_path, command, args.section)
        except ValueError as error:  # ResultsError, TargetError among them
            print(f"error: {error}", file=sys.stderr)
            return EXIT_BAD_TARGET if isinstance(error, TargetError) else 1
        print(f"wrote {page} and its figures in {page.parent / 'figures'}" if args.section == "results"
              else f"wrote the {args.section} section of {page}")
        return 0
    try:
        parent, skipped = resolve_sweep(client, args.target, tracking_uri=args.tracking_uri)
    except ValueError as error:  # TargetError among them
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_TARGET if isinstance(error, TargetError) else 1
    for line in skipped:
        print(line, file=sys.stderr)
    rows = report_sweep(client, parent, Path(args.out))
    print((Path(args.out) / "jobs.md").read_text(), end="")
    print(sweep_summary(client, parent, rows))
    print(f"files in {Path(args.out).resolve()} and in MLflow run {parent} (report/)")
    return 0


def sweep_summary(client: MlflowClient, parent_run_id: str, rows: list[dict]) -> str:
    """One line: the sweep's status, its number of jobs and of jobs that did not finish,
    and the reason it did not finish (tag :data:`g2g.tracking.names.TAG_ERROR`)."""
    parent = client.get_run(parent_run_id)
    failed = sum(row["status"] != "FINISHED" for row in rows)
    reason = parent.data.tags.get(TAG_ERROR)
    return (f"sweep {parent.info.status}: {len(rows)} jobs, {failed} did not finish"
            + (f" ({reason})" if reason else ""))


if __name__ == "__main__":
    raise SystemExit(main())

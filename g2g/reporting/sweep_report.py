"""Comparison report of a sweep, built from MLflow alone.

    python -m g2g.report <sweep-run-id | experiment-name> [--metric M] [--baseline SELECTOR]
                         [--tracking-uri URI] [--out DIR]

Collects the sweep's child runs (tag ``mlflow.parentRunId``) and compares them by what
varies (:mod:`g2g.reporting.comparison`): one row per configuration (the result-affecting
params that vary across the jobs, less the seed), the metric of the last epoch (default
``test_accuracy``) as mean ± std over seeds, the best epoch's mean, the paired difference
to the baseline (``--baseline model=dense``, any ``key=value[,key=value...]``; default:
the ``dense`` model when exactly one configuration is it) with its 95% t-interval, and
the learned LIF parameters; above it one line that answers which configuration is best
and whether it is distinguishable from the next. Files, in ``--out`` (default
``sweep_report``; the files an earlier report wrote there are removed first) and logged
to the parent run under ``report/``:

- ``comparison.md`` (the answer, the table, what follows what, the shared settings) and
  ``comparison.csv`` (the same in numbers);
- ``METRIC_vs_PARAM.png`` for each numeric varying param (one line per combination of
  the others) and ``accuracy_vs_cost.png`` (one point per configuration);
- ``jobs.csv``: every job with every param and metric.

The terminal gets the comparison. Details: docs/comparisons.md.

    python -m g2g.report <experiment-name> --page docs/results.md

instead writes the results page (:mod:`g2g.reporting.results_page`) from every finished run
of the experiment, and

    python -m g2g.report <experiment-name> --page docs/results.md --section published

its published-setting section (the runs of ``conf/study/published.yaml``). The page records
the command that regenerates it, quoted for the shell.

A target that names nothing the report takes (no such experiment or run, or a run that is
not a sweep's parent, e.g. one training run of a sweep), or a baseline that matches no
configuration, is refused with exit status 2, naming what it is; nothing is logged then.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from g2g.files import path_argument
from g2g.reporting.comparison import (
    DEFAULT_METRIC,
    Comparison,
    SelectorError,
    compare,
    csv_rows,
    render,
    shared_text,
)
from g2g.reporting.queries import ROW_KEYS, TargetError, open_store, report_command, resolve_sweep, sweep_jobs
from g2g.tracking.names import TAG_ERROR

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

#: exit status when TARGET names nothing the report takes (as argparse's for bad arguments)
EXIT_BAD_TARGET = 2


#: the file in a report's folder that lists the files the report wrote there (removed by the next one)
MANIFEST = ".g2g_report_files"
#: files of reports written before the manifest existed, removed from a folder without one
_LEGACY_FILES = ("jobs.csv", "jobs.md", "accuracy_vs_p_inter.png", "accuracy_vs_cost.png", "dst_rules_heatmap.png")


def _add_job_labels(rows: list[dict]) -> None:
    """``job``: each run name without the overrides that every job of the sweep shares
    (e.g. ``model=index model.p_inter=0.1`` instead of the whole command line)."""
    token_sets = [set((row["run_name"] or "").split()) for row in rows]
    common = set.intersection(*token_sets) if token_sets and len(rows) > 1 else set()
    for row in rows:
        row["job"] = " ".join(t for t in (row["run_name"] or "").split() if t not in common) or row["run_name"]


def write_jobs(rows: list[dict], folder: Path) -> Path:
    """``jobs.csv``: one line per job: ``job`` (the run name less the overrides all jobs
    share), run id, status, error, device, threads, then every param (``params.KEY``) and
    every metric (last value) any job has."""
    _add_job_labels(rows)
    info = ["job", "run_id", "status", "error", "device", "num_threads", "epochs", "seed"]
    params = sorted({key for row in rows for key in row["params"]})
    metrics = sorted({key for row in rows for key in row if key not in ROW_KEYS and key != "job"})
    path = folder / "jobs.csv"
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(info + [f"params.{key}" for key in params] + metrics)
        for row in rows:
            writer.writerow([row.get(key) for key in info] + [row["params"].get(key) for key in params]
                            + [row.get(key) for key in metrics])
    return path


def write_comparison(comparison: Comparison, folder: Path, title: str, figures: list[str]) -> list[Path]:
    """``comparison.md`` (``title``, the answer, the table, notes, ``figures`` as images,
    the shared settings) and ``comparison.csv``."""
    markdown_path, csv_path = folder / "comparison.md", folder / "comparison.csv"
    images = "".join(f"![{name}]({name})\n\n" for name in figures)
    markdown_path.write_text(f"# {title}\n\n{render(comparison)}\n{images}{shared_text(comparison)}")
    headers, rows = csv_rows(comparison)
    with open(csv_path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(headers)
        writer.writerows(rows)
    return [markdown_path, csv_path]


def clear_report(folder: Path) -> None:
    """Remove the files an earlier report wrote into ``folder`` (those its manifest
    lists, or the names reports wrote before the manifest), and nothing else."""
    manifest = folder / MANIFEST
    owned = manifest.read_text().split("\n") if manifest.exists() else list(_LEGACY_FILES)
    for name in filter(None, owned):
        if "/" not in name and name not in (".", ".."):
            (folder / name).unlink(missing_ok=True)
    manifest.unlink(missing_ok=True)


def report_sweep(client: MlflowClient, parent_run_id: str, folder: Path | None = None, *,
                 metric: str = DEFAULT_METRIC, baselines: list[str] | None = None) -> list[dict]:
    """Write the report files of a sweep (see the module doc) into ``folder`` (a
    temporary one when None; an earlier report's files there are removed first) and log
    them to the parent run under ``report/``. Returns the job rows.

    Raises:
        g2g.reporting.comparison.SelectorError: a baseline that matches no configuration
            (nothing is written or logged then).
    """
    from g2g.reporting.figures import comparison_figures, save  # matplotlib only for figures

    rows = sweep_jobs(client, parent_run_id)
    comparison = compare(rows, metric=metric, baselines=baselines)
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(folder or temporary)
        folder.mkdir(parents=True, exist_ok=True)
        clear_report(folder)
        figures = []
        for name, figure in comparison_figures(comparison):
            save(figure, folder / name, dpi=120)
            figures.append(name)
        parent = client.get_run(parent_run_id)
        name = parent.info.run_name or parent_run_id  # a sweep's run is named "sweep OVERRIDES"
        title = f"{name[:1].upper()}{name[1:]} ({parent_run_id})" if name.startswith("sweep") \
            else f"Sweep {name} ({parent_run_id})"
        files = [*write_comparison(comparison, folder, title, figures), write_jobs(rows, folder),
                 *(folder / name for name in figures)]
        (folder / MANIFEST).write_text("".join(f"{path.name}\n" for path in files))
        for path in files:
            client.log_artifact(parent_run_id, str(path), artifact_path="report")
    return rows


def main(argv: list[str] | None = None) -> int:
    from g2g.reporting.results_page import sections

    parser = argparse.ArgumentParser(prog="python -m g2g.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="run id of a sweep's parent run, or experiment name (its latest sweep "
                                       "with jobs; with --page: every finished run of it)")
    parser.add_argument("--tracking-uri", default=None,
                        help="default: sqlite:///$PWD/mlflow.db; a relative, ~ or $NAME SQLite file means what it "
                             "would in tracking.uri")
    parser.add_argument("--out", default="sweep_report", type=path_argument,
                        help="folder for the files (default: sweep_report)")
    parser.add_argument("--metric", default=DEFAULT_METRIC,
                        help="the metric to compare, its last-epoch value (default: test_accuracy; e.g. val_accuracy)")
    parser.add_argument("--baseline", action="append", default=None, metavar="SELECTOR",
                        help="the configuration to pair every other one with, as key=value[,key=value...] "
                             "(model=dense means model.name=dense); repeat for several; default: model=dense "
                             "when exactly one configuration is dense")
    parser.add_argument("--page", default=None, metavar="PATH",
                        help="write the results page (e.g. docs/results.md) of experiment TARGET instead")
    parser.add_argument("--section", default="results", choices=sections(),
                        help="with --page: the part of the page to regenerate (a top-level key of "
                             "g2g/reporting/studies.yaml): the studies (results, the default), the published "
                             "setting (published), ...")
    args = parser.parse_args(argv)
    page_path = None if args.page is None else path_argument(args.page)  # the page's command keeps --page as typed
    from g2g.tracking.store import absolute_tracking_uri, default_tracking_uri  # MLflow: after arguments

    try:
        client = open_store(absolute_tracking_uri(args.tracking_uri, Path.cwd()) if args.tracking_uri
                            else default_tracking_uri())
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.page:
        from g2g.reporting.results_page import write_page

        if args.baseline or args.metric != DEFAULT_METRIC:
            print("error: --baseline and --metric apply to a sweep's comparison; the page's studies name their own "
                  "(g2g/reporting/studies.yaml)", file=sys.stderr)
            return EXIT_BAD_TARGET

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
    try:
        rows = report_sweep(client, parent, Path(args.out), metric=args.metric, baselines=args.baseline)
    except SelectorError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_TARGET
    text = (Path(args.out) / "comparison.md").read_text()
    print("\n".join(line for line in text.split("<details>")[0].rstrip("\n").splitlines()
                    if not line.startswith("![")))
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

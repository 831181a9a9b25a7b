"""Many jobs writing to one tracking store at once: the default SQLite file against an MLflow
server backed by PostgreSQL.

For each store, one sweep of ``--jobs`` tiny jobs (hidden 16, 4 time steps, 2 epochs of 64
images: a few seconds of training each) with ``hydra.launcher.n_jobs`` equal to the job
count, so every job opens, logs to and closes its run at the same time as the others
(one torch thread each). Then, from the store and the run folders: runs lost (a job with
no run), runs left RUNNING, runs FINISHED, jobs that wrote an offline fallback file
(``mlflow_fallback.jsonl``: what the store refused, to relog later), the sweep's exit
status and its wall time. Prints a Markdown table (benchmarks/README.md).

    python benchmarks/many_writers.py                  # 32 jobs, both stores (root: starts PostgreSQL)
    python benchmarks/many_writers.py --jobs 8 --stores sqlite

The server and PostgreSQL are started on 127.0.0.1 in a temporary folder and stopped at
the end (tests/daemons.py; root, Debian packages postgresql). Each job is a Python
process importing torch (about 0.4 GB): 32 jobs need about 13 GB of memory.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from daemons import LocalCluster, install_packages  # noqa: E402

from conftest import TINY, write_fashion_mnist  # noqa: E402 (tests/ is put on the path above)


def sweep(folder: Path, jobs: int, tracking_uri: str | None) -> dict:
    """Run the sweep of ``jobs`` tiny jobs in ``folder`` against ``tracking_uri`` (None:
    SQLite ``folder/mlflow.db``); returns what the store and the run folders show."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or f"sqlite:///{folder / 'mlflow.db'}"
    command = [sys.executable, str(REPO / "run.py"), "-m", *TINY, "hardware.num_threads=1",
               f"hydra.launcher.n_jobs={jobs}", f"dataset.root={folder / 'data'}", "dataset.download=false",
               f"checkpoint.dir={folder / 'checkpoints'}", f"tracking.uri={uri}", "tracking.experiment=writers",
               f"hydra.sweep.dir={folder / 'sweep'}", "seed=" + ",".join(str(seed) for seed in range(jobs))]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("writers")
    runs = client.search_runs([experiment.experiment_id], max_results=10_000) if experiment else []
    children = [run for run in runs if "g2g.sweep" not in run.data.tags]
    seeds = {run.data.params.get("seed") for run in children}
    return {
        "jobs": jobs,
        "runs lost": jobs - len(seeds & {str(seed) for seed in range(jobs)}),
        "left RUNNING": sum(run.info.status == "RUNNING" for run in runs),
        "FINISHED": sum(run.info.status == "FINISHED" for run in children),
        "fallback files": len(list((folder / "checkpoints").rglob("mlflow_fallback.jsonl"))),
        "exit": done.returncode,
        "wall s": round(wall, 1),
        "errors": [line for line in done.stderr.splitlines() if "error" in line.lower()][:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument("--stores", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="g2g-writers-") as tmp:
        for store in args.stores.split(","):
            folder = Path(tmp) / store
            write_fashion_mnist(folder / "data", num_train=64, num_test=32)
            if store == "sqlite":
                results["SQLite file (default)"] = sweep(folder, args.jobs, None)
            elif store == "postgresql":
                reason = install_packages()
                if reason:
                    sys.exit(f"cannot start PostgreSQL and the MLflow server: {reason}")
                with LocalCluster(folder / "daemons", slurm=False) as server:
                    results["MLflow server + PostgreSQL"] = sweep(folder, args.jobs, server.tracking_uri)
            else:
                sys.exit(f"--stores: {store!r} is not one of sqlite, postgresql")
    columns = ["jobs", "runs lost", "left RUNNING", "FINISHED", "fallback files", "exit", "wall s"]
    print("| store | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, row in results.items():
        print(f"| {name} | " + " | ".join(str(row[column]) for column in columns) + " |")
    for name, row in results.items():
        for line in row["errors"]:
            print(f"{name}: {line}")


if __name__ == "__main__":
    main()

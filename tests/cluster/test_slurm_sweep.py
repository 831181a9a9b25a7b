"""Sweeps through the real SLURM launcher (hydra/launcher=slurm) into an MLflow server backed by
PostgreSQL: every job a SLURM job, states read from SLURM's accounting, the outcome in the
store and the exit status; threads follow ``cpus_per_task``."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_a_two_job_sweep_runs_both_slurm_jobs_and_ends_finished_in_the_postgresql_store(sweep):
    done = sweep.run("model=index,mixer")

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "sacct error" not in done.stderr  # job accounting answers: no "Bypassing sacct error" warnings
    jobs = sweep.job_ids()
    assert len(jobs) == 2
    assert [sweep.cluster.sacct_state(job) for job in jobs] == ["COMPLETED", "COMPLETED"]
    runs = sweep.runs()
    (parent,) = [run for run in runs if "g2g.sweep" in run.data.tags]
    children = sweep.children()
    assert parent.info.status == "FINISHED"
    assert sorted(run.data.params["model.name"] for run in children) == ["index", "mixer"]
    assert {run.info.status for run in children} == {"FINISHED"}
    assert {run.data.tags["mlflow.parentRunId"] for run in children} == {parent.info.run_id}
    assert {run.data.tags["g2g.num_threads"] for run in children} == {"1"}  # hydra.launcher.cpus_per_task=1
    artifacts = [item.path for item in sweep.client.list_artifacts(parent.info.run_id, "report")]
    assert "report/comparison.md" in artifacts


def test_a_failing_slurm_job_ends_failed_and_the_sweep_exits_non_zero(sweep):
    # the job with p_inter 2.0 is refused inside its SLURM job (a probability above 1)
    done = sweep.run("model=mixer", "model.p_inter=0.15,2.0")

    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(run.info.status for run in sweep.children()) == ["FAILED", "FINISHED"]
    (parent,) = [run for run in sweep.runs() if "g2g.sweep" in run.data.tags]
    assert parent.info.status == "FAILED"

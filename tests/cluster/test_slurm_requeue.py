"""SLURM stops a job: ``scontrol requeue``, the time-limit or preemption signal (SIGUSR2, what
submitit asks SLURM to send before the limit) and ``scancel``. A requeued job resumes from
its checkpoint into the same MLflow run and ends with every metric series equal, step for
step, to the uninterrupted job's; a cancelled one ends KILLED, the sweep exits non-zero,
and the same command resumes it."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from conftest import Sweep, metric_histories

pytestmark = pytest.mark.integration

#: one job long enough to be stopped in its second epoch: 2048 examples one at a time (seconds per epoch)
LONG_JOB = ["model=mixer", "train.batch_size=1", "train.epochs=4", "hardware.num_threads=1"]
NUM_TRAIN = 2048




@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cluster) -> dict:
    """The metric histories of the job run through SLURM without a stop."""
    sweep = Sweep(tmp_path_factory.mktemp("uninterrupted"), cluster, "slurm_uninterrupted", num_train=NUM_TRAIN)
    done = sweep.run(*LONG_JOB)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = sweep.children()
    return metric_histories(sweep.client, run.info.run_id)


def _stop_in_second_epoch(sweep, how) -> tuple[subprocess.Popen, str, str]:
    """Start the one-job sweep, wait until its run has logged epoch 1, then ``how(job_id)``;
    returns the sweep's process, the SLURM job id and the run id."""
    process = sweep.popen(*LONG_JOB)
    deadline = time.monotonic() + 300
    while True:
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the job's first epoch was not logged in time"
        children = sweep.children() if sweep.job_ids() else []
        if children and "train_loss" in children[0].data.metrics:
            break
        time.sleep(0.5)
    (job_id,) = sweep.job_ids()
    how(job_id)
    return process, job_id, children[0].info.run_id


def _finish(process: subprocess.Popen, timeout: float = 400) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return process.returncode, output


def _slurm(sweep, *command: str) -> None:
    subprocess.run(command, env=sweep.env, check=True, capture_output=True, text=True)


@pytest.mark.parametrize("stop", ["scontrol_requeue", "time_limit_signal"])
def test_a_requeued_job_resumes_into_the_same_run_with_every_metric_equal_to_the_uninterrupted_job(
    sweep, uninterrupted, stop
):
    sweep.write_data(NUM_TRAIN)
    if stop == "scontrol_requeue":
        def how(job_id):
            _slurm(sweep, "scontrol", "requeue", job_id)
    else:  # what SLURM sends before the time limit or on preemption (submitit's --signal=USR2@...)
        def how(job_id):
            _slurm(sweep, "scancel", "--signal=USR2", job_id)
    process, job_id, run_id = _stop_in_second_epoch(sweep, how)

    status, output = _finish(process)

    assert status == 0, output[-3000:]
    (run,) = sweep.children()
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    log = "".join(path.read_text() for path in (sweep.folder / "sweep" / ".submitit" / job_id).glob("*log.*"))
    assert "stopped at global step" in log  # it was stopped mid-run, and resumed:
    assert "resum" in log.lower()
    assert sweep.cluster.sacct_state(job_id) == "COMPLETED"
    got = metric_histories(sweep.client, run_id)
    assert sorted(got) == sorted(uninterrupted)
    for key in uninterrupted:
        assert got[key] == uninterrupted[key], key


def test_scancel_ends_the_run_killed_and_the_sweep_non_zero_then_the_same_command_resumes_it(sweep):
    sweep.write_data(NUM_TRAIN)
    process, job_id, run_id = _stop_in_second_epoch(sweep, lambda job_id: _slurm(sweep, "scancel", job_id))

    status, output = _finish(process)

    assert status != 0, output[-3000:]
    (run,) = sweep.children()
    assert run.info.status == "KILLED"
    assert "stopped at global step" in run.data.tags["g2g.error"]
    assert sweep.cluster.sacct_state(job_id) == "CANCELLED"
    (parent,) = [run for run in sweep.runs() if "g2g.sweep" in run.data.tags]
    assert parent.info.status != "FINISHED"

    again = sweep.run(*LONG_JOB)

    assert again.returncode == 0, again.stderr[-3000:]
    (resumed,) = sweep.children()
    assert resumed.info.run_id == run_id and resumed.info.status == "FINISHED"
    assert [m.step for m in sweep.client.get_metric_history(run_id, "test_accuracy")] == [1, 2, 3, 4]

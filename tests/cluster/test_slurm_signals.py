"""Which signals stop a run inside a SLURM job (no daemons needed), and run names that fit
MLflow's SQL stores."""

from __future__ import annotations

import signal

from submitit import JobEnvironment

from g2g.lifecycle.signals import preemption_signal, slurm_job, stop_signals
from g2g.tracking.names import RUN_NAME_LENGTH, fit_run_name


def test_outside_a_slurm_job_sigint_and_sigterm_stop_a_run(monkeypatch):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert not slurm_job() and preemption_signal() is None
    assert stop_signals() == (signal.SIGINT, signal.SIGTERM)


def test_in_a_slurm_job_submitits_time_limit_signal_stops_a_run_too(monkeypatch):
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setattr(JobEnvironment, "USR_SIG", "USR2")  # submitit's default
    assert stop_signals() == (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)
    monkeypatch.setattr(JobEnvironment, "USR_SIG", "USR1")  # what submitit reads from SUBMITIT_PREEMPT_SIGNAL
    assert preemption_signal() == signal.SIGUSR1
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")  # submitit_local: no SLURM
    assert stop_signals() == (signal.SIGINT, signal.SIGTERM)


def test_a_run_name_is_cut_to_what_postgresql_keeps():
    assert fit_run_name("sweep model=mixer") == "sweep model=mixer"
    long = "sweep " + " ".join(f"key{number}=value" for number in range(60))
    assert len(long) > RUN_NAME_LENGTH
    cut = fit_run_name(long)
    assert len(cut) == RUN_NAME_LENGTH and cut.endswith("...") and long.startswith(cut[:-3])

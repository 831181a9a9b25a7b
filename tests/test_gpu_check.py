"""benchmarks/gpu_check.sh works the first time a GPU is there: its dry run (CPU, tiny
sizes) runs every step end to end and leaves every result in one output folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, write_fashion_mnist

STEPS = ["env", "tests", "train_step", "train_step_compiled", "preset_times", "sync_audit", "repeatable",
         "cpu_vs_device", "resume", "published"]


@pytest.mark.integration
def test_the_gpu_check_dry_run_passes_every_step_into_one_folder(tmp_path):
    write_fashion_mnist(tmp_path / "data")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    result = subprocess.run([str(REPO_ROOT / "benchmarks" / "gpu_check.sh"), str(out), "15", "--dry-run",
                             "--data-root", str(tmp_path / "data")], capture_output=True, text=True, timeout=1200,
                            cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    for step in STEPS:
        assert f"| {step} | passed |" in summary, summary
    for check in ("repeatable", "resume", "cpu_vs_device", "sync_audit"):
        assert json.loads((out / "tables" / f"{check}.json").read_text())["passed"]
    assert "bf16-mixed" in (out / "logs" / "03_train_step.log").read_text() or "32" in summary
    assert (out / "mlflow.db").exists() and (out / "checkpoints").is_dir()
    assert not (tmp_path / "mlflow.db").exists()  # nothing outside the output folder


def test_the_gpu_check_needs_a_folder_and_a_budget(tmp_path):
    result = subprocess.run([str(REPO_ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "usage:" in result.stderr

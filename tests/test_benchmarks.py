"""The benchmark scripts still run (their numbers are not checked: that is their job)."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_fashion_mnist

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_preset_times_composes_the_real_presets_and_prints_a_row_per_model(tmp_path):
    write_fashion_mnist(tmp_path / "data", num_train=64, num_test=32)
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "preset_times.py"), "--presets", "quick",
         "--models", "dense,mixer", "--sparsity", "dynamic", "--hardware", "cpu", "--steps", "1",
         "--eval-images", "16", "--data-root", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data: Fashion-MNIST" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith("| quick |")]
    assert [row.split("|")[2:4] for row in rows] == [[" dense ", " static "], [" mixer ", " dynamic "]]
    assert all("| 512 | 25 | 128 | 4 |" in row for row in rows)  # conf/experiment/quick.yaml


@pytest.mark.integration
def test_preset_times_reports_what_finished_runs_took(tmp_path):
    from conftest import compose_config
    from g2g.run.job import run_job

    write_fashion_mnist(tmp_path / "data", num_train=64, num_test=32)
    run_job(compose_config(["model=mixer", "seed=3", "tracking.experiment=timed", "train.progress=false",
                            "hardware=cpu", "hardware.num_threads=1"], tmp_path))
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "preset_times.py"), "--tracking-uri",
               f"sqlite:///{tmp_path / 'mlflow.db'}", "--from-runs"]
    result = subprocess.run(command + ["timed"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("| model=mixer |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1:7] == ["3", "16", "4", "16", "2", "cpu, 1 thread(s)"]  # the conftest's tiny setting
    assert all(cell.endswith(" min") for cell in cells[7:10]) and "(training only)" not in cells[9]

    missing = subprocess.run(command + ["nope"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert missing.returncode == 1 and "no MLflow experiment named 'nope'" in missing.stderr


@pytest.mark.integration
def test_train_step_and_dst_overhead_take_a_device_and_precisions():
    from g2g.hardware.precision import cpu_has_native_bf16

    precisions = "32,bf16-mixed" if cpu_has_native_bf16() else "32"
    train_step = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "train_step.py"), "--preset", "tiny", "--repeats", "1",
         "--models", "mixer", "--device", "cpu", "--precision", precisions], capture_output=True, text=True,
        timeout=300)
    assert train_step.returncode == 0, train_step.stderr[-3000:]
    rows = [line.split()[2] for line in train_step.stdout.splitlines() if line.startswith("mixer ")]
    assert rows == precisions.split(",")
    overhead = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "dst_overhead.py"), "--hidden", "16", "--num-steps", "2",
         "--batch", "8", "--repeats", "1", "--updates", "1", "--device", "cpu", "--precision", "32"],
        capture_output=True, text=True, timeout=300)
    assert overhead.returncode == 0, overhead.stderr[-3000:]
    assert "device=cpu precision=32" in overhead.stdout
    refused = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "train_step.py"), "--preset", "tiny", "--precision",
         "16-mixed"], capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "train.precision='16-mixed' cannot run natively" in refused.stderr

"""The benchmark scripts still run (their numbers are not checked: that is their job)."""

import subprocess
import sys
from pathlib import Path

from conftest import write_fashion_mnist

REPO_ROOT = Path(__file__).resolve().parents[1]


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

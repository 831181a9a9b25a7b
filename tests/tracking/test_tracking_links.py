"""``python -m g2g.tracking links`` (what ``make ui`` prints first): one link per
experiment with runs to its training-runs page, from a real MLflow store."""

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT


def _links(cwd, *arguments) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "g2g.tracking", "links", *arguments], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.integration
def test_links_name_each_experiment_with_runs_and_its_training_runs_page(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    study = client.create_experiment("study")
    client.create_run(study)
    client.create_experiment("empty")  # no runs: nothing to open
    deleted = client.create_experiment("gone")
    client.create_run(deleted)
    client.delete_experiment(deleted)

    result = _links(tmp_path, "--url", "http://host:5001/")
    assert result.returncode == 0, result.stderr
    links = [line for line in result.stdout.splitlines() if ": http" in line]
    assert links == [f"study: http://host:5001/#/experiments/{study}/runs"]


def test_links_without_a_store_say_how_to_make_runs_and_create_nothing(tmp_path):
    result = _links(tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"no runs yet in sqlite:///{tmp_path}/mlflow.db" in result.stdout
    assert not (tmp_path / "mlflow.db").exists()

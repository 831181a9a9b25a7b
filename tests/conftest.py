"""Shared fixtures: tiny data sets in torchvision's real on-disk formats, Hydra
composition of the real ``conf/`` tree, and a temporary MLflow SQLite store."""

from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
REPO_ROOT = CONF_DIR.parent


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (magic 0x08 = unsigned byte, big-endian dims)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(dim).to_bytes(4, "big") for dim in array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _learnable_images(labels: np.ndarray, shape: tuple[int, ...], rng) -> np.ndarray:
    """Noise images whose mean brightness band depends on the label, so a tiny
    network can learn something in a few steps."""
    flat = int(np.prod(shape))
    images = rng.integers(0, 60, size=(len(labels), flat))
    band = flat // 10
    for row, label in enumerate(labels.tolist()):
        images[row, label * band : (label + 1) * band] += 190
    return images.clip(0, 255).reshape(len(labels), *shape).astype(np.uint8)


def write_fashion_mnist(root: Path, num_train: int = 64, num_test: int = 32, seed: int = 0) -> Path:
    """Tiny Fashion-MNIST in torchvision's layout: ``root/FashionMNIST/raw/*-ubyte``."""
    rng = np.random.default_rng(seed)
    raw = root / "FashionMNIST" / "raw"
    for split, count in (("train", num_train), ("t10k", num_test)):
        labels = rng.integers(0, 10, size=count).astype(np.uint8)
        write_idx(raw / f"{split}-images-idx3-ubyte", _learnable_images(labels, (28, 28), rng))
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    return raw


def write_cifar(root: Path, name: str, num_train: int = 50, num_test: int = 20, seed: int = 0) -> Path:
    """Tiny CIFAR-10/100 in the python-pickle format torchvision reads."""
    rng = np.random.default_rng(seed)
    num_classes = 10 if name == "cifar10" else 100
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True, exist_ok=True)
    label_key = "labels" if name == "cifar10" else "fine_labels"

    def batch(count: int) -> dict:
        labels = rng.integers(0, num_classes, size=count)
        images = _learnable_images(labels % 10, (3, 32, 32), rng).reshape(count, 3072)
        return {"data": images, label_key: labels.tolist()}

    if name == "cifar10":
        files = {f"data_batch_{i}": batch(num_train // 5) for i in range(1, 6)}
        files["test_batch"] = batch(num_test)
        files["batches.meta"] = {"label_names": [f"class{i}" for i in range(10)]}
    else:
        files = {"train": batch(num_train), "test": batch(num_test),
                 "meta": {"fine_label_names": [f"class{i}" for i in range(100)]}}
    for file_name, content in files.items():
        with open(folder / file_name, "wb") as file:
            pickle.dump(content, file)
    return folder


@pytest.fixture
def tiny_data_root(tmp_path: Path) -> Path:
    """A data root holding tiny Fashion-MNIST, CIFAR-10 and CIFAR-100."""
    root = tmp_path / "data"
    write_fashion_mnist(root)
    write_cifar(root, "cifar10")
    write_cifar(root, "cifar100")
    return root


@pytest.fixture
def trust_tiny_cifar(monkeypatch):
    """torchvision checks CIFAR files against the real data set's MD5 sums; the tiny
    generated files cannot match them, so only that check is switched off."""
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)


TINY = [
    "model.hidden_dim=16",
    "encoder.num_steps=4",
    "train.epochs=2",
    "train.batch_size=16",
    "train.eval_batch_size=16",
    "train.progress=false",
    "hardware=cpu",
]


def compose_config(
    overrides: list[str], tmp_path: Path | None = None, tiny: bool = True, data_root: Path | None = None
) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra's compose API; with ``tmp_path``,
    checkpoints and the MLflow store go under it, and the data under ``data_root``
    (default ``tmp_path/data``)."""
    paths = []
    if tmp_path is not None:
        paths = [
            f"dataset.root={data_root or tmp_path / 'data'}",
            f"checkpoint.dir={tmp_path / 'checkpoints'}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            "dataset.download=false",
        ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=(TINY if tiny else []) + paths + overrides)


@pytest.fixture(autouse=True)
def _isolated_mlflow(monkeypatch, tmp_path):
    """Keep MLflow's active-run and URI state from leaking between tests."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()
    torch.use_deterministic_algorithms(False)


#: metrics whose values are wall-clock times (their steps are still compared)
WALL_CLOCK = {"epoch_time_s", "evaluation_time_s"}


def metric_histories(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float | None]]]:
    """Every metric of the run as its full history [(step, value)], in step order
    (values of :data:`WALL_CLOCK` metrics replaced by None): what a resumed run must equal."""
    histories = {}
    for key in client.get_run(run_id).data.metrics:
        entries = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        histories[key] = [(m.step, None if key in WALL_CLOCK else m.value) for m in entries]
    return histories


def wait_for(predicate, process: subprocess.Popen, timeout: float, what: str) -> None:
    """Poll ``predicate`` every 0.2 s until it holds; fail naming ``what`` when ``process``
    ends first (with the end of its output) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, f"the command ended before {what}: {process.communicate()[0][-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def interrupt(command: list[str], cwd: Path, env: dict, when, what: str, timeout: float = 240) -> tuple[int, str]:
    """Run ``command`` in a session of its own, and once ``when()`` holds send SIGINT to its
    whole process group, as a terminal's Ctrl-C does; returns its exit status and output
    (stdout and stderr). The group is killed if the command outlives the test."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        wait_for(when, process, timeout, what)
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return process.returncode, output


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder to run commands in, with tiny Fashion-MNIST in ``data/`` (64 train, 32 test)."""
    write_fashion_mnist(tmp_path / "data", num_train=64, num_test=32)
    return tmp_path


# ------------------------------------------------------------ a real cluster (tests/cluster/)
# munge, SLURM with job accounting, PostgreSQL and an MLflow server on it (tests/daemons.py),
# started once per session by the first test that asks and stopped at its end, also when a
# test fails. Where the daemons cannot start (not root, no Debian packages and no apt-get)
# those tests are skipped with the reason.

#: the SLURM launcher's settings for the tiny jobs: one CPU each, no GPU
SLURM = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    from daemons import LocalCluster, install_packages

    reason = install_packages()
    if reason:
        pytest.skip(f"no local SLURM and PostgreSQL: {reason}")
    with LocalCluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


class Sweep:
    """A folder to run ``run.py -m`` through SLURM in, with tiny Fashion-MNIST."""

    def __init__(self, folder: Path, cluster, experiment: str, num_train: int = 64) -> None:
        self.folder, self.cluster, self.experiment = folder, cluster, experiment
        self.write_data(num_train)
        self.env = {**os.environ, **cluster.slurm_env, "PYTHONPATH": str(REPO_ROOT)}
        self.env.pop("MLFLOW_TRACKING_URI", None)

    def write_data(self, num_train: int) -> None:
        """Tiny Fashion-MNIST in ``data/``: ``num_train`` training and 32 test images."""
        write_fashion_mnist(self.folder / "data", num_train=num_train, num_test=32)

    def command(self, *overrides: str, sweep_dir: str = "sweep") -> list[str]:
        return [sys.executable, str(REPO_ROOT / "run.py"), "-m", *SLURM, *TINY,
                f"dataset.root={self.folder / 'data'}", "dataset.download=false",
                f"checkpoint.dir={self.folder / 'checkpoints'}", f"tracking.uri={self.cluster.tracking_uri}",
                f"tracking.experiment={self.experiment}", f"hydra.sweep.dir={self.folder / sweep_dir}", *overrides]

    def run(self, *overrides: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*overrides), cwd=self.folder, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def popen(self, *overrides: str) -> subprocess.Popen:
        return subprocess.Popen(self.command(*overrides), cwd=self.folder, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.cluster.tracking_uri)

    def runs(self) -> list:
        experiment = self.client.get_experiment_by_name(self.experiment)
        return [] if experiment is None else self.client.search_runs([experiment.experiment_id])

    def children(self) -> list:
        return [run for run in self.runs() if "g2g.sweep" not in run.data.tags]

    def job_ids(self, sweep_dir: str = "sweep") -> list[str]:
        """The SLURM job ids of the sweep's jobs (``ARRAY_TASK`` for a job array): submitit's
        folders under the sweep's ``.submitit`` that hold a submitted job."""
        return sorted(path.parent.name for path in (self.folder / sweep_dir / ".submitit").glob("*/*_submitted.pkl"))


@pytest.fixture
def sweep(tmp_path, cluster, request) -> Sweep:
    return Sweep(tmp_path, cluster, experiment=re.sub(r"\W+", "_", request.node.name)[:200])

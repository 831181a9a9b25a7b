"""Multirun sweeps end to end, as a user runs them: run.py -m in a subprocess on tiny
data, through the joblib and submitit_local launchers, into a temporary MLflow store
or a real ``mlflow server`` on 127.0.0.1."""

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT

TINY = ["model.hidden_dim=16", "encoder.num_steps=4", "train.epochs=1", "train.batch_size=16",
        "train.eval_batch_size=16", "train.progress=false", "hardware=cpu"]


def _run(arguments: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, HYDRA_FULL_ERROR="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, str(REPO_ROOT / "run.py"), *arguments], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env)


def _runs(client: MlflowClient):
    experiment = client.get_experiment_by_name("g2g")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("g2g.sweep") == "true"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


@pytest.mark.integration
def test_smoke_study_runs_in_parallel_with_parent_run_and_report(workdir):
    arguments = ["study=smoke",
                 "dataset.download=false", "hydra.launcher.n_jobs=2", "hardware=cpu",
                 f"hydra.sweep.dir={workdir / 'multirun'}"]
    result = _run(arguments, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    (parent,), children = _runs(client)
    assert parent.info.status == "FINISHED"
    assert len(children) == 5 and all(c.info.status == "FINISHED" for c in children)
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    common = " study=smoke dataset.download=False hardware=cpu"  # the command line's own overrides
    assert {c.info.run_name for c in children} == {
        "model=index model.p_inter=0.1" + common, "model=index model.p_inter=0.2" + common,
        "model=mixer model.p_inter=0.1" + common, "model=mixer model.p_inter=0.2" + common,
        "model=dense" + common}
    assert all(c.data.tags["g2g.overrides"] == c.info.run_name for c in children)
    assert all("test_accuracy" in c.data.metrics for c in children)
    cores = os.cpu_count() or 1
    assert {c.data.tags["g2g.num_threads"] for c in children} == {str(max(1, cores // min(2, cores)))}
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/jobs.csv", "report/comparison.md", "report/comparison.csv",
            "report/test_accuracy_vs_model.p_inter.png", "report/accuracy_vs_cost.png"} <= report
    table = Path(client.download_artifacts(parent.info.run_id, "report/jobs.csv", str(workdir)))
    rows = list(csv.DictReader(open(table)))
    assert {row["run_id"] for row in rows} == {c.info.run_id for c in children}
    comparison = Path(client.download_artifacts(parent.info.run_id, "report/comparison.md", str(workdir))).read_text()
    assert "| model.name | model.p_inter | test_accuracy % (last epoch, mean ± std) |" in comparison
    assert "vs model=dense (points, paired by seed, 95% CI)" in comparison, "dense: the default baseline"

    # the report command rebuilds it from MLflow alone
    report = subprocess.run([sys.executable, "-m", "g2g.report", "g2g", "--tracking-uri",
                             f"sqlite:///{workdir / 'mlflow.db'}", "--out", str(workdir / "again")],
                            cwd=workdir, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert "| model.name | model.p_inter |" in report.stdout, "the terminal gets the comparison"
    with open(workdir / "again" / "jobs.csv") as file:
        assert {row["run_id"] for row in csv.DictReader(file)} == {c.info.run_id for c in children}

    # re-running the sweep trains nothing again; its new parent still lists every job
    checkpoints = {p: p.stat().st_mtime_ns for p in (workdir / "checkpoints").glob("*/checkpoint.pth")}
    again = _run(arguments[:-1] + [f"hydra.sweep.dir={workdir / 'multirun2'}"], workdir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in (workdir / "checkpoints").glob("*/checkpoint.pth")} == checkpoints
    parents, children = _runs(client)
    newest = max(parents, key=lambda r: r.info.start_time)
    reused = [c for c in children if c.data.tags["mlflow.parentRunId"] == newest.info.run_id]
    assert len(reused) == 5 and all("g2g.reused_run_id" in c.data.tags for c in reused)
    assert all("test_accuracy" in c.data.metrics for c in reused)


@pytest.mark.integration
def test_a_sweep_over_beta_reports_a_beta_column_and_logs_the_learned_lif_parameters(workdir):
    result = _run(["-m", "model=mixer", "model.beta=0.5,0.95", *[o for o in TINY if o != "train.epochs=1"],
                   "train.epochs=2", "dataset.download=false", "hydra.launcher.n_jobs=2",
                   f"hydra.sweep.dir={workdir / 'multirun'}"], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    (parent,), children = _runs(client)
    comparison = Path(client.download_artifacts(parent.info.run_id, "report/comparison.md", str(workdir))).read_text()
    assert "| model.beta | test_accuracy % (last epoch, mean ± std) | n | seeds |" in comparison
    assert "| 0.5 |" in comparison and "| 0.95 |" in comparison and "lif_beta_lif1" in comparison
    assert comparison.splitlines()[2].startswith("**Best test_accuracy: model.beta=")
    for child in children:
        for name in ("lif_beta_lif1", "lif_threshold_lif2", "lif_beta_lif3"):
            history = client.get_metric_history(child.info.run_id, name)
            assert [m.step for m in history] == [1, 2], f"{name}: one value per epoch"
        beta = client.get_metric_history(child.info.run_id, "lif_beta_lif1")[-1].value
        assert abs(beta - float(child.data.params["model.beta"])) < 0.05, "the learned decay starts at model.beta"


@pytest.mark.integration
def test_failed_job_is_marked_failed_and_the_others_finish(workdir):
    # no CIFAR files under the data root: the cifar10 job fails after its run started
    result = _run(["-m", "dataset=fashionmnist,cifar10", "model=index", *TINY,
                   "dataset.download=false", f"hydra.sweep.dir={workdir / 'multirun'}"], workdir)
    assert result.returncode != 0
    assert "cifar10 could not be loaded" in result.stderr + result.stdout
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    (parent,), children = _runs(client)
    status = {c.data.params["dataset.name"]: c.info.status for c in children}
    assert status == {"fashionmnist": "FINISHED", "cifar10": "FAILED"}
    (failed,) = [c for c in children if c.info.status == "FAILED"]
    assert failed.data.tags["g2g.error"].startswith("DatasetUnavailableError: cifar10 could not be loaded")
    assert parent.info.status == "FAILED" and parent.data.metrics["sweep_failed_jobs"] == 1
    assert client.list_artifacts(parent.info.run_id, "report")


@pytest.mark.integration
def test_submitit_local_launcher_runs_the_sweep_as_separate_processes(workdir):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install 'g2g[cluster]'")
    result = _run(["-m", "hydra/launcher=submitit_local", "model=index,mixer", *TINY,
                   "dataset.download=false", "hydra.launcher.timeout_min=5",
                   f"hydra.sweep.dir={workdir / 'multirun'}"], workdir, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (parent,), children = _runs(MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}"))
    assert parent.info.status == "FINISHED"
    assert sorted(c.data.params["model.name"] for c in children) == ["index", "mixer"]
    assert all(c.info.run_name.startswith("model=") for c in children)
    assert all(c.info.status == "FINISHED" for c in children)
    assert list((workdir / "multirun" / ".submitit").iterdir()), "submitit wrote its job folders"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.integration
def test_runs_log_to_a_real_mlflow_server(workdir):
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{workdir / 'server.db'}",
         "--artifacts-destination", str(workdir / "server-artifacts"), "--workers", "1"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "mlflow server did not start"
                assert server.poll() is None, "mlflow server exited"
                time.sleep(0.5)
        result = _run(["-m", "model=index,mixer", *TINY, "dataset.download=false",
                       f"tracking.uri={uri}", f"hydra.sweep.dir={workdir / 'multirun'}"], workdir)
        assert result.returncode == 0, result.stderr[-3000:]
        parents, children = _runs(MlflowClient(uri))
        assert len(parents) == 1 and len(children) == 2
        assert all(c.info.status == "FINISHED" for c in children)
        assert {a.path for a in MlflowClient(uri).list_artifacts(children[0].info.run_id)} >= {"config.yaml", "plots"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _rows(jobs: list[dict]) -> list[dict]:
    """Job rows as :func:`g2g.reporting.queries.run_row` makes them: ``jobs`` are
    (params, test accuracy) of finished runs."""
    base = {"dataset.name": "fashionmnist", "model.hidden_dim": "16", "sparsity.name": "static"}
    return [{"run_id": f"run{index}", "run_name": " ".join(f"{k}={v}" for k, v in params.items()), "status": "FINISHED",
             "start_time": index, "seed": params.get("seed", "1"), "params": base | {"seed": "1"} | params,
             "test_accuracy": accuracy, "energy_nj": 100.0 * (index + 1), "synops_total": 10.0, "macs_total": 1.0}
            for index, (params, accuracy) in enumerate(jobs)]


def test_report_figures_and_tables_from_rows(tmp_path):
    from g2g.reporting.comparison import compare
    from g2g.reporting.figures import heatmap_figure, metric_vs_param_figure
    from g2g.reporting.sweep_report import write_jobs

    rows = _rows([({"model.name": model, "model.p_inter": "0.15", "sparsity.name": "dynamic", "sparsity.prune": prune,
                    "sparsity.grow": grow}, {"index": 0.8, "mixer": 0.9}[model])
                  for model in ("index", "mixer") for prune in ("set", "hebb") for grow in ("hebb", "random")])
    comparison = compare(rows)
    assert comparison.columns == ["model.name", "sparsity.grow", "sparsity.prune"], "by group, then alphabetical"
    figure = heatmap_figure(comparison, "sparsity.prune", "sparsity.grow")
    # one panel per combination of the other varying params (the model: never pooled over it)
    assert [axis.get_title() for axis in figure.axes if axis.get_title()] == ["model=index", "model=mixer"]
    assert {image.get_clim() for axis in figure.axes for image in axis.get_images()} == {(0.8, 0.9)}, \
        "one colour scale for every panel"
    assert metric_vs_param_figure(comparison, "model.p_inter") is None, "one p_inter value: nothing to plot"
    write_jobs(rows, tmp_path)
    with open(tmp_path / "jobs.csv") as file:
        jobs = list(csv.DictReader(file))
    assert jobs[0]["job"] == "model.name=index sparsity.prune=set sparsity.grow=hebb", "shared overrides dropped"
    assert jobs[0]["params.sparsity.prune"] == "set" and jobs[0]["test_accuracy"] == "0.8"


def test_metric_against_a_param_has_one_line_per_other_setting_and_absent_ones_as_lines():
    from g2g.reporting.comparison import compare
    from g2g.reporting.figures import metric_vs_param_figure, model_colour

    rows = _rows([({"model.name": "dense", "seed": seed}, 0.8 + 0.01 * int(seed)) for seed in ("1", "2")]
                 + [({"model.name": model, "model.p_inter": p_inter}, 0.8)
                    for model in ("mixer", "index") for p_inter in ("0.2", "0.1")])
    comparison = compare(rows)
    assert [c.label for c in comparison.configurations] == [
        "model=dense", "model=index model.p_inter=0.1", "model=index model.p_inter=0.2",
        "model=mixer model.p_inter=0.1", "model=mixer model.p_inter=0.2"], "models in the original README order"
    figure = metric_vs_param_figure(comparison, "model.p_inter")
    (axis,) = figure.axes
    colours = {bars.get_label(): bars.lines[0].get_color() for bars in axis.containers}
    assert colours == {"model=index": model_colour("index"), "model=mixer": model_colour("mixer")}
    assert "model=dense (0.8150 ± 0.0071)" in [text.get_text() for text in axis.get_legend().get_texts()], \
        "dense has no p_inter: a horizontal line with its mean ± std over seeds"


def _study_jobs(name: str) -> tuple[list[list[str]], object]:
    """Every job's overrides of ``study=NAME`` (conf/study/NAME.yaml) as the grids sweeper
    expands them (Hydra's config loader, as ``run.py`` composes), and the loader to
    compose the jobs with (``_study_config``)."""
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import HydraContext, RunMode
    from omegaconf import OmegaConf

    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(REPO_ROOT / "conf")))
    cfg = loader.load_configuration("config", overrides=[f"study={name}"], run_mode=RunMode.MULTIRUN)
    assert cfg.hydra.mode == RunMode.MULTIRUN, "a study runs in multirun mode without -m"
    # imported only now: loading scans Hydra's plugins, which re-executes the module of the
    # basic sweeper, and GridsSweeper must subclass the BasicSweeper that is current then
    from hydra_plugins.g2g_grids_sweeper.grids_sweeper import GridsSweeper

    settings = OmegaConf.to_container(cfg.hydra.sweeper)
    assert settings.pop("_target_").endswith("GridsSweeper")
    sweeper = GridsSweeper(**settings)
    sweeper.hydra_context, sweeper.config = HydraContext(config_loader=loader, callbacks=Callbacks()), cfg
    return sweeper.job_overrides([]), loader


def _study_config(loader, study: str, job: list[str]):
    from hydra.types import RunMode

    return loader.load_configuration("config", overrides=[f"study={study}", *job], run_mode=RunMode.MULTIRUN)


@pytest.mark.integration
@pytest.mark.parametrize("study", sorted(p.stem for p in (REPO_ROOT / "conf" / "study").glob("*.yaml")))
def test_every_study_expands_to_distinct_valid_jobs(study):
    from g2g.config.validation import validate

    jobs, loader = _study_jobs(study)
    assert jobs and len(jobs) == len({tuple(job) for job in jobs})
    for job in jobs:
        validate(_study_config(loader, study, job))


@pytest.mark.integration
def test_results_studies_share_the_setting_the_results_page_needs():
    settings = set()
    for study in ("results_p_inter", "results_dst"):
        jobs, loader = _study_jobs(study)
        assert {job[0] for job in jobs} == {"seed=42", "seed=43", "seed=44"}
        for job in jobs:
            cfg = _study_config(loader, study, job)
            settings.add((cfg.tracking.experiment, cfg.dataset.name, cfg.model.hidden_dim, cfg.encoder.num_steps,
                          cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.encoder.name))
    # one experiment and one setting (the quick preset): g2g.reporting.results_page refuses mixed settings
    assert settings == {("g2g_results", "fashionmnist", 512, 25, 4, 128, 0.0005, "current")}


def test_published_study_runs_the_public_setting_in_its_own_experiment():
    jobs, loader = _study_jobs("published")
    configs = [_study_config(loader, "published", job) for job in jobs]
    assert {(cfg.tracking.experiment, cfg.dataset.name, cfg.model.hidden_dim, cfg.encoder.num_steps, cfg.train.epochs,
             cfg.train.batch_size, cfg.train.lr, cfg.encoder.name, cfg.seed) for cfg in configs} == {
        ("g2g_published", "fashionmnist", 1024, 50, 20, 256, 0.0005, "current", 42)}
    assert [(cfg.model.name, cfg.sparsity.name) for cfg in configs] == [
        ("dense", "static"), ("mixer", "static"), ("index", "static"), ("random", "static"),
        ("dense_matched", "static"), ("mixer", "dynamic")], "dense and mixer first: a stopped sweep has those"
    assert all(cfg.model.p_inter == 0.15 for cfg in configs[1:])
    dynamic = configs[-1].sparsity
    assert (dynamic.update_interval, dynamic.stop_fraction, dynamic.fraction_schedule) == (200, 0.75, "cosine"), \
        "the DST study's schedule"


def test_dst_rules_study_updates_every_200_steps_with_the_quick_preset():
    jobs, loader = _study_jobs("dst_rules")
    configs = [_study_config(loader, "dst_rules", [*job, "experiment=quick"]) for job in jobs]
    # the default 1000 gives a quick-preset run (1,876 steps) a single update
    assert {(cfg.sparsity.name, cfg.sparsity.update_interval, cfg.model.hidden_dim) for cfg in configs} == {
        ("dynamic", 200, 512)}
    assert {(cfg.model.name, cfg.sparsity.prune, cfg.sparsity.grow) for cfg in configs} == {
        (model, prune, grow) for model in ("index", "random", "mixer")
        for prune in ("set", "random", "hebb") for grow in ("hebb", "random")}

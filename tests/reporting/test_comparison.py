"""Comparisons derived from what varies (g2g.reporting.comparison): runs logged by hand
into a real MLflow store with the param names the training logs, then the sweep report
and ``python -m g2g.report`` on them. No setting is known in advance: a sweep over
``model.beta`` or ``train.batch_size`` gets its own column, its mean ± std over seeds, a
paired difference and a plot."""

import csv
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from scipy.stats import t as student_t

from fake_runs import dense_params, log_run, mixer_params, sweep, table
from g2g.reporting.comparison import SelectorError, compare, headline, parse_selector
from g2g.reporting.figures import accuracy_vs_cost_figure, metric_vs_param_figure
from g2g.reporting.queries import sweep_jobs
from g2g.reporting.sweep_report import report_sweep

#: test accuracy per (beta, seed): beta 0.95 leads by 2, 3 and 1 points
BETA_ACCURACY = {("0.8", 1): 0.80, ("0.8", 2): 0.81, ("0.8", 3): 0.82,
                 ("0.95", 1): 0.82, ("0.95", 2): 0.84, ("0.95", 3): 0.83}
#: the learned LIF parameters the runs logged (last epoch), per beta
LEARNED = {"0.8": (0.78, 1.05), "0.95": (0.93, 1.10)}


def _metrics(accuracy: float, learned: tuple[float, float] = (0.9, 1.0), energy: float = 100.0) -> dict:
    beta, threshold = learned
    return {"test_accuracy": [accuracy - 0.1, accuracy], "best_test_accuracy": [accuracy - 0.1, accuracy + 0.01],
            "lif_beta_lif1": [0.9, beta], "lif_threshold_lif1": [1.0, threshold], "energy_nj": energy,
            "synops_total": 10 * energy, "macs_total": 5.0}


def _paired_text(a: list[float], b: list[float]) -> str:
    """``+2.00 [−0.48, +4.48] (n=3)`` for a - b, from the definition of the interval."""
    differences = [100 * (x - y) for x, y in zip(a, b)]
    mean = statistics.mean(differences)
    half = student_t.ppf(0.975, len(differences) - 1) * statistics.stdev(differences) / math.sqrt(len(differences))
    return " ".join([f"{mean:+.2f}", f"[{mean - half:+.2f},", f"{mean + half:+.2f}]", f"(n={len(differences)})"]
                    ).replace("-", "\u2212")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[MlflowClient, Path, dict]:
    """Sweeps in one real store: ``betas`` (mixer, model.beta 0.8 and 0.95, seeds 1-3),
    ``batches`` (dense, train.batch_size 16 and 64, seeds 1-3) and ``models`` (dense and
    mixer, seeds 1-2, whose model options differ in many params)."""
    folder = tmp_path_factory.mktemp("comparison")
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.create_experiment("sweeps")
    betas = sweep(client, experiment, [
        (mixer_params(seed, **{"model.beta": beta}), _metrics(accuracy, LEARNED[beta], energy=100.0))
        for (beta, seed), accuracy in BETA_ACCURACY.items()])
    batches = sweep(client, experiment, [
        (dense_params(seed, **{"train.batch_size": size}), _metrics(accuracy))
        for size, accuracies in (("16", (0.80, 0.82, 0.84)), ("64", (0.79, 0.80, 0.81)))
        for seed, accuracy in zip((1, 2, 3), accuracies)])
    models = sweep(client, experiment, [
        (params(seed), _metrics(accuracy, energy=energy))
        for params, energy, accuracies in ((dense_params, 900.0, (0.80, 0.82)), (mixer_params, 300.0, (0.83, 0.83)))
        for seed, accuracy in zip((1, 2), accuracies)])
    return client, folder, {"betas": betas, "batches": batches, "models": models}


@pytest.mark.integration
def test_a_sweep_over_beta_is_compared_by_beta_with_a_paired_difference_and_a_plot(store, tmp_path):
    client, _, sweeps = store
    report_sweep(client, sweeps["betas"], tmp_path, baselines=["model.beta=0.8"])
    text = (tmp_path / "comparison.md").read_text()
    rows = table(text)
    assert [row["model.beta"] for row in rows] == ["0.8", "0.95"], "one column: the only param that varies"
    assert list(rows[0])[:4] == ["model.beta", "test_accuracy % (last epoch, mean ± std)", "n", "seeds"]
    low = [BETA_ACCURACY[("0.8", s)] for s in (1, 2, 3)]
    high = [BETA_ACCURACY[("0.95", s)] for s in (1, 2, 3)]
    assert rows[1]["test_accuracy % (last epoch, mean ± std)"] == (
        f"{100 * statistics.mean(high):.2f} ± {100 * statistics.stdev(high):.2f}")
    assert rows[1]["n"] == "3" and rows[1]["seeds"] == "1, 2, 3"
    assert rows[1]["best_test_accuracy % (mean)"] == f"{100 * statistics.mean(high) + 1:.2f}"
    assert rows[1]["vs model.beta=0.8 (points, paired by seed, 95% CI)"] == _paired_text(high, low)
    assert rows[0]["vs model.beta=0.8 (points, paired by seed, 95% CI)"] == "", "the baseline itself"
    # the learned LIF parameters of the last epoch, mean over seeds
    assert rows[0]["lif_beta_lif1"] == "0.7800" and rows[1]["lif_threshold_lif1"] == "1.1000"
    # the answer first: 0.95 leads by 2 points, interval [-0.48, +4.48] contains 0
    first = text.split("\n\n")[1]
    assert first.startswith("**Best test_accuracy: model.beta=0.95 with 83.00 ± 1.00 %")
    assert f"{_paired_text(high, low)} points over the next best model.beta=0.8" in first
    assert "not distinguishable" in first
    assert (tmp_path / "test_accuracy_vs_model.beta.png").stat().st_size > 10_000
    with open(tmp_path / "comparison.csv") as file:
        numbers = list(csv.DictReader(file))
    assert [row["model.beta"] for row in numbers] == ["0.8", "0.95"]
    assert float(numbers[1]["test_accuracy_mean"]) == pytest.approx(statistics.mean(high))
    assert float(numbers[1]["vs[model.beta=0.8]_mean"]) == pytest.approx(0.02)
    with open(tmp_path / "jobs.csv") as file:
        jobs = list(csv.DictReader(file))
    assert len(jobs) == 6 and {job["params.model.beta"] for job in jobs} == {"0.8", "0.95"}
    artifacts = {a.path for a in client.list_artifacts(sweeps["betas"], "report")}
    assert {"report/comparison.md", "report/comparison.csv", "report/jobs.csv",
            "report/test_accuracy_vs_model.beta.png", "report/accuracy_vs_cost.png"} <= artifacts


def test_a_key_no_study_uses_gets_its_column_and_its_plot(store, tmp_path):
    client, _, sweeps = store
    report_sweep(client, sweeps["batches"], tmp_path, baselines=["train.batch_size=64"])
    rows = table((tmp_path / "comparison.md").read_text())
    assert [row["train.batch_size"] for row in rows] == ["16", "64"]
    assert rows[0]["test_accuracy % (last epoch, mean ± std)"] == "82.00 ± 2.00"
    assert rows[0]["vs train.batch_size=64 (points, paired by seed, 95% CI)"] == _paired_text(
        [0.80, 0.82, 0.84], [0.79, 0.80, 0.81])
    assert (tmp_path / "test_accuracy_vs_train.batch_size.png").exists()
    figure = metric_vs_param_figure(compare(sweep_jobs(client, sweeps["batches"])), "train.batch_size")
    (axis,) = figure.axes
    (bars,) = axis.containers
    assert list(bars.lines[0].get_xdata()) == [16.0, 64.0], "one point per value, mean over the seeds"
    assert list(bars.lines[0].get_ydata()) == pytest.approx([0.82, 0.80])


def test_dense_is_the_default_baseline_and_a_model_option_is_one_column(store, tmp_path):
    client, _, sweeps = store
    comparison = compare(sweep_jobs(client, sweeps["models"]))
    # model._target_ does not vary; model.connectivity, p_inter, readout, ... move with model.name
    assert comparison.columns == ["model.name"]
    assert {"model.connectivity", "model.p_inter", "model.num_groups"} <= set(comparison.followers)
    assert [c.label for c in comparison.configurations] == ["model=dense", "model=mixer"]
    assert [b.selector for b in comparison.baselines] == ["model=dense"]
    report_sweep(client, sweeps["models"], tmp_path)
    text = (tmp_path / "comparison.md").read_text()
    assert table(text)[1]["vs model=dense (points, paired by seed, 95% CI)"] == "+2.00 [−10.71, +14.71] (n=2)"
    assert "model.connectivity, model.num_groups, model.p_inter, model.p_intra, model.readout vary with model.name" \
        in text
    assert "model.name=dense: model.connectivity=dense, model.num_groups=—, model.p_inter=—" in text


def test_runs_that_differ_in_a_setting_no_list_knows_are_never_pooled(store):
    """The wrong answer of the old report: it kept the latest run per (known setting,
    seed), so mixer at beta 0.8 and 0.95 became "mixer" with 3 runs of one beta."""
    client, _, sweeps = store
    comparison = compare(sweep_jobs(client, sweeps["betas"]))
    assert [len(c.runs) for c in comparison.configurations] == [3, 3]
    assert comparison.superseded == 0
    assert comparison.shared["model.name"] == "mixer" and "model.beta" not in comparison.shared


def test_accuracy_vs_cost_plots_one_point_per_configuration(store):
    """The old figure averaged both betas into one point labelled mean ± std over seeds."""
    client, _, sweeps = store
    comparison = compare(sweep_jobs(client, sweeps["betas"]))
    figure = accuracy_vs_cost_figure(comparison)
    left, _ = figure.axes
    points = sorted(float(line.get_ydata()[0]) for line in left.lines if line.get_marker() == "o")
    assert points == pytest.approx([0.81, 0.83]), "one point per beta, each the mean of its 3 seeds"
    assert sorted(text.get_text() for text in left.texts) == ["model.beta=0.8", "model.beta=0.95"]


def test_a_baseline_that_matches_nothing_names_the_key_the_value_and_what_exists(store):
    client, _, sweeps = store
    rows = sweep_jobs(client, sweeps["betas"])
    with pytest.raises(SelectorError, match=r"baseline 'model\.beta=0\.5' matches no configuration: model\.beta=0\.5 "
                                            r"\(the runs have model\.beta: 0\.8, 0\.95\)"):
        compare(rows, baselines=["model.beta=0.5"])
    with pytest.raises(SelectorError, match=r"model\.name=dense \(the runs have model\.name: mixer\)"):
        compare(rows, baselines=["model=dense"])
    with pytest.raises(SelectorError, match="is not key=value"):
        parse_selector("dense")
    assert parse_selector("model=dense, model.p_inter=0.1") == {"model.name": "dense", "model.p_inter": "0.1"}
    assert compare(rows, baselines=["model.beta=0.800"]).baselines[0].of[1] is not None, "numbers compare as numbers"
    assert compare(rows).baselines == [], "no dense configuration: no default baseline"


@pytest.mark.integration
def test_repeats_of_a_configuration_and_seed_count_once_and_are_said(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("repeats")
    parent = sweep(client, experiment, [(mixer_params(1), _metrics(0.70)), (mixer_params(2), _metrics(0.80))])
    log_run(client, experiment, mixer_params(1), _metrics(0.90), parent_run_id=parent)  # the same job, run again
    log_run(client, experiment, mixer_params(3), {"test_accuracy": 0.5}, parent_run_id=parent, status="FAILED")
    comparison = compare(sweep_jobs(client, parent))
    (configuration,) = comparison.configurations
    assert sorted(configuration.values("test_accuracy")) == pytest.approx([0.80, 0.90]), "the latest of seed 1"
    assert comparison.superseded == 1 and comparison.unfinished == 1
    assert headline(comparison) == ("Best test_accuracy: all runs with 85.00 ± 7.07 % (mean ± std over 2 seeds); "
                                    "the only configuration.")


@pytest.mark.integration
def test_report_command_prints_the_comparison_and_clears_its_old_files(store, tmp_path):
    client, folder, sweeps = store
    out = tmp_path / "report"
    out.mkdir()
    (out / "accuracy_vs_p_inter.png").write_bytes(b"an old report's figure")
    (out / "notes.txt").write_text("mine")

    def report(target: str, *arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "g2g.report", target, "--tracking-uri",
                               f"sqlite:///{folder / 'mlflow.db'}", "--out", str(out), *arguments],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)

    first = report(sweeps["betas"], "--metric", "best_test_accuracy", "--baseline", "model.beta=0.8")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("# Sweep (") and "**Best best_test_accuracy: model.beta=0.95" in first.stdout
    assert "| model.beta | best_test_accuracy % (last epoch, mean ± std) |" in first.stdout
    assert "params.model.beta" not in first.stdout, "the terminal gets the comparison, not the job table"
    assert not (out / "accuracy_vs_p_inter.png").exists() and (out / "notes.txt").read_text() == "mine"
    assert (out / "best_test_accuracy_vs_model.beta.png").exists()

    second = report(sweeps["batches"])
    assert second.returncode == 0, second.stderr
    assert not (out / "best_test_accuracy_vs_model.beta.png").exists(), "the earlier report's figure is removed"
    assert (out / "test_accuracy_vs_train.batch_size.png").exists() and (out / "notes.txt").exists()

    wrong = report(sweeps["batches"], "--baseline", "model=mixer")
    assert wrong.returncode == 2
    assert "baseline 'model=mixer' matches no configuration: model.name=mixer (the runs have model.name: dense)" \
        in wrong.stderr
    page = report("sweeps", "--page", str(tmp_path / "page.md"), "--baseline", "model=dense")
    assert page.returncode == 2 and "the page's studies name their own" in page.stderr
    assert not (tmp_path / "page.md").exists()


def test_a_param_equal_to_another_in_every_run_is_not_a_column_of_its_own():
    rows = [{"status": "FINISHED", "seed": str(seed), "start_time": seed, "test_accuracy": 0.5 + float(lr),
             "params": {"seed": str(seed), "train.lr": lr, "train.optimizer.lr": lr, "model.name": "mixer"}}
            for lr in ("0.001", "0.01") for seed in (1, 2)]
    comparison = compare(rows)
    assert comparison.columns == ["train.lr"]
    assert comparison.followers == {"train.optimizer.lr": "train.lr"}
    assert [len(c.runs) for c in comparison.configurations] == [2, 2]


def test_an_experiment_without_a_sweep_is_refused_saying_how_to_make_one(tmp_path):
    from g2g.reporting.queries import resolve_sweep
    from g2g.tracking.store import setup_experiment

    experiment_id = setup_experiment(f"sqlite:///{tmp_path / 'mlflow.db'}", "g2g")
    client = MlflowClient()
    client.create_run(experiment_id, run_name="one run")
    with pytest.raises(ValueError, match=r"experiment 'g2g' has no sweep runs .*run one first, e.g. python run.py -m "):
        resolve_sweep(client, "g2g")

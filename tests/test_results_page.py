"""docs/results.md generation: real tiny runs in a real MLflow store, then the report
command; runs logged by hand into a real MLflow store (params, metrics and tags as the
training logs them) for the paired statistics, the best-epoch column, the parameter-
matched dense model, the ablations and the refusal to pool mixed settings."""

import math
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from scipy.stats import t as student_t
from scipy.stats import ttest_rel

from conftest import compose_config, write_fashion_mnist
from g2g.build.random_streams import stream_seed
from g2g.models.network import SpikingNetwork
from g2g.reporting.queries import ResultsError, configuration, configuration_label, experiment_rows
from g2g.reporting.results_page import END, PUBLISHED_END, PUBLISHED_START, START, generate, write_page
from g2g.reporting.statistics import paired_difference
from g2g.run.job import run_job

RUNS = [["model=dense"], ["model=mixer", "model.p_inter=0.1"], ["model=mixer", "model.p_inter=0.3"],
        ["model=mixer", "model.p_inter=0.1", "sparsity=dynamic", "sparsity.prune=set", "sparsity.grow=hebb",
         "sparsity.update_interval=2"],
        ["model=mixer", "model.p_inter=0.1", "sparsity=dynamic", "sparsity.prune=random", "sparsity.grow=random",
         "sparsity.update_interval=2"]]
SEEDS = (1, 2)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, dict]:
    """Ten finished tiny runs (5 configurations x 2 seeds) in one MLflow experiment."""
    folder = tmp_path_factory.mktemp("results")
    write_fashion_mnist(folder / "data", num_train=64, num_test=32)
    summaries = {}
    for overrides in RUNS:
        for seed in SEEDS:
            cfg = compose_config(overrides + [f"seed={seed}", "tracking.experiment=page", "train.progress=false",
                                              "hardware=cpu"], folder)
            summaries[(" ".join(overrides), seed)] = run_job(cfg)
    return folder, summaries


def _page_command(folder: Path, page: Path, experiment: str = "page") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "g2g.report", experiment, "--page", str(page),
                           "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"],
                          capture_output=True, text=True, timeout=120, cwd=folder)


def _signed(points: float) -> str:
    return f"{points:+.2f}".replace("-", "\u2212")


def _paired_text(a: list[float], b: list[float]) -> str:
    """The page's cell for a - b over two seeds, from the definition of the interval."""
    differences = [100 * (x - y) for x, y in zip(a, b)]
    mean = statistics.mean(differences)
    half = student_t.ppf(0.975, len(differences) - 1) * statistics.stdev(differences) / math.sqrt(len(differences))
    return f"{_signed(mean)} [{_signed(mean - half)}, {_signed(mean + half)}] (n={len(differences)})"


def _row(text: str, first_cells: str, section: str) -> list[str]:
    """Cells of the one table row of section ``### section`` that starts with
    ``first_cells`` (a ``| a | b |`` prefix)."""
    text = text.split(f"### {section}\n")[1].split("\n### ")[0]
    (line,) = [line for line in text.splitlines() if line.startswith(first_cells)]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_results_page_summarises_seeds_from_mlflow_and_keeps_hand_written_text(store):
    folder, summaries = store
    page = folder / "docs" / "results.md"
    page.parent.mkdir()
    page.write_text(f"# Results\n\nhand-written introduction\n\n{START}\nold\n{END}\n\nhand-written discussion\n")
    result = _page_command(folder, page)
    assert result.returncode == 0, result.stderr
    text = page.read_text()
    assert "hand-written introduction" in text and "hand-written discussion" in text and "\nold\n" not in text
    assert "from 10 finished runs of the MLflow experiment `page`" in text
    assert "| fashionmnist | 16 | 4 | current | 2 | 16 | 0.0005 | 1, 2 | cpu," in text

    # p_inter study: mean +- std over the two seeds of the logged test accuracy, difference to dense
    # paired by seed (two seeds: mean difference +- t(0.975, 1) * sd / sqrt(2))
    accuracies = {key: summary["test_accuracy"] for key, summary in summaries.items()}
    dense = [accuracies[("model=dense", s)] for s in SEEDS]
    mixer = [accuracies[("model=mixer model.p_inter=0.1", s)] for s in SEEDS]
    cells = _row(text, "| mixer | 0.1 |", "p_inter study")
    assert cells[2] == "16", "hidden width: the param model.hidden_dim of runs without the hidden_dim metric"
    assert cells[3] == f"{100 * statistics.mean(mixer):.2f} ± {100 * statistics.stdev(mixer):.2f}"
    assert cells[5] == _paired_text(mixer, dense)
    assert cells[6] == "", "no dense_matched runs"
    assert cells[7] == "2"
    # parameters measured from the masks: what the model of each seed has, averaged
    counts = [SpikingNetwork(784, 16, 10, connectivity="mixer", p_inter=0.1, mask_seed=stream_seed(s, "masks")).parameter_counts()
              for s in SEEDS]
    assert cells[9] == f"{statistics.mean(c['parameters_total'] for c in counts):,.0f}"
    assert _row(text, "| dense |  |", "p_inter study")[8] == "100.0%"

    # DST study: the rule against the static model it rewires, paired by seed
    dynamic = [accuracies[(" ".join(RUNS[3]), s)] for s in SEEDS]
    cells = _row(text, "| mixer p=0.1 | set | hebb |", "DST-rule study")
    assert cells[3] == "cosine", "the Hebbian score of runs that grow by it (the default when not logged)"
    assert cells[6] == _paired_text(dynamic, mixer)
    assert _row(text, "| mixer p=0.1 | static |", "DST-rule study")[7] == "2"
    assert "Rewiring every 2 optimizer steps, replacing a fraction 0.1" in text

    # seed README architecture, built from masks: dense 784*2048 + 2048*2048 + 2048*10 weights
    dense_parameters = 784 * 2048 + 2048 * 2048 + 2048 * 10 + (2048 + 2048 + 10) + 6
    assert _row(text, "| dense |  | 1.0000 |", "Model sizes measured from the masks")[5] == f"{dense_parameters:,}"
    assert re.search(r"\| mixer \| 0\.3 \| 0\.38\d\d \|", text)  # 1/8 + 0.3 * 7/8 = 0.3875

    for image in re.findall(r"\]\((figures/[^)]+\.png)\)", text):
        assert (page.parent / image).stat().st_size > 10_000
    assert {"figures/results_accuracy_vs_p_inter.png", "figures/results_accuracy_vs_cost.png",
            "figures/results_dst_rules.png"} <= set(re.findall(r"\]\((figures/[^)]+\.png)\)", text))

    again = _page_command(folder, page)  # regenerating replaces, it does not append
    assert again.returncode == 0 and page.read_text().count(START) == 1


def test_results_page_refuses_mixed_settings_and_unknown_experiments(store, tmp_path):
    folder, _ = store
    page = tmp_path / "results.md"
    missing = _page_command(folder, page, experiment="nope")
    assert missing.returncode == 2 and "no MLflow experiment named 'nope'" in missing.stderr
    assert "its experiments: Default, page" in missing.stderr, "the error lists what the store has"
    assert not page.exists()
    elsewhere = subprocess.run([sys.executable, "-m", "g2g.report", "page", "--page", str(page)],
                               capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert elsewhere.returncode == 1 and f"no MLflow store at {tmp_path / 'mlflow.db'}" in elsewhere.stderr
    assert not (tmp_path / "mlflow.db").exists(), "reading must not create an empty store"

    run_job(compose_config(["model=dense", "model.hidden_dim=24", "tracking.experiment=page", "train.progress=false",
                        "hardware=cpu"], folder))
    mixed = _page_command(folder, page)
    assert mixed.returncode == 1
    assert "model.hidden_dim: 16 in dense seeds 1, 2; mixer p=0.1 seeds 1, 2;" in mixed.stderr
    assert "| 24 in dense seed 42" in mixed.stderr and "tracking.experiment" in mixed.stderr
    assert not page.exists(), "nothing is written when the page cannot be made"


def test_parameter_counts_are_measured_from_the_masks():
    network = SpikingNetwork(20, 16, 4, connectivity="index", p_inter=0.0, num_groups=4, mask_seed=0)
    counts = network.parameter_counts()
    # p_inter 0: only the 4 diagonal blocks; fc1 20 -> 16 with groups of 5 and 4: 4 * 5 * 4
    assert counts["connections_fc1"] == int(network.fc1.mask.sum()) == 80
    assert counts["connections_fc2"] == 4 * 4 * 4
    assert counts["connections_total"] == sum(int(layer.mask.sum()) for layer in network.masked_layers().values())
    biases_and_lif = 16 + 16 + 4 + 3 * 2  # learnable beta and threshold per LIF layer
    assert counts["parameters_total"] == counts["connections_total"] + biases_and_lif
    assert counts["parameters_dense"] == 20 * 16 + 16 * 16 + 16 * 4 + biases_and_lif


def test_one_run_groups_show_the_accuracy_without_a_spread():
    from g2g.reporting.results_page import _accuracy

    assert _accuracy([{"test_accuracy": 0.8731}]) == "87.31"
    assert _accuracy([{"test_accuracy": 0.80}, {"test_accuracy": 0.82}]) == "81.00 ± 1.41"


def test_paired_difference_matches_the_paired_t_test_on_a_hand_computed_example():
    model = {1: 0.83, 2: 0.82, 3: 0.85}
    dense = {1: 0.80, 2: 0.82, 3: 0.81, 4: 0.90}  # seed 4 has no partner: left out
    difference = paired_difference(model, dense)
    # differences 0.03, 0.00, 0.04: mean 0.07 / 3; sd = sqrt((0.02^2/9 + 0.07^2/9 + 0.05^2/9) / 2)
    # = sqrt(0.0078 / 18) = 0.0208167; t(0.975, 2) = 4.302653; half width 4.302653 * 0.0208167 / sqrt(3) = 0.0517114
    assert difference.n == 3 and difference.seeds == (1, 2, 3)
    assert difference.mean == pytest.approx(0.0233333, abs=1e-7)
    assert difference.low == pytest.approx(0.0233333 - 0.0517114, abs=1e-6)
    assert difference.high == pytest.approx(0.0233333 + 0.0517114, abs=1e-6)
    interval = ttest_rel([0.83, 0.82, 0.85], [0.80, 0.82, 0.81]).confidence_interval(0.95)
    assert (difference.low, difference.high) == pytest.approx((interval.low, interval.high), abs=1e-12)

    one = paired_difference({7: 0.9}, {7: 0.8, 8: 0.7})
    assert (one.mean, one.low, one.high, one.n) == (pytest.approx(0.1), None, None, 1), "one pair: no interval"
    with pytest.raises(ValueError, match=r"no seed in both: \[1\] and \[2\]"):
        paired_difference({1: 0.5}, {2: 0.5})
    with pytest.raises(ValueError, match="confidence must be in"):
        paired_difference(model, dense, confidence=95)


#: params every hand-logged run shares (as the training logs its flattened config)
BASE_PARAMS = {"dataset.name": "fashionmnist", "dataset.train_subset": "None", "encoder.name": "current",
               "encoder.num_steps": "4", "model.hidden_dim": "16", "model.beta": "0.9", "train.epochs": "3",
               "train.batch_size": "16", "train.lr": "0.0005", "protocol.name": "holdout", "sparsity.name": "static",
               "regularizer.name": "none", "tracking.experiment": "fake"}
SPARSE_PARAMS = {"model._target_": "g2g.models.network.SpikingNetwork", "model.num_groups": "8",
                 "model.p_intra": "1.0", "model.readout": "masked", "model.weight_init": "fan_in",
                 "protocol.validation_fraction": "0.0"}


def _log_run(client: MlflowClient, experiment_id: str, params: dict, metrics: dict, epochs_tag: str | None = None):
    """One finished run with ``params``, ``metrics`` (a list value: one per epoch, the
    last is the run's) and the tags the report reads."""
    tags = {"g2g.device": "cpu", "g2g.num_threads": "1"} | ({"g2g.epochs": epochs_tag} if epochs_tag else {})
    run_id = client.create_run(experiment_id, run_name=" ".join(f"{k}={v}" for k, v in params.items()),
                               tags=tags).info.run_id
    series = [Metric(key, value, 0, step) for key, values in metrics.items()
              for step, value in enumerate(values if isinstance(values, list) else [values])]
    client.log_batch(run_id, metrics=series + [Metric("epoch_time_s", 2.0, 0, step) for step in range(3)],
                     params=[Param(key, value) for key, value in params.items()])
    client.set_terminated(run_id, "FINISHED")


def _dense(seed: int, accuracy: float, best: float) -> tuple[dict, dict]:
    """A dense run logged before model.weight_init and protocol.validation_fraction existed."""
    params = BASE_PARAMS | {"seed": str(seed), "model.name": "dense", "model.connectivity": "dense",
                            "model._target_": "g2g.models.network.SpikingNetwork",
                            "hardware.num_threads": str(seed)}  # not a result-affecting key
    return params, {"test_accuracy": accuracy, "best_test_accuracy": [best - 0.01, best], "energy_nj": 800.0,
                    "energy_ann_nj": 400.0, "synops_total": 9000.0, "macs_total": 100.0,
                    "parameters_total": 1000.0, "lif_updates": 5000.0}


def _sparse(seed: int, model: str, p_inter: str, accuracy: float, **options) -> tuple[dict, dict]:
    metrics = {"test_accuracy": accuracy} | options.pop("metrics", {})
    params = BASE_PARAMS | SPARSE_PARAMS | {"seed": str(seed), "model.name": model, "model.connectivity": model,
                                            "model.p_inter": p_inter} | options
    return params, metrics


@pytest.fixture(scope="module")
def fake_store(tmp_path_factory) -> tuple[MlflowClient, Path]:
    """Hand-logged runs: the p_inter study with dense (3 seeds), mixer p=0.15 (3 seeds),
    mixer p=0 (1 seed, no best_test_accuracy), dense_matched p=0.15 (2 seeds); the
    readout and weight-initialisation ablations; and an experiment ``mixed`` whose runs
    differ in train.lr and model.num_groups."""
    folder = tmp_path_factory.mktemp("fake")
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    fake, mixed = client.create_experiment("fake"), client.create_experiment("mixed")
    runs = [_dense(1, 0.80, 0.81), _dense(2, 0.82, 0.83), _dense(3, 0.81, 0.82)]
    for seed, accuracy, best in ((1, 0.83, 0.84), (2, 0.82, 0.83), (3, 0.85, 0.86)):
        runs.append(_sparse(seed, "mixer", "0.15", accuracy, metrics={
            "best_test_accuracy": [best - 0.02, best], "energy_nj": 100.0, "energy_ann_nj": 400.0,
            "lif_updates": 1234.0, "synops_total": 2000.0, "macs_total": 30.0, "parameters_total": 300.0}))
        runs.append(_sparse(seed, "mixer", "0.15", {1: 0.84, 2: 0.84, 3: 0.86}[seed], **{"model.readout": "dense"},
                            metrics={"parameters_total": 400.0}))
    runs.append(_sparse(1, "mixer", "0.0", 0.70))
    for seed, accuracy, width in ((1, 0.82, 150.0), (2, 0.80, 152.0)):
        runs.append(_sparse(seed, "dense_matched", "0.15", accuracy, metrics={"hidden_dim": width}, **{
            "model._target_": "g2g.models.network.parameter_matched_dense", "model.connectivity": "dense"}))
    for seed, (uniform_val, uniform_test, fan_in_val, fan_in_test) in ((1, (0.80, 0.81, 0.83, 0.82)),
                                                                       (2, (0.82, 0.80, 0.83, 0.82))):
        for init, val, test in (("uniform", uniform_val, uniform_test), ("fan_in", fan_in_val, fan_in_test)):
            runs.append(_sparse(seed, "mixer", "0.15", test, metrics={"val_accuracy": [0.5, val]}, **{
                "model.weight_init": init, "protocol.validation_fraction": "0.1"}))
    for params, metrics in runs:
        # one run extended from 2 to 3 epochs: its train.epochs param stays 2, the tag says 3
        extended = params["seed"] == "3" and params["model.name"] == "dense"
        _log_run(client, fake, params | ({"train.epochs": "2"} if extended else {}), metrics,
                 epochs_tag="3" if extended else None)
    for params, metrics in (_dense(1, 0.8, 0.8), _dense(2, 0.8, 0.8),
                            _sparse(1, "mixer", "0.15", 0.8, **{"train.lr": "0.001", "model.num_groups": "4"}),
                            _sparse(2, "mixer", "0.15", 0.8)):
        _log_run(client, mixed, params | {"tracking.experiment": "mixed"}, metrics)
    published = client.create_experiment("published")
    for params, metrics in PUBLISHED_RUNS:
        _log_run(client, published, params | {"tracking.experiment": "published"}, metrics)
    return client, folder


#: the published-setting study in miniature: (params, metrics) of dense, dense_matched and
#: mixer p=0.15 (seeds 1, 2) and mixer rewired by set->hebb (seed 1 only)
PUBLISHED_RUNS = [
    (_dense(1, 0.80, 0.81)[0], {"test_accuracy": 0.80, "best_test_accuracy": 0.81, "best_test_epoch": 3.0}),
    (_dense(2, 0.82, 0.83)[0], {"test_accuracy": 0.82, "best_test_accuracy": 0.83, "best_test_epoch": 2.0}),
    *(_sparse(seed, "dense_matched", "0.15", accuracy, metrics={"hidden_dim": 400.0, "best_test_accuracy": best,
                                                                  "best_test_epoch": 1.0}, **{
        "model._target_": "g2g.models.network.parameter_matched_dense", "model.connectivity": "dense"})
      for seed, accuracy, best in ((1, 0.81, 0.82), (2, 0.80, 0.81))),
    *(_sparse(seed, "mixer", "0.15", accuracy, metrics={"best_test_accuracy": best, "best_test_epoch": epoch,
                                                        "energy_nj": 100.0, "energy_ann_nj": 400.0})
      for seed, accuracy, best, epoch in ((1, 0.83, 0.85, 2.0), (2, 0.84, 0.86, 3.0))),
    _sparse(1, "mixer", "0.15", 0.86, metrics={"best_test_accuracy": 0.87, "best_test_epoch": 3.0}, **{
        "sparsity.name": "dynamic", "sparsity.prune": "set", "sparsity.grow": "hebb"}),
]


@pytest.fixture(scope="module")
def fake_page(fake_store) -> str:
    """The generated part of the page of the experiment ``fake``."""
    client, folder = fake_store
    return generate(client, "fake", folder / "docs" / "results.md", "cmd")


def test_page_pairs_by_seed_against_dense_and_the_parameter_matched_dense(fake_page):
    text = fake_page
    assert "from 16 finished runs" in text
    assert "| fashionmnist | 16 | 4 | current | 3 | 16 | 0.0005 | 1, 2, 3 | cpu, 1 thread(s) |" in text
    section = text.split("### p_inter study\n")[1]
    header = next(line for line in section.splitlines() if line.startswith("| model |"))
    headers = [cell.strip() for cell in header.strip("|").split("|")]
    assert headers[:8] == ["model", "p_inter", "hidden width", "test accuracy % (last epoch, mean ± std)",
                           "best-epoch test accuracy % (mean)", "vs dense (points, paired by seed, 95% CI)",
                           "vs dense_matched, same p_inter (points, paired by seed, 95% CI)", "seeds"]
    assert "energy vs one-pass ANN" in headers and "LIF updates / inference" in headers

    mixer = _row(text, "| mixer | 0.15 |", "p_inter study")
    assert mixer[3] == "83.33 ± 1.53" and mixer[7] == "3", "the ablation runs of mixer p=0.15 are not pooled in"
    assert mixer[4] == "84.33", "best epoch: the last logged best_test_accuracy, mean over seeds"
    # vs dense: differences 3, 0, 4 points -> mean 2.333, half width 4.302653 * 2.08167 / sqrt(3) = 5.17128
    assert mixer[5] == "+2.33 [\u22122.84, +7.50] (n=3)"
    # vs dense_matched (seeds 1 and 2 only): differences 1, 2 -> mean 1.5, half width 12.7062 * 0.70711 / sqrt(2)
    assert mixer[6] == "+1.50 [\u22124.85, +7.85] (n=2)"
    assert mixer[12] == "1,234" and mixer[13] == "100.0" and mixer[14] == "25.0%"

    single = _row(text, "| mixer | 0 |", "p_inter study")
    assert single[4] == "", "no best_test_accuracy logged: blank"
    assert single[5] == "\u221210.00 (n=1)", "one seed: the difference without an interval"

    matched = _row(text, "| dense_matched | 0.15 |", "p_inter study")
    assert matched[2] == "150–152", "the width each seed's dense_matched was built with (metric hidden_dim)"
    assert matched[5] == "+0.00 [\u221225.41, +25.41] (n=2)" and matched[6] == ""
    dense = _row(text, "| dense |  |", "p_inter study")
    assert dense[3] == "81.00 ± 1.00" and dense[4] == "82.00" and dense[5] == dense[6] == ""
    assert dense[14] == "200.0%", "energy against the one-pass ANN, above 100%: more than the ANN"


def test_page_has_the_readout_and_weight_initialisation_ablations(fake_page):
    text = fake_page
    # readout: dense - masked per seed 1, 2, 1 points -> mean 1.333, half width 4.302653 * 0.57735 / sqrt(3)
    assert _row(text, "| mixer p=0.15 |", "Ablation: readout layer") == [
        "mixer p=0.15", "83.33 ± 1.53", "84.67 ± 1.15", "+1.33 [\u22120.10, +2.77] (n=3)", "300", "400"]
    # weight init at validation fraction 0.1: validation fan_in - uniform 3, 1 -> mean 2, half width 12.7062;
    # test 1, 2 -> mean 1.5, half width 6.3531
    assert _row(text, "| mixer p=0.15 |", "Ablation: weight initialisation") == [
        "mixer p=0.15", "0.1", "81.00 ± 1.41", "83.00 ± 0.00", "+2.00 [\u221210.71, +14.71] (n=2)",
        "80.50 ± 0.71", "82.00 ± 0.00", "+1.50 [\u22124.85, +7.85] (n=2)"]
    sizes = text.split("### Model sizes measured from the masks\n")[1]
    assert "| mixer p=0.15 readout=dense |" in sizes
    assert "| mixer p=0.15 validation_fraction=0.1 |" in sizes
    assert "| mixer p=0.15 weight_init=uniform validation_fraction=0.1 |" in sizes


def test_runs_without_the_new_params_trained_the_defaults():
    old = {"model": "mixer", "p_inter": "0.15", "sparsity": "static"}
    assert configuration(old) == configuration(dict(old, readout="masked", weight_init="uniform",
                                                    validation_fraction="0.0"))
    assert configuration({"model": "dense", "p_inter": None, "readout": None}).readout is None
    assert configuration_label(configuration(dict(old, readout="dense", validation_fraction="0.1"))) == \
        "mixer p=0.15 readout=dense weight_init=uniform validation_fraction=0.1", "an old run trained uniform"


def test_page_refuses_to_pool_runs_that_differ_in_a_setting_and_names_it(fake_store, tmp_path):
    client, _ = fake_store
    with pytest.raises(ResultsError) as error:
        generate(client, "mixed", tmp_path / "results.md", "cmd")
    message = str(error.value)
    assert "  train.lr: 0.0005 in dense seeds 1, 2; mixer p=0.15 seed 2 | 0.001 in mixer p=0.15 seed 1" in message
    # only the sparse runs have model.num_groups: the dense ones are not compared on it
    assert "  model.num_groups: 4 in mixer p=0.15 seed 1 | 8 in mixer p=0.15 seed 2" in message
    assert "hardware" not in message and "train.epochs" not in message
    assert "tracking.experiment" in message
    rows = experiment_rows(client, "mixed")
    assert {row["params"]["train.lr"] for row in rows} == {"0.0005", "0.001"}


def test_the_pages_default_weight_init_is_the_configs():
    from g2g.reporting.queries import DEFAULT_WEIGHT_INIT

    for model in ("dense", "index", "random", "mixer", "dense_matched"):
        assert compose_config([f"model={model}"]).model.weight_init == DEFAULT_WEIGHT_INIT, model


def test_hebbian_score_separates_dst_configurations():
    base = {"model": "mixer", "p_inter": "0.15", "sparsity": "dynamic", "prune": "hebb", "grow": "hebb",
            "weight_init": "fan_in"}
    cosine, unlogged = configuration({**base, "hebbian_score": "cosine"}), configuration(base)
    correlation = configuration({**base, "hebbian_score": "correlation"})
    assert cosine == unlogged != correlation
    assert configuration_label(correlation) == "mixer p=0.15 hebb->hebb hebbian_score=correlation"
    assert configuration({**base, "prune": "set", "grow": "random", "hebbian_score": "correlation"}).hebbian_score is None


def test_published_section_compares_last_and_best_epoch_with_the_public_numbers(fake_store):
    client, folder = fake_store
    page = folder / "published.md"
    page.write_text(f"intro\n{START}\nstudies\n{END}\n\n{PUBLISHED_START}\nold\n{PUBLISHED_END}\nend\n")
    result = subprocess.run([sys.executable, "-m", "g2g.report", "published", "--page", str(page), "--section",
                             "published", "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"],
                            capture_output=True, text=True, timeout=120, cwd=folder)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote the published section of {page}", "no figures: the section has none"
    text = page.read_text()
    assert f"{START}\nstudies\n{END}" in text and "\nold\n" not in text, "only the published markers are replaced"
    assert "--section published" in text and "from 7 finished runs of the MLflow experiment `published`" in text

    def row(first_cell: str) -> list[str]:
        (line,) = [line for line in text.splitlines() if line.startswith(f"| {first_cell} |")]
        return [cell.strip() for cell in line.strip("|").split("|")]

    dense, matched, mixer = [0.80, 0.82], [0.81, 0.80], [0.83, 0.84]
    assert row("mixer p=0.15")[:11] == [
        "mixer p=0.15", "16", "1, 2", "83.50 ± 0.71", "85.50", "2, 3", _paired_text(mixer, dense),
        _paired_text([0.85, 0.86], [0.81, 0.83]), _paired_text(mixer, matched), "", "88.5–89.2 (p_inter 0–0.25)"]
    assert row("mixer p=0.15")[12] == "25.0%", "energy against the one-pass ANN"
    assert row("mixer p=0.15 set->hebb")[2:11] == [
        "1", "86.00", "87.00", "3", "+6.00 (n=1)", "+6.00 (n=1)", "+5.00 (n=1)", "+3.00 (n=1)", ""], \
        "one seed: differences without an interval; the DST rule against its static model"
    assert row("dense_matched p=0.15")[1] == "400" and row("dense_matched p=0.15")[10] == "87.04 (dense, 447 wide)"
    assert row("dense")[6:10] == ["", "", "", ""]


def test_write_page_names_an_unknown_section(fake_store, tmp_path):
    client, _ = fake_store
    with pytest.raises(ValueError, match=r"section='best' is not one of \['published', 'results'\]"):
        write_page(client, "published", tmp_path / "results.md", "cmd", section="best")
    new_page = write_page(client, "published", tmp_path / "new" / "results.md", "cmd", section="published")
    assert "| mixer p=0.15 set->hebb |" in new_page.read_text(), "a missing page is created with the section's markers"
    page = tmp_path / "no_markers.md"
    page.write_text(f"{START}\n{END}\n")
    with pytest.raises(ValueError, match="has no <!-- published:start --> ... <!-- published:end --> markers"):
        write_page(client, "published", page, "cmd", section="published")

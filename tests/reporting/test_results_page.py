"""docs/results.md generation: real tiny runs in a real MLflow store, then the report
command; runs logged by hand into a real MLflow store (params, metrics and tags as the
training logs them: tests/fake_runs.py) for the paired statistics, the best-epoch column,
the parameter-matched dense model, the ablations, runs that differ in a setting no study
names, and studies declared in a YAML file."""

import math
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from scipy.stats import t as student_t
from scipy.stats import ttest_rel

from conftest import compose_config, write_fashion_mnist
from fake_runs import BASE_PARAMS, SPARSE_PARAMS, log_run, mixer_params, table
from g2g.build.random_streams import stream_seed
from g2g.models.network import SpikingNetwork
from g2g.reporting.comparison import mean_std_text
from g2g.reporting.queries import experiment_rows
from g2g.reporting.results_page import END, PUBLISHED_END, PUBLISHED_START, START, generate, load_studies, write_page
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


def _study(text: str, title: str) -> list[dict[str, str]]:
    """The rows of the table of study ``### title`` (header -> cell)."""
    return table(text.split(f"### {title}\n")[1].split("\n### ")[0])


def _find(rows: list[dict[str, str]], **cells: str) -> dict[str, str]:
    """The one row whose cells have these values (keys with ``__`` for ``.``)."""
    (found,) = [row for row in rows if all(row.get(key.replace("__", ".")) == value for key, value in cells.items())]
    return found


VS_DENSE = "vs model=dense (points, paired by seed, 95% CI)"
VS_MATCHED = "vs model=dense_matched (points, paired by seed, 95% CI)"
LAST = "test_accuracy % (last epoch, mean ± std)"
BEST = "best_test_accuracy % (mean)"


@pytest.mark.integration
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
    shared = {row["param"]: row["value"] for row in table(text, "<details>")}
    assert {key: shared[key] for key in ("dataset.name", "model.hidden_dim", "encoder.num_steps", "train.epochs",
                                         "train.batch_size", "train.lr")} == {
        "dataset.name": "fashionmnist", "model.hidden_dim": "16", "encoder.num_steps": "4", "train.epochs": "2",
        "train.batch_size": "16", "train.lr": "0.0005"}
    assert "Seeds: 1, 2. Devices: cpu," in text

    # p_inter study: mean +- std over the two seeds of the logged test accuracy, difference to dense
    # paired by seed (two seeds: mean difference +- t(0.975, 1) * sd / sqrt(2))
    accuracies = {key: summary["test_accuracy"] for key, summary in summaries.items()}
    dense = [accuracies[("model=dense", s)] for s in SEEDS]
    mixer = [accuracies[("model=mixer model.p_inter=0.1", s)] for s in SEEDS]
    rows = _study(text, "p_inter study")
    assert [(row["model.name"], row["model.p_inter"]) for row in rows] == [("dense", "—"), ("mixer", "0.1"),
                                                                          ("mixer", "0.3")]
    cells = _find(rows, model__p_inter="0.1")
    assert cells[LAST] == f"{100 * statistics.mean(mixer):.2f} ± {100 * statistics.stdev(mixer):.2f}"
    assert cells[VS_DENSE] == _paired_text(mixer, dense)
    assert VS_MATCHED not in cells, "no dense_matched runs: no such column"
    assert cells["n"] == "2" and cells["seeds"] == "1, 2"
    # parameters measured from the masks: what the model of each seed has, averaged
    counts = [SpikingNetwork(784, 16, 10, connectivity="mixer", p_inter=0.1,
                             mask_seed=stream_seed(s, "masks")).parameter_counts()
              for s in SEEDS]
    assert cells["parameters"] == f"{statistics.mean(c['parameters_total'] for c in counts):,.0f}"
    assert "lif_beta_lif1" in cells and 0 < float(cells["lif_beta_lif1"]) <= 1, "the learned decay, logged per epoch"

    # DST study: each rule against the static model it rewires, paired by seed
    dynamic = [accuracies[(" ".join(RUNS[3]), s)] for s in SEEDS]
    rows = _study(text, "DST-rule study")
    assert [(row["sparsity.name"], row["sparsity.prune"], row["sparsity.grow"]) for row in rows] == [
        ("static", "—", "—"), ("dynamic", "set", "hebb"), ("dynamic", "random", "random")], \
        "only the static model the rules rewire (p_inter 0.1), not p_inter 0.3"
    assert _find(rows, sparsity__prune="set")["vs sparsity=static (points, paired by seed, 95% CI)"] == \
        _paired_text(dynamic, mixer)
    assert "sparsity.update_interval=2" in text.split("### DST-rule study")[1], "the rewiring settings are said"

    # original README architecture, built from masks: dense 784*2048 + 2048*2048 + 2048*10 weights
    dense_parameters = 784 * 2048 + 2048 * 2048 + 2048 * 10 + (2048 + 2048 + 10) + 6
    assert f"| dense |  | 1.0000 | 1.0000 | 1.0000 | {dense_parameters:,} |" in text
    assert re.search(r"\| mixer \| 0\.3 \| 0\.38\d\d \|", text)  # 1/8 + 0.3 * 7/8 = 0.3875

    images = re.findall(r"\]\((figures/[^)]+\.png)\)", text)
    for image in images:
        assert (page.parent / image).stat().st_size > 10_000
    assert {"figures/results_p_inter_study_test_accuracy_vs_model.p_inter.png",
            "figures/results_p_inter_study_accuracy_vs_cost.png",
            "figures/results_dst_rule_study_heatmap_sparsity.prune_sparsity.grow.png"} <= set(images)

    again = _page_command(folder, page)  # regenerating replaces, it does not append
    assert again.returncode == 0 and page.read_text().count(START) == 1


@pytest.mark.integration
def test_results_page_compares_runs_that_differ_in_any_setting_and_refuses_unknown_experiments(store, tmp_path):
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
    assert mixed.returncode == 0, mixed.stderr
    rows = _study(page.read_text(), "p_inter study")
    assert [(row["model.name"], row["model.hidden_dim"], row["n"]) for row in rows] == [
        ("dense", "16", "2"), ("dense", "24", "1"), ("mixer", "16", "2"), ("mixer", "16", "2")], \
        "the width is a column: runs of another width are their own configuration, never pooled"


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
    assert mean_std_text([0.8731]) == "87.31"
    assert mean_std_text([0.80, 0.82]) == "81.00 ± 1.41"


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
        log_run(client, fake, params | ({"train.epochs": "2"} if extended else {}), metrics,
                epochs_tag="3" if extended else None)
    for params, metrics in (_dense(1, 0.8, 0.8), _dense(2, 0.8, 0.8),
                            _sparse(1, "mixer", "0.15", 0.8, **{"train.lr": "0.001", "model.num_groups": "4"}),
                            _sparse(2, "mixer", "0.15", 0.8)):
        log_run(client, mixed, params | {"tracking.experiment": "mixed"}, metrics)
    published = client.create_experiment("published")
    for params, metrics in PUBLISHED_RUNS:
        log_run(client, published, params | {"tracking.experiment": "published"}, metrics)
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
    rows = _study(text, "p_inter study")
    assert list(rows[0])[:9] == ["model.name", "model.p_inter", "protocol.validation_fraction", LAST, "n", "seeds",
                                 BEST, VS_DENSE, VS_MATCHED]
    assert "energy vs one-pass ANN" in rows[0] and "LIF updates / inference" in rows[0]

    mixer = _find(rows, model__name="mixer", model__p_inter="0.15")
    assert mixer[LAST] == "83.33 ± 1.53" and mixer["n"] == "3", "the ablation runs of mixer p=0.15 are not pooled in"
    assert mixer[BEST] == "84.33", "best epoch: the last logged best_test_accuracy, mean over seeds"
    # vs dense: differences 3, 0, 4 points -> mean 2.333, half width 4.302653 * 2.08167 / sqrt(3) = 5.17128
    assert mixer[VS_DENSE] == "+2.33 [\u22122.84, +7.50] (n=3)"
    # vs dense_matched (seeds 1 and 2 only): differences 1, 2 -> mean 1.5, half width 12.7062 * 0.70711 / sqrt(2)
    assert mixer[VS_MATCHED] == "+1.50 [\u22124.85, +7.85] (n=2)"
    assert mixer["LIF updates / inference"] == "1,234" and mixer["energy / inference (nJ)"] == "100"
    assert mixer["energy vs one-pass ANN"] == "25.0%"

    single = _find(rows, model__p_inter="0.0")
    assert single[BEST] == "", "no best_test_accuracy logged: blank"
    assert single[VS_DENSE] == "\u221210.00 (n=1)", "one seed: the difference without an interval"
    assert single[VS_MATCHED] == "", "dense_matched at p_inter 0.15 is not the baseline of p_inter 0"

    matched = _find(rows, model__name="dense_matched")
    assert matched["hidden width"] == "151", "the mean width the seeds' dense_matched were built with"
    assert matched[VS_DENSE] == "+0.00 [\u221225.41, +25.41] (n=2)" and matched[VS_MATCHED] == ""
    dense = _find(rows, model__name="dense")
    assert dense[LAST] == "81.00 ± 1.00" and dense[BEST] == "82.00" and dense[VS_DENSE] == ""
    assert dense["energy vs one-pass ANN"] == "200.0%", "energy against the one-pass ANN, above 100%: more than the ANN"
    assert dense["protocol.validation_fraction"] == "—", "a run logged before the param existed: absent, not guessed"
    assert "model.readout=—, model.weight_init=—" in text.split("### p_inter study")[1], \
        "the params that follow the model option are said"


def test_page_has_the_readout_and_weight_initialisation_ablations(fake_page):
    text = fake_page
    # readout: dense - masked per seed 1, 2, 1 points -> mean 1.333, half width 4.302653 * 0.57735 / sqrt(3)
    rows = _study(text, "Ablation: readout layer")
    assert [(row["model.readout"], row[LAST]) for row in rows] == [("masked", "83.33 ± 1.53"),
                                                                   ("dense", "84.67 ± 1.15")], \
        "text values in the order the runs first have them"
    assert rows[1]["vs model.readout=masked (points, paired by seed, 95% CI)"] == "+1.33 [\u22120.10, +2.77] (n=3)"
    assert [row["parameters"] for row in rows] == ["300", "400"]
    # weight init at validation fraction 0.1, compared on validation accuracy (what to choose by):
    # validation fan_in - uniform 3, 1 -> mean 2, half width 12.7062; test 1, 2 -> mean 1.5, half width 6.3531
    rows = _study(text, "Ablation: weight initialisation")
    assert [(row["model.weight_init"], row["val_accuracy % (last epoch, mean ± std)"]) for row in rows] == [
        ("fan_in", "83.00 ± 0.00"), ("uniform", "81.00 ± 1.41")]
    fan_in = rows[0]
    same, paired = ", the same other settings", "(points, paired by seed, 95% CI)"
    assert fan_in[f"vs model.weight_init=uniform{same} {paired}"] == "+2.00 [\u221210.71, +14.71] (n=2)"
    assert fan_in[f"vs model.weight_init=uniform, test_accuracy{same} {paired}"] == "+1.50 [\u22124.85, +7.85] (n=2)"
    assert [row["test accuracy % (last epoch, mean)"] for row in rows] == ["82.00", "80.50"]
    assert "**Best val_accuracy: model.weight_init=fan_in with 83.00 ± 0.00 %" in text, \
        "the headline chooses on validation, never on test"
    sizes = _study(text, "Model sizes measured from the masks")
    assert len(sizes) == 7 and {"density_fc1", "connections_total", "of dense"} <= set(sizes[0])
    assert not {LAST, "n", "lif_beta_lif1"} & set(sizes[0]), "sizes only: no accuracy or learned LIF columns"
    sizes_text = text[text.index("### Model sizes measured from the masks"):]
    assert "**Best" not in sizes_text.split("###")[1], "no headline sentence above the sizes"


def test_page_compares_runs_that_differ_in_a_setting_as_their_own_configurations(fake_store, tmp_path):
    client, _ = fake_store
    text = generate(client, "mixed", tmp_path / "results.md", "cmd")
    rows = _study(text, "p_inter study")
    # the sparse runs differ in train.lr and model.num_groups: neither is pooled with the other
    assert [(row["model.name"], row["model.num_groups"], row["train.lr"], row["n"]) for row in rows] == [
        ("dense", "—", "0.0005", "2"), ("mixer", "4", "0.001", "1"), ("mixer", "8", "0.0005", "1")]
    assert "The runs vary in" in text and "`train.lr`" in text
    assert {row["params"]["train.lr"] for row in experiment_rows(client, "mixed")} == {"0.0005", "0.001"}


@pytest.mark.integration
def test_a_setting_the_studies_do_not_name_is_a_column_not_a_pooled_mean(tmp_path):
    """The old page kept the latest run per (known configuration, seed) before checking
    the runs shared every setting, so two betas became one: "mixer 72.10 ± 1.98 from 2
    finished runs"."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("betas")
    accuracy = {("0.5", 1): 0.60, ("0.5", 2): 0.62, ("0.95", 1): 0.73, ("0.95", 2): 0.71}
    for (beta, seed), value in accuracy.items():
        log_run(client, experiment, mixer_params(seed, **{"model.beta": beta, "tracking.experiment": "betas"}),
                {"test_accuracy": value})
    page = tmp_path / "results.md"
    result = _page_command(tmp_path, page, experiment="betas")
    assert result.returncode == 0, result.stderr
    text = page.read_text()
    assert "from 4 finished runs" in text
    rows = _study(text, "p_inter study")
    assert [(row["model.beta"], row[LAST], row["n"]) for row in rows] == [
        ("0.5", "61.00 ± 1.41", "2"), ("0.95", "72.00 ± 1.41", "2")]


def test_a_new_ablation_is_a_yaml_entry(fake_store, tmp_path):
    client, folder = fake_store
    studies = tmp_path / "studies.yaml"
    studies.write_text("""\
results:
  - title: Seeds of mixer
    prose: Every mixer run at p_inter 0.15 with the masked readout.
    select: {model: mixer, model.p_inter: 0.15, model.readout: masked}
    baselines: [{select: model.weight_init=uniform, strict: true}, model.weight_init=uniform]
    columns: [{key: energy_nj, header: energy}]
""")
    text = generate(client, "fake", folder / "docs" / "results.md", "cmd", studies=studies)
    rows = _study(text, "Seeds of mixer")
    assert [(row["model.weight_init"], row["protocol.validation_fraction"], row["n"]) for row in rows] == [
        ("fan_in", "0.0", "3"), ("fan_in", "0.1", "2"), ("uniform", "0.1", "2")]
    (lone, strict) = sorted(key for key in rows[0] if key.startswith("vs model.weight_init=uniform"))
    assert [row[strict] for row in rows] == ["", "+1.50 [\u22124.85, +7.85] (n=2)", ""], \
        "strict: only with the uniform runs of the same validation split"
    assert [row[lone] for row in rows] == ["+2.00 [+2.00, +2.00] (n=2)", "+1.50 [\u22124.85, +7.85] (n=2)", ""], \
        "not strict: the one uniform configuration is every configuration's baseline"
    assert rows[0]["energy"] == "100"
    studies.write_text("results:\n  - title: X\n    selekt: {model: mixer}\n")
    with pytest.raises(ValueError, match=r"study 'X': unknown keys \['selekt'\]"):
        load_studies(studies)


def test_the_studies_file_declares_every_study_and_the_public_numbers():
    studies = load_studies()
    assert [study.title for study in studies["results"]] == [
        "p_inter study", "DST-rule study", "Ablation: readout layer", "Ablation: weight initialisation",
        "Model sizes measured from the masks"]
    (published,) = studies["published"]
    assert {entry["text"] for entry in published.reference["values"]} >= {"87.04 (dense, 447 wide)"}


@pytest.mark.integration
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

    rows = _study(text, "The published setting")
    dense, matched, mixer = [0.80, 0.82], [0.81, 0.80], [0.83, 0.84]
    static = _find(rows, model__name="mixer", sparsity__name="static")
    assert [static[key] for key in ("seeds", LAST, BEST, "best epoch (mean)", VS_DENSE,
                                    "vs model=dense, best_test_accuracy (points, paired by seed, 95% CI)",
                                    VS_MATCHED)] == [
        "1, 2", "83.50 ± 0.71", "85.50", "2.5", _paired_text(mixer, dense), _paired_text([0.85, 0.86], [0.81, 0.83]),
        _paired_text(mixer, matched)]
    public = "public re-implementation: best-epoch test accuracy % (one seed)"
    assert static[public] == "88.5–89.2 (p_inter 0–0.25)" and static["energy vs one-pass ANN"] == "25.0%"
    rewired = _find(rows, sparsity__name="dynamic")
    assert [rewired[key] for key in ("seeds", LAST, BEST, VS_DENSE, VS_MATCHED,
                                     "vs sparsity=static (points, paired by seed, 95% CI)", public)] == [
        "1", "86.00", "87.00", "+6.00 (n=1)", "+5.00 (n=1)", "+3.00 (n=1)", ""], \
        "one seed: differences without an interval; the DST rule against its static model"
    assert _find(rows, model__name="dense_matched")["hidden width"] == "400"
    assert _find(rows, model__name="dense_matched")[public] == "87.04 (dense, 447 wide)"
    assert _find(rows, model__name="dense")[VS_DENSE] == ""


def test_write_page_names_an_unknown_section(fake_store, tmp_path):
    client, _ = fake_store
    with pytest.raises(ValueError, match=r"section='best' is not one of \['results', 'published'.*\] \(g2g/reporting/"):
        write_page(client, "published", tmp_path / "results.md", "cmd", section="best")
    new_page = write_page(client, "published", tmp_path / "new" / "results.md", "cmd", section="published")
    assert "| mixer | 0.0 | dynamic |" in new_page.read_text(), "a missing page is created with the section's markers"
    page = tmp_path / "no_markers.md"
    page.write_text(f"{START}\n{END}\n")
    with pytest.raises(ValueError, match="has no <!-- published:start --> ... <!-- published:end --> markers"):
        write_page(client, "published", page, "cmd", section="published")

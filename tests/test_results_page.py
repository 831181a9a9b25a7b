"""docs/results.md generation: real tiny runs in a real MLflow store, then the report command."""

import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import compose_config, write_fashion_mnist
from g2g.run.job import run_job
from g2g.models.network import SpikingNetwork
from g2g.reporting.results_page import END, START

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
    accuracies = {key: summary["test_accuracy"] for key, summary in summaries.items()}
    dense = [accuracies[("model=dense", s)] for s in SEEDS]
    mixer = [accuracies[("model=mixer model.p_inter=0.1", s)] for s in SEEDS]
    cells = _row(text, "| mixer | 0.1 |", "p_inter study")
    assert cells[2] == f"{100 * statistics.mean(mixer):.2f} ± {100 * statistics.stdev(mixer):.2f}"
    assert cells[3] == f"{100 * (statistics.mean(mixer) - statistics.mean(dense)):+.2f}"
    assert cells[4] == "2"
    # parameters measured from the masks: what the model of each seed has, averaged
    counts = [SpikingNetwork(784, 16, 10, connectivity="mixer", p_inter=0.1, mask_seed=s).parameter_counts() for s in SEEDS]
    assert cells[6] == f"{statistics.mean(c['parameters_total'] for c in counts):,.0f}"
    assert _row(text, "| dense |  |", "p_inter study")[5] == "100.0%"

    # DST study: the rule against the static model it rewires
    dynamic = [accuracies[(" ".join(RUNS[3]), s)] for s in SEEDS]
    cells = _row(text, "| mixer p=0.1 | set | hebb |", "DST-rule study")
    assert cells[4] == f"{100 * (statistics.mean(dynamic) - statistics.mean(mixer)):+.2f}"
    assert _row(text, "| mixer p=0.1 | static |", "DST-rule study")[5] == "2"
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
    assert missing.returncode == 1 and "no MLflow experiment named 'nope'" in missing.stderr
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
    assert "the runs differ in hidden_dim (16, 24)" in mixed.stderr and "tracking.experiment" in mixed.stderr
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

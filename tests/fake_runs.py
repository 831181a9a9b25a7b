"""Runs logged by hand into a real MLflow store, with params, metrics and tags named as
the training logs them (the flattened resolved config as params: ``model.beta``,
``train.batch_size``; per-epoch metrics; ``g2g.*`` tags), so the reports read them on
their real code paths without training a network."""

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

#: params every hand-logged run shares (as the training logs its flattened config)
BASE_PARAMS = {"dataset.name": "fashionmnist", "dataset.train_subset": "None", "encoder.name": "current",
               "encoder.num_steps": "4", "model.hidden_dim": "16", "model.beta": "0.9", "train.epochs": "3",
               "train.batch_size": "16", "train.lr": "0.0005", "protocol.name": "holdout", "sparsity.name": "static",
               "regularizer.name": "none", "tracking.experiment": "fake"}
#: what a sparse model option adds (conf/model/mixer.yaml)
SPARSE_PARAMS = {"model._target_": "g2g.models.network.SpikingNetwork", "model.num_groups": "8",
                 "model.p_intra": "1.0", "model.readout": "masked", "model.weight_init": "fan_in",
                 "protocol.validation_fraction": "0.0"}


def log_run(client: MlflowClient, experiment_id: str, params: dict, metrics: dict, *, epochs_tag: str | None = None,
            parent_run_id: str | None = None, status: str = "FINISHED") -> str:
    """One run with ``params``, ``metrics`` (a list value: one per epoch, the last is the
    run's) and the tags the reports read; a child of ``parent_run_id`` (a sweep's job,
    named and tagged by its overrides) when given. Returns its run id."""
    overrides = " ".join(f"{k}={v}" for k, v in params.items())
    tags = ({"g2g.device": "cpu", "g2g.num_threads": "1"} | ({"g2g.epochs": epochs_tag} if epochs_tag else {})
            | ({"mlflow.parentRunId": parent_run_id, "g2g.overrides": overrides} if parent_run_id else {}))
    run_id = client.create_run(experiment_id, run_name=overrides, tags=tags).info.run_id
    series = [Metric(key, value, 0, step) for key, values in metrics.items()
              for step, value in enumerate(values if isinstance(values, list) else [values])]
    client.log_batch(run_id, metrics=series + [Metric("epoch_time_s", 2.0, 0, step) for step in range(3)],
                     params=[Param(key, value) for key, value in params.items()])
    client.set_terminated(run_id, status)
    return run_id


def mixer_params(seed: int, **options: str) -> dict:
    """A mixer run's params at p_inter 0.15 (``options``: other params, dotted keys)."""
    return BASE_PARAMS | SPARSE_PARAMS | {"seed": str(seed), "model.name": "mixer", "model.connectivity": "mixer",
                                          "model.p_inter": "0.15"} | options


def dense_params(seed: int, **options: str) -> dict:
    """A dense run's params (no p_inter, readout or groups: conf/model/dense.yaml)."""
    return BASE_PARAMS | {"seed": str(seed), "model.name": "dense", "model.connectivity": "dense",
                          "model._target_": "g2g.models.network.SpikingNetwork", "model.weight_init": "fan_in",
                          "protocol.validation_fraction": "0.0"} | options


def sweep(client: MlflowClient, experiment_id: str, jobs: list[tuple[dict, dict]]) -> str:
    """A sweep's parent run (tag ``g2g.sweep``) with one finished child per (params, metrics)."""
    parent = client.create_run(experiment_id, run_name="sweep", tags={"g2g.sweep": "true"}).info.run_id
    for params, metrics in jobs:
        log_run(client, experiment_id, params, metrics, parent_run_id=parent)
    client.set_terminated(parent, "FINISHED")
    return parent


def table(text: str, after: str = "") -> list[dict[str, str]]:
    """The first Markdown table of ``text`` after the line ``after`` (from the start when
    empty), as one dict per row (header -> cell)."""
    lines = text.split(after, 1)[1].splitlines() if after else text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    headers, _, *cells = rows
    return [dict(zip(headers, row)) for row in cells]

"""Every config option composes and instantiates; bad values are refused with the
key, the value and what is allowed, before any work."""

import dataclasses
import os
import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import CONF_DIR, REPO_ROOT, TINY, compose_config
from g2g.build.objects import instantiate_option
from g2g.config.validation import ConfigError, validate
from g2g.run.job import run_job

GROUPS = sorted(
    folder.name for folder in CONF_DIR.iterdir()
    if folder.is_dir() and folder.name not in ("hydra",)
)


def _options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def test_groups_are_the_documented_ones():
    assert set(GROUPS) >= {"dataset", "model", "sparsity", "encoder", "features",
                           "regularizer", "protocol", "hardware", "experiment"}


@pytest.mark.integration
@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_option_composes_validates_and_builds(group, option):
    # dynamic sparsity needs a sparse model (the default model is dense); ResNet features need CIFAR
    # (a study's grid chooses the model of each job: dst_rules rewires sparse models)
    needs = {"sparsity": ["model=mixer"], "features": ["dataset=cifar10"], "study": ["model=mixer"]}
    cfg = compose_config([f"{group}={option}"] + needs.get(group, []))
    if group == "hardware" and option != "cpu":
        assert cfg.hardware.device == option
        cfg.hardware.device = "cpu"  # the device itself may be absent here; its selection is tested elsewhere
    validate(cfg)
    if group not in ("experiment", "hparams_search", "study"):  # overlays of the other groups (@package _global_)
        assert dataclasses.is_dataclass(OmegaConf.get_type(cfg[group])), "every option has a structured schema"
    encoder = instantiate_option(cfg.encoder)
    sequence = encoder(torch.rand(3, 12))
    assert sequence.shape == (cfg.encoder.num_steps, 3, 12)
    model = instantiate_option(cfg.model, input_dim=12, num_classes=10, mask_seed=cfg.seed)
    assert (model.name, model.connectivity) == (cfg.model.name, cfg.model.get("connectivity", "dense"))
    assert model(sequence).counts.shape == (3, 10)
    optimizer = instantiate(cfg.train.optimizer)(model.parameters())
    assert optimizer.defaults["lr"] == cfg.train.lr
    sparsity = instantiate_option(cfg.sparsity)
    assert (sparsity is None) == (cfg.sparsity.name == "static")
    if sparsity is not None:
        assert sparsity(model=model, optimizer=optimizer, seed=cfg.seed, total_steps=100).prune == cfg.sparsity.prune
    regularizer = instantiate_option(cfg.regularizer)
    assert (regularizer is None) == (cfg.regularizer.name == "none")
    assert (instantiate_option(cfg.features) is None) == (cfg.features.name == "raw")
    assert instantiate_option(cfg.hardware).device == cfg.hardware.device


def test_defaults_follow_the_seed():
    cfg = compose_config([], tiny=False)
    assert (cfg.dataset.name, cfg.model.name, cfg.sparsity.name, cfg.encoder.name) == (
        "fashionmnist", "dense", "static", "current")
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.encoder.num_steps, cfg.model.hidden_dim) == (20, 256, 50, 2048)
    assert (cfg.encoder.scale, cfg.encoder.bias, cfg.seed) == (1.0, 0.0, 42)
    sparse = compose_config(["model=mixer"], tiny=False)
    assert (sparse.model.p_inter, sparse.model.p_intra, sparse.model.num_groups) == (0.15, 1.0, 8)


BAD_OVERRIDES = [
    ("model=mixer model.p_inter=1.5", "model.p_inter=1.5", "probability in [0, 1]"),
    ("model=index model.p_inter=-0.1", "model.p_inter=-0.1", "probability in [0, 1]"),
    ("model=random model.p_intra=2", "model.p_intra=2", "probability in [0, 1]"),
    ("model=mixer model.hidden_dim=4", "model.hidden_dim=4", ">= model.num_groups"),
    ("model.hidden_dim=0", "model.hidden_dim=0", "positive integer"),
    ("model=index model.num_groups=0", "model.num_groups=0", "positive integer"),
    ("encoder.num_steps=0", "encoder.num_steps=0", "positive integer"),
    ("encoder.num_steps=-5", "encoder.num_steps=-5", "positive integer"),
    ("train.batch_size=0", "train.batch_size=0", "positive integer"),
    ("train.epochs=-1", "train.epochs=-1", "positive integer"),
    ("train.lr=0", "train.lr=0", "> 0"),
    ("dataset.name=mnist", "dataset.name='mnist'", "fashionmnist, cifar10, cifar100"),
    ("dataset.train_subset=0", "dataset.train_subset=0", "positive integer"),
    ("model.beta=1.2", "model.beta=1.2", "probability in [0, 1]"),
    ("model.threshold=0", "model.threshold=0", "> 0"),
    ("hardware.device=tpu", "hardware.device='tpu'", "auto, cpu, cuda, directml"),
    ("hardware.num_threads=0", "hardware.num_threads=0", "positive integer"),
    ("encoder.scale=nan", "encoder.scale=nan", "finite number"),
    ("encoder.bias=inf", "encoder.bias=inf", "finite number"),
    ("seed=-1", "seed=-1", "integer >= 0"),
    ("train.eval_batch_size=0", "train.eval_batch_size=0", "positive integer"),
    ("train.lr=-0.001", "train.lr=-0.001", "> 0"),
    ("sparsity=dynamic", "sparsity=dynamic with model='dense'", "nothing to rewire"),
    ("features=resnet32", "features=resnet32 with dataset='fashionmnist'", "CIFAR images"),
    ("dataset=cifar10 features=resnet32 features.weights=/nonexistent.pt",
     "features.weights='/nonexistent.pt'", "existing state dict"),
    ("protocol=crossval protocol.k_folds=1", "protocol.k_folds=1", "integer >= 2"),
    ("regularizer=firing_rate regularizer.target_end=1.5", "regularizer.target_end=1.5", "[0, 1]"),
    ("regularizer=firing_rate regularizer.warmup_epochs=-1", "regularizer.warmup_epochs=-1", ">= 0"),
]


UNUSED_OR_MISSING_KEYS = [
    ("+sparsity.prune=hebb", "sparsity.prune='hebb': sparsity=static does not use this key",
     "belongs to sparsity=dynamic"),
    ("+sparsity.update_interval=5", "sparsity.update_interval=5: sparsity=static does not use this key",
     "belongs to sparsity=dynamic"),
    ("+model.p_inter=0.1", "model.p_inter=0.1: model=dense does not use this key",
     "model=index / model=mixer / model=random"),
    ("+train.momentum=0.9", "train.momentum=0.9: 'train' does not use this key", "its keys are: epochs"),
    ("model=index model.p_inter=???", "model.p_inter: required", "no value"),
]
BAD_OVERRIDES += UNUSED_OR_MISSING_KEYS


@pytest.mark.integration
@pytest.mark.parametrize("overrides, key_and_value, allowed", BAD_OVERRIDES)
def test_bad_value_is_refused_naming_key_value_and_allowed(overrides, key_and_value, allowed, tmp_path):
    cfg = compose_config(overrides.split(), tmp_path)
    with pytest.raises(ConfigError) as error:
        run_job(cfg)
    assert key_and_value in str(error.value) and allowed in str(error.value)
    assert not (tmp_path / "mlflow.db").exists(), "nothing may start before validation"
    assert not (tmp_path / "checkpoints").exists()


WRONG_TYPES = [
    ("model=mixer model.p_inter=abc", "model.p_inter=abc"),
    ("hardware.deterministic=maybe", "hardware.deterministic=maybe"),
    ("encoder.num_steps=2.5", "encoder.num_steps=2.5"),
    ("model.p_inter=0.1", "model.p_inter"),
    ("sparsity.prune=hebb", "sparsity.prune"),
]


@pytest.mark.parametrize("overrides, named", WRONG_TYPES)
def test_wrong_type_or_unknown_key_is_refused_while_composing(overrides, named):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as error:
        compose_config(overrides.split())
    assert named in str(error.value)


@pytest.mark.integration
def test_command_line_stops_at_once_on_bad_value(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "run.py"), "model=mixer", "model.p_inter=1.5",
         f"hydra.run.dir={tmp_path / 'out'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "model.p_inter=1.5" in result.stderr and "[0, 1]" in result.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_unknown_dataset_group_option_is_refused_listing_the_choices(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "run.py"), "dataset=mnist", f"hydra.run.dir={tmp_path / 'out'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "dataset/mnist" in result.stderr and "fashionmnist" in result.stderr


def test_configuration_page_table_is_generated_from_conf():
    from g2g.config_docs import main, table

    assert main(["--check"]) == 0, "run: python -m g2g.config_docs --write"
    rows = table()
    assert "| `model.p_inter` (with model=dense_matched\\|index\\|mixer\\|random) | `0.15` |" in rows
    assert "| `sparsity.update_interval` (with sparsity=dynamic) | `1000` |" in rows


def test_removing_a_whole_group_is_refused_listing_its_options(tmp_path):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "run.py"), "~model"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the model group cannot be removed" in result.stderr
    assert "model=dense / model=dense_matched / model=index" in result.stderr


@pytest.mark.parametrize("removal", ["~model.num_groups", "~model.p_inter", "~model.p_inter=0.15"])
def test_removing_a_required_key_is_refused_before_any_work_naming_the_options(removal, tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "run.py"), "model=index", removal, f"hydra.run.dir={tmp_path / 'out'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    key = removal[1:].split("=")[0]
    assert result.returncode == 2
    assert f"{key} cannot be removed" in result.stderr and "model=index / model=mixer / model=random" in result.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "out").exists()


@pytest.mark.integration
def test_following_hydras_append_hint_for_another_options_key_says_where_it_belongs(tmp_path):
    refused = subprocess.run(
        [sys.executable, str(REPO_ROOT / "run.py"), "model.p_inter=0.1", f"hydra.run.dir={tmp_path / 'out'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert refused.returncode == 1 and "+model.p_inter=0.1" in refused.stderr  # Hydra's hint
    followed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "run.py"), "+model.p_inter=0.1", f"hydra.run.dir={tmp_path / 'out'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert followed.returncode == 2
    assert ("model=dense does not use this key; it belongs to model=dense_matched / model=index / model=mixer / "
            "model=random") in followed.stderr
    assert not (tmp_path / "mlflow.db").exists()


# --- interpolations: one that does not resolve is a config error, named with its key ---------

BROKEN_INTERPOLATIONS = [
    ("train.lr=${model.p_inter}", "train.lr='${model.p_inter}'",
     "there is no key model.p_inter: model=dense does not have p_inter (model=dense_matched / model=index"),
    ("model=index train.lr=${model.nope}", "train.lr='${model.nope}'", "there is no key model.nope"),
    ("+notes=${nope}", "notes='${nope}'", "there is no key nope"),
    ("tracking.experiment=${nope}", "tracking.experiment='${nope}'", "there is no key nope"),
    ("dataset.root=${oc.env:G2G_UNSET_VARIABLE}", "dataset.root='${oc.env:G2G_UNSET_VARIABLE}'",
     "Environment variable 'G2G_UNSET_VARIABLE' not found"),
    ("train.epochs=${oc.decode:abc}", "train.epochs='${oc.decode:abc}'",
     "Value 'abc' of type 'str' could not be converted to Integer"),
    ("train.lr=${no_such_resolver:1}", "train.lr='${no_such_resolver:1}'",
     "there is no resolver named 'no_such_resolver'"),
    ("checkpoint.dir=${G2G_SET_VARIABLE}/c", "checkpoint.dir='${G2G_SET_VARIABLE}/c'",
     "there is no key G2G_SET_VARIABLE (for the environment variable write ${oc.env:G2G_SET_VARIABLE})"),
]


@pytest.mark.parametrize("overrides, key_and_value, reason", BROKEN_INTERPOLATIONS)
def test_an_interpolation_that_does_not_resolve_is_a_config_error_naming_the_key(overrides, key_and_value, reason,
                                                                                 tmp_path, monkeypatch):
    monkeypatch.setenv("G2G_SET_VARIABLE", str(tmp_path))
    cfg = compose_config(overrides.split(), tmp_path)
    with pytest.raises(ConfigError) as error:
        run_job(cfg)
    assert f"{key_and_value}: cannot be resolved: {reason}" in str(error.value)
    assert "an interpolation names a key of this config" in str(error.value)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "checkpoints").exists()


def test_a_value_that_refers_to_a_broken_one_says_so():
    cfg = compose_config(["train.lr=${model.p_inter}"])
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert "train.optimizer.lr='${train.lr}': cannot be resolved: it refers to train.lr" in str(error.value)


def _run_py(tmp_path, *arguments: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    return subprocess.run([sys.executable, str(REPO_ROOT / "run.py"), *arguments], cwd=tmp_path,
                          env={**environment, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)


@pytest.mark.integration
def test_command_line_interpolation_error_is_one_config_error_not_a_traceback(tmp_path):
    result = _run_py(tmp_path, "experiment=quick", "train.lr=${model.p_inter}", f"hydra.run.dir={tmp_path / 'out'}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "InterpolationKeyError" not in result.stderr
    assert result.stderr.startswith("error: invalid configuration:\n  train.lr='${model.p_inter}': cannot be resolved")
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.integration
def test_sweep_job_with_an_interpolation_error_is_a_failed_job_with_a_config_error(tmp_path):
    from mlflow.tracking import MlflowClient

    sweep = "train.lr=${model.p_inter},${nope}"
    result = _run_py(tmp_path, "-m", sweep, *TINY, "hydra.launcher.n_jobs=1",
                     f"hydra.sweep.dir={tmp_path / 'multirun'}")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "UserWarning" not in result.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("g2g").experiment_id])
    (parent,) = [run for run in runs if run.data.tags.get("g2g.sweep") == "true"]
    assert parent.info.status == "FAILED" and parent.data.metrics["sweep_failed_jobs"] == 2
    assert sweep in parent.data.tags["g2g.sweep_overrides"], "the sweep's overrides as typed, not resolved"
    errors = sorted(run.data.tags["g2g.error"] for run in runs if run.data.tags.get("mlflow.parentRunId"))
    assert [error.split("\n")[:2] for error in errors] == [
        ["ConfigError: invalid configuration:", "  train.lr='${model.p_inter}': cannot be resolved: there is no key "
         "model.p_inter: model=dense does not have p_inter (model=dense_matched / model=index / model=mixer / "
         "model=random do)"],
        ["ConfigError: invalid configuration:", "  train.lr='${nope}': cannot be resolved: there is no key nope"]]


def test_sweep_with_an_interpolation_error_in_what_the_launcher_reads_stops_before_any_job(tmp_path):
    result = _run_py(tmp_path, "-m", "tracking.experiment=${nope}", "seed=1,2", *TINY,
                     f"hydra.sweep.dir={tmp_path / 'multirun'}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "error: invalid configuration:\n  tracking.experiment='${nope}': cannot be resolved" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "multirun").exists()

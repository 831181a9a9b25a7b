"""Hyperparameter search (hparams_search=NAME, the Optuna sweeper): the search space as
the official sweeper reads it, the refusals before any trial, and tiny searches end to end
through run.py: trials in parallel, pruning, several objectives, a study resumed after
Ctrl-C without rerunning finished trials."""

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from conftest import REPO_ROOT, interrupt, write_fashion_mnist
from g2g.search.study import SearchConfigError, SearchSettings, check_settings, override_value
from hydra_plugins.g2g_optuna_sweeper.optuna_sweeper import search_space

#: the search space is the command line's only (lif_quick's params dropped), each point asked once
BRUTE_FORCE = ["~hydra.sweeper.params", "hydra.sweeper.sampler._target_=optuna.samplers.BruteForceSampler",
               "~hydra.sweeper.sampler.n_startup_trials"]
TINY = ["model.hidden_dim=16", "encoder.num_steps=4", "train.batch_size=16", "train.eval_batch_size=16",
        "train.progress=false", "hardware=cpu", "dataset.download=false"]


def test_the_search_space_reads_the_official_sweepers_syntax():
    space, fixed = search_space(OverridesParser.create(), {
        "train.lr": "tag(log, interval(0.0001, 0.01))",
        "model.beta": "interval(0.5, 0.99)",
        "train.batch_size": "int(interval(8, 64))",
        "model.hidden_dim": "range(16, 64, 16)",
        "model.readout": "choice(masked, dense)",
        "model.num_groups": "4,8",
        "train.epochs": "3",
    }, ["model.beta=interval(0.6, 0.9)", "seed=7"])
    assert space == {
        "train.lr": FloatDistribution(0.0001, 0.01, log=True),
        "model.beta": FloatDistribution(0.6, 0.9),  # the command line wins over hydra.sweeper.params
        "train.batch_size": IntDistribution(8, 64),
        "model.hidden_dim": IntDistribution(16, 64, step=16),  # inclusive, as the official sweeper
        "model.readout": CategoricalDistribution(["masked", "dense"]),
        "model.num_groups": CategoricalDistribution([4, 8]),
    }
    assert fixed == ["train.epochs=3", "seed=7"]


@pytest.mark.parametrize(("value", "text"), [(0.1, "0.1"), (1e-05, "1e-05"),
                                             (0.30000000000000004, "0.30000000000000004"),
                                             (4, "4"), (True, "true"), (None, "null"), ("dense", "dense")])
def test_a_sampled_value_becomes_the_override_that_gives_back_the_same_value(value, text):
    assert override_value(value) == text
    (override,) = OverridesParser.create().parse_overrides([f"key={text}"])
    assert override.value() == value


def _check(objectives=("val_accuracy",), directions=("maximize",), allow=False, protocol="holdout", fraction=0.1,
           pruner=None):
    check_settings(tuple(objectives), tuple(directions), allow_test_objective=allow, protocol=protocol,
                   validation_fraction=fraction, pruner=pruner)


def test_a_search_refuses_to_select_on_the_test_split_unless_allowed():
    with pytest.raises(SearchConfigError, match=r"hydra.sweeper.objective=test_accuracy is measured on the test "
                                                r"split.*val_accuracy.*allow_test_objective=true"):
        _check(objectives=("test_accuracy",))
    with pytest.raises(SearchConfigError, match="best_test_accuracy"):
        _check(objectives=("best_test_accuracy",))
    _check(objectives=("test_accuracy",), allow=True)


def test_a_search_refuses_a_validation_objective_without_a_validation_split():
    with pytest.raises(SearchConfigError, match=r"needs a validation split.*protocol.validation_fraction=0.0.*"
                                                r"set protocol.validation_fraction"):
        _check(fraction=0.0)
    _check(objectives=("cv_val_accuracy_mean",), protocol="crossval", fraction=0.0)
    with pytest.raises(SearchConfigError, match="cv_val_accuracy_mean"):
        _check(objectives=("val_accuracy",), protocol="crossval")


def test_a_search_refuses_mismatched_directions_and_pruning_several_objectives():
    with pytest.raises(SearchConfigError, match=r"hydra.sweeper.direction=\['maximize'\] must give one of maximize, "
                                                r"minimize for each objective"):
        _check(objectives=("val_accuracy", "energy_nj"))
    with pytest.raises(SearchConfigError, match="maximise"):
        _check(directions=("maximise",))
    with pytest.raises(SearchConfigError, match="Optuna prunes single-objective studies only"):
        _check(objectives=("val_accuracy", "energy_nj"), directions=("maximize", "minimize"),
               pruner={"_target_": "optuna.pruners.MedianPruner"})
    _check(objectives=("val_accuracy", "energy_nj"), directions=("maximize", "minimize"),
           pruner={"_target_": "optuna.pruners.NopPruner"})


# --- end to end, through run.py -------------------------------------------------------

def _command(arguments: list[str]) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "run.py"), *arguments]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _run(arguments: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(_command(arguments), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_env())


def _study(workdir: Path, sweep_dir: Path) -> optuna.Study:
    settings = SearchSettings.read(sweep_dir)
    assert Path(settings.storage) == workdir / "optuna_studies.log", "the study lives beside the MLflow store"
    return optuna.load_study(study_name=settings.study_name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(settings.storage)))


def _children(workdir: Path) -> list:
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("g2g").experiment_id])
    return [run for run in runs if "mlflow.parentRunId" in run.data.tags]


def test_a_test_split_objective_is_refused_before_any_trial(workdir):
    result = _run(["hparams_search=lif_quick", *TINY, "hydra.sweeper.objective=test_accuracy"], workdir)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "error: hydra.sweeper.objective=test_accuracy is measured on the test split" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (workdir / "mlflow.db").exists(), "refused before the sweep's MLflow run"
    assert not (workdir / "optuna_studies.log").exists() and not (workdir / "checkpoints").exists()


@pytest.mark.integration
def test_a_search_runs_trials_in_parallel_and_a_pruned_trial_is_not_a_failure(workdir):
    # the brute-force sampler asks each width once; the threshold pruner stops every trial that
    # reaches epoch 2 (no accuracy exceeds 1.01)
    sweep_dir = workdir / "multirun"
    arguments = ["hparams_search=lif_quick", *TINY, *BRUTE_FORCE, "train.epochs=3", "model.hidden_dim=choice(16,17)",
                 f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
                 "hydra.launcher.n_jobs=2", "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
                 "~hydra.sweeper.pruner.n_startup_trials", "+hydra.sweeper.pruner.lower=1.01"]
    result = _run(arguments, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    study = _study(workdir, sweep_dir)
    assert sorted(t.params["model.hidden_dim"] for t in study.trials) == [16, 17]
    assert [t.state.name for t in study.trials] == ["PRUNED", "PRUNED"]
    assert all(t.intermediate_values.keys() == {1, 2} for t in study.trials), "reported each epoch, stopped after 2"
    runs = {run.data.tags["g2g.trial"]: run for run in _children(workdir)}
    assert sorted(runs) == ["0", "1"]
    for number, run in runs.items():
        assert run.data.tags["g2g.trial_state"] == "PRUNED"
        assert run.info.status == "KILLED" and "g2g.error" not in run.data.tags
        assert run.data.tags["g2g.pruned"].startswith(f"pruned: trial {number} stopped by ThresholdPruner after "
                                                      "epoch 2 (val_accuracy ")
        record = json.loads((Path(run.data.tags["g2g.checkpoint"]).parent / "record.json").read_text())
        assert record["status"] == "PRUNED" and record["epochs_done"] == 2
    output = result.stdout + result.stderr
    assert output.count("Joblib.Parallel(n_jobs=2") == 1 and "is launching 2 jobs" in output, \
        "both trials went to the parallel launcher as one batch"
    summary = (sweep_dir / "search_report" / "search.md").read_text()
    assert "Trials: 2 PRUNED." in summary and "No trial completed." in summary
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    parent = next(r for r in client.search_runs([runs["0"].info.experiment_id])
                  if r.data.tags.get("g2g.sweep") == "true")
    assert parent.info.status == "FINISHED", "a pruned trial is not a failure of the search"
    assert parent.data.metrics["sweep_failed_jobs"] == 0
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "report/search")} >= {
        "report/search/search.md", "report/search/trials.csv"}


@pytest.mark.integration
def test_a_trial_that_fails_is_told_fail_and_the_search_goes_on(workdir):
    # model.beta=1.5 is refused by the job's config check (a probability): that trial fails
    sweep_dir = workdir / "multirun"
    arguments = ["hparams_search=lif_quick", *TINY, *BRUTE_FORCE, "train.epochs=1", "model.beta=choice(0.9,1.5)",
                 f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1",
                 "hydra.launcher.n_jobs=1"]
    result = _run(arguments, workdir)
    assert result.returncode == 1, "a failed trial fails the sweep, as a failed job of any sweep"
    study = _study(workdir, sweep_dir)
    states = {t.params["model.beta"]: t.state.name for t in study.trials}
    assert states == {0.9: "COMPLETE", 1.5: "FAIL"}, "the search went on after the failed trial"
    runs = {run.data.tags["g2g.trial"]: run for run in _children(workdir)}
    failed = runs[str(next(t.number for t in study.trials if t.state.name == "FAIL"))]
    assert failed.info.status == "FAILED" and failed.data.tags["g2g.trial_state"] == "FAIL"
    assert "model.beta" in failed.data.tags["g2g.error"]
    summary = (sweep_dir / "search_report" / "search.md").read_text()
    assert "Trials: 1 COMPLETE, 1 FAIL." in summary and "model.beta=0.9 hydra.mode=RUN" in summary


@pytest.mark.integration
def test_a_two_objective_search_writes_its_pareto_front(workdir):
    sweep_dir = workdir / "multirun"
    arguments = ["hparams_search=accuracy_energy", *TINY, "train.epochs=1", f"hydra.sweep.dir={sweep_dir}",
                 "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2", "hydra.launcher.n_jobs=2"]
    result = _run(arguments, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    study = _study(workdir, sweep_dir)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert all(len(t.values) == 2 for t in study.trials)
    summary = (sweep_dir / "search_report" / "search.md").read_text()
    front = study.best_trials
    assert f"Pareto front: {len(front)} of 3 complete trials." in summary
    assert all(f"| {t.number} |" in summary for t in front)
    assert (sweep_dir / "search_report" / "pareto_front.png").stat().st_size > 0


def _checkpoints(workdir: Path) -> int:
    """Run folders with a checkpoint (read from the file system: a client of the MLflow
    store would race the command's own creation of it)."""
    return len(list((workdir / "checkpoints").glob("*/checkpoint.pth")))


@pytest.mark.integration
def test_a_search_stopped_by_ctrl_c_continues_with_the_same_command_without_rerunning_finished_trials(tmp_path):
    write_fashion_mnist(tmp_path / "data", num_train=1500, num_test=32)
    arguments = ["hparams_search=lif_quick", *TINY, "train.epochs=3", "train.batch_size=8",
                 "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1", "hydra.launcher.n_jobs=1",
                 "hardware.num_threads=1"]
    # trial 0 finished, and trial 1 (the trials run one at a time) has a checkpoint
    status, output = interrupt(_command([*arguments, f"hydra.sweep.dir={tmp_path / 'multirun1'}"]), tmp_path, _env(),
                               lambda: _checkpoints(tmp_path) >= 2, "trial 1's first checkpoint")
    assert status == 130, output[-3000:]
    first = _study(tmp_path, tmp_path / "multirun1")
    assert [t.state.name for t in first.trials] == ["COMPLETE", "RUNNING"]
    stopped_params = first.trials[1].params

    again = _run([*arguments, f"hydra.sweep.dir={tmp_path / 'multirun2'}"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    study = _study(tmp_path, tmp_path / "multirun2")
    assert study.study_name == first.study_name, "the same command continues the same study"
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert study.trials[1].user_attrs["g2g_interrupted"] is True
    assert study.trials[2].params == stopped_params, "the stopped trial is asked again with its parameters"
    jobs = json.loads((tmp_path / "multirun2" / ".g2g_jobs.json").read_text())["jobs"]
    assert len(jobs) == 2, "trial 0 is not run again: the second command ran the stopped trial and one new one"
    logs = "".join(p.read_text() for p in (tmp_path / "multirun2").glob("*/run.log"))
    assert logs.count("resuming after epoch") == 1, "the stopped trial resumed from its checkpoint"
    summary = (tmp_path / "multirun2" / "search_report" / "search.md").read_text()
    best = study.best_trial
    assert "Trials: 3 COMPLETE, 1 FAIL (1 stopped by a command and asked again)." in summary
    assert f"Best trial {best.number}: val_accuracy {best.value:.4f}." in summary
    command = next(line for line in summary.splitlines() if line.startswith("python run.py "))
    assert command.startswith("python run.py hparams_search=lif_quick ") and command.endswith(" hydra.mode=RUN")
    assert all(f"{key}={value!r}" in command for key, value in best.params.items())


def _finished_search(folder: Path, objectives: tuple[str, ...] = ("val_accuracy",)) -> optuna.Study:
    """A search folder whose study (a journal file) has two completed trials, as a search leaves it."""
    storage = str(folder / "optuna_studies.log")
    SearchSettings("s", storage, objectives, ("maximize",) * len(objectives)).write(folder)
    study = optuna.create_study(study_name="s", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(storage)), directions=["maximize"] * len(objectives))
    for value in (0.5, 0.75):
        trial = study.ask({"train.lr": FloatDistribution(1e-4, 1e-2, log=True),
                           "model.hidden_dim": CategoricalDistribution([16, 32])})
        assert trial.params  # asked
        study.tell(trial, [value] * len(objectives))
    return study


def test_the_best_trial_is_printed_as_overrides_to_train_it_again(tmp_path, capsys):
    from g2g.search.__main__ import main

    study = _finished_search(tmp_path)
    best = study.best_trial.params
    assert main(["best", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [f"train.lr={override_value(best['train.lr'])}", f"model.hidden_dim={best['model.hidden_dim']}"]


def test_best_refuses_a_folder_without_a_search_and_a_study_with_several_objectives(tmp_path, capsys):
    from g2g.search.__main__ import main

    assert main(["best", str(tmp_path)]) == 2
    assert "no search ran in" in capsys.readouterr().err
    _finished_search(tmp_path, objectives=("val_accuracy", "energy_nj"))
    assert main(["best", str(tmp_path)]) == 2
    assert "2 objectives (val_accuracy, energy_nj): no single best trial" in capsys.readouterr().err

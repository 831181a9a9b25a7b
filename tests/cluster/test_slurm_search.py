"""A hyperparameter search spread over SLURM jobs: its Optuna study in the same PostgreSQL as the
MLflow server, trials in parallel jobs, each job reporting its epochs to the study and
pruned there by the study's pruner."""

from __future__ import annotations

import optuna
import pytest

from g2g.search.study import SearchSettings

pytestmark = pytest.mark.integration

#: the two widths, each asked once (BruteForceSampler); the threshold pruner stops every trial
#: at epoch 2 (no accuracy exceeds 1.01)
SEARCH = ["hparams_search=lif_quick", "~hydra.sweeper.params", "model.hidden_dim=choice(16,17)",
          "hydra.sweeper.sampler._target_=optuna.samplers.BruteForceSampler", "~hydra.sweeper.sampler.n_startup_trials",
          "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner", "~hydra.sweeper.pruner.n_startup_trials",
          "+hydra.sweeper.pruner.lower=1.01", "train.epochs=3", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2"]


def test_a_search_through_slurm_keeps_its_study_in_postgresql_and_its_jobs_are_pruned_there(sweep):
    done = sweep.run(*SEARCH, f"hydra.sweeper.storage={sweep.cluster.postgres_uri}")

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    jobs = sweep.job_ids()
    assert len(jobs) == 2 and len({job.split("_")[0] for job in jobs}) == 1, "both trials in one SLURM array"
    assert [sweep.cluster.sacct_state(job) for job in jobs] == ["COMPLETED", "COMPLETED"]
    settings = SearchSettings.read(sweep.folder / "sweep")
    assert settings.storage == sweep.cluster.postgres_uri
    study = optuna.load_study(study_name=settings.study_name, storage=settings.storage)
    assert sorted(trial.params["model.hidden_dim"] for trial in study.trials) == [16, 17]
    assert [trial.state.name for trial in study.trials] == ["PRUNED", "PRUNED"]
    assert all(trial.intermediate_values.keys() == {1, 2} for trial in study.trials)
    children = sweep.children()
    assert sorted(run.data.tags["g2g.trial_state"] for run in children) == ["PRUNED", "PRUNED"]
    assert {run.info.status for run in children} == {"KILLED"}
    (parent,) = [run for run in sweep.runs() if "g2g.sweep" in run.data.tags]
    assert parent.info.status == "FINISHED"

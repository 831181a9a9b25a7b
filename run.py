"""Run one g2g experiment, or a sweep with -m. See README.md.

    python run.py model=mixer model.p_inter=0.1
    python run.py experiment=quick
    python run.py -m model=index,random,mixer model.p_inter=0.05,0.1,0.15
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        # a job of a sweep never raises: its failure or stop is recorded under the sweep's
        # parent run, and the sweep callback sets the parent's status and the exit status
        from g2g.run.sweep_job import run_sweep_job

        return run_sweep_job(cfg)

    from g2g.run.errors import USER_ERRORS, exit_code
    from g2g.run.job import run_job
    from g2g.run.signals import TrainingInterrupted

    try:
        summary = run_job(cfg)
        return summary.get("test_accuracy", summary.get("cv_val_accuracy_mean"))
    except TrainingInterrupted as stop:
        print(f"interrupted: {stop}", file=sys.stderr)
        sys.exit(128 + stop.signal_number)
    except Exception as error:
        if isinstance(error, USER_ERRORS):  # a message that says what to do; no traceback
            print(f"error: {error}", file=sys.stderr)
            sys.exit(exit_code(error))
        raise


if __name__ == "__main__":
    from g2g.run.validation import removed_key_problems

    removed = removed_key_problems(sys.argv[1:])
    if removed:  # before Hydra, whose own message for a deleted schema key says neither why nor what to do
        print("error: invalid configuration:\n  " + "\n  ".join(removed), file=sys.stderr)
        sys.exit(2)
    main()

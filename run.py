"""Run one g2g experiment, or a sweep with -m. See README.md and docs/running.md.

    python run.py model=mixer model.p_inter=0.1
    python run.py experiment=quick
    python run.py -m model=index,random,mixer model.p_inter=0.05,0.1,0.15
"""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict | float | None:
    from g2g.lifecycle.runtime import JobRuntime

    runtime = JobRuntime.read()  # Hydra's runtime, read once for the job and passed down
    if runtime.in_sweep:
        # a job of a sweep never raises: its failure or stop is recorded under the sweep's
        # parent run, and conclude_sweep (below) sets the parent's status and the exit status
        from g2g.lifecycle.sweep_job import run_sweep_job

        return run_sweep_job(cfg, runtime, _run_job)

    import signal

    from g2g.lifecycle.errors import exit_code, user_message
    from g2g.lifecycle.signals import job_signals
    from g2g.run.job import run_job

    with job_signals():  # a signal anywhere in the run goes through the run's guard
        try:
            summary = run_job(cfg, runtime)
            return summary.get("test_accuracy", summary.get("cv_val_accuracy_mean"))
        except KeyboardInterrupt as stop:  # also g2g.lifecycle.signals.TrainingInterrupted (checkpoint saved)
            print(f"interrupted: {stop or 'at once (SIGINT)'}", file=sys.stderr)
            sys.exit(128 + getattr(stop, "signal_number", signal.SIGINT))
        except Exception as error:
            message = user_message(error)
            if message is not None:  # a message that says what to do; no traceback
                print(f"error: {message}", file=sys.stderr)
                sys.exit(exit_code(error))
            raise


def _run_job(cfg: DictConfig, runtime) -> dict:
    """:func:`g2g.run.job.run_job`, imported only when a sweep job calls it (torch: inside
    the job's signal handlers, after the sweep's stop file is checked)."""
    from g2g.run.job import run_job

    return run_job(cfg, runtime)


if __name__ == "__main__":
    from g2g.config.validation import removed_key_problems

    removed = removed_key_problems(sys.argv[1:])
    if removed:  # before Hydra, whose own message for a deleted schema key says neither why nor what to do
        print("error: invalid configuration:\n  " + "\n  ".join(removed), file=sys.stderr)
        sys.exit(2)
    from g2g.tracking.sweep_callback import conclude_sweep

    status = None
    try:
        main()
    except SystemExit as end:
        status = end.code
    finally:
        # a sweep's outcome is decided here, from its jobs, on every exit path (Hydra turns
        # a callback's exceptions into warnings); a single run's status passes through
        status = conclude_sweep(status)
    sys.exit(status)

"""Run one g2g experiment (or a sweep with -m). See README.md.

    python run.py model=mixer model.p_inter=0.1
    python run.py experiment=quick
"""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from g2g.experiment import run
    from g2g.validation import ConfigError

    try:
        summary = run(cfg)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    return summary.get("test_accuracy")


if __name__ == "__main__":
    main()

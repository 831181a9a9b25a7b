"""Registers g2g's structured config schemas (:mod:`g2g.config.schema`) in Hydra's
ConfigStore. Hydra imports every module under ``hydra_plugins`` when it starts in a
process, so the schemas are there wherever a config is composed: ``run.py``, the
compose API in tests, and the worker processes of the joblib and submitit launchers."""

from g2g.config.schema import register

register()

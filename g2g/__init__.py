"""g2g: sparse group-to-group (G2G) spiking neural networks, configured with Hydra
and tracked with MLflow.

The entry point for one experiment is :func:`g2g.run.job.run_job`; ``run.py`` at the
repository root wraps it with ``@hydra.main``.
"""

__version__ = "0.1.0"

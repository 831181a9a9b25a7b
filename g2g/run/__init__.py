"""One run from a composed config: the job, the holdout and cross-validation protocols,
and the training loop."""

from g2g._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "job": ["run_job"],
    "protocols": ["holdout", "crossval", "RunContext"],
    "loop": ["fit", "evaluate"],
})

"""The SNN training loop: epochs, evaluation, the firing-rate regulariser and the
synaptic-operation and energy counts of one inference."""

from g2g._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "trainer": ["Trainer", "EpochInterrupted", "NonFiniteTrainingError", "NonFiniteLossError"],
    "regularizer": ["FiringRateRegularizer"],
    "synops": ["SynOpsCounter"],
})

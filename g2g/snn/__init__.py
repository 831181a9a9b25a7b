"""Spiking building blocks: leaky integrate-and-fire neurons, their surrogate
gradients, the fused autograd kernels they run on, and the input encoders that turn a
static input ``[B, D]`` into a sequence ``[T, B, D]``. Nothing here knows about
connectivity, training, Hydra or MLflow."""

from g2g._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "surrogate": ["Surrogate", "SURROGATES", "get_surrogate"],
    "kernels": ["LIFScan", "SpikeLinear", "spike_linear"],
    "neurons": ["LIF"],
    "encoders": ["CurrentEncoder", "RateEncoder"],
})

"""Spiking building blocks: leaky integrate-and-fire neurons, their surrogate
gradients, the fused autograd kernels they run on, and the input encoders that turn a
static input ``[B, D]`` into a sequence ``[T, B, D]``. Nothing here knows about
connectivity, training, Hydra or MLflow."""

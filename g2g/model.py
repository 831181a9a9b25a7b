"""Dense and G2G-sparse LIF networks: input -> LIF(hidden) -> LIF(hidden) -> LIF(classes).

The three weight layers are ``fc1``, ``fc2``, ``fc3``. In sparse models each is a
:class:`MaskedLinear` whose 0/1 mask (a buffer, so part of the state dict) comes
from :func:`g2g.connectivity.layer_connectivity`. Each layer runs over all time steps at
once: one matmul over ``[T*B, N]`` and then a LIF scan. For a feed-forward network
this equals stepping the layers time step by time step.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from g2g.connectivity import SPARSE_MODELS, LayerConnectivity, layer_connectivity
from g2g.neurons import LIF

MODELS = ("dense",) + SPARSE_MODELS
LAYER_NAMES = ("fc1", "fc2", "fc3")


# torch marks its CSR layout "beta"; the products used here are tested against dense ones
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

#: use sparse products for binary spike inputs on the CPU when they are sparse enough
#: (measured in benchmarks/README.md; set False to always use dense matmuls)
SPARSE_SPIKE_MATMUL = True
#: spike density below which the forward product uses a CSR sparse x dense matmul
SPARSE_FORWARD_BELOW = 0.15
#: spike density below which the weight gradient uses a COO sparse x dense matmul
SPARSE_WEIGHT_GRAD_BELOW = 0.12


class SpikeLinear(torch.autograd.Function):
    """``S @ W^T + b`` for binary spikes ``S`` ``[M, K]``, using that most entries are 0.

    On the CPU, when the spike density is below :data:`SPARSE_FORWARD_BELOW` the forward
    product is a CSR sparse x dense matmul, and below :data:`SPARSE_WEIGHT_GRAD_BELOW`
    the weight gradient ``G^T S`` is computed as ``(S^T G)^T`` with S in COO form; the
    input gradient ``G W`` is always dense. The results equal the dense products up to
    float32 summation order.
    """

    @staticmethod
    def forward(ctx, spikes, weight, bias):
        density = float(spikes.sum()) / max(spikes.numel(), 1)
        ctx.spikes_csr = None
        if density < SPARSE_FORWARD_BELOW:
            spikes_csr = spikes.to_sparse_csr()
            output = torch.sparse.mm(spikes_csr, weight.t())
            if bias is not None:
                output += bias
            if density < SPARSE_WEIGHT_GRAD_BELOW:
                ctx.spikes_csr = spikes_csr  # reused by the weight gradient
        elif bias is not None:
            output = torch.addmm(bias, spikes, weight.t())
        else:
            output = spikes @ weight.t()
        ctx.save_for_backward(spikes, weight)
        ctx.density = density
        ctx.has_bias = bias is not None
        return output

    @staticmethod
    def backward(ctx, grad_output):
        spikes, weight = ctx.saved_tensors
        grad_spikes = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_spikes = grad_output @ weight
        if ctx.needs_input_grad[1]:
            if ctx.spikes_csr is not None:  # G^T S = (S^T G)^T with S in COO form
                grad_weight = torch.sparse.mm(ctx.spikes_csr.to_sparse_coo().t(), grad_output).t().contiguous()
            else:
                grad_weight = grad_output.t() @ spikes
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum(0)
        ctx.spikes_csr = None
        return grad_spikes, grad_weight, grad_bias


class MaskedLinear(nn.Linear):
    """``nn.Linear`` whose weight is multiplied by a fixed 0/1 mask.

    Masked weights are zeroed at construction and receive zero gradient, so they
    stay exactly zero under any optimizer whose update is zero for a zero gradient
    from a zero state (SGD, Adam).

    Args:
        in_features, out_features: layer sizes.
        connectivity: the G2G mask ``[out_features, in_features]`` and group labels
            (:class:`g2g.connectivity.LayerConnectivity`), or ``None`` for a dense
            layer. Mask and labels are buffers, so they are part of the state dict.
    Raises:
        ValueError: a mask of the wrong shape.
    """

    def __init__(
        self, in_features: int, out_features: int, connectivity: LayerConnectivity | None = None
    ):
        super().__init__(in_features, out_features)
        mask, in_groups, out_groups = connectivity if connectivity is not None else (None,) * 3
        if mask is not None and tuple(mask.shape) != (out_features, in_features):
            raise ValueError(
                f"mask shape {tuple(mask.shape)} != weight shape {(out_features, in_features)}"
            )
        self.register_buffer("mask", None if mask is None else mask.to(torch.float32))
        self.register_buffer("in_groups", in_groups)
        self.register_buffer("out_groups", out_groups)
        if mask is not None:
            with torch.no_grad():
                self.weight.mul_(self.mask)

    def masked_weight(self) -> torch.Tensor:
        """The effective weight ``W * M``, shape ``[out_features, in_features]``."""
        return self.weight if self.mask is None else self.weight * self.mask

    def forward(self, x: torch.Tensor, binary: bool = False) -> torch.Tensor:
        """``[..., in_features]`` -> ``[..., out_features]``.

        Args:
            binary: ``x`` holds only 0 and 1 (spikes); on the CPU this allows the
                sparse products of :class:`SpikeLinear`.
        """
        if binary and SPARSE_SPIKE_MATMUL and x.device.type == "cpu" and x.dtype == torch.float32:
            flat = x.reshape(-1, self.in_features)
            out = SpikeLinear.apply(flat, self.masked_weight(), self.bias)
            return out.view(*x.shape[:-1], self.out_features)
        return F.linear(x, self.masked_weight(), self.bias)

    def density(self) -> float:
        """Fraction of active connections (1.0 for a dense layer)."""
        return 1.0 if self.mask is None else float(self.mask.mean())

    def num_connections(self) -> int:
        """Active connections: nonzeros of the mask (``in * out`` for a dense layer)."""
        return self.weight.numel() if self.mask is None else int(self.mask.count_nonzero())

    def same_group(self) -> torch.Tensor:
        """Bool ``[out_features, in_features]``: True where input and output neuron are
        in the same group (sparse layers only)."""
        return self.out_groups[:, None] == self.in_groups[None, :]


class NetworkOutput(NamedTuple):
    """What one forward pass returns.

    counts: output spike counts summed over time, ``[B, C]`` (the logits).
    spikes: spikes of each LIF layer (hidden1, hidden2, output), each ``[T, B, N_l]``.
    """

    counts: torch.Tensor
    spikes: tuple[torch.Tensor, ...]


class SpikingNetwork(nn.Module):
    """Three-layer LIF network, dense or G2G-sparse.

    Args:
        input_dim: D, size of the encoded input.
        hidden_dim: H, neurons per hidden layer.
        num_classes: C, output neurons.
        name: model, one of ``dense``, ``index``, ``random``, ``mixer``.
        num_groups: G, groups per layer (sparse models).
        p_intra, p_inter: connection probabilities inside / between groups.
        beta, threshold, learn_beta, learn_threshold, surrogate_slope: see
            :class:`g2g.neurons.LIF`; every LIF layer has its own learnable scalars.
        mask_seed: seed of the masks (a pure function of it).
    Raises:
        ValueError: unknown model.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        num_classes: int,
        name: str = "dense",
        num_groups: int = 8,
        p_intra: float = 1.0,
        p_inter: float = 0.15,
        beta: float = 0.9,
        threshold: float = 1.0,
        learn_beta: bool = True,
        learn_threshold: bool = True,
        surrogate_slope: float = 2.0,
        mask_seed: int = 0,
    ) -> None:
        super().__init__()
        if name not in MODELS:
            raise ValueError(f"model.name={name!r} is unknown; allowed: {', '.join(MODELS)}")
        self.name = name
        sizes = [input_dim, hidden_dim, hidden_dim, num_classes]
        if name == "dense":
            wiring = [None] * 3
        else:
            wiring = layer_connectivity(sizes, name, num_groups, p_intra, p_inter, mask_seed)
        self.fc1, self.fc2, self.fc3 = (
            MaskedLinear(fan_in, fan_out, connectivity)
            for fan_in, fan_out, connectivity in zip(sizes[:-1], sizes[1:], wiring)
        )
        self.lif1, self.lif2, self.lif3 = (
            LIF(beta, threshold, learn_beta, learn_threshold, surrogate_slope) for _ in range(3)
        )

    def masked_layers(self) -> dict[str, MaskedLinear]:
        """The weight layers by name (``fc1``, ``fc2``, ``fc3``)."""
        return {name: getattr(self, name) for name in LAYER_NAMES}

    def parameter_counts(self) -> dict[str, int]:
        """Sizes measured from the masks (not estimated from p_intra/p_inter).

        Returns:
            ``connections_fc1`` ... ``connections_fc3`` (active weights per layer),
            ``connections_total``, ``parameters_total`` (values that training can make
            nonzero: active weights, biases and the learnable LIF scalars) and
            ``parameters_dense`` (the same network fully connected).
        """
        layers = self.masked_layers()
        counts = {f"connections_{name}": layer.num_connections() for name, layer in layers.items()}
        counts["connections_total"] = sum(counts.values())
        others = sum(p.numel() for name, p in self.named_parameters() if not name.endswith(".weight"))
        counts["parameters_total"] = counts["connections_total"] + others
        counts["parameters_dense"] = sum(layer.weight.numel() for layer in layers.values()) + others
        return counts

    def forward(self, inputs: torch.Tensor) -> NetworkOutput:
        """Run the network over an input sequence.

        Args:
            inputs: encoded input ``[T, B, D]``. When it is a broadcast view that is
                constant over time (stride 0 along T, as ``CurrentEncoder`` makes it),
                fc1 is computed once and broadcast, which gives the same result.
        Returns:
            :class:`NetworkOutput` with counts ``[B, C]`` and per-layer spikes.
        """
        num_steps = inputs.shape[0]
        if inputs.stride(0) == 0:
            current = self.fc1(inputs[0]).unsqueeze(0).expand(num_steps, -1, -1)
        else:
            current = self.fc1(inputs)
        spikes1 = self.lif1(current)
        spikes2 = self.lif2(self.fc2(spikes1, binary=True))
        spikes3 = self.lif3(self.fc3(spikes2, binary=True))
        return NetworkOutput(spikes3.sum(0), (spikes1, spikes2, spikes3))

"""Masked linear layers: ``nn.Linear`` with a fixed (or DST-rewired) 0/1 connectivity mask."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from g2g.snn import kernels
from g2g.snn.kernels import SpikeLinear
from g2g.sparse.connectivity import LayerConnectivity


class MaskedLinear(nn.Linear):
    """``nn.Linear`` whose weight is multiplied by a fixed 0/1 mask.

    Masked weights are zeroed at construction and receive zero gradient, so they
    stay exactly zero under any optimizer whose update is zero for a zero gradient
    from a zero state (SGD, Adam).

    Args:
        in_features, out_features: layer sizes.
        connectivity: the G2G mask ``[out_features, in_features]`` and group labels
            (:class:`g2g.sparse.connectivity.LayerConnectivity`), or ``None`` for a dense
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
        if binary and kernels.SPARSE_SPIKE_MATMUL and x.device.type == "cpu" and x.dtype == torch.float32:
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


SPIKE_MATMUL_MODES = ("auto", "dense", "sparse")  # placeholder until the snn-sparse branch merges

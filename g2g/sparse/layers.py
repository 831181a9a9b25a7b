"""Masked linear layers: ``nn.Linear`` with a fixed (or DST-rewired) 0/1 connectivity mask."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from g2g.snn.kernels import spike_linear
from g2g.sparse.connectivity import LayerConnectivity

#: how binary spike inputs are multiplied (the ``model.spike_matmul`` config key):
#: ``auto`` sparse products on the CPU in float32 (not under mixed precision) when few inputs spike (density
#: thresholds: :func:`g2g.snn.kernels.spike_linear`'s defaults), dense otherwise;
#: ``dense`` always ``F.linear``; ``sparse`` always the sparse products, at any
#: density, on any device (on CUDA, torch's cuSPARSE products) and floating dtype
SPIKE_MATMUL_MODES = ("auto", "dense", "sparse")

#: how weights and biases are initialised (the ``model.weight_init`` config key):
#: ``uniform`` nn.Linear's default, U(-1/sqrt(N_in), 1/sqrt(N_in)) from the full fan-in
#: N_in, then masked; ``fan_in`` the same with each output row's bound taken from its
#: active fan-in (the number of connected inputs), so a sparse row starts with the
#: input-current scale of a dense one. Identical for a dense layer.
WEIGHT_INITS = ("uniform", "fan_in")


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
        spike_matmul: ``auto``, ``dense`` or ``sparse``: how binary spike inputs are
            multiplied (see :data:`SPIKE_MATMUL_MODES`); the results agree up to float
            summation order.
    Raises:
        ValueError: a mask of the wrong shape, or an unknown ``spike_matmul``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        connectivity: LayerConnectivity | None = None,
        spike_matmul: str = "auto",
    ):
        if spike_matmul not in SPIKE_MATMUL_MODES:
            raise ValueError(f"model.spike_matmul={spike_matmul!r} is unknown; "
                             f"allowed: {', '.join(SPIKE_MATMUL_MODES)}")
        super().__init__(in_features, out_features)
        self.spike_matmul = spike_matmul
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

    @torch.no_grad()
    def initialize(self, weight_init: str = "uniform", generator: torch.Generator | None = None) -> None:
        """Draw the weight and bias anew from ``generator`` (:data:`WEIGHT_INITS`).

        ``uniform`` gives exactly ``nn.Linear.reset_parameters``' distribution
        (``kaiming_uniform_`` with a = sqrt(5), i.e. bound 1/sqrt(N_in), and the bias from
        the same bound); ``fan_in`` replaces N_in by each output neuron's active fan-in
        (at least 1). Masked weights are set to zero.

        Raises:
            ValueError: an unknown ``weight_init``.
        """
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"model.weight_init={weight_init!r} is unknown; allowed: {', '.join(WEIGHT_INITS)}")
        if weight_init == "uniform" or self.mask is None:
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5), generator=generator)
            bound = torch.full((self.out_features,), 1 / math.sqrt(self.in_features))
            nn.init.uniform_(self.bias, -1.0, 1.0, generator=generator)
            self.bias.mul_(bound.to(self.bias))
        else:
            bound = self.mask.sum(1).clamp(min=1).rsqrt()  # [out_features]
            nn.init.uniform_(self.weight, -1.0, 1.0, generator=generator)
            self.weight.mul_(bound[:, None])
            nn.init.uniform_(self.bias, -1.0, 1.0, generator=generator)
            self.bias.mul_(bound)
        if self.mask is not None:
            self.weight.mul_(self.mask)

    def masked_weight(self) -> torch.Tensor:
        """The effective weight ``W * M``, shape ``[out_features, in_features]``."""
        return self.weight if self.mask is None else self.weight * self.mask

    def forward(self, x: torch.Tensor, binary: bool = False) -> torch.Tensor:
        """``[..., in_features]`` -> ``[..., out_features]``.

        Args:
            binary: ``x`` holds only 0 and 1 (spikes), which allows the sparse
                products of :func:`g2g.snn.kernels.spike_linear` (see ``spike_matmul``).
        """
        mode = self.spike_matmul if binary else "dense"
        if mode == "auto" and not (x.device.type == "cpu" and x.dtype == torch.float32
                                   and not torch.is_autocast_enabled(x.device.type)):
            mode = "dense"
        if mode == "dense":
            return F.linear(x, self.masked_weight(), self.bias)
        thresholds = (math.inf, math.inf) if mode == "sparse" else ()  # auto: the measured defaults
        out = spike_linear(x.reshape(-1, self.in_features), self.masked_weight(), self.bias, *thresholds)
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, spike_matmul={self.spike_matmul}"

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



"""Synaptic operations and energy per inference: the "far fewer computations" of
sparse spiking networks made measurable.

For every weight layer with binary (spiking) input, an event-driven implementation
does one accumulate (AC) per presynaptic spike and active outgoing connection:

    SynOps_l = sum over time steps t and input neurons i of  S[t, i] * fanout_l[i]

with ``fanout_l[i]`` the number of active connections leaving input ``i`` (the mask's
column sums; N_out for a dense layer). A layer with analog input (fc1 with
current encoding) does a multiply-accumulate (MAC) per active connection and time
step: ``T * nnz(M_1)``. The dense-equivalent count is ``T * sum_l N_in * N_out``
MACs, what a non-spiking, fully connected network of the same shape does over the
same T steps.

Energy uses the widely used 45 nm CMOS figures of Horowitz (ISSCC 2014), 32-bit
floating point: an add 0.9 pJ, a multiply 3.7 pJ, so an AC costs 0.9 pJ and a MAC
4.6 pJ. Memory access is not counted.
"""

from __future__ import annotations

import torch

ENERGY_PER_AC_PJ = 0.9
ENERGY_PER_MAC_PJ = 4.6


class SynOpsCounter:
    """Accumulates presynaptic activity over evaluation batches.

    Args:
        layers: the network's weight layers in order (``model.masked_layers()``).
        analog_input: the first layer's input is an analog current (current
            encoding) rather than spikes.
    """

    def __init__(self, layers: dict, analog_input: bool) -> None:
        self.layers = layers
        self.analog_input = analog_input
        self.spike_sums = {name: None for name in layers}
        self.examples = 0
        self.num_steps = 0

    @torch.no_grad()
    def add(self, presynaptic: tuple[torch.Tensor, ...]) -> None:
        """One batch: each layer's input, ``[T, B, N_in]``."""
        self.num_steps = presynaptic[0].shape[0]
        self.examples += presynaptic[0].shape[1]
        for (name, _), pre in zip(self.layers.items(), presynaptic):
            if name == "fc1" and self.analog_input:
                continue
            counts = pre.sum(dim=(0, 1))
            self.spike_sums[name] = counts if self.spike_sums[name] is None else self.spike_sums[name] + counts

    def metrics(self) -> dict[str, float]:
        """Per inference: ``synops_{layer}`` (ACs) or ``macs_fc1`` (analog input),
        ``synops_total``, ``macs_total``, ``ops_dense_equivalent``, ``energy_nj`` and
        ``energy_dense_equivalent_nj`` (nanojoules)."""
        metrics, acs, macs, dense = {}, 0.0, 0.0, 0.0
        for name, layer in self.layers.items():
            dense += self.num_steps * layer.in_features * layer.out_features
            if layer.mask is None:
                fanout = torch.full((layer.in_features,), float(layer.out_features), device=layer.weight.device)
            else:
                fanout = layer.mask.sum(0)
            if name == "fc1" and self.analog_input:
                value = self.num_steps * float(fanout.sum())
                metrics[f"macs_{name}"] = value
                macs += value
            else:
                value = float(self.spike_sums[name] @ fanout) / max(self.examples, 1)
                metrics[f"synops_{name}"] = value
                acs += value
        metrics.update({
            "synops_total": acs, "macs_total": macs,
            "ops_dense_equivalent": dense,
            "energy_nj": (acs * ENERGY_PER_AC_PJ + macs * ENERGY_PER_MAC_PJ) / 1000,
            "energy_dense_equivalent_nj": dense * ENERGY_PER_MAC_PJ / 1000,
        })
        return metrics

"""Operations and energy of one inference, against one pass of a non-spiking network:
the "far fewer computations" of sparse spiking networks made measurable.

Counting rules, per inference (one example, all T time steps), for a network of
weight layers ``l`` (``N_in -> N_out``, mask ``M_l`` of shape ``[N_out, N_in]``), each
followed by a LIF layer of ``N_out`` neurons:

- **Spiking input** (fc2, fc3, and fc1 with rate encoding): an event-driven
  implementation does one accumulate (AC) per presynaptic spike and active outgoing
  connection,

      synops_l = sum over t and input neurons i of  S[t, i] * fanout_l[i]

  with ``fanout_l[i]`` the active connections leaving input ``i`` (the mask's column
  sums; ``N_out`` for a dense layer).
- **Constant-current input** (fc1 with current encoding, the same current at every
  step): fc1's output current is computed once, ``nnz(M_1)`` multiply-accumulates
  (MACs; ``N_in * N_out`` if dense), then added to each of fc1's ``N_out`` neurons at
  every step: ``T * N_out`` ACs (``synops_fc1_injection``).
- **LIF state update**: one multiply-add ``U = beta * U + I`` per neuron and step,
  counted at the energy of a MAC, for every LIF layer (both hidden layers and the
  output): ``lif_updates = T * sum_l N_out``.
- **Reference**: one forward pass of the non-spiking network (ANN) of the same shape,
  fully connected: ``ann_macs = sum_l N_in * N_out`` MACs (not T times: an ANN has
  no time steps).

Energy uses the 45 nm CMOS figures of Horowitz (ISSCC 2014, "Computing's energy
problem (and what we can do about it)"), 32-bit floating point: an add 0.9 pJ, a
multiply 3.7 pJ, so an AC costs 0.9 pJ and a MAC 4.6 pJ:

    energy_nj     = (0.9 * synops_total + 4.6 * (macs_total + lif_updates)) / 1000
    energy_ann_nj = 4.6 * ann_macs / 1000

Not counted, on either side: memory access (reading weights, masks and membrane
state, often the larger cost in hardware), bias additions, activation functions,
the LIF threshold comparison and reset, and the encoder (rate coding's random
draws).
"""

from __future__ import annotations

import torch

#: pJ per 32-bit float add (an accumulate) and per multiply-accumulate, 45 nm (Horowitz, ISSCC 2014)
ENERGY_PER_AC_PJ = 0.9
ENERGY_PER_MAC_PJ = 4.6

# metric names; the same strings as g2g.tracking.names.METRIC_* (g2g.training may not
# import g2g.tracking, so tests/sparse/test_connectivity.py checks they agree)
SYNOPS_PREFIX = "synops_"
MACS_PREFIX = "macs_"
INJECTION_SUFFIX = "_injection"
SYNOPS_TOTAL = "synops_total"
MACS_TOTAL = "macs_total"
LIF_UPDATES = "lif_updates"
ANN_MACS = "ann_macs"
ENERGY = "energy_nj"
ENERGY_ANN = "energy_ann_nj"


class SynOpsCounter:
    """Accumulates presynaptic activity over evaluation batches; counting rules in
    the module docstring.

    Args:
        layers: the network's weight layers in order (``model.masked_layers()``), each
            with ``in_features``, ``out_features``, ``num_connections()`` and ``mask``
            (``[N_out, N_in]`` or None for dense); each feeds one LIF layer.
        analog_input: the first layer's input is a constant current (current
            encoding), the same at every time step, rather than spikes.
    """

    def __init__(self, layers: dict, analog_input: bool) -> None:
        self.layers = layers
        self.analog_input = analog_input
        self.spike_sums = {name: None for name in layers}
        self.examples = 0
        self.num_steps = 0
        self.first = next(iter(layers))

    @torch.no_grad()
    def add(self, presynaptic: tuple[torch.Tensor, ...]) -> None:
        """One batch: each layer's input, ``[T, B, N_in]``.

        Raises:
            ValueError: with ``analog_input``, a first-layer input that changes over time.
        """
        self.num_steps = presynaptic[0].shape[0]
        self.examples += presynaptic[0].shape[1]
        for name, pre in zip(self.layers, presynaptic):
            if name == self.first and self.analog_input:
                if pre.stride(0) != 0 and not torch.equal(pre, pre[:1].expand_as(pre)):
                    raise ValueError(f"SynOpsCounter(analog_input=True): the input of {name} changes over "
                                     "time; the count assumes a constant current (current encoding)")
                continue
            counts = pre.sum(dim=(0, 1))
            self.spike_sums[name] = counts if self.spike_sums[name] is None else self.spike_sums[name] + counts

    def metrics(self) -> dict[str, float]:
        """Per inference (mean over the examples added): ``synops_{layer}`` (ACs of each
        spike-driven layer), with analog input ``macs_{first layer}`` (its one-time
        current) and ``synops_{first layer}_injection`` (``T * N_out`` ACs),
        ``synops_total`` (all ACs), ``macs_total`` (all weight MACs), ``lif_updates``,
        ``ann_macs``, ``energy_nj`` and ``energy_ann_nj`` (nanojoules)."""
        metrics, acs, macs, lif_updates, ann_macs = {}, 0.0, 0.0, 0.0, 0.0
        for name, layer in self.layers.items():
            ann_macs += layer.in_features * layer.out_features
            lif_updates += self.num_steps * layer.out_features
            if name == self.first and self.analog_input:
                current_macs = float(layer.num_connections())
                injection = float(self.num_steps * layer.out_features)
                metrics[MACS_PREFIX + name] = current_macs
                metrics[SYNOPS_PREFIX + name + INJECTION_SUFFIX] = injection
                macs += current_macs
                acs += injection
                continue
            if layer.mask is None:
                fanout = torch.full((layer.in_features,), float(layer.out_features), device=layer.weight.device)
            else:
                fanout = layer.mask.sum(0)
            spikes = self.spike_sums[name]
            value = 0.0 if spikes is None else float(spikes.to(fanout.dtype) @ fanout) / max(self.examples, 1)
            metrics[SYNOPS_PREFIX + name] = value
            acs += value
        metrics.update({
            SYNOPS_TOTAL: acs, MACS_TOTAL: macs, LIF_UPDATES: lif_updates, ANN_MACS: ann_macs,
            ENERGY: (acs * ENERGY_PER_AC_PJ + (macs + lif_updates) * ENERGY_PER_MAC_PJ) / 1000,
            ENERGY_ANN: ann_macs * ENERGY_PER_MAC_PJ / 1000,
        })
        return metrics

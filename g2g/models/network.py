"""Dense and G2G-sparse LIF networks: input -> LIF(hidden) -> LIF(hidden) -> LIF(classes).

The three weight layers are ``fc1``, ``fc2``, ``fc3``. In sparse models each is a
:class:`MaskedLinear` whose 0/1 mask (a buffer, so part of the state dict) comes
from :func:`g2g.sparse.connectivity.layer_connectivity`. Each layer runs over all time steps at
once: one matmul over ``[T*B, N]`` and then a LIF scan. For a feed-forward network
this equals stepping the layers time step by time step.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import torch
from torch import nn

from g2g.snn.neurons import LIF
from g2g.sparse.connectivity import SPARSE_MODELS, layer_connectivity
from g2g.sparse.layers import WEIGHT_INITS, MaskedLinear

log = logging.getLogger(__name__)

#: the connectivities a network can have: fully connected, or a G2G sparse model
MODELS = ("dense",) + SPARSE_MODELS
LAYER_NAMES = ("fc1", "fc2", "fc3")
#: the last layer of a sparse model (the ``model.readout`` config key): ``masked``, a G2G
#: mask like the hidden layers (the original README's Input -> Sparse -> Sparse -> Sparse(classes));
#: ``dense``, fully connected (as the public re-implementation's readout)
READOUTS = ("masked", "dense")


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
        connectivity: ``dense`` (fully connected) or a G2G sparse model, ``index``,
            ``random`` or ``mixer`` (:data:`MODELS`).
        num_groups: G, groups per layer (sparse models).
        p_intra, p_inter: connection probabilities inside / between groups.
        beta, threshold, learn_beta, learn_threshold, surrogate, surrogate_slope: see
            :class:`g2g.snn.neurons.LIF`; every LIF layer has its own learnable scalars.
        mask_seed: seed of the masks (a pure function of it).
        init_seed: seed of the initial weights and biases (a generator of their own, so
            that a weight's initial value is independent of its mask entry).
        weight_init: ``uniform`` or ``fan_in`` (:data:`g2g.sparse.layers.WEIGHT_INITS`).
        readout: ``masked`` or ``dense``: whether a sparse model's last layer (fc3) is
            G2G-masked or fully connected (:data:`READOUTS`).
        spike_matmul: ``auto``, ``dense`` or ``sparse``: how fc2 and fc3 multiply their
            spike inputs (:data:`g2g.sparse.layers.SPIKE_MATMUL_MODES`).
        lif_scan: ``loop`` or ``compiled``: how the LIF layers run over time
            (:data:`g2g.snn.kernels.LIF_SCANS`).
        name: a label for the network, e.g. the name of the model config option;
            defaults to ``connectivity``.
    Raises:
        ValueError: an unknown connectivity, weight_init, readout, surrogate or spike_matmul.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        num_classes: int,
        *,
        connectivity: str = "dense",
        num_groups: int = 8,
        p_intra: float = 1.0,
        p_inter: float = 0.15,
        beta: float = 0.9,
        threshold: float = 1.0,
        learn_beta: bool = True,
        learn_threshold: bool = True,
        surrogate: str = "atan",
        surrogate_slope: float = 2.0,
        mask_seed: int = 0,
        init_seed: int = 0,
        weight_init: str = "fan_in",
        readout: str = "masked",
        spike_matmul: str = "auto",
        lif_scan: str = "loop",
        name: str | None = None,
    ) -> None:
        super().__init__()
        for key, value, allowed in (("model.connectivity", connectivity, MODELS),
                                    ("model.weight_init", weight_init, WEIGHT_INITS),
                                    ("model.readout", readout, READOUTS)):
            if value not in allowed:
                raise ValueError(f"{key}={value!r} is unknown; allowed: {', '.join(allowed)}")
        self.connectivity = connectivity
        self.name = connectivity if name is None else name
        sizes = [input_dim, hidden_dim, hidden_dim, num_classes]
        if connectivity == "dense":
            wiring = [None] * 3
        else:
            wiring = layer_connectivity(sizes, connectivity, num_groups, p_intra, p_inter, mask_seed)
            if readout == "dense":
                wiring[-1] = None
        self.fc1, self.fc2, self.fc3 = (
            MaskedLinear(fan_in, fan_out, layer_wiring, spike_matmul)
            for fan_in, fan_out, layer_wiring in zip(sizes[:-1], sizes[1:], wiring)
        )
        init_generator = torch.Generator().manual_seed(init_seed)
        for layer in (self.fc1, self.fc2, self.fc3):
            layer.initialize(weight_init, init_generator)
        self.lif1, self.lif2, self.lif3 = (
            LIF(beta, threshold, learn_beta, learn_threshold, surrogate=surrogate,
                surrogate_slope=surrogate_slope, scan=lif_scan)
            for _ in range(3)
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
            ``parameters_dense`` (the same network fully connected) and ``hidden_dim``
            (the hidden width).
        """
        layers = self.masked_layers()
        counts = {f"connections_{name}": layer.num_connections() for name, layer in layers.items()}
        counts["connections_total"] = sum(counts.values())
        others = sum(p.numel() for name, p in self.named_parameters() if not name.endswith(".weight"))
        counts["parameters_total"] = counts["connections_total"] + others
        counts["parameters_dense"] = sum(layer.weight.numel() for layer in layers.values()) + others
        counts["hidden_dim"] = self.fc1.out_features
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


def dense_parameter_count(input_dim: int, hidden_dim: int, num_classes: int, lif_parameters: int) -> int:
    """Parameters of the fully connected network D -> H -> H -> C: weights, biases and
    ``lif_parameters`` learnable LIF scalars."""
    weights = input_dim * hidden_dim + hidden_dim * hidden_dim + hidden_dim * num_classes
    return weights + 2 * hidden_dim + num_classes + lif_parameters


def parameter_matched_dense(
    input_dim: int,
    hidden_dim: int,
    num_classes: int,
    *,
    num_groups: int = 8,
    p_intra: float = 1.0,
    p_inter: float = 0.15,
    readout: str = "masked",
    mask_seed: int = 0,
    name: str | None = "dense_matched",
    **network_options,
) -> SpikingNetwork:
    """A fully connected network with as many parameters as the G2G network of width
    ``hidden_dim`` (``model=dense_matched``), the baseline a parameter budget asks for.

    The G2G network's count is measured from the masks of the ``index`` model at these
    settings and ``mask_seed`` (random and mixer masks have the same expected count and
    differ from it by sampling noise, about 0.1% at hidden 512); the dense width H' is the
    integer closest to the root of H'^2 + (D + C + 2) H' + C + (LIF scalars) = count.
    The width is logged, and the network reports it as ``parameter_counts()["hidden_dim"]``.

    Args:
        input_dim, num_classes: D and C.
        hidden_dim: the G2G network's hidden width H (not the dense one).
        num_groups, p_intra, p_inter, readout: the G2G network's settings.
        mask_seed: seed of the masks whose count is matched.
        name: the network's label.
        network_options: passed on to :class:`SpikingNetwork` (LIF settings,
            ``init_seed``, ``weight_init``, ``spike_matmul``, ``lif_scan``).
    Returns:
        A dense :class:`SpikingNetwork` of width H'.
        When no integer width comes within 1% (only tiny networks), the closest is
        used and a warning says so.
    Raises:
        ValueError: an invalid setting (see :class:`SpikingNetwork`).
    Source: the public spiking re-implementation of G2GNet compared against a dense
    network 447 wide at hidden 1024, p_inter 0.15 (a parameter-matched baseline).
    """
    network_options.pop("connectivity", None)
    sparse = SpikingNetwork(input_dim, hidden_dim, num_classes, connectivity="index", num_groups=num_groups,
                            p_intra=p_intra, p_inter=p_inter, readout=readout, mask_seed=mask_seed,
                            **network_options)
    target = sparse.parameter_counts()["parameters_total"]
    lif_parameters = sum(p.numel() for name, p in sparse.named_parameters() if name.startswith("lif"))
    linear = input_dim + num_classes + 2
    constant = num_classes + lif_parameters - target
    width = max(1, round((-linear + math.sqrt(linear * linear - 4 * constant)) / 2))
    matched = dense_parameter_count(input_dim, width, num_classes, lif_parameters)
    if abs(matched - target) > 0.01 * target:
        log.warning("model=dense_matched: no integer width matches the G2G network's %s parameters within 1%% "
                    "(the closest, width %d, has %s): the network is too small to be matched closely",
                    f"{target:,}", width, f"{matched:,}")
    log.info("model=dense_matched: hidden width %d (%s parameters) matches the G2G network of width %d "
             "(%s parameters, p_inter=%g, readout=%s)", width, f"{matched:,}", hidden_dim, f"{target:,}",
             p_inter, readout)
    return SpikingNetwork(input_dim, width, num_classes, connectivity="dense", name=name, **network_options)

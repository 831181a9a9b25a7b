"""G2G connectivity: group labels and connection masks.

Each layer's neurons are split into ``num_groups`` groups. A connection from input
neuron ``i`` to output neuron ``o`` exists with probability ``p_intra`` when both are
in the same group and ``p_inter`` otherwise (Bernoulli, sampled once per run).

Source: G2GNet, arXiv 2508.14140 (ensemble-to-ensemble connectivity of mouse visual
cortex).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch


def _index_labels(num_neurons: int, num_groups: int, generator: torch.Generator | None) -> torch.Tensor:
    """Contiguous blocks: label ``floor(i*G/n)``, near-equal blocks when G does not divide n."""
    return torch.arange(num_neurons) * num_groups // num_neurons


def _interleaved_labels(num_neurons: int, num_groups: int, generator: torch.Generator | None) -> torch.Tensor:
    """Label ``i mod G``."""
    return torch.arange(num_neurons) % num_groups


def _random_labels(num_neurons: int, num_groups: int, generator: torch.Generator | None) -> torch.Tensor:
    """A random permutation of the index labels, drawn from ``generator``."""
    return _index_labels(num_neurons, num_groups, generator)[torch.randperm(num_neurons, generator=generator)]


#: grouping name -> labels function ``(num_neurons, num_groups, generator) -> [n] int64``
GROUPING_LABELS: dict[str, Callable[[int, int, torch.Generator | None], torch.Tensor]] = {
    "index": _index_labels, "interleaved": _interleaved_labels, "random": _random_labels}
GROUPINGS = tuple(GROUPING_LABELS)

#: sparse connectivity model -> grouping of weight layer ``layer`` (0 for fc1): ``index``
#: and ``random`` use their grouping everywhere; ``mixer`` alternates index /
#: interleaved / index, so fc2 sees the hidden neurons grouped across fc1's blocks
LAYER_GROUPINGS: dict[str, Callable[[int], str]] = {
    "index": lambda layer: "index",
    "random": lambda layer: "random",
    "mixer": lambda layer: "index" if layer % 2 == 0 else "interleaved",
}
SPARSE_MODELS = tuple(LAYER_GROUPINGS)


def layer_grouping(model_name: str, layer: int) -> str:
    """Grouping of weight layer ``layer`` (0 for fc1) of a sparse model (see
    :data:`LAYER_GROUPINGS`).

    Raises:
        ValueError: a model name that is not one of ``SPARSE_MODELS``.
    """
    if model_name not in LAYER_GROUPINGS:
        raise ValueError(
            f"model={model_name!r} has no G2G grouping; allowed: {', '.join(SPARSE_MODELS)}"
        )
    return LAYER_GROUPINGS[model_name](layer)


def group_labels(
    num_neurons: int,
    num_groups: int,
    grouping: str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Group label of every neuron of a layer.

    Args:
        num_neurons: number of neurons n in the layer, >= 1.
        num_groups: number of groups G, >= 1.
        grouping: ``"index"`` (contiguous blocks, label ``floor(i*G/n)``; near-equal
            blocks when G does not divide n), ``"interleaved"`` (label ``i mod G``) or
            ``"random"`` (a random permutation of the index labels, drawn from
            ``generator``); see :data:`GROUPING_LABELS`.
        generator: random source for ``"random"``; ignored otherwise.
    Returns:
        Labels in ``[0, G)``, shape ``[n]``, int64.
    Raises:
        ValueError: unknown grouping or a non-positive size.
    """
    if num_neurons < 1 or num_groups < 1:
        raise ValueError(
            f"num_neurons={num_neurons} and num_groups={num_groups} must both be >= 1"
        )
    if grouping not in GROUPING_LABELS:
        raise ValueError(f"grouping={grouping!r} is unknown; allowed: {', '.join(GROUPINGS)}")
    return GROUPING_LABELS[grouping](num_neurons, num_groups, generator)


def g2g_mask(
    in_groups: torch.Tensor,
    out_groups: torch.Tensor,
    p_intra: float,
    p_inter: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample a G2G connectivity mask.

    Args:
        in_groups: group label of each input neuron, shape ``[N_in]``, int64.
        out_groups: group label of each output neuron, shape ``[N_out]``, int64.
        p_intra: connection probability inside a group, in [0, 1].
        p_inter: connection probability between groups, in [0, 1].
        generator: random source (seeded by the caller for reproducibility).
    Returns:
        Float mask of 0/1, shape ``[N_out, N_in]`` (the layout of ``nn.Linear.weight``).
    Raises:
        ValueError: a probability outside [0, 1].
    Source: G2GNet, arXiv 2508.14140.
    """
    for name, p in (("p_intra", p_intra), ("p_inter", p_inter)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name}={p} must be a probability in [0, 1]")
    same_group = out_groups[:, None] == in_groups[None, :]
    probability = torch.where(
        same_group, torch.tensor(float(p_intra)), torch.tensor(float(p_inter))
    )
    return torch.bernoulli(probability, generator=generator)


class LayerConnectivity(NamedTuple):
    """One weight layer's G2G wiring: ``mask`` ``[N_out, N_in]`` (0/1 float) and the
    group labels of its inputs ``[N_in]`` and outputs ``[N_out]`` (int64)."""

    mask: torch.Tensor
    in_groups: torch.Tensor
    out_groups: torch.Tensor


def layer_connectivity(
    layer_sizes: list[int],
    model_name: str,
    num_groups: int,
    p_intra: float,
    p_inter: float,
    seed: int,
) -> list[LayerConnectivity]:
    """Masks and group labels of all weight layers of a G2G network.

    Args:
        layer_sizes: ``[D_in, H1, H2, ..., C]``; one layer per consecutive pair.
        model_name: ``"index"``, ``"random"`` or ``"mixer"`` (see :func:`layer_grouping`).
        num_groups: groups per layer.
        p_intra, p_inter: connection probabilities (see :func:`g2g_mask`).
        seed: masks are a pure function of this seed and the arguments.
    Returns:
        One :class:`LayerConnectivity` per layer, the l-th mask with shape
        ``[layer_sizes[l+1], layer_sizes[l]]``.
    Raises:
        ValueError: unknown model name.
    """
    generator = torch.Generator().manual_seed(seed)
    layers = []
    for layer, (fan_in, fan_out) in enumerate(zip(layer_sizes[:-1], layer_sizes[1:])):
        grouping = layer_grouping(model_name, layer)
        in_groups = group_labels(fan_in, num_groups, grouping, generator)
        out_groups = group_labels(fan_out, num_groups, grouping, generator)
        mask = g2g_mask(in_groups, out_groups, p_intra, p_inter, generator)
        layers.append(LayerConnectivity(mask, in_groups, out_groups))
    return layers

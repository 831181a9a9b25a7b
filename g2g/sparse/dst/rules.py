"""The prune and grow rules of DST, as registries of score functions, and the initial
values of grown weights.

An update prunes exactly ``k`` active connections of a layer, those with the lowest
prune score: ``|w|`` (``set``, after SET, Mocanu et al. 2018), uniform random numbers
(``random``) or the Hebbian score (``hebb``, :mod:`g2g.sparse.dst.hebbian`); and grows
exactly ``k`` connections among those inactive *before* the update, those with the
highest grow score: the Hebbian score (``hebb``) or uniform random numbers (``random``).
Grown weights start at ``grow_init``: ``zero``, or ``uniform`` (nn.Linear's initial
range ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``). :func:`lowest` and :func:`highest` pick
exactly ``k`` entries even when scores tie, breaking ties by index (score, then flat
index), so the same connections change on every device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch

from g2g.sparse.dst.hebbian import HebbianTrace
from g2g.sparse.layers import MaskedLinear


class RuleContext(Protocol):
    """What a rule reads from the DST (:class:`g2g.sparse.dst.DynamicSparsity`)."""

    #: the CPU generator of the random choices (random scores, uniform initial weights)
    generator: torch.Generator
    #: layer name -> its Hebbian trace (the layers of a ``hebb`` rule)
    traces: dict[str, HebbianTrace]


#: ``(dst, layer_name, layer) -> [N_out, N_in]`` scores of a prune or grow rule
Scores = Callable[[RuleContext, str, MaskedLinear], torch.Tensor]


def _magnitude_scores(dst: RuleContext, layer_name: str, layer: MaskedLinear) -> torch.Tensor:
    """``|w|`` (SET, Mocanu et al. 2018)."""
    return layer.weight.abs()


def _random_scores(dst: RuleContext, layer_name: str, layer: MaskedLinear) -> torch.Tensor:
    """Uniform random scores from the DST generator."""
    return torch.rand(layer.mask.shape, generator=dst.generator).to(layer.mask.device)


def _hebbian_scores(dst: RuleContext, layer_name: str, layer: MaskedLinear) -> torch.Tensor:
    """The Hebbian score of the layer's trace (``hebbian_score``, :mod:`g2g.sparse.dst.hebbian`)."""
    return dst.traces[layer_name].score()


def _zero_weights(dst: RuleContext, layer: MaskedLinear, count: int) -> torch.Tensor:
    return torch.zeros(count, device=layer.weight.device)


def _uniform_weights(dst: RuleContext, layer: MaskedLinear, count: int) -> torch.Tensor:
    """nn.Linear's initial range ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
    bound = 1.0 / math.sqrt(layer.in_features)
    values = (torch.rand(count, generator=dst.generator) * 2 - 1) * bound
    return values.to(layer.weight.device)


#: prune rule -> scores; the ``k`` lowest active connections are pruned
PRUNE_SCORES: dict[str, Scores] = {"set": _magnitude_scores, "random": _random_scores, "hebb": _hebbian_scores}
#: grow rule -> scores; the ``k`` highest inactive connections are grown
GROW_SCORES: dict[str, Scores] = {"hebb": _hebbian_scores, "random": _random_scores}
#: grow_init -> ``(dst, layer, count) -> [count]`` initial weights of grown connections
GROW_INITIALIZERS: dict[str, Callable[[RuleContext, MaskedLinear, int], torch.Tensor]] = {
    "zero": _zero_weights, "uniform": _uniform_weights}
#: the names, in the order validation, docs and reports list them
PRUNE_RULES = tuple(PRUNE_SCORES)
GROW_RULES = tuple(GROW_SCORES)
GROW_INITS = tuple(GROW_INITIALIZERS)
#: the rule that needs a Hebbian trace
HEBBIAN_RULE = "hebb"


def _first_k(scores: torch.Tensor, k: int, descending: bool) -> torch.Tensor:
    """Flat indices of the first ``k`` entries of ``scores`` ordered by score, then by
    index: a stable sort, so equal scores keep their index order on every device
    (``torch.topk`` returns tied entries in an order that depends on the device and the
    implementation)."""
    return torch.sort(scores.flatten(), descending=descending, stable=True).indices[:k]


def lowest(scores: torch.Tensor, allowed: torch.Tensor, k: int) -> torch.Tensor:
    """Flat indices of the ``k`` lowest ``scores`` among ``allowed`` entries, exactly k;
    ties go to the lower flat index (the same choice on every device), ordered by score
    then index."""
    masked = torch.where(allowed, scores, torch.full_like(scores, math.inf))
    return _first_k(masked, k, descending=False)


def highest(scores: torch.Tensor, allowed: torch.Tensor, k: int) -> torch.Tensor:
    """Flat indices of the ``k`` highest ``scores`` among ``allowed`` entries, exactly k;
    ties go to the lower flat index (the same choice on every device), ordered by score
    (highest first) then index."""
    masked = torch.where(allowed, scores, torch.full_like(scores, -math.inf))
    return _first_k(masked, k, descending=True)

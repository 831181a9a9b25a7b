"""Stratified, seeded splits of a training set: k folds (cross-validation) and a
held-out validation split (tuning)."""

from __future__ import annotations

from dataclasses import replace

import torch

from g2g.data.datasets import DataSplits


def _shuffled_classes(labels: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """Each class's example indices (``labels`` ``[N]`` on the CPU), in class order, each
    shuffled by one generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return [members[torch.randperm(len(members), generator=generator)]
            for members in ((labels == label).nonzero().flatten() for label in labels.unique().tolist())]


def stratified_folds(labels: torch.Tensor, k_folds: int, seed: int) -> list[torch.Tensor]:
    """Split example indices into ``k_folds`` stratified folds: each class's examples
    are shuffled (seeded) and dealt round-robin, so every fold has each class's share
    to within one example.

    Args:
        labels: ``[N]`` class indices.
    Returns:
        ``k_folds`` sorted int64 index tensors (on the CPU) that partition ``range(N)``.
    Raises:
        ValueError: fewer examples than folds.
    """
    if len(labels) < k_folds:
        raise ValueError(f"protocol.k_folds={k_folds} is more than the {len(labels)} training examples")
    labels = labels.cpu()
    assignment = torch.empty(len(labels), dtype=torch.int64)
    offset = 0
    for members in _shuffled_classes(labels, seed):
        assignment[members] = (torch.arange(len(members)) + offset) % k_folds
        offset += len(members)  # continue dealing where the previous class stopped
    return [(assignment == fold).nonzero().flatten() for fold in range(k_folds)]


def fold_split(data: DataSplits, held_out: torch.Tensor) -> DataSplits:
    """The training split of ``data`` divided into training examples (all but
    ``held_out``) and validation examples (``held_out``, in the ``test_*`` fields).

    Args:
        held_out: int64 indices into ``data.train_y`` (one of :func:`stratified_folds`).
    """
    keep = torch.ones(len(data.train_y), dtype=torch.bool)
    keep[held_out] = False
    keep = keep.to(data.train_y.device)
    held_out = held_out.to(data.train_y.device)
    return DataSplits(data.train_x[keep], data.train_y[keep], data.train_x[held_out],
                      data.train_y[held_out], data.class_names)


def hold_out_validation(data: DataSplits, fraction: float, seed: int) -> DataSplits:
    """Hold out a stratified, seeded ``fraction`` of the training split as a validation
    split (``val_x``, ``val_y``); training keeps the rest, the test split is unchanged.

    Each class contributes ``round(fraction * its count)`` examples, chosen by a seeded
    permutation, so the split is the same for every model trained with this seed.

    Args:
        fraction: in (0, 1) (``protocol.validation_fraction``); 0 returns ``data``.
        seed: seed of the choice (the run's ``validation_split`` stream).
    Raises:
        ValueError: a fraction outside [0, 1), or one that leaves a split empty.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"protocol.validation_fraction={fraction}: must be a fraction in [0, 1)")
    if fraction == 0.0:
        return data
    labels = data.train_y.cpu()
    held_out = torch.cat([members[: round(fraction * len(members))]
                          for members in _shuffled_classes(labels, seed)]).sort().values
    if len(held_out) == 0 or len(held_out) == len(labels):
        raise ValueError(f"protocol.validation_fraction={fraction} leaves an empty split of the "
                         f"{len(labels)} training examples")
    split = fold_split(data, held_out)
    return replace(data, train_x=split.train_x, train_y=split.train_y, val_x=split.test_x, val_y=split.test_y)

"""Stratified, seeded k-fold splits of a training set (for cross-validation)."""

from __future__ import annotations

import torch

from g2g.data.datasets import DataSplits


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
    generator = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    assignment = torch.empty(len(labels), dtype=torch.int64)
    offset = 0
    for label in labels.unique().tolist():
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
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

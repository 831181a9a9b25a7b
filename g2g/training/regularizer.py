"""Firing-rate regulariser (``regularizer=firing_rate``): pushes hidden activity sparse.

Loss term, per training step:

    lambda * sum over hidden layers l and neurons n of (r[l, n] - target)^2

where ``r[l, n]`` is neuron n's firing rate in the batch (mean spikes per time step
and example). Schedule over epochs ``e = 1 .. E`` with warm-up ``W``: for ``e <= W``,
lambda = 0 and target = ``target_start``; after that, with progress
``(e - W) / (E - W)``, lambda rises linearly from ``lambda_start`` to ``lambda_end``
and the target falls linearly from ``target_start`` to ``target_end``. Progress 0 is
the last warm-up epoch, so the first active epoch ``W + 1`` is already one step along
the ramp (``lambda_start + (lambda_end - lambda_start) / (E - W)``) and the last
epoch has the end values. This is the schedule of the public re-implementation
(APapafragkakis/G2G-Sparse-Spiking-Neural-Net, ``get_progressive_params`` in
``src/train.py``, called with 1-based epochs); see docs/fidelity.md.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


class FiringRateRegularizer:
    """Scheduled firing-rate penalty on the hidden LIF layers.

    Args:
        warmup_epochs: W, epochs with lambda 0, >= 0.
        lambda_start, lambda_end: lambda at the ramp's start (progress 0, the last
            warm-up epoch, where lambda is still 0) and at its end (the last epoch).
        target_start, target_end: target rate (spikes per step) likewise; the
            warm-up epochs use ``target_start``.
    """

    def __init__(self, warmup_epochs: int = 10, lambda_start: float = 1e-4, lambda_end: float = 1e-2,
                 target_start: float = 0.25, target_end: float = 0.09) -> None:
        self.warmup_epochs = int(warmup_epochs)
        self.lambda_start, self.lambda_end = float(lambda_start), float(lambda_end)
        self.target_start, self.target_end = float(target_start), float(target_end)
        self.weight = 0.0
        self.target = self.target_start

    def schedule(self, epoch: int, total_epochs: int) -> tuple[float, float]:
        """(lambda, target) for 1-based ``epoch`` of ``total_epochs`` (schedule in the
        module docstring).

        Raises:
            ValueError: ``epoch`` outside ``1 .. total_epochs``.
        """
        if not 1 <= epoch <= total_epochs:
            raise ValueError(f"FiringRateRegularizer.schedule: epoch={epoch} is outside 1..{total_epochs} "
                             "(total_epochs)")
        if epoch <= self.warmup_epochs:
            return 0.0, self.target_start
        fraction = (epoch - self.warmup_epochs) / (total_epochs - self.warmup_epochs)
        return (self.lambda_start + fraction * (self.lambda_end - self.lambda_start),
                self.target_start + fraction * (self.target_end - self.target_start))

    def start_epoch(self, epoch: int, total_epochs: int) -> dict[str, float]:
        """Set this epoch's lambda and target; returns them as metrics."""
        self.weight, self.target = self.schedule(epoch, total_epochs)
        return {"regularizer_lambda": self.weight, "regularizer_target": self.target}

    def warn_if_never_active(self, total_epochs: int) -> None:
        if total_epochs <= self.warmup_epochs:
            log.warning(
                "regularizer=firing_rate: train.epochs=%d <= regularizer.warmup_epochs=%d, so lambda "
                "stays 0 and the regulariser never acts; lower regularizer.warmup_epochs or train longer",
                total_epochs, self.warmup_epochs)

    def __call__(self, hidden_spikes: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The loss term for the hidden layers' spikes (each ``[T, B, N]``); a 0-dim tensor."""
        penalty = sum(((spikes.mean(dim=(0, 1)) - self.target) ** 2).sum() for spikes in hidden_spikes)
        return self.weight * penalty


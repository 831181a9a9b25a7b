"""Input encoders: a static input ``[B, D]`` becomes a sequence ``[T, B, D]``."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from snntorch import spikegen


class Encoder(ABC):
    """An input encoder: ``num_steps`` time steps, input ``scale * x + bias``.

    Args:
        num_steps: T, simulation time steps, >= 1.
        scale: gain applied to the input.
        bias: offset added to the scaled input.
    """

    #: whether the sequence holds 0/1 spikes (fc1 then does accumulates, not MACs)
    produces_spikes = False

    def __init__(self, num_steps: int, scale: float = 1.0, bias: float = 0.0) -> None:
        self.num_steps = int(num_steps)
        self.scale = float(scale)
        self.bias = float(bias)

    @abstractmethod
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` -> ``[T, B, D]``."""


class CurrentEncoder(Encoder):
    """Constant-current encoding: ``I[t] = scale * x + bias`` at every time step.

    The returned sequence is a broadcast view (stride 0 along time), so the network
    can compute the first layer once per batch instead of once per step.

    Args:
        num_steps: T, simulation time steps, >= 1.
        scale: gain applied to the input (input units -> membrane units).
        bias: offset added to the scaled input.
    """

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` -> ``[T, B, D]`` (a view; do not write into it)."""
        current = x * self.scale + self.bias
        return current.unsqueeze(0).expand(self.num_steps, *current.shape)


class RateEncoder(Encoder):
    """Bernoulli rate coding: at every step a spike with probability
    ``clamp(scale * x + bias, 0, 1)``, drawn by ``snntorch.spikegen.rate``
    (from torch's global random generator, which the run seeds).

    Args:
        num_steps: T, simulation time steps, >= 1.
        scale: gain (snntorch ``gain``).
        bias: offset (snntorch ``offset``).
    """

    produces_spikes = True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` in [0, 1] -> 0/1 spikes ``[T, B, D]``."""
        return spikegen.rate(x, num_steps=self.num_steps, gain=self.scale, offset=self.bias)


#: encoder name -> class; the ``encoder`` config group's options
ENCODERS = {"current": CurrentEncoder, "rate": RateEncoder}


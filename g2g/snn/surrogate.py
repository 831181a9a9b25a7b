"""Surrogate gradients of the spike function, as pure functions, and a registry by name.

A spike is ``S = H(U - U_thr)`` (Heaviside), whose derivative is zero almost
everywhere; training replaces it in the backward pass by a smooth surrogate
derivative ``dS/dU``. A :class:`Surrogate` pairs the forward spike function with the
product of an incoming gradient and that derivative, which is what the LIF kernel
(:class:`g2g.snn.kernels.LIFScan`) needs; the kernel takes one as an argument, so a
new surrogate is a new entry in :data:`SURROGATES`, not a new kernel.

Source: snntorch (Eshraghian et al., "Training Spiking Neural Networks Using Lessons
From Deep Learning", Proc. IEEE 2023), ``snntorch.surrogate.ATan``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch


class Surrogate(NamedTuple):
    """A spike function and its surrogate gradient; ``x = U - U_thr`` (membrane minus
    threshold, membrane units), ``slope`` the surrogate's sharpness (alpha).

    spike: ``(x, slope) -> S``, same shape as ``x``. :func:`heaviside` is the usual
        choice; the LIF kernel then reuses the 0/1 reset it computes anyway.
    input_gradient: ``(grad_spikes, x, slope) -> grad_spikes * dS/dU(x)``; may write
        into ``x`` (the kernel passes a temporary) and returns a tensor that the caller
        may overwrite, never ``grad_spikes`` itself.
    """

    spike: Callable[[torch.Tensor, float], torch.Tensor]
    input_gradient: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def heaviside(over_threshold: torch.Tensor, slope: float) -> torch.Tensor:
    """``H(x)``: 1.0 where ``x > 0``, else 0.0 (``slope`` unused), in ``x``'s dtype."""
    return (over_threshold > 0).to(over_threshold.dtype)


def atan_input_gradient(grad_spikes: torch.Tensor, over_threshold: torch.Tensor, slope: float) -> torch.Tensor:
    """snntorch's ATan surrogate times the incoming gradient:
    ``grad_spikes * (alpha/2) / (1 + (pi/2 * alpha * x)^2)`` with ``alpha = slope``.

    Computed in place in ``over_threshold`` (two passes: the denominator, then the
    division and the factor alpha/2), in the order the kernel has always used, so
    results are bit-identical to the former inline code.
    """
    one = torch.ones((), dtype=over_threshold.dtype, device=over_threshold.device)
    denominator = torch.addcmul(one, over_threshold, over_threshold, value=(math.pi / 2 * slope) ** 2,
                                out=over_threshold)
    return torch.div(grad_spikes, denominator, out=denominator).mul_(slope / 2)


#: surrogate name -> :class:`Surrogate`; the LIF layer's ``surrogate`` argument
SURROGATES: dict[str, Surrogate] = {"atan": Surrogate(heaviside, atan_input_gradient)}


def get_surrogate(name: str) -> Surrogate:
    """The registered surrogate ``name``.

    Raises:
        ValueError: an unknown name, listing the registered ones.
    """
    if name not in SURROGATES:
        raise ValueError(f"surrogate={name!r} is unknown; allowed: {', '.join(SURROGATES)}")
    return SURROGATES[name]

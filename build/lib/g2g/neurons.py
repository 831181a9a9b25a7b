"""Leaky integrate-and-fire (LIF) neurons run over a whole input sequence.

The equations are snntorch's ``Leaky`` (reset by subtraction, ``reset_delay=True``,
arctan surrogate gradient), stepped over all ``num_steps`` time steps of one layer
at once so that the layer's synaptic currents can be computed in one matmul:

    R[t] = H(U[t-1] - U_thr)                       (detached, as in snntorch)
    U[t] = clamp(beta, 0, 1) * U[t-1] + I[t] - R[t] * U_thr
    S[t] = H(U[t] - U_thr)                         (surrogate: arctan, slope alpha)

with ``U[-1] = 0``. ``tests/test_neurons.py`` pins this to ``snntorch.Leaky`` for
spikes, membrane and gradients.

Source: snntorch (Eshraghian et al., "Training Spiking Neural Networks Using
Lessons From Deep Learning", Proc. IEEE 2023), ``snntorch.Leaky``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LIFScan(torch.autograd.Function):
    """The LIF recursion over all T steps with a hand-written backward.

    Forward keeps the membrane ``U`` and spikes ``S`` ``[T, B, N]`` (the next layer
    keeps the same spike tensor for its weight gradient, so this costs no extra
    memory); backward runs one fused update per step for the membrane
    gradient and does everything else (surrogate, threshold and decay gradients) as
    whole-tensor operations. Same results as stepping snntorch's ``Leaky`` with
    autograd (pinned by ``tests/test_neurons.py``), with far fewer elementwise passes.

    Backward equations (``g`` = dLoss/d.., ``s'`` = surrogate derivative at ``U[t] - U_thr``):

        gU[t] = gS[t] * s'[t] + gM[t] + decay * gU[t+1]     (reset term is detached)
        gI[t] = gU[t]
        g_thr = -sum(gS * s') - sum_t S[t-1] * gU[t]
        g_decay = sum_t U[t-1] * gU[t]
    """

    @staticmethod
    def forward(ctx, current, decay, threshold, slope):
        decay_value, threshold_value = float(decay), float(threshold)
        membrane = torch.empty(current.shape, dtype=current.dtype, device=current.device)
        spikes = torch.empty_like(membrane)
        previous = None
        for step, current_t in enumerate(current.unbind(0)):
            u = membrane[step]
            if previous is None:
                u.copy_(current_t)  # U[-1] = 0: decay * 0 + I[0]
            else:
                torch.mul(membrane[step - 1], decay_value, out=u)
                u.add_(current_t)
                u.sub_(spikes[step - 1], alpha=threshold_value)  # S in {0, 1}: exact
            torch.gt(u, threshold_value, out=spikes[step])
            previous = u
        ctx.save_for_backward(membrane, spikes, decay, threshold)
        ctx.slope = slope
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None
        return spikes, membrane

    @staticmethod
    def backward(ctx, grad_spikes, grad_membrane):
        membrane, spikes, decay, threshold = ctx.saved_tensors
        decay_value, threshold_value = float(decay), float(threshold)
        alpha = ctx.slope
        # surrogate derivative, as snntorch's ATan: (alpha/2) / (1 + (pi/2 * alpha * x)^2),
        # times the incoming spike gradient, in four passes over [T, B, N]
        direct = membrane - threshold_value
        torch.addcmul(torch.ones((), dtype=direct.dtype, device=direct.device), direct, direct,
                      value=(math.pi / 2 * alpha) ** 2, out=direct)
        if grad_spikes is not None:
            torch.div(grad_spikes, direct, out=direct).mul_(alpha / 2)
        else:
            direct.zero_()
        threshold_grad = -direct.sum()
        if grad_membrane is not None:
            direct.add_(grad_membrane)
        grad_u = direct  # becomes gU in place, from the last step backwards
        for step in range(grad_u.shape[0] - 2, -1, -1):
            grad_u[step].add_(grad_u[step + 1], alpha=decay_value)
        later = grad_u[1:].reshape(-1)
        threshold_grad = threshold_grad - torch.dot(spikes[:-1].reshape(-1), later)
        decay_grad = torch.dot(membrane[:-1].reshape(-1), later)
        return grad_u, decay_grad.reshape(decay.shape), threshold_grad.reshape(threshold.shape), None


class LIF(nn.Module):
    """A layer of LIF neurons, multi-step: input ``[T, B, N]`` -> spikes ``[T, B, N]``.

    Args:
        beta: membrane decay per time step, in [0, 1] (snntorch clamps it there).
        threshold: firing threshold U_thr (membrane units), > 0.
        learn_beta: make beta a trainable scalar (snntorch ``learn_beta``).
        learn_threshold: make the threshold a trainable scalar.
        surrogate_slope: alpha of snntorch's arctan surrogate,
            dS/dU = (alpha/2) / (1 + (pi/2 * alpha * (U - U_thr))^2).
    """

    def __init__(
        self,
        beta: float = 0.9,
        threshold: float = 1.0,
        learn_beta: bool = True,
        learn_threshold: bool = True,
        surrogate_slope: float = 2.0,
    ) -> None:
        super().__init__()
        beta_tensor = torch.tensor(float(beta))
        threshold_tensor = torch.tensor(float(threshold))
        if learn_beta:
            self.beta = nn.Parameter(beta_tensor)
        else:
            self.register_buffer("beta", beta_tensor)
        if learn_threshold:
            self.threshold = nn.Parameter(threshold_tensor)
        else:
            self.register_buffer("threshold", threshold_tensor)
        self.surrogate_slope = surrogate_slope

    def forward(
        self, current: torch.Tensor, return_membrane: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Integrate a current sequence.

        Args:
            current: synaptic input current I, shape ``[T, B, N]`` (may be a
                broadcast view, e.g. the same current at every step).
            return_membrane: also return the membrane potential.
        Returns:
            Spikes S of 0/1, shape ``[T, B, N]``; with ``return_membrane`` also the
            membrane U after the reset, shape ``[T, B, N]``.
        """
        spikes, membrane = LIFScan.apply(current, self.beta.clamp(0, 1), self.threshold,
                                         self.surrogate_slope)
        return (spikes, membrane) if return_membrane else spikes

    def extra_repr(self) -> str:
        return f"surrogate=atan(alpha={self.surrogate_slope})"

"""Leaky integrate-and-fire (LIF) neurons run over a whole input sequence.

The equations are snntorch's ``Leaky`` (reset by subtraction, ``reset_delay=True``,
arctan surrogate gradient), stepped over all ``num_steps`` time steps of one layer
at once so that the layer's synaptic currents can be computed in one matmul:

    R[t] = H(U[t-1] - U_thr)                       (detached, as in snntorch)
    U[t] = clamp(beta, 0, 1) * U[t-1] + I[t] - R[t] * U_thr
    S[t] = H(U[t] - U_thr)                         (surrogate gradient: arctan by default)

with ``U[-1] = 0``. ``tests/snn/test_neurons.py`` pins this to ``snntorch.Leaky`` for
spikes, membrane and gradients.

Source: snntorch (Eshraghian et al., "Training Spiking Neural Networks Using
Lessons From Deep Learning", Proc. IEEE 2023), ``snntorch.Leaky``.
"""

from __future__ import annotations

import torch
from torch import nn

from g2g.snn.kernels import LIF_SCANS, LIFScan, peak_magnitude
from g2g.snn.surrogate import get_surrogate


class LIF(nn.Module):
    """A layer of LIF neurons, multi-step: input ``[T, B, N]`` -> spikes ``[T, B, N]``.

    Args:
        beta: membrane decay per time step, in [0, 1] (snntorch clamps it there).
        threshold: firing threshold U_thr (membrane units), > 0.
        learn_beta: make beta a trainable scalar (snntorch ``learn_beta``).
        learn_threshold: make the threshold a trainable scalar.
        surrogate: name of the surrogate gradient in
            :data:`g2g.snn.surrogate.SURROGATES`; ``atan`` is snntorch's arctan,
            dS/dU = (alpha/2) / (1 + (pi/2 * alpha * (U - U_thr))^2).
        surrogate_slope: the surrogate's sharpness alpha.
        scan: how the recursion runs over time, ``loop`` or ``compiled``
            (:data:`g2g.snn.kernels.LIF_SCANS`).
    Raises:
        ValueError: an unknown surrogate name or scan.
    """

    def __init__(
        self,
        beta: float = 0.9,
        threshold: float = 1.0,
        learn_beta: bool = True,
        learn_threshold: bool = True,
        surrogate: str = "atan",
        surrogate_slope: float = 2.0,
        *,
        scan: str = "loop",
    ) -> None:
        super().__init__()
        if scan not in LIF_SCANS:
            raise ValueError(f"model.lif_scan={scan!r} is unknown; allowed: {', '.join(LIF_SCANS)}")
        self.scan = scan
        self.surrogate_name = surrogate
        self.surrogate = get_surrogate(surrogate)
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
        #: largest |U| at the last step of the latest forward (see :meth:`forward`)
        self.last_membrane_peak: torch.Tensor | None = None

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        """Integrate a current sequence.

        Args:
            current: synaptic input current I, shape ``[T, B, N]`` (may be a
                broadcast view, e.g. the same current at every step).
        Returns:
            Spikes S of 0/1, shape ``[T, B, N]`` (the membrane U after the reset is
            the second output of :class:`g2g.snn.kernels.LIFScan`). Also sets
            :attr:`last_membrane_peak`, the largest ``|U|`` at the last step (a 0-d
            tensor on the device, no host sync): NaN or inf exactly when the membrane
            became NaN or infinite at any step, which the trainer checks every step.

        A bfloat16 or float16 current (a layer run under ``torch.autocast``, mixed
        precision) is cast to float32 first: the membrane recursion always runs in
        float32 (bfloat16 resolves only 0.008 near a threshold of 1; docs/precision.md),
        and the spikes are float32 0/1.
        """
        if current.dtype in (torch.bfloat16, torch.float16):  # mixed precision: the recursion stays float32
            # a broadcast over time (fc1 of a constant input) stays a broadcast: cast one step, not T
            current = (current[0].float().unsqueeze(0).expand_as(current) if current.stride(0) == 0
                       else current.float())
        spikes, membrane = LIFScan.apply(current, self.beta.clamp(0, 1), self.threshold, self.surrogate,
                                         self.surrogate_slope, self.scan)
        # NaN or inf persists through the recursion (decay in [0, 1]: 0 * inf is NaN), so
        # the last step shows whether the membrane stayed finite at every step
        self.last_membrane_peak = peak_magnitude(membrane[-1])
        return spikes

    def extra_repr(self) -> str:
        return f"surrogate={self.surrogate_name}(alpha={self.surrogate_slope})"

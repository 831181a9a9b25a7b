"""Hand-written autograd kernels of the spiking layers.

- :class:`LIFScan`: the LIF recursion over all T steps of a layer with a fused
  backward; the surrogate gradient is an argument (:mod:`g2g.snn.surrogate`).
- :func:`spike_linear` (:class:`SpikeLinear`): ``S @ W^T + b`` for binary spike
  inputs, with sparse products when few inputs spike.
- :func:`peak_magnitude`: the largest ``|entry|``, NaN or inf when an entry is (the LIF
  layers' finiteness signal for the trainer).

Both equal the straightforward autograd computation up to float summation order
(``tests/snn/test_neurons.py``).
"""

from __future__ import annotations

import math
import warnings

import torch

from g2g.snn.surrogate import Surrogate, heaviside

#: how the LIF recursion runs over the T steps (the ``model.lif_scan`` config key): ``loop``
#: a Python loop of in-place operations (on CUDA about 15 kernel launches per step and
#: layer); ``compiled`` each pass's recursion as one ``torch.compile``d function (its steps
#: fused into few kernels; compiled on first use, again for new shapes), equal to ``loop``
#: up to float rounding (``tests/hardware/test_cuda_paths.py``); for GPUs, where launches dominate
LIF_SCANS = ("loop", "compiled")


def _scan_forward(current: torch.Tensor, decay: torch.Tensor, threshold: torch.Tensor):
    """The forward recursion as a pure function (for ``torch.compile``): membrane and
    resets ``[T, B, N]``, as :meth:`LIFScan.forward`'s loop computes them."""
    membrane = [current[0]]
    fired = [(membrane[0] > threshold).to(current.dtype)]
    for step in range(1, current.shape[0]):
        u = membrane[-1] * decay + current[step] - fired[-1] * threshold
        membrane.append(u)
        fired.append((u > threshold).to(current.dtype))
    return torch.stack(membrane), torch.stack(fired)


def _scan_backward(direct: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """The backward recursion ``gU[t] = direct[t] + decay * gU[t+1]`` as a pure function."""
    grads = [direct[-1]]
    for step in range(direct.shape[0] - 2, -1, -1):
        grads.append(direct[step] + decay * grads[-1])
    return torch.stack(grads[::-1])


_COMPILED: dict = {}


def _compiled(function):
    """``torch.compile(function)``, made once per process on first use."""
    if function not in _COMPILED:
        _COMPILED[function] = torch.compile(function)
    return _COMPILED[function]


def _scalar(value: torch.Tensor) -> float | torch.Tensor:
    """A 0-d parameter of the scan as the scan uses it: a Python float on the CPU (free
    to read there; the arithmetic is then exactly that of every earlier release), the
    tensor itself on any other device, where reading it would make the host wait for
    every queued kernel (a CUDA sync per read, 12 per training step)."""
    return float(value) if value.device.type == "cpu" else value


def _add_scaled(target: torch.Tensor, other: torch.Tensor, scale: float | torch.Tensor, sign: int = 1) -> None:
    """``target += sign * scale * other`` in place, ``scale`` a float or a 0-d tensor
    (:func:`_scalar`)."""
    if isinstance(scale, torch.Tensor):
        target.addcmul_(other, scale, value=sign)
    else:
        target.add_(other, alpha=sign * scale)


class LIFScan(torch.autograd.Function):
    """The LIF recursion over all T steps with a hand-written backward.

    ``LIFScan.apply(current, decay, threshold, surrogate, slope[, scan])`` with ``current``
    ``[T, B, N]``, ``decay`` and ``threshold`` 0-d tensors, ``surrogate`` a
    :class:`g2g.snn.surrogate.Surrogate`, ``slope`` its sharpness and ``scan`` one of
    :data:`LIF_SCANS` (default ``loop``); returns spikes and membrane, both ``[T, B, N]``.

    The recursion only needs the reset ``R[t] = H(U[t-1] - U_thr)`` (0/1, detached, as
    in snntorch), which the forward computes step by step. The spike output is
    ``S = surrogate.spike(U - U_thr)``: for :func:`g2g.snn.surrogate.heaviside` that is
    the reset of the next step, so no extra work; a smooth spike function (used by
    ``tests/snn/test_neurons.py`` to check this backward with ``torch.autograd.gradcheck``)
    is applied to the whole membrane after the recursion.

    Forward keeps the membrane ``U`` and the resets ``[T, B, N]`` (for the Heaviside
    spike the next layer keeps the same tensor for its weight gradient, so this costs
    no extra memory); backward runs one fused update per step for the membrane
    gradient and does everything else (surrogate, threshold and decay gradients) as
    whole-tensor operations. Same results as stepping snntorch's ``Leaky`` with
    autograd (pinned by ``tests/snn/test_neurons.py``), with far fewer elementwise passes.

    Neither pass reads a value back to the host off the CPU (decay and threshold stay
    0-d device tensors there, :func:`_scalar`), so on CUDA the scan's launches queue
    behind the matmuls without waiting (``tests/hardware/test_cuda_paths.py`` runs it on the
    ``meta`` device, where any read raises).

    Backward equations (``g`` = dLoss/d.., ``s'`` = surrogate derivative at ``U[t] - U_thr``,
    ``H[t] = H(U[t] - U_thr)``, the reset of step t+1):

        gU[t] = gS[t] * s'[t] + gM[t] + decay * gU[t+1]     (reset term is detached)
        gI[t] = gU[t]
        g_thr = -sum(gS * s') - sum_t H[t-1] * gU[t]
        g_decay = sum_t U[t-1] * gU[t]
    """

    @staticmethod
    def forward(ctx, current, decay, threshold, surrogate: Surrogate, slope: float, scan: str = "loop"):
        decay_value, threshold_value = _scalar(decay), _scalar(threshold)
        if scan == "compiled":  # decay and threshold as tensors: a new value needs no new compilation
            membrane, fired = _compiled(_scan_forward)(current, decay.to(current.dtype), threshold.to(current.dtype))
        else:
            membrane = torch.empty(current.shape, dtype=current.dtype, device=current.device)
            fired = torch.empty_like(membrane)  # H(U[t] - U_thr): the reset of step t+1
            for step, current_t in enumerate(current.unbind(0)):
                u = membrane[step]
                if step == 0:
                    u.copy_(current_t)  # U[-1] = 0: decay * 0 + I[0]
                else:
                    torch.mul(membrane[step - 1], decay_value, out=u)
                    u.add_(current_t)
                    _add_scaled(u, fired[step - 1], threshold_value, -1)  # H in {0, 1}: exact
                torch.gt(u, threshold_value, out=fired[step])
        if surrogate.spike is heaviside:
            spikes = fired
        else:
            spikes = surrogate.spike(membrane - threshold_value, slope)
        ctx.save_for_backward(membrane, fired, decay, threshold)
        ctx.surrogate, ctx.slope, ctx.scan = surrogate, slope, scan
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None
        return spikes, membrane

    @staticmethod
    def backward(ctx, grad_spikes, grad_membrane):
        membrane, fired, decay, threshold = ctx.saved_tensors
        decay_value, threshold_value = _scalar(decay), _scalar(threshold)
        direct = membrane - threshold_value
        if grad_spikes is not None:  # gS * s', the spikes' direct share of gU
            direct = ctx.surrogate.input_gradient(grad_spikes, direct, ctx.slope)
        else:
            direct.zero_()
        threshold_grad = -direct.sum()
        if grad_membrane is not None:
            direct.add_(grad_membrane)
        if ctx.scan == "compiled":
            grad_u = _compiled(_scan_backward)(direct, decay.to(direct.dtype))
        else:
            grad_u = direct  # becomes gU in place, from the last step backwards
            for step in range(grad_u.shape[0] - 2, -1, -1):
                _add_scaled(grad_u[step], grad_u[step + 1], decay_value)
        later = grad_u[1:].reshape(-1)
        threshold_grad = threshold_grad - torch.dot(fired[:-1].reshape(-1), later)
        decay_grad = torch.dot(membrane[:-1].reshape(-1), later)
        return grad_u, decay_grad.reshape(decay.shape), threshold_grad.reshape(threshold.shape), None, None, None


def peak_magnitude(values: torch.Tensor) -> torch.Tensor:
    """The largest ``|entry|`` of ``values`` as a 0-d tensor on its device (no host
    sync): NaN when an entry is NaN, inf when one is infinite. One pass over the data
    (:func:`torch.aminmax`); on the CPU several times faster than
    ``torch.linalg.vector_norm(values, inf)`` or ``torch.isfinite(values).all()``."""
    lowest, highest = torch.aminmax(values.detach())
    return torch.maximum(highest, -lowest)


#: spike density below which :func:`spike_linear`'s forward is a CSR sparse x dense
#: product by default (measured on the CPU: benchmarks/README.md)
SPARSE_FORWARD_BELOW = 0.15
#: spike density below which :func:`spike_linear`'s weight gradient is a COO sparse x
#: dense product by default (measured on the CPU: benchmarks/README.md)
SPARSE_WEIGHT_GRAD_BELOW = 0.12


def _to_sparse_csr(dense: torch.Tensor) -> torch.Tensor:
    """``dense.to_sparse_csr()`` without torch's "Sparse CSR tensor support is in beta
    state" warning (the products used here are tested against dense ones)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return dense.to_sparse_csr()


class SpikeLinear(torch.autograd.Function):
    """The autograd function behind :func:`spike_linear`; ``SpikeLinear.apply(spikes,
    weight, bias, forward_below, weight_grad_below)`` (all five arguments)."""

    @staticmethod
    def forward(ctx, spikes, weight, bias, forward_below: float, weight_grad_below: float):
        if forward_below == weight_grad_below == math.inf:  # spike_matmul=sparse: no density read (no sync)
            density = 0.0
        else:
            density = float(spikes.sum()) / max(spikes.numel(), 1)
        ctx.spikes_csr = None
        if density < forward_below:
            spikes_csr = _to_sparse_csr(spikes)
            output = torch.sparse.mm(spikes_csr, weight.t())
            if bias is not None:
                output += bias
            if density < weight_grad_below:
                ctx.spikes_csr = spikes_csr  # reused by the weight gradient
        elif bias is not None:
            output = torch.addmm(bias, spikes, weight.t())
        else:
            output = spikes @ weight.t()
        ctx.save_for_backward(spikes, weight)
        ctx.has_bias = bias is not None
        return output

    @staticmethod
    def backward(ctx, grad_output):
        spikes, weight = ctx.saved_tensors
        grad_spikes = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_spikes = grad_output @ weight
        if ctx.needs_input_grad[1]:
            if ctx.spikes_csr is not None:  # G^T S = (S^T G)^T with S in COO form
                grad_weight = torch.sparse.mm(ctx.spikes_csr.to_sparse_coo().t(), grad_output).t().contiguous()
            else:
                grad_weight = grad_output.t() @ spikes
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum(0)
        ctx.spikes_csr = None
        return grad_spikes, grad_weight, grad_bias, None, None


def spike_linear(
    spikes: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    forward_below: float = SPARSE_FORWARD_BELOW,
    weight_grad_below: float = SPARSE_WEIGHT_GRAD_BELOW,
) -> torch.Tensor:
    """``S @ W^T + b`` for binary spikes, using that most entries are 0.

    When the spike density (fraction of ones in ``spikes``) is below ``forward_below``
    the forward product is a CSR sparse x dense matmul, and when it is also below
    ``weight_grad_below`` the weight gradient ``G^T S`` is computed as ``(S^T G)^T``
    with S in COO form (reusing the forward's conversion); otherwise the products are
    dense. The input gradient ``G W`` is always dense. Pass ``math.inf`` for both to
    always use the sparse products. The results equal the dense products up to float
    summation order. The defaults were measured on the CPU in float32; on CUDA, torch
    runs the sparse products with cuSPARSE.

    Args:
        spikes: S, 0/1 values, ``[M, K]``.
        weight: W, ``[N, K]``.
        bias: b, ``[N]``, or None.
        forward_below, weight_grad_below: density thresholds (fractions; see above).
    Returns:
        ``[M, N]``.
    """
    return SpikeLinear.apply(spikes, weight, bias, forward_below, weight_grad_below)

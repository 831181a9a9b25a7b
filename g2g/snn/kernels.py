"""Hand-written autograd kernels of the spiking layers.

- :class:`LIFScan`: the LIF recursion over all T steps of a layer with a fused backward.
- :class:`SpikeLinear`: ``S @ W^T + b`` for binary spike inputs, with sparse products on
  the CPU when few inputs spike.

Both equal the straightforward autograd computation up to float summation order
(``tests/test_neurons.py``).
"""

from __future__ import annotations

import math
import warnings

import torch

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


# torch marks its CSR layout "beta"; the products used here are tested against dense ones
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

#: use sparse products for binary spike inputs on the CPU when they are sparse enough
#: (measured in benchmarks/README.md; set False to always use dense matmuls)
SPARSE_SPIKE_MATMUL = True
#: spike density below which the forward product uses a CSR sparse x dense matmul
SPARSE_FORWARD_BELOW = 0.15
#: spike density below which the weight gradient uses a COO sparse x dense matmul
SPARSE_WEIGHT_GRAD_BELOW = 0.12


class SpikeLinear(torch.autograd.Function):
    """``S @ W^T + b`` for binary spikes ``S`` ``[M, K]``, using that most entries are 0.

    On the CPU, when the spike density is below :data:`SPARSE_FORWARD_BELOW` the forward
    product is a CSR sparse x dense matmul, and below :data:`SPARSE_WEIGHT_GRAD_BELOW`
    the weight gradient ``G^T S`` is computed as ``(S^T G)^T`` with S in COO form; the
    input gradient ``G W`` is always dense. The results equal the dense products up to
    float32 summation order.
    """

    @staticmethod
    def forward(ctx, spikes, weight, bias):
        density = float(spikes.sum()) / max(spikes.numel(), 1)
        ctx.spikes_csr = None
        if density < SPARSE_FORWARD_BELOW:
            spikes_csr = spikes.to_sparse_csr()
            output = torch.sparse.mm(spikes_csr, weight.t())
            if bias is not None:
                output += bias
            if density < SPARSE_WEIGHT_GRAD_BELOW:
                ctx.spikes_csr = spikes_csr  # reused by the weight gradient
        elif bias is not None:
            output = torch.addmm(bias, spikes, weight.t())
        else:
            output = spikes @ weight.t()
        ctx.save_for_backward(spikes, weight)
        ctx.density = density
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
        return grad_spikes, grad_weight, grad_bias



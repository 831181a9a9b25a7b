"""The Hebbian score of the ``hebb`` prune and grow rules: running statistics of one
layer's pre- and postsynaptic activity since the last DST update.

Rate-based: for each training step since the last update the layer's presynaptic
activity ``a_pre`` (for fc1 the encoded input; otherwise the previous layer's spikes)
and postsynaptic spikes ``a_post`` are summed over the T time steps, giving spike
counts per example, ``[B, N_in]`` and ``[B, N_out]``. ``hebbian_score``:

- ``cosine`` (default): the trace accumulates ``C += a_post^T a_pre`` and the squared
  norms of every neuron's counts; the score is the cosine similarity
  ``C[o, i] / (||post_o|| * ||pre_i||)`` (0 where a neuron never fired);
- ``correlation``: the Pearson correlation of each post and pre neuron's counts over
  every example since the last update, i.e. the cosine of the *centred* counts, so a
  neuron that is active on every example scores 0 with every partner instead of
  scoring high with every active one. Running sums of the counts, their squares and
  products and the example count n, in float64 and shifted by the first example's
  counts (the "shifted data" algorithm, Chan, Golub & LeVeque 1983), so that the
  differences ``sum(x y)/n - mean(x) mean(y)`` do not cancel; a neuron whose count never
  changes (zero variance, e.g. silent) scores 0.

Summing over time before the outer product costs ``B*N_in*N_out`` multiply-adds per
step, 1/T of the layer's forward matmul, and everything stays on the device
(``correlation``'s float64 sums: on the CPU for devices without float64, see
:func:`float64_device`).
"""

from __future__ import annotations

import torch

#: the Hebbian score (``sparsity.hebbian_score``): ``cosine`` of the spike counts, or their
#: Pearson ``correlation`` (module docstring)
HEBBIAN_SCORES = ("cosine", "correlation")


def spike_counts(activity: torch.Tensor) -> torch.Tensor:
    """``[T, B, N]`` -> sum over time ``[B, N]`` (``T * x`` for a broadcast constant input)."""
    if activity.stride(0) == 0:
        return activity[0] * activity.shape[0]
    return activity.sum(0)


def float64_device(device: torch.device | str) -> torch.device:
    """Where float64 running sums of a layer on ``device`` live: ``device`` itself, or
    the CPU for MPS and DirectML (``privateuseone``), which have no float64."""
    device = torch.device(device)
    return torch.device("cpu") if device.type in ("mps", "privateuseone") else device


class HebbianTrace:
    """Running pre/post activity statistics of one layer, and the Hebbian score from
    them (module docstring).

    Args:
        out_features, in_features: layer shape.
        device: the layer's device (where the counts come from and the score goes).
        score: ``cosine`` or ``correlation`` (:data:`HEBBIAN_SCORES`).
    Raises:
        ValueError: an unknown ``score``.
    """

    def __init__(self, out_features: int, in_features: int, device: torch.device | str = "cpu",
                 score: str = "cosine"):
        if score not in HEBBIAN_SCORES:
            raise ValueError(f"sparsity.hebbian_score={score!r} is unknown; allowed: {', '.join(HEBBIAN_SCORES)}")
        self.score_name = score
        self.device = torch.device(device)
        centred = score == "correlation"
        sums = {"dtype": torch.float64, "device": float64_device(device)} if centred else {"device": device}
        #: sum over examples of post x pre counts ``[N_out, N_in]`` (shifted with ``correlation``)
        self.correlation = torch.zeros(out_features, in_features, **sums)
        self.pre_square = torch.zeros(in_features, **sums)
        self.post_square = torch.zeros(out_features, **sums)
        if centred:
            self.pre_sum = torch.zeros(in_features, **sums)
            self.post_sum = torch.zeros(out_features, **sums)
            #: the counts of the first example since the reset, subtracted from every example's
            self.pre_shift = torch.zeros(in_features, device=device)
            self.post_shift = torch.zeros(out_features, device=device)
            self.examples = 0

    @torch.no_grad()
    def accumulate_counts(self, pre_counts: torch.Tensor, post_counts: torch.Tensor) -> None:
        """Add one step's activity summed over time: ``[B, N_in]`` and ``[B, N_out]``."""
        if self.score_name == "cosine":
            self.correlation.addmm_(post_counts.T, pre_counts)
            self.pre_square.add_(pre_counts.square().sum(0))
            self.post_square.add_(post_counts.square().sum(0))
            return
        if self.examples == 0:
            self.pre_shift.copy_(pre_counts[0])
            self.post_shift.copy_(post_counts[0])
        pre, post = pre_counts - self.pre_shift, post_counts - self.post_shift
        # one batch's products in the counts' dtype: exact for spike counts (integers, |x| <= T)
        # while B * T^2 < 2^24; summed over batches in float64
        self.correlation.add_((post.T @ pre).to(self.correlation))
        pre, post = pre.to(self.pre_sum), post.to(self.post_sum)
        self.pre_sum.add_(pre.sum(0))
        self.post_sum.add_(post.sum(0))
        self.pre_square.add_(pre.square().sum(0))
        self.post_square.add_(post.square().sum(0))
        self.examples += pre_counts.shape[0]

    def score(self, eps: float = 1e-12) -> torch.Tensor:
        """The Hebbian score ``[N_out, N_in]`` in [-1, 1], float32 on the layer's device:
        cosine similarity (0 where a neuron never fired) or Pearson correlation (0 where
        a neuron's count never changed) of the counts accumulated since the reset."""
        if self.score_name == "cosine":
            norms = self.post_square.sqrt()[:, None] * self.pre_square.sqrt()[None, :]
            return self.correlation / norms.clamp_min(eps)
        n = max(self.examples, 1)
        pre_mean, post_mean = self.pre_sum / n, self.post_sum / n
        covariance = self.correlation / n - post_mean[:, None] * pre_mean[None, :]
        pre_deviation = (self.pre_square / n - pre_mean.square()).clamp_min(0).sqrt()
        post_deviation = (self.post_square / n - post_mean.square()).clamp_min(0).sqrt()
        deviations = post_deviation[:, None] * pre_deviation[None, :]
        positive = deviations > 0
        pearson = torch.where(positive, covariance / torch.where(positive, deviations, 1.0), 0.0)
        return pearson.clamp(-1.0, 1.0).to(device=self.device, dtype=torch.float32)

    def reset(self) -> None:
        for value in self.state_dict().values():
            if torch.is_tensor(value):
                value.zero_()
        if self.score_name == "correlation":
            self.examples = 0

    def state_dict(self) -> dict:
        """The running sums (``cosine``: ``correlation``, ``pre_square``, ``post_square``;
        ``correlation`` adds ``pre_sum``, ``post_sum``, ``pre_shift``, ``post_shift`` and
        ``examples``)."""
        state = {"correlation": self.correlation, "pre_square": self.pre_square,
                 "post_square": self.post_square}
        if self.score_name == "correlation":
            state.update(pre_sum=self.pre_sum, post_sum=self.post_sum, pre_shift=self.pre_shift,
                         post_shift=self.post_shift, examples=self.examples)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (of a trace with the same score).

        Raises:
            ValueError: ``state`` is another score's (its keys differ).
        """
        if set(state) != set(self.state_dict()):
            raise ValueError(f"a Hebbian trace state with {sorted(state)} cannot be loaded into a "
                             f"sparsity.hebbian_score={self.score_name!r} trace ({sorted(self.state_dict())})")
        for name, value in state.items():
            if name == "examples":
                self.examples = int(value)
            else:
                getattr(self, name).copy_(value)

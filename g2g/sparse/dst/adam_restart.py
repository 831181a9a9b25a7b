"""Restarting Adam's state of single entries of a parameter (DST's pruned and regrown
connections) exactly as a fresh parameter would have it.

Adam (Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization", ICLR, Algorithm 1)
keeps, per parameter tensor, the moments ``m`` (``exp_avg``) and ``v`` (``exp_avg_sq``)
and one step count ``t``; its update divides the moments by the bias corrections
``1 - beta1^t`` and ``1 - beta2^t``. Zeroing the moments of one entry at tensor step
``r`` is not enough: the next steps would correct them for ``t`` steps when they hold
``s = t - r``, and the first update of a regrown weight would be
``(1 - beta1) / sqrt(1 - beta2)`` (about 3.2 at the defaults) times a fresh parameter's.

What "step" means per entry: an entry that restarted when its tensor had taken ``r``
optimizer steps (its *restart step*, :attr:`AdamRestart.restart_steps`) has taken
``s = t - r`` steps of its own after the tensor's ``t``-th step; the first step after
the restart is its step ``s = 1``, as the first step of a fresh ``torch.optim.Adam``
parameter. ``r = 0`` means "never restarted" (restarting before the first optimizer
step is the same thing), and such an entry simply keeps torch's update (``s = t``).

So :meth:`AdamRestart.restart` zeroes the entries' moments (every per-entry state tensor)
and records ``r``, and :meth:`AdamRestart.step`, called instead of ``optimizer.step()``,
snapshots the restarted active entries, lets torch step, and replaces torch's update of
those entries by Adam's update with their own count ``s``::

    p = p_before - lr * (m / (1 - beta1^s)) / (sqrt(v) / sqrt(1 - beta2^s) + eps)

with ``m``, ``v`` the moments after torch's step (they already hold the L2
``weight_decay`` term of the gradient; with decoupled weight decay, AdamW, ``p_before``
is first multiplied by ``1 - lr * weight_decay``, as torch does). The bias corrections
are computed as torch computes them (Python floats per distinct ``s``, then the
parameter's dtype). The moments of a restarted entry are then exactly a fresh
parameter's (torch computes them elementwise); its value agrees with a fresh
parameter's to rounding (the update's operations are ordered differently from
torch's ``addcdiv_``). Entries never restarted keep torch's update bit for bit. The bias
corrections are computed on the parameter's device (in float64, then its dtype), so a
step reads nothing back to the host beyond Adam's ``step`` count, which torch keeps on
the CPU.

Exact for ``torch.optim.Adam`` and its subclasses (AdamW) with ``amsgrad=False`` and
``maximize=False`` (:func:`restart_unsupported`). Any other optimizer gets only its
per-entry state zeroed at a restart, and :meth:`AdamRestart.step` is its plain
``optimizer.step()`` (a warning says so when the :class:`AdamRestart` is built).

Cost per step: an ``index_select``, a few elementwise operations and an ``index_copy_``
over the restarted active entries (``benchmarks/dst_overhead.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

log = logging.getLogger(__name__)


def restart_unsupported(optimizer: torch.optim.Optimizer) -> str | None:
    """Why the optimizer state of restarted entries cannot be restarted exactly for
    ``optimizer`` (module docstring), or None when it can: ``torch.optim.Adam`` or a
    subclass (AdamW) with ``amsgrad=False`` and ``maximize=False`` in every group."""
    if not isinstance(optimizer, torch.optim.Adam):
        return f"{type(optimizer).__name__} is not torch.optim.Adam"
    for group in optimizer.param_groups:
        for option in ("amsgrad", "maximize"):
            if group.get(option):
                return f"{type(optimizer).__name__} has {option}=True"
    return None


def step_count(value) -> int:
    """Adam's ``state["step"]`` (a tensor, or a number in old state dicts) as an int."""
    return int(value.item() if torch.is_tensor(value) else value)


class AdamRestart:
    """Per-entry restarts of the optimizer state of some parameters (module docstring).

    Args:
        optimizer: the optimizer that steps ``parameters``.
        parameters: name -> parameter whose entries may restart (DST: each masked layer's
            weight ``[N_out, N_in]``). A parameter the optimizer does not hold is never
            recomputed.
        masks: name -> 0/1 tensor of the parameter's shape (DST: the layer's mask, a live
            view: it is read after every :meth:`restart` and :meth:`load_state_dict`), or
            no entry for a name: every entry counts as active. Only restarted *active*
            entries have their update recomputed; an inactive entry of DST is a zero weight
            with zero gradient and zero moments, which Adam's update leaves at zero.

    Attributes:
        exact: whether the optimizer is supported (:func:`restart_unsupported`), i.e. a
            restarted entry takes a fresh parameter's steps, not only zeroed state.
        restart_steps: name -> int32 tensor of the parameter's shape: the optimizer's step
            count of the parameter when each entry last restarted (0: never).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, parameters: Mapping[str, torch.nn.Parameter],
                 masks: Mapping[str, torch.Tensor] | None = None) -> None:
        self.optimizer = optimizer
        self.parameters = dict(parameters)
        self.masks = dict(masks or {})
        self.restart_steps = {name: torch.zeros(parameter.shape, dtype=torch.int32, device=parameter.device)
                              for name, parameter in self.parameters.items()}
        #: per parameter: (flat indices of the restarted active entries, index of each into
        #: ``steps``, ``steps``: their distinct restart steps, int64 on the parameter's
        #: device); only parameters with some
        self._restarted: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._groups = {name: group for name, parameter in self.parameters.items()
                        for group in optimizer.param_groups
                        if any(held is parameter for held in group["params"])}
        unsupported = restart_unsupported(optimizer)
        self.exact = unsupported is None
        if unsupported is not None:
            log.warning("DST zeroes the per-entry optimizer state of pruned and regrown connections, but "
                        "their step count cannot be restarted: %s (supported: torch.optim.Adam with "
                        "amsgrad=False, maximize=False); regrown weights take their first steps with the "
                        "bias correction of the whole tensor's step count", unsupported)

    @torch.no_grad()
    def restart(self, changed: Mapping[str, torch.Tensor]) -> None:
        """Restart the optimizer state of the ``changed`` entries now: zero every
        per-entry state tensor (Adam's ``exp_avg``, ``exp_avg_sq``, ...) there and record
        the parameter's optimizer step count as their restart step.

        Args:
            changed: parameter name -> flat indices (into ``parameter.view(-1)``) of the
                entries to restart, e.g. :meth:`g2g.sparse.dst.DynamicSparsity.update`'s
                pruned and grown entries; names without entries, or absent, are untouched.
        """
        for name, flat_indices in changed.items():
            if flat_indices.numel() == 0:
                continue
            parameter = self.parameters[name]
            state = self.optimizer.state.get(parameter, {})
            for value in state.values():
                if torch.is_tensor(value) and value.shape == parameter.shape:
                    value.view(-1)[flat_indices] = 0
            self.restart_steps[name].view(-1)[flat_indices] = step_count(state.get("step", 0))
            self._find_restarted(name)

    @torch.no_grad()
    def step(self) -> None:
        """``optimizer.step()``, where every restarted active entry (of a parameter that
        has a gradient and is in the optimizer) takes Adam's update with its own step
        count ``s = t - restart_step`` instead of torch's (module docstring). With an
        optimizer that is not supported (not :attr:`exact`): ``optimizer.step()`` alone."""
        if not self.exact:
            self.optimizer.step()
            return
        before = {name: self.parameters[name].view(-1).index_select(0, indices)
                  for name, (indices, _, _) in self._restarted.items()
                  if name in self._groups and self.parameters[name].grad is not None}
        self.optimizer.step()
        for name, snapshot in before.items():
            self._replace_update(name, snapshot)

    def _replace_update(self, name: str, before: torch.Tensor) -> None:
        """Set the restarted active entries of ``name`` to ``before`` minus Adam's update
        with their own step count, from the moments torch's step left."""
        indices, which, steps = self._restarted[name]
        weight, group = self.parameters[name], self._groups[name]
        state = self.optimizer.state[weight]
        step = step_count(state["step"])
        beta1, beta2 = (float(beta) for beta in group["betas"])
        lr, eps, weight_decay = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        # as torch computes them for a tensor at step s: in double precision (Python floats
        # there), then the weight's dtype; here on the weight's device, from the distinct
        # restart steps kept there, so nothing is built on the host and copied per step
        own_steps = (step - steps).to(torch.float64)
        step_size = (lr / (1 - torch.pow(beta1, own_steps))).to(weight.dtype).index_select(0, which)
        correction2_sqrt = (1 - torch.pow(beta2, own_steps)).sqrt().to(weight.dtype).index_select(0, which)
        if weight_decay != 0 and group.get("decoupled_weight_decay", False):
            before = before * (1 - lr * weight_decay)
        denominator = (state["exp_avg_sq"].view(-1).index_select(0, indices).sqrt() / correction2_sqrt).add_(eps)
        update = state["exp_avg"].view(-1).index_select(0, indices).div_(denominator).mul_(step_size)
        weight.view(-1).index_copy_(0, indices, before.sub_(update))

    def _find_restarted(self, name: str) -> None:
        """Cache the restarted active entries of ``name`` (after a restart or a load)."""
        restarted = self.restart_steps[name] > 0
        if name in self.masks:
            restarted &= self.masks[name].bool()
        indices = restarted.view(-1).nonzero().squeeze(1)
        if indices.numel() == 0:
            self._restarted.pop(name, None)
            return
        steps, which = torch.unique(self.restart_steps[name].view(-1)[indices], return_inverse=True)
        self._restarted[name] = (indices, which, steps.to(torch.int64))

    def restarted_entries(self) -> int:
        """How many active entries have restarted optimizer state (with Adam, their update
        is recomputed in every :meth:`step`)."""
        return sum(int(indices.numel()) for indices, _, _ in self._restarted.values())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The restart steps, name -> int32 tensor (the moments live in the optimizer's state)."""
        return dict(self.restart_steps)

    def load_state_dict(self, restart_steps: Mapping[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict`; a name it lacks loads as "never restarted". Load
        the masks (the model) first: the restarted *active* entries are found here."""
        for name, steps in self.restart_steps.items():
            if name in restart_steps:
                steps.copy_(restart_steps[name])
            else:
                steps.zero_()
            self._find_restarted(name)

"""The DST itself: :class:`DynamicSparsity` prunes and grows connections of the masked
layers during training.

Every ``update_interval`` optimizer steps (never at step 0, and never after the stop
step ``stop_fraction * total_steps``; :mod:`g2g.sparse.dst.schedule`), for every masked
layer (fc1, fc2, fc3):

1. ``k = min(floor(f * active), inactive)`` where ``f`` is the update's prune fraction
   (``prune_fraction``, or with ``fraction_schedule=cosine`` its cosine decay after RigL,
   Evci et al. 2020, :meth:`UpdateSchedule.fraction_at
   <g2g.sparse.dst.schedule.UpdateSchedule.fraction_at>`), ``active`` is the number of
   connections in the mask and ``inactive`` the number outside it; the product is exact
   (:func:`~g2g.sparse.dst.schedule.prune_count`);
2. prune exactly ``k`` active connections: the smallest ``|w|`` (``set``, after SET,
   Mocanu et al. 2018), uniformly at random (``random``) or the lowest Hebbian score
   (``hebb``); :mod:`g2g.sparse.dst.rules`;
3. grow exactly ``k`` connections among those inactive *before* this update: the
   highest Hebbian score (``hebb``, :mod:`g2g.sparse.dst.hebbian`) or uniformly at
   random (``random``);
4. pruned weights become 0, grown weights start at ``grow_init`` (``zero``, or
   ``uniform``: nn.Linear's initial range ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``), and
   the optimizer state of every changed entry restarts: Adam's first and second
   moments become 0 and the entry gets its own step count from here on (below).

The number of active connections of every layer never changes.

Optimizer state of restarted entries: Adam keeps one step count ``t`` per tensor, and its
bias correction (Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization", ICLR,
Algorithm 1) divides the moments by ``1 - beta1^t`` and ``1 - beta2^t``. Zeroing the
moments of an entry at step ``r`` without restarting its count would correct them for
``t`` steps when they hold ``s = t - r``: the first update of a regrown weight would be
``(1 - beta1) / sqrt(1 - beta2)`` (about 3.2 at the defaults) times a fresh parameter's.
So, for ``torch.optim.Adam`` (and AdamW) with ``amsgrad=False`` and ``maximize=False``,
DST records the step ``r`` at which every entry restarted (:attr:`DynamicSparsity.restart_steps`)
and, through torch's optimizer step hooks, snapshots the restarted active entries
before ``optimizer.step()`` and replaces torch's update of them afterwards by the
update with their own count ``s``:
``p = p_before - lr * (m / (1 - beta1^s)) / (sqrt(v) / sqrt(1 - beta2^s) + eps)``,
where ``m``, ``v`` are Adam's moments after the step (they hold the L2 ``weight_decay``
term of the gradient; with decoupled weight decay ``p_before`` is first multiplied by
``1 - lr * weight_decay``, as torch does). Entries never restarted keep torch's update
bit for bit. Any other optimizer gets its per-entry state zeroed only (a warning says so).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple

import torch

from g2g.sparse.dst.hebbian import HEBBIAN_SCORES, HebbianTrace, spike_counts
from g2g.sparse.dst.rules import (GROW_INITIALIZERS, GROW_INITS, GROW_RULES, GROW_SCORES, HEBBIAN_RULE, PRUNE_RULES,
                                  PRUNE_SCORES, highest, lowest)
from g2g.sparse.dst.schedule import FRACTION_SCHEDULES, UpdateSchedule, prune_count
from g2g.sparse.layers import MaskedLinear

log = logging.getLogger(__name__)


@dataclass
class UpdateRecord:
    """What one DST update did to one layer (logged to MLflow at ``step``)."""

    step: int
    layer: str
    pruned: int
    grown: int
    grown_inter_fraction: float
    density: float
    density_intra: float
    density_inter: float
    #: the update's prune fraction (:meth:`DynamicSparsity.fraction_at`); None in the
    #: records of checkpoints written before it was recorded
    prune_fraction: float | None = None

    def metrics(self) -> dict[str, float]:
        prefix = f"dst_{self.layer}_"
        metrics = {prefix + "pruned": self.pruned, prefix + "grown": self.grown,
                   prefix + "grown_inter_fraction": self.grown_inter_fraction,
                   prefix + "density": self.density, prefix + "density_intra": self.density_intra,
                   prefix + "density_inter": self.density_inter}
        if self.prune_fraction is not None:
            metrics[prefix + "prune_fraction"] = self.prune_fraction
        return metrics


def group_densities(layer: MaskedLinear) -> tuple[float, float]:
    """(density inside groups, density between groups) of a masked layer."""
    same = layer.same_group()
    active = layer.mask.bool()
    intra = (active & same).sum().item() / max(same.sum().item(), 1)
    inter = (active & ~same).sum().item() / max((~same).sum().item(), 1)
    return intra, inter


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


def _step_count(value) -> int:
    """Adam's ``state["step"]`` (a tensor, or a number in old state dicts) as an int."""
    return int(value.item() if torch.is_tensor(value) else value)


class DynamicSparsity:
    """Prunes and grows the masked layers of a sparse network during training.

    Use it as a trainer step callback: ``dst(global_step, output, inputs)`` after
    every ``optimizer.step()``. Which steps update, and with which prune fraction, is a
    pure function of the step (:meth:`updates_at`, :meth:`fraction_at`), so a resumed
    run continues the same schedule.

    Args:
        model: a sparse network (:class:`g2g.models.network.SpikingNetwork` with connectivity
            ``index``, ``random`` or ``mixer``): its ``masked_layers()`` are rewired.
        optimizer: the model's optimizer; the state of changed entries restarts (module
            docstring: exactly for Adam through its step hooks, else zeroed).
        prune: ``set``, ``random`` or ``hebb``.
        grow: ``hebb`` or ``random``.
        update_interval: optimizer steps between updates, >= 1.
        prune_fraction: fraction of active connections replaced per update, in (0, 1)
            (with ``fraction_schedule=cosine``: at step 0).
        grow_init: ``zero`` or ``uniform`` (see module docstring).
        seed: seed of the random choices (random prune/grow, uniform init).
        stop_fraction: no update after ``stop_fraction * total_steps`` optimizer steps, in
            (0, 1]; 1: updates through the last step.
        fraction_schedule: ``constant`` (every update replaces ``prune_fraction``) or
            ``cosine``: the update at step t replaces
            ``prune_fraction / 2 * (1 + cos(pi * t / T_end))`` with
            ``T_end = stop_fraction * total_steps`` (RigL's f_decay, Evci et al. 2020,
            "Rigging the Lottery: Making All Tickets Winners", ICML).
        total_steps: the run's total optimizer steps (epochs x batches per epoch); needed
            unless ``stop_fraction`` is 1 and ``fraction_schedule`` is ``constant``.
        hebbian_score: the score of the ``hebb`` rules: ``cosine`` of the spike counts or
            their Pearson ``correlation`` (:mod:`g2g.sparse.dst.hebbian`).
    Raises:
        ValueError: a dense model, an unknown rule or schedule, ``stop_fraction`` outside
            (0, 1], or a stop or schedule without ``total_steps``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        prune: str = "set",
        grow: str = "hebb",
        update_interval: int = 1000,
        prune_fraction: float = 0.1,
        grow_init: str = "zero",
        seed: int = 0,
        stop_fraction: float = 1.0,
        fraction_schedule: str = "constant",
        total_steps: int | None = None,
        hebbian_score: str = "cosine",
    ) -> None:
        if model.connectivity == "dense":
            raise ValueError(
                "sparsity=dynamic needs a sparse model: model=dense is fully connected and has "
                "nothing to rewire; use model=index|random|mixer, or sparsity=static"
            )
        for key, value, allowed in (("sparsity.prune", prune, PRUNE_RULES),
                                    ("sparsity.grow", grow, GROW_RULES),
                                    ("sparsity.grow_init", grow_init, GROW_INITS),
                                    ("sparsity.fraction_schedule", fraction_schedule, FRACTION_SCHEDULES),
                                    ("sparsity.hebbian_score", hebbian_score, HEBBIAN_SCORES)):
            if value not in allowed:
                raise ValueError(f"{key}={value!r} is unknown; allowed: {', '.join(allowed)}")
        #: which steps update and with which prune fraction (raises on a bad stop or schedule)
        self.schedule = UpdateSchedule(update_interval, prune_fraction, stop_fraction, fraction_schedule, total_steps)
        self.model = model
        self.optimizer = optimizer
        self.prune = prune
        self.grow = grow
        self.grow_init = grow_init
        self.hebbian_score = hebbian_score
        self.generator = torch.Generator().manual_seed(seed)
        # the layers with a mask (a dense readout, ``model.readout=dense``, has none and is not rewired)
        self.layers = {name: layer for name, layer in model.masked_layers().items() if layer.mask is not None}
        self.uses_hebbian = HEBBIAN_RULE in (prune, grow)
        self.traces = {
            name: HebbianTrace(layer.out_features, layer.in_features, layer.weight.device, hebbian_score)
            for name, layer in self.layers.items()
        } if self.uses_hebbian else {}
        self.update_count = 0
        self.records: list[UpdateRecord] = []
        #: per layer ``[N_out, N_in]`` int32: the optimizer's step count when each entry's
        #: state last restarted (0: never, which is the same as restarting at step 0)
        self.restart_steps = {name: torch.zeros(layer.weight.shape, dtype=torch.int32, device=layer.weight.device)
                              for name, layer in self.layers.items()}
        #: per layer: (flat indices of the restarted active entries, index of each into
        #: ``steps``, ``steps``: their distinct restart steps)
        self._restarted: dict[str, tuple[torch.Tensor, torch.Tensor, list[int]]] = {}
        self._snapshots: dict[str, torch.Tensor] = {}
        self._groups = {name: group for name, layer in self.layers.items() for group in optimizer.param_groups
                        if any(parameter is layer.weight for parameter in group["params"])}
        unsupported = restart_unsupported(optimizer)
        self.restarts_optimizer_state = unsupported is None
        if unsupported is None:
            optimizer.register_step_pre_hook(self._before_optimizer_step)
            optimizer.register_step_post_hook(self._after_optimizer_step)
        else:
            log.warning("DST zeroes the per-entry optimizer state of pruned and regrown connections, but "
                        "their step count cannot be restarted: %s (supported: torch.optim.Adam with "
                        "amsgrad=False, maximize=False); regrown weights take their first steps with the "
                        "bias correction of the whole tensor's step count", unsupported)

    # the schedule's settings, as the DST was built with them
    update_interval = property(lambda self: self.schedule.update_interval)
    prune_fraction = property(lambda self: self.schedule.prune_fraction)
    stop_fraction = property(lambda self: self.schedule.stop_fraction)
    fraction_schedule = property(lambda self: self.schedule.fraction_schedule)
    total_steps = property(lambda self: self.schedule.total_steps)
    stop_step = property(lambda self: self.schedule.stop_step, doc="T_end, exactly; None: no stop")

    def updates_at(self, global_step: int) -> bool:
        """Whether the step callback of ``global_step`` updates: a positive multiple of
        ``update_interval`` that is not after the stop step T_end
        (:meth:`UpdateSchedule.updates_at <g2g.sparse.dst.schedule.UpdateSchedule.updates_at>`)."""
        return self.schedule.updates_at(global_step)

    def fraction_at(self, global_step: int) -> float:
        """The prune fraction of an update at ``global_step``
        (:meth:`UpdateSchedule.fraction_at <g2g.sparse.dst.schedule.UpdateSchedule.fraction_at>`):
        ``prune_fraction``, or its cosine decay to 0 at T_end."""
        return self.schedule.fraction_at(global_step)

    def __call__(self, global_step: int, output: NamedTuple, inputs: torch.Tensor) -> None:
        """Accumulate Hebbian activity (up to the stop step) and, on update steps
        (:meth:`updates_at`), rewire every layer."""
        if self.uses_hebbian and self.schedule.accumulates_at(global_step):
            # each layer's spikes are the post of one layer and the pre of the next: count once
            counts = [spike_counts(inputs)] + [spike_counts(spikes) for spikes in output.spikes]
            for (name, _), pre, post in zip(self.model.masked_layers().items(), counts[:-1], counts[1:]):
                if name in self.traces:
                    self.traces[name].accumulate_counts(pre, post)
        if self.updates_at(global_step):
            self.update(global_step)

    @torch.no_grad()
    def update(self, global_step: int) -> list[UpdateRecord]:
        """Prune and grow every masked layer once; returns what was done."""
        records = []
        for name, layer in self.layers.items():
            records.append(self.update_layer(name, layer, global_step))
            if name in self.traces:
                self.traces[name].reset()
        self.update_count += 1
        self.records.extend(records)
        return records

    @torch.no_grad()
    def update_layer(self, name: str, layer: MaskedLinear, global_step: int) -> UpdateRecord:
        """Prune and grow one layer (steps 1-4 of the module docstring) with the prune
        fraction of ``global_step`` (:meth:`fraction_at`), from the Hebbian trace
        accumulated so far; does not reset the trace."""
        mask = layer.mask
        active = mask.bool()
        inactive = ~active
        fraction = self.fraction_at(global_step)
        k = min(prune_count(fraction, int(active.sum())), int(inactive.sum()))
        if k > 0:
            prune_scores = PRUNE_SCORES[self.prune](self, name, layer)
            grow_scores = GROW_SCORES[self.grow](self, name, layer)
            pruned = lowest(prune_scores, active, k)
            grown = highest(grow_scores, inactive, k)  # inactive *before* this update
            flat_mask, flat_weight = mask.view(-1), layer.weight.view(-1)
            flat_mask[pruned] = 0.0
            flat_mask[grown] = 1.0
            flat_weight[pruned] = 0.0
            flat_weight[grown] = GROW_INITIALIZERS[self.grow_init](self, layer, k)
            self._restart_optimizer_state(name, layer.weight, torch.cat([pruned, grown]))
            grown_inter = (~layer.same_group().view(-1)[grown]).float().mean().item()
        else:
            grown_inter = 0.0
        intra, inter = group_densities(layer)
        return UpdateRecord(global_step, name, k, k, grown_inter, layer.density(), intra, inter, fraction)

    def _restart_optimizer_state(self, name: str, weight: torch.nn.Parameter, flat_indices: torch.Tensor) -> None:
        """Zero every per-element optimizer state tensor (Adam's ``exp_avg``,
        ``exp_avg_sq``, ...) of ``weight`` at the changed entries and record the
        optimizer's step count there as their restart step."""
        state = self.optimizer.state.get(weight, {})
        for value in state.values():
            if torch.is_tensor(value) and value.shape == weight.shape:
                value.view(-1)[flat_indices] = 0
        self.restart_steps[name].view(-1)[flat_indices] = _step_count(state.get("step", 0))
        self._find_restarted(name)

    def _find_restarted(self, name: str) -> None:
        """Cache the restarted active entries of layer ``name`` (after an update or a load)."""
        restarted = (self.restart_steps[name] > 0) & self.layers[name].mask.bool()
        indices = restarted.view(-1).nonzero().squeeze(1)
        if indices.numel() == 0:
            self._restarted.pop(name, None)
            return
        steps, which = torch.unique(self.restart_steps[name].view(-1)[indices], return_inverse=True)
        self._restarted[name] = (indices, which, steps.tolist())

    def restarted_entries(self) -> int:
        """How many active entries have restarted optimizer state (with Adam, their update
        is recomputed after every optimizer step)."""
        return sum(int(indices.numel()) for indices, _, _ in self._restarted.values())

    @torch.no_grad()
    def _before_optimizer_step(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        """Step pre-hook: snapshot the restarted active entries of every layer that gets
        a step now (is in the optimizer and has a gradient)."""
        self._snapshots = {name: self.layers[name].weight.view(-1).index_select(0, indices)
                           for name, (indices, _, _) in self._restarted.items()
                           if name in self._groups and self.layers[name].weight.grad is not None}

    @torch.no_grad()
    def _after_optimizer_step(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        """Step post-hook: replace torch's update of the snapshot entries by Adam's
        update with their own step count ``s = t - restart_step`` (module docstring)."""
        for name, before in self._snapshots.items():
            indices, which, steps = self._restarted[name]
            weight, group = self.layers[name].weight, self._groups[name]
            state = optimizer.state[weight]
            step = _step_count(state["step"])
            beta1, beta2 = (float(beta) for beta in group["betas"])
            lr, eps, weight_decay = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
            # as torch computes them for a tensor at step s: Python floats, then the weight's dtype
            step_size = torch.tensor([lr / (1 - beta1 ** (step - restart)) for restart in steps], dtype=weight.dtype)
            correction2_sqrt = torch.tensor([(1 - beta2 ** (step - restart)) ** 0.5 for restart in steps],
                                            dtype=weight.dtype)
            step_size, correction2_sqrt = (value.to(weight.device).index_select(0, which)
                                           for value in (step_size, correction2_sqrt))
            if weight_decay != 0 and group.get("decoupled_weight_decay", False):
                before = before * (1 - lr * weight_decay)
            denominator = (state["exp_avg_sq"].view(-1).index_select(0, indices).sqrt() / correction2_sqrt).add_(eps)
            update = state["exp_avg"].view(-1).index_select(0, indices).div_(denominator).mul_(step_size)
            weight.view(-1).index_copy_(0, indices, before.sub_(update))
        self._snapshots = {}

    def state_dict(self) -> dict:
        """Traces, update count, random generator state, records and restart steps
        (masks live in the model's state dict, moments in the optimizer's)."""
        return {
            "update_count": self.update_count,
            "generator": self.generator.get_state(),
            "traces": {name: trace.state_dict() for name, trace in self.traces.items()},
            "records": [vars(record) for record in self.records],
            "restart_steps": dict(self.restart_steps),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; one without ``restart_steps`` (written before
        they were recorded) loads as "no entry ever restarted"."""
        self.update_count = state["update_count"]
        self.generator.set_state(state["generator"])
        for name, trace_state in state["traces"].items():
            self.traces[name].load_state_dict(trace_state)
        self.records = [UpdateRecord(**record) for record in state["records"]]
        restart_steps = state.get("restart_steps", {})
        for name, steps in self.restart_steps.items():
            if name in restart_steps:
                steps.copy_(restart_steps[name])
            else:
                steps.zero_()
            self._find_restarted(name)


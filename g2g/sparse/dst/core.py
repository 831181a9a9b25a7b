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
   the optimizer state of every changed entry restarts (by the caller, below): Adam's
   first and second moments become 0 and the entry gets its own step count from here on.

The number of active connections of every layer never changes.

The optimizer state of changed entries is restarted by the training step, not here:
:meth:`DynamicSparsity.update` returns the changed entries, and the caller passes them to
:meth:`AdamRestart.restart <g2g.sparse.dst.adam_restart.AdamRestart.restart>` of
:attr:`DynamicSparsity.adam_restart` and steps the optimizer through
:meth:`AdamRestart.step <g2g.sparse.dst.adam_restart.AdamRestart.step>`, so that a regrown
entry takes a fresh Adam parameter's steps (:mod:`g2g.sparse.dst.adam_restart`). The
trainer does both (:meth:`g2g.training.trainer.Trainer.train_epoch`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from g2g.sparse.dst.adam_restart import AdamRestart
from g2g.sparse.dst.hebbian import HEBBIAN_SCORES, HebbianTrace, spike_counts
from g2g.sparse.dst.rules import (
    GROW_INITIALIZERS,
    GROW_INITS,
    GROW_RULES,
    GROW_SCORES,
    HEBBIAN_RULE,
    PRUNE_RULES,
    PRUNE_SCORES,
    highest,
    lowest,
)
from g2g.sparse.dst.schedule import FRACTION_SCHEDULES, UpdateSchedule, prune_count
from g2g.sparse.layers import MaskedLinear


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


class DynamicSparsity:
    """Prunes and grows the masked layers of a sparse network during training.

    A training step uses it as the trainer does (:meth:`g2g.training.trainer.Trainer.train_epoch`)::

        dst.adam_restart.step()                          # instead of optimizer.step()
        changed = dst(global_step, output, inputs)       # Hebbian trace; prune and grow on update steps
        dst.adam_restart.restart(changed)                # Adam state of the changed entries starts afresh

    Which steps update, and with which prune fraction, is a pure function of the step
    (:meth:`updates_at`, :meth:`fraction_at`), so a resumed run continues the same schedule.

    Args:
        model: a sparse network (:class:`g2g.models.network.SpikingNetwork` with connectivity
            ``index``, ``random`` or ``mixer``): its ``masked_layers()`` are rewired.
        optimizer: the model's optimizer; :attr:`adam_restart` restarts the state of
            changed entries (exactly for Adam, else zeroed; :mod:`g2g.sparse.dst.adam_restart`).
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
        #: the optimizer state of changed entries: :meth:`update`'s caller restarts them
        #: there (``adam_restart.restart(changed)``) and steps through ``adam_restart.step()``
        self.adam_restart = AdamRestart(optimizer, {name: layer.weight for name, layer in self.layers.items()},
                                        {name: layer.mask for name, layer in self.layers.items()})

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

    def __call__(self, global_step: int, output: NamedTuple, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Accumulate Hebbian activity (up to the stop step) and, on update steps
        (:meth:`updates_at`), rewire every layer.

        Args:
            global_step: optimizer steps so far, this step's included (from 1).
            output: the network's output of this step (its ``spikes``, ``[T, B, N]`` per layer).
            inputs: the encoded input of this step ``[T, B, N_in]`` (fc1's presynaptic activity).
        Returns:
            the entries the update changed (:meth:`update`); ``{}`` on a step without an update.
        """
        if self.uses_hebbian and self.schedule.accumulates_at(global_step):
            # each layer's spikes are the post of one layer and the pre of the next: count once
            counts = [spike_counts(inputs)] + [spike_counts(spikes) for spikes in output.spikes]
            for (name, _), pre, post in zip(self.model.masked_layers().items(), counts[:-1], counts[1:]):
                if name in self.traces:
                    self.traces[name].accumulate_counts(pre, post)
        return self.update(global_step) if self.updates_at(global_step) else {}

    @torch.no_grad()
    def update(self, global_step: int) -> dict[str, torch.Tensor]:
        """Prune and grow every masked layer once and reset the Hebbian traces; what was
        done goes to :attr:`records` (one :class:`UpdateRecord` per layer).

        Returns:
            layer name -> flat indices (int64, into ``weight.view(-1)``, ``[2k]``) of the
            entries it changed: the ``k`` pruned, then the ``k`` grown; a layer where the
            update replaced nothing is absent. Their optimizer state is stale: restart it
            (``adam_restart.restart(changed)``) before the next optimizer step.
        """
        changed = {}
        for name, layer in self.layers.items():
            record, flat_indices = self.update_layer(name, layer, global_step)
            self.records.append(record)
            if flat_indices.numel() > 0:
                changed[name] = flat_indices
            if name in self.traces:
                self.traces[name].reset()
        self.update_count += 1
        return changed

    @torch.no_grad()
    def update_layer(self, name: str, layer: MaskedLinear, global_step: int) -> tuple[UpdateRecord, torch.Tensor]:
        """Prune and grow one layer (steps 1-4 of the module docstring; the optimizer
        state is left to the caller) with the prune fraction of ``global_step``
        (:meth:`fraction_at`), from the Hebbian trace accumulated so far; does not reset
        the trace and does not add to :attr:`records`.

        Returns:
            what was done, and the flat indices of the changed entries (pruned, then
            grown; ``[2k]`` int64, empty when ``k`` is 0).
        """
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
            changed = torch.cat([pruned, grown])
            grown_inter = (~layer.same_group().view(-1)[grown]).float().mean().item()
        else:
            changed = torch.empty(0, dtype=torch.long, device=mask.device)
            grown_inter = 0.0
        intra, inter = group_densities(layer)
        return UpdateRecord(global_step, name, k, k, grown_inter, layer.density(), intra, inter, fraction), changed

    @property
    def restart_steps(self) -> dict[str, torch.Tensor]:
        """Per layer ``[N_out, N_in]`` int32: the optimizer's step count when each entry's
        state last restarted (0: never); :attr:`AdamRestart.restart_steps
        <g2g.sparse.dst.adam_restart.AdamRestart.restart_steps>`."""
        return self.adam_restart.restart_steps

    @property
    def restarts_optimizer_state(self) -> bool:
        """Whether a changed entry's optimizer state restarts exactly (Adam), not only zeroed."""
        return self.adam_restart.exact

    def state_dict(self) -> dict:
        """Traces, update count, random generator state, records and restart steps
        (masks live in the model's state dict, moments in the optimizer's)."""
        return {
            "update_count": self.update_count,
            "generator": self.generator.get_state(),
            "traces": {name: trace.state_dict() for name, trace in self.traces.items()},
            "records": [vars(record) for record in self.records],
            "restart_steps": self.adam_restart.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; one without ``restart_steps`` (written before
        they were recorded) loads as "no entry ever restarted"."""
        self.update_count = state["update_count"]
        self.generator.set_state(state["generator"])
        for name, trace_state in state["traces"].items():
            self.traces[name].load_state_dict(trace_state)
        self.records = [UpdateRecord(**record) for record in state["records"]]
        self.adam_restart.load_state_dict(state.get("restart_steps", {}))


"""When DST updates and how many connections an update replaces.

Every ``update_interval`` optimizer steps (never at step 0, and never after the stop
step ``T_end = stop_fraction * total_steps``), an update replaces
``k = floor(f * active)`` connections of every layer, with ``f`` the update's prune
fraction: ``prune_fraction`` (``constant``) or its cosine decay to 0 at ``T_end``
(``cosine``, RigL's f_decay: Evci et al. 2020, "Rigging the Lottery: Making All Tickets
Winners", ICML). Both are pure functions of the optimizer step, so a resumed run
continues the same schedule.

The products are exact: a fraction is taken as the decimal it was written as (``0.57``
of 100 is 57, not the 56 of the binary float ``0.57 * 100 = 56.99...``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

#: how the prune fraction changes over training (``sparsity.fraction_schedule``):
#: ``constant``, or ``cosine`` (RigL, Evci et al. 2020: from ``prune_fraction`` at step 0
#: to 0 at the stop step)
FRACTION_SCHEDULES = ("constant", "cosine")


def exact_fraction(fraction: Fraction | float) -> Fraction:
    """``fraction`` as the shortest decimal that reads back as the same float (its
    ``repr``), i.e. the number as written in a config: ``0.57`` is 57/100."""
    return fraction if isinstance(fraction, Fraction) else Fraction(repr(float(fraction)))


def prune_count(fraction: Fraction | float, active: int) -> int:
    """``floor(fraction * active)``, computed exactly.

    A float ``fraction`` is taken as the shortest decimal that reads back as the same
    float (its ``repr``), i.e. the number as written in a config: ``0.57`` is 57/100,
    so ``prune_count(0.57, 100) == 57`` where ``int(0.57 * 100)`` gives 56.
    """
    return math.floor(exact_fraction(fraction) * active)


@dataclass(frozen=True)
class UpdateSchedule:
    """Which optimizer steps update, and the prune fraction of each update.

    Args:
        update_interval: optimizer steps between updates, >= 1.
        prune_fraction: fraction of active connections replaced per update, in (0, 1)
            (with ``fraction_schedule=cosine``: at step 0).
        stop_fraction: no update after ``stop_fraction * total_steps`` optimizer steps, in
            (0, 1]; 1: updates through the last step.
        fraction_schedule: ``constant`` or ``cosine`` (:data:`FRACTION_SCHEDULES`).
        total_steps: the run's total optimizer steps (epochs x batches per epoch); needed
            unless ``stop_fraction`` is 1 and ``fraction_schedule`` is ``constant``.
    Raises:
        ValueError: an unknown schedule, ``stop_fraction`` outside (0, 1], or a stop or
            schedule without ``total_steps``.
    """

    update_interval: int = 1000
    prune_fraction: float = 0.1
    stop_fraction: float = 1.0
    fraction_schedule: str = "constant"
    total_steps: int | None = None
    #: T_end = ``stop_fraction * total_steps`` in optimizer steps, exactly (the fraction as
    #: written, like :func:`prune_count`); None without ``total_steps`` (no stop)
    stop_step: Fraction | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.fraction_schedule not in FRACTION_SCHEDULES:
            raise ValueError(f"sparsity.fraction_schedule={self.fraction_schedule!r} is unknown; "
                             f"allowed: {', '.join(FRACTION_SCHEDULES)}")
        if not 0.0 < self.stop_fraction <= 1.0:
            raise ValueError(f"sparsity.stop_fraction={self.stop_fraction!r}: must be a fraction in (0, 1]")
        if self.total_steps is None and (self.stop_fraction < 1.0 or self.fraction_schedule != "constant"):
            raise ValueError(f"sparsity.stop_fraction={self.stop_fraction!r} with sparsity.fraction_schedule="
                             f"{self.fraction_schedule!r} needs the run's total optimizer steps (total_steps)")
        object.__setattr__(self, "update_interval", int(self.update_interval))
        object.__setattr__(self, "prune_fraction", float(self.prune_fraction))
        object.__setattr__(self, "stop_fraction", float(self.stop_fraction))
        if self.total_steps is not None:
            object.__setattr__(self, "total_steps", int(self.total_steps))
        object.__setattr__(self, "stop_step", None if self.total_steps is None
                           else exact_fraction(self.stop_fraction) * self.total_steps)

    def accumulates_at(self, global_step: int) -> bool:
        """Whether the Hebbian activity of ``global_step`` can still be used: not after T_end."""
        return self.stop_step is None or global_step <= self.stop_step

    def updates_at(self, global_step: int) -> bool:
        """Whether ``global_step`` (optimizer steps so far) updates: a positive multiple of
        ``update_interval`` that is not after the stop step T_end."""
        return global_step > 0 and global_step % self.update_interval == 0 and self.accumulates_at(global_step)

    def fraction_at(self, global_step: int) -> float:
        """The prune fraction of an update at ``global_step``: ``prune_fraction``
        (``constant``), or ``prune_fraction / 2 * (1 + cos(pi * t / T_end))``
        (``cosine``; RigL's f_decay, Evci et al. 2020), 0 at and after T_end."""
        if self.fraction_schedule == "constant":
            return self.prune_fraction
        progress = min(global_step / float(self.stop_step), 1.0)
        return self.prune_fraction / 2 * (1 + math.cos(math.pi * progress))

"""The training schedule of the paper, as a pure function of the epoch.

Epochs ``0 .. warmup-1``: no regularization, base LR, ``batch_start``. Then over the remaining
epochs ``warmup .. total-1`` the l2 coefficient rises geometrically from ``l2_start`` to
``l2_end``, the LR multiplier falls geometrically from 1 to ``lr_end_mult`` and the batch size
grows geometrically from ``batch_start`` to ``batch_end`` (rounded to an integer).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EpochSettings:
    """What one epoch trains with."""

    l2: float  # coefficient per squared non-linear weight
    l2_affine: float  # coefficient per squared affine weight
    lr_mult: float  # multiplies every param group's base LR
    batch_size: int


class Schedule:
    """Per-epoch l2 / LR / batch size.

    Args:
        cfg: a ``ScheduleConfig`` (or anything with its fields).
        total_epochs: the number of epochs the schedule spans (the round's or job's max_epochs).
    """

    def __init__(self, cfg, total_epochs: int):
        if total_epochs < 1:
            raise ValueError(f"total_epochs must be >= 1, got {total_epochs}")
        self.cfg = cfg
        self.total_epochs = int(total_epochs)

    def _progress(self, epoch: int) -> float | None:
        """None during warm-up, else a position in [0, 1] along the ramp."""
        warm = self.cfg.warmup_epochs
        if epoch < warm:
            return None
        span = self.total_epochs - 1 - warm
        return 1.0 if span <= 0 else min(1.0, (epoch - warm) / span)

    def at(self, epoch: int) -> EpochSettings:
        c = self.cfg
        t = self._progress(epoch)
        if t is None:
            return EpochSettings(0.0, 0.0, 1.0, int(c.batch_start))
        l2 = 0.0 if c.l2_end == 0 else c.l2_start * (c.l2_end / c.l2_start) ** t
        lr = c.lr_end_mult**t
        bs = int(round(c.batch_start * (c.batch_end / c.batch_start) ** t))
        return EpochSettings(l2, l2 * c.affine_l2_mult, lr, max(1, bs))

    def table(self) -> list[EpochSettings]:
        """Settings for every epoch (for printing and tests)."""
        return [self.at(e) for e in range(self.total_epochs)]

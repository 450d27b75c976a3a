"""``L2Schedule``: the paper's training recipe for any LightningModule, as a callback: l2 on the
target blocks' weights rising geometrically after a warm-up (and, optionally, the batch size
growing), which is what makes a network compressible by the Reduction Algorithm.

Which weights: in a ReLU MLP ``nn.Sequential`` every Linear's weight and bias except the last
Linear's bias (the block's output bias, like a Deep Stack Network's bottleneck bias); in a
``DeepStackNetwork`` V, b and W at the coefficient and the skip paths at ``affine_l2_mult`` times
it, never the bottleneck biases c. BatchNorm parameters and the rest of the model are left alone.
The term ``coef * |p|^2`` is added to the gradient (``2 coef p``) after backward and before the
optimizer step (after unscaling under mixed precision), which is what adding it to the loss
does, for any optimizer; the blocks are looked up at every step, so a reduction that replaces
them inside the fit changes nothing.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from .blocks import StackNetworkBlock, block_for
from .config import ConfigError
from .schedule import Schedule
from .targets import check_paths, resolve_targets

L2_NAME = "train/l2_coef"


def regularized(block: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(weights at the l2 coefficient, skip-path weights at the affine coefficient) of a block."""
    kind = block_for(block, "block")
    if isinstance(kind, StackNetworkBlock):
        return ([p for s in block.stacks for p in s.nonlinear_parameters()],
                [p for s in block.stacks for p in s.affine_parameters()])
    linears = [m for m in block.modules() if isinstance(m, nn.Linear)]
    params = [p for m in linears for p in (m.weight, m.bias) if p is not None]
    if linears and linears[-1].bias is not None:
        params = params[:-1]  # the output bias is not regularized
    return params, []


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value != value or value == float("inf"):
        raise ConfigError(f"L2Schedule: {name} must be a positive finite number, got {value!r}")
    return float(value)


class L2Schedule(pl.Callback):
    """l2 on the reducible blocks' weights, rising on the paper's schedule.

    Epochs ``0 .. warmup_epochs - 1`` train without it; then the coefficient rises geometrically
    from ``l2_start`` to ``l2_end`` over ``ramp_epochs`` epochs (default: the rest of the fit, the
    Trainer's ``max_epochs``), and stays at ``l2_after`` (default ``l2_end``) after them: a light
    ``l2_after`` lets a network reduced at the end of the ramp recover its accuracy in the epochs
    that follow. With ``batch_sizes=(start, end)`` the DataModule's ``batch_size`` attribute grows
    geometrically over the ramp (the Trainer needs ``reload_dataloaders_every_n_epochs=1``).

    Args:
        l2_start, l2_end: coefficients per squared weight, added to the mean loss (> 0).
        warmup_epochs: epochs without l2 first (>= 0).
        modules: attribute paths of the blocks (default: every reducible block, as
            :class:`~lightning_stacks.callbacks.ReductionCallback` finds them).
        ramp_epochs: epochs the rise takes after the warm-up (None = until the end of the fit).
        l2_after: the coefficient after the ramp (None = ``l2_end``; 0 = none).
        affine_l2_mult: a Deep Stack Network's skip paths get this times the coefficient.
        batch_sizes: ``(start, end)`` batch sizes, or None to leave the batch size alone.
        verbose: print the coefficient at every epoch start.
    """

    def __init__(self, l2_start: float = 1e-5, l2_end: float = 1e-3, *, warmup_epochs: int = 0,
                 ramp_epochs: int | None = None, l2_after: float | None = None,
                 modules: list[str] | str | None = None, affine_l2_mult: float = 1.0,
                 batch_sizes: tuple[int, int] | None = None, verbose: bool = False):
        l2_start, l2_end = _positive("l2_start", l2_start), _positive("l2_end", l2_end)
        affine_l2_mult = _positive("affine_l2_mult", affine_l2_mult)
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ConfigError(f"L2Schedule: warmup_epochs must be a whole number >= 0, got {warmup_epochs!r}")
        if ramp_epochs is not None and (isinstance(ramp_epochs, bool) or not isinstance(ramp_epochs, int) or ramp_epochs < 1):
            raise ConfigError(f"L2Schedule: ramp_epochs must be a whole number >= 1 (or None), got {ramp_epochs!r}")
        if l2_after is not None and l2_after != 0:
            l2_after = _positive("l2_after", l2_after)
        if batch_sizes is not None:
            if not (isinstance(batch_sizes, (list, tuple)) and len(batch_sizes) == 2
                    and all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in batch_sizes)):
                raise ConfigError(f"L2Schedule: batch_sizes must be (start, end) whole numbers >= 1, got {batch_sizes!r}")
        self.paths = check_paths(modules, None)
        self.cfg = SimpleNamespace(warmup_epochs=warmup_epochs, l2_start=l2_start, l2_end=l2_end, affine_l2_mult=affine_l2_mult,
                                   lr_end_mult=1.0, batch_start=(batch_sizes or (1, 1))[0], batch_end=(batch_sizes or (1, 1))[1])
        self.batch_sizes, self.verbose, self.ramp_epochs = batch_sizes, verbose, ramp_epochs
        self.l2_after = l2_end if l2_after is None else float(l2_after)
        self.schedule: Schedule | None = None
        self.coef = self.affine_coef = 0.0
        self._params: dict[str, tuple] = {}  # path -> (block, weights, affine weights)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if hasattr(pl_module, "l2_penalty"):
            raise ConfigError(f"L2Schedule is for your own modules: {type(pl_module).__name__} applies the l2 schedule itself "
                              "(its config's schedule.* keys)")
        self.paths = [b.name for b in resolve_targets(pl_module, self.paths)]
        if self.batch_sizes is not None:
            dm = getattr(trainer, "datamodule", None)
            if dm is None or not hasattr(dm, "batch_size"):
                raise ConfigError("L2Schedule(batch_sizes=...) sets the DataModule's batch_size attribute: fit with a "
                                  "DataModule that has one, or drop batch_sizes")
            if trainer.reload_dataloaders_every_n_epochs != 1:
                raise ConfigError("L2Schedule(batch_sizes=...) needs pl.Trainer(reload_dataloaders_every_n_epochs=1) so that "
                                  "every epoch's loader takes its batch size")
        total = max(1, int(trainer.max_epochs or 1))
        self.schedule = Schedule(self.cfg, total if self.ramp_epochs is None else self.cfg.warmup_epochs + self.ramp_epochs)

    def at(self, epoch: int):
        """The settings at ``epoch``: l2, affine l2, batch size (``l2_after`` past the ramp)."""
        s = self.schedule.at(min(epoch, self.schedule.total_epochs - 1))
        if epoch >= self.schedule.total_epochs:
            s = replace(s, l2=self.l2_after, l2_affine=self.l2_after * self.cfg.affine_l2_mult)
        return s

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        s = self.at(trainer.current_epoch)
        self.coef, self.affine_coef = s.l2, s.l2_affine
        pl_module.log(L2_NAME, s.l2, on_step=False, on_epoch=True, sync_dist=False, rank_zero_only=True)
        if self.verbose and trainer.is_global_zero:
            print(f"[l2] epoch {trainer.current_epoch}: coefficient {s.l2:.3g}"
                  + (f", batch size {s.batch_size}" if self.batch_sizes else ""), flush=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.batch_sizes is not None:  # the next epoch's loader is built before its epoch starts
            trainer.datamodule.batch_size = self.at(trainer.current_epoch + 1).batch_size

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.batch_sizes is not None:
            trainer.datamodule.batch_size = self.at(trainer.current_epoch).batch_size

    @torch.no_grad()
    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        if not (self.coef or self.affine_coef):
            return
        owned = {p for g in optimizer.param_groups for p in g["params"]}
        for path in self.paths:
            block = pl_module.get_submodule(path)
            if self._params.get(path, (None,))[0] is not block:  # a reduction replaced it: look again
                self._params[path] = (block, *regularized(block))
            _, weights, affine = self._params[path]
            for coef, params in ((self.coef, weights), (self.affine_coef, affine)):
                grads = [p.grad for p in params if p.grad is not None and p in owned]
                if coef and grads:
                    torch._foreach_add_(grads, [p for p in params if p.grad is not None and p in owned], alpha=2 * coef)

    def state_dict(self) -> dict[str, Any]:
        return {"coef": self.coef, "affine_coef": self.affine_coef}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.coef = float(state_dict.get("coef", 0.0))
        self.affine_coef = float(state_dict.get("affine_coef", 0.0))

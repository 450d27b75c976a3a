"""A Lightning callback shell for proximal regularizers on the stacks' ReLU layers."""

from __future__ import annotations

import pytorch_lightning as pl
import torch


class StackProxCallback(pl.Callback):
    """After every optimizer step, apply ``prox_stack(stack, t, coef)`` to each stack with a
    nonzero coefficient; t = the current LR of the optimizer's ``nonlinear`` param group.

    Args:
        coefs: one coefficient per stack, or one for all stacks.
        start_epoch: no prox before this epoch (e.g. the unregularized warm-up).
        name: the method's name, for error messages.
    """

    def __init__(self, coefs, start_epoch: int = 0, name: str = "prox"):
        self.coefs = [float(v) for v in (coefs if isinstance(coefs, list | tuple) else [coefs])]
        if any(not v >= 0 for v in self.coefs):
            raise ValueError(f"{name} coefficients must be >= 0, got {self.coefs}")
        self.start_epoch, self.name = start_epoch, name

    def coef(self, j: int, n_stacks: int) -> float:
        if len(self.coefs) == 1:
            return self.coefs[0]
        if len(self.coefs) != n_stacks:
            raise ValueError(f"{self.name} has {len(self.coefs)} coefficients for {n_stacks} stacks")
        return self.coefs[j]

    def prox_stack(self, stack, t: float, coef: float) -> None:
        raise NotImplementedError

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch < self.start_epoch:
            return
        groups = {g.get("name"): g for g in trainer.optimizers[0].param_groups}
        t = groups["nonlinear"]["lr"] if "nonlinear" in groups else trainer.optimizers[0].param_groups[0]["lr"]
        stacks = pl_module.net.stacks
        with torch.no_grad():
            for j, stack in enumerate(stacks):
                coef = self.coef(j, len(stacks))
                if coef and stack.n:
                    self.prox_stack(stack, t, coef)

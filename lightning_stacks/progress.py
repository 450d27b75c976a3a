"""One progress bar per fit (a round): epochs, with the live neuron count and metrics.

Lightning's bars count batches and open a second bar for every validation pass, which
interleaves on a terminal; a retrain-reduce job wants to see epochs go by and the network shrink.
"""

from __future__ import annotations

import sys

import pytorch_lightning as pl
from pytorch_lightning.callbacks.progress import ProgressBar


class EpochProgressBar(ProgressBar):
    """A tqdm bar over a fit's epochs whose postfix shows the neurons left and the latest
    progress-bar metrics (loss, validation metric). ``desc`` labels the bar (e.g. ``round 1``)."""

    def __init__(self, desc: str = "train"):
        super().__init__()
        self.desc = desc
        self._enabled = True
        self._bar = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def _postfix(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        out = {}
        net = getattr(pl_module, "net", None)
        if net is not None and hasattr(net, "widths"):
            out["neurons"] = sum(net.widths)
        for key, value in trainer.progress_bar_metrics.items():
            out[key.split("/")[-1] if key.startswith("val/") else key] = f"{float(value):.4g}"
        return out

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(total=trainer.max_epochs, initial=trainer.current_epoch, desc=self.desc, unit="epoch",
                         dynamic_ncols=True, file=sys.stdout, leave=True, mininterval=1.0)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._bar is not None:
            self._bar.set_postfix(self._postfix(trainer, pl_module), refresh=False)
            self._bar.update(1)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._bar is not None and not trainer.sanity_checking:
            self._bar.set_postfix(self._postfix(trainer, pl_module), refresh=False)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._bar is not None:
            self._bar.set_postfix(self._postfix(trainer, pl_module))
            self._bar.close()
            self._bar = None

"""``ReductionCallback``: the Reduction Algorithm as a Lightning pipeline stage.

It reduces the network at the end of a fit (``on_train_end``, while the model is still on the
training device), between retrain-reduce rounds: each round is its own ``trainer.fit``, so the
next round builds fresh optimizers and a fresh DDP wrapper around the reduced parameters.

DDP: the reduction (k-means included) runs once, on rank 0, and its result (architecture +
weights + report) is broadcast, so every rank ends with an identical model; the callback then
records a checksum per rank so tests and users can verify it.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from . import names
from .model import DeepStackNetwork


def network_checksum(net: torch.nn.Module) -> str:
    """SHA-256 over every parameter's name, shape and bytes (identical models <=> equal sums)."""
    h = hashlib.sha256()
    for name, p in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def step_metrics(rec: dict, round_index: int, step_index: int) -> dict[str, float]:
    """Logger payload for one reduction step (a ``StepRecord`` as a dict)."""
    out = {names.reduce_neurons(j + 1): float(n) for j, n in enumerate(rec["widths"])}
    out.update({
        names.REDUCE_NEURONS_TOTAL: float(sum(rec["widths"])),
        names.REDUCE_PARAMS: float(rec["params"]),
        names.REDUCE_MAX_CHANGE: float(rec["max_output_change"]),
        names.REDUCE_ROUND: float(round_index),
        names.REDUCE_STEP: float(step_index),
    })
    for split, value in rec["metrics"].items():
        out[f"reduce/{split}_metric"] = float(value)
    return out


class ReductionCallback(pl.Callback):
    """Reduce the trained network at the end of a fit.

    Args:
        cfg: the round's config (its ``reduce.*`` settings and ``data`` are used).
        round_index: which round this is (logged, and kept in ``state_dict``).
        datamodule: the data to reduce on (rank 0 uses its train/test splits).
        enabled: False = a round that trains only.
    """

    def __init__(self, cfg: DictConfig, round_index: int, datamodule, enabled: bool = True):
        self.cfg, self.round_index, self.dm, self.enabled = cfg, round_index, datamodule, enabled
        self.done = False
        self.report: dict | None = None
        self.checksum: str | None = None

    @property
    def state_key(self) -> str:
        return f"ReductionCallback[round={self.round_index}]"

    def state_dict(self) -> dict[str, Any]:
        return {"round": self.round_index, "done": self.done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.done = bool(state_dict.get("done", False))

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        self.run(trainer, pl_module)

    def run(self, trainer: pl.Trainer, pl_module) -> None:
        """Reduce now (idempotent); the driver calls it if the fit ran no epoch (nothing to train)."""
        if not self.enabled or self.done:
            return
        self._run_reduction(trainer, pl_module)
        self.done = True

    def _run_reduction(self, trainer: pl.Trainer, pl_module) -> None:
        from .reduction.job import print_step, reduce_module

        device = trainer.strategy.root_device
        payload = None
        if trainer.is_global_zero:
            pl_module.net.to(device)
            cfg = self.cfg
            if cfg.reduce.device == "auto":  # reduce where training ran
                from omegaconf import OmegaConf

                cfg = OmegaConf.merge(cfg, {"reduce": {"device": str(device)}})
            new, report = reduce_module(pl_module, cfg, dm=self.dm, log=print_step)
            report_dict = report.to_dict()
            report_dict["round"] = self.round_index
            payload = {"architecture": new.net.architecture(), "state_dict": {k: v.cpu() for k, v in new.net.state_dict().items()},
                       "report": report_dict}
        payload = trainer.strategy.broadcast(payload, src=0)
        net = DeepStackNetwork.from_architecture(payload["architecture"])
        net.load_state_dict(payload["state_dict"])
        pl_module.replace_network(net.to(device), payload["report"])
        self.report = payload["report"]
        self.checksum = network_checksum(pl_module.net)
        if trainer.is_global_zero and trainer.logger:
            step = trainer.global_step  # the logger adds the rounds' offset (see training.with_step_offset)
            for k, rec in enumerate(self.report["steps"]):
                trainer.logger.log_metrics(step_metrics(rec, self.round_index, k), step=step)
            trainer.logger.save()

"""``ReductionCallback``: the Reduction Algorithm as a Lightning pipeline stage.

It reduces the network at the end of a fit (``on_train_end``, while the model is still on the
training device), between retrain-reduce rounds: each round is its own ``trainer.fit``, so the
next round builds fresh optimizers and a fresh DDP wrapper around the reduced parameters.

DDP: the reduction (k-means included) runs once, on rank 0, and its result (architecture +
weights + report) is broadcast, so every rank ends with an identical model (the round driver
writes a checksum per rank so tests and users can verify it).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from . import names
from .model import DeepStackNetwork


class AtomicLastCheckpoint(pl.Callback):
    """Write ``dirpath/last.ckpt`` at the end of every training epoch, atomically.

    Lightning's ``ModelCheckpoint(save_top_k=0, save_last=True)`` writes ``last.ckpt`` only when
    training ends, and overwrites in place; this writes a temporary file (all ranks take part in
    ``trainer.save_checkpoint``; rank 0 writes) and renames it, so a kill mid-write never leaves
    the only copy corrupt and a killed job can resume from its last finished epoch.
    """

    FILENAME = "last.ckpt"

    def __init__(self, dirpath: str | Path):
        self.dirpath = Path(dirpath)

    @property
    def path(self) -> Path:
        return self.dirpath / self.FILENAME

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        tmp = self.dirpath / f".{self.FILENAME}.tmp"
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
        trainer.strategy.barrier("last_ckpt_dir")
        trainer.save_checkpoint(tmp)  # collective; ends with a barrier
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        trainer.strategy.barrier("last_ckpt_renamed")


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


def optimizer_state_by_name(trainer: pl.Trainer, pl_module) -> dict[str, dict]:
    """Adam state of the module's network, keyed by parameter name (empty if none yet)."""
    if not trainer.optimizers:
        return {}
    opt = trainer.optimizers[0]
    out = {}
    for name, p in pl_module.net.named_parameters():
        st = opt.state.get(p)
        if st:
            out[name] = {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in st.items()}
    return out


def slice_optimizer_state(old: dict[str, dict], net: torch.nn.Module, kept_ids: list[list[int]]) -> dict[str, dict]:
    """Carry Adam moments to the reduced network: rows of V / entries of b / columns of W of
    neurons that survived (``kept_ids`` >= 0) are copied, new (merged) neurons get zeros, other
    tensors are copied when their shape is unchanged and zeroed otherwise. ``step`` is kept."""
    new = {}
    for name, p in net.named_parameters():
        src = old.get(name)
        if src is None:
            continue
        parts = name.split(".")  # stacks.<j>.<V|W|A1|A2|S>.<weight|bias>
        j, layer, kind = int(parts[1]), parts[2], parts[3]
        ids = torch.tensor(kept_ids[j], dtype=torch.long)
        state = {"step": src["step"]}
        for key in ("exp_avg", "exp_avg_sq"):
            old_t = src[key]
            t = torch.zeros_like(p)
            if layer == "V" or (layer == "W" and kind == "weight"):
                dim = 0 if layer == "V" else 1
                ok = ids >= 0
                if ok.any():
                    dst = torch.nonzero(ok).flatten().to(p.device)
                    t.index_copy_(dim, dst, old_t.index_select(dim, ids[ok].to(old_t.device)).to(p.device))
            elif old_t.shape == p.shape:
                t.copy_(old_t)
            state[key] = t
        new[name] = state
    return new


def report_table_rows(report: dict) -> tuple[list[str], list[list]]:
    """The paper-style table (one row per step) as columns and rows."""
    J = len(report["steps"][0]["widths"])
    columns = ["step"] + [f"n{j + 1}" for j in range(J)] + ["params", "train", "test", "max_output_change", "seconds"]
    rows = [[s["step"], *s["widths"], s["params"], s["metrics"].get("train"), s["metrics"].get("test"),
             s["max_output_change"], s["seconds"]] for s in report["steps"]]
    return columns, rows


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

    def _log_figures(self, trainer: pl.Trainer, pl_module) -> None:
        """WandB: the figs. 6-7 style plot of the reduced network (1-D bottlenecks only)."""
        log_image = getattr(trainer.logger, "log_image", None)
        if log_image is None or any(s.d_in != 1 for s in pl_module.net.stacks):
            return
        from .plots import plot_stacks

        x, _ = self.dm.split("train")
        path = Path(trainer.default_root_dir) / "figures" / f"round_{self.round_index}.png"
        plot_stacks(pl_module.net, x, path, title=f"round {self.round_index}: neurons per stack {pl_module.net.widths}")
        log_image(key=f"reduce/figure_round_{self.round_index}", images=[str(path)])

    def _run_reduction(self, trainer: pl.Trainer, pl_module) -> None:
        from .reduction.job import print_step, reduce_module

        device = trainer.strategy.root_device
        old_state = optimizer_state_by_name(trainer, pl_module) if self.cfg.reduce.optimizer_state == "carry" else {}
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
        if old_state:  # every rank slices its own (DDP-synchronized) state with the same ids
            pl_module.pending_optimizer_state = slice_optimizer_state(old_state, pl_module.net, payload["report"]["kept_ids"])
        self.report = payload["report"]
        if trainer.is_global_zero and trainer.logger:
            step = trainer.global_step  # the logger adds the rounds' offset (see training.with_step_offset)
            for k, rec in enumerate(self.report["steps"]):
                trainer.logger.log_metrics(step_metrics(rec, self.round_index, k), step=step)
            log_table = getattr(trainer.logger, "log_table", None)  # WandbLogger: the paper's table
            if log_table is not None:
                columns, rows = report_table_rows(self.report)
                log_table(key=f"reduce/table_round_{self.round_index}", columns=columns, data=rows)
            self._log_figures(trainer, pl_module)
            trainer.logger.save()

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
        check = getattr(pl_module, "check_finite", None)
        if callable(check):  # never replace the last good checkpoint by a diverged one
            check()
        tmp = self.dirpath / f".{self.FILENAME}.tmp{os.getpid()}"  # rank 0 writes it; unique per job
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
        trainer.strategy.barrier("last_ckpt_dir")
        trainer.save_checkpoint(tmp, weights_only=False)  # the whole training state; collective, ends with a barrier
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
    out.update(names.neuron_metrics(rec["widths"]))
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


def optimizer_state_by_name(trainer: pl.Trainer, net: torch.nn.Module) -> dict[str, dict]:
    """Adam state of ``net``'s parameters, keyed by parameter name (empty if none yet)."""
    if not trainer.optimizers:
        return {}
    opt = trainer.optimizers[0]
    out = {}
    for name, p in net.named_parameters():
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
    """The Reduction Algorithm as a drop-in Lightning callback.

    Add it to any ``Trainer``, like Lightning's ``ModelPruning``::

        trainer = pl.Trainer(max_epochs=30, callbacks=[ReductionCallback(max_drop=1e-3, at_epochs=[20])])
        trainer.fit(module, datamodule=dm)

    It works on :class:`~lightning_stacks.module.StackModule` and on any LightningModule that holds
    a :class:`~lightning_stacks.model.DeepStackNetwork` as an attribute (found when there is exactly
    one, or named by ``attribute``). A reduction replaces that attribute with the reduced network
    (through ``module.replace_network(net, report)`` when the module defines it), then, inside a
    fit, rebuilds the optimizers (``configure_optimizers`` again) and the DDP wrapper around the
    new parameters, so retrain-reduce rounds can run in one ``trainer.fit``.

    Data: the fit's own dataloaders (the DataModule's or those given to ``fit``). Under DDP, rank 0
    reduces on every training sample (a distributed sampler is replaced by a sequential one),
    streamed batch by batch, and broadcasts the result: every rank ends with the same network.

    Args:
        max_drop: automatic mode (>= 0): the largest metric drop allowed on ``reference``
            (accuracy points, or relative MSE increase); -1 = manual mode (``tolerances``,
            ``clusters``).
        at_epochs: reduce after this many epochs of training (before that epoch starts), e.g.
            ``[20, 40]``; each must be < the Trainer's ``max_epochs``.
        every_n_epochs: reduce after every n epochs of training (0 = off).
        at_end: reduce when the fit ends.
        attribute: the module attribute holding the network (default: the only one found).
        task: ``classification`` or ``regression`` (default: the module's ``task`` attribute, else
            inferred from the training labels: integer labels mean classification).
        report_path: where to write the JSON report (and the tables as ``.txt`` beside it);
            ``"auto"`` = ``<trainer.log_dir or default_root_dir>/reduction_report.json``, None = none.
        verbose: print each step's row as it finishes.
        round_index: label of the reductions in logs (the rounds driver sets it).
        **settings: every other ``reduce.*`` setting by name (``refit``, ``polish``, ``clusters``,
            ``tolerances``, ``reference``, ``reference_size``, ``sample``, ``device``,
            ``optimizer_state``, ...; see ``docs/CONFIG.md``). Unknown names are refused.

    Raises:
        ConfigError: a setting is unknown or out of range (at construction).
        ReductionError: the module, Trainer or data cannot be reduced (in ``setup``, before training).
    """

    CLI_ONLY = ("output", "after_training")  # reduce.py / train.py keys, not reduction settings

    def __init__(self, max_drop: float = -1.0, *, at_epochs: list[int] | tuple[int, ...] = (), every_n_epochs: int = 0,
                 at_end: bool = True, attribute: str | None = None, task: str | None = None,
                 report_path: str | Path | None = "auto", verbose: bool = True, round_index: int | None = None,
                 **settings: Any):
        from .config import ConfigError, reduce_config

        bad = [k for k in self.CLI_ONLY if k in settings]
        if bad:
            raise ConfigError(f"ReductionCallback does not take {bad}: those are reduce.py / train.py options")
        self.config = reduce_config({"max_drop": max_drop, **settings}, source="ReductionCallback")
        at_epochs = list(at_epochs or [])
        if any(isinstance(e, bool) or not isinstance(e, int) or e < 1 for e in at_epochs):
            raise ConfigError(f"at_epochs must be whole numbers of epochs >= 1, got {at_epochs}")
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 0:
            raise ConfigError(f"every_n_epochs must be a whole number >= 0, got {every_n_epochs!r}")
        if not isinstance(at_end, bool):
            raise ConfigError(f"at_end must be True or False, got {at_end!r}")
        if not (at_end or at_epochs or every_n_epochs):
            raise ConfigError("the callback would never reduce: give at_epochs, every_n_epochs or at_end=True")
        if task is not None and task not in ("classification", "regression"):
            raise ConfigError(f"task={task!r} is not one of: classification, regression (or None = infer)")
        if attribute is not None and not (isinstance(attribute, str) and attribute.isidentifier()):
            raise ConfigError(f"attribute={attribute!r} is not an attribute name")
        self.at_epochs, self.every_n_epochs, self.at_end = sorted(set(at_epochs)), every_n_epochs, at_end
        self.attribute, self.task, self.report_path, self.verbose = attribute, task, report_path, verbose
        self.round_index = round_index
        self.enabled = True
        self.done_epochs: list[int] = []
        self.done_end = False
        self.reports: list[dict] = []
        self.logged_steps = 0  # logger steps this callback added for its reduction rows

    @classmethod
    def from_config(cls, reduce_cfg, **kwargs: Any) -> ReductionCallback:
        """From a ``reduce`` config section (e.g. ``cfg.reduce`` or a round's)."""
        from .config import to_container

        values = {k: v for k, v in to_container(reduce_cfg).items() if k not in cls.CLI_ONLY}
        return cls(**values, **kwargs)

    # ------------------------------------------------------------------ state
    @property
    def report(self) -> dict | None:
        """The latest reduction's report (None before the first)."""
        return self.reports[-1] if self.reports else None

    @property
    def done(self) -> bool:
        return self.done_end

    @property
    def state_key(self) -> str:
        return self._generate_state_key(at_epochs=self.at_epochs, every_n_epochs=self.every_n_epochs, at_end=self.at_end,
                                        round=self.round_index)

    def state_dict(self) -> dict[str, Any]:
        return {"done_epochs": list(self.done_epochs), "done_end": self.done_end, "reports": self.reports,
                "logged_steps": self.logged_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.done_epochs = list(state_dict.get("done_epochs", []))
        self.done_end = bool(state_dict.get("done_end", False))
        self.reports = list(state_dict.get("reports", []))
        self.logged_steps = int(state_dict.get("logged_steps", 0))

    # ------------------------------------------------------------------ checks before training
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        from .loaders import has_loader
        from .reduction.job import resolve_device, settings_from_config
        from .reduction.pipeline import ReductionError

        net = self.network(pl_module)
        try:
            settings_from_config(self.config).validate(net.widths)
        except ReductionError as err:
            raise ReductionError(f"ReductionCallback (network widths {net.widths}): {err}") from None
        resolve_device(self.config.device)
        max_epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else None
        late = [e for e in self.at_epochs if max_epochs is not None and e >= max_epochs]
        if late:
            raise ReductionError(f"at_epochs={self.at_epochs}: {late} not before the Trainer's max_epochs={max_epochs} "
                                 "(a reduction after the last epoch is at_end=True)")
        if self.at_epochs or self.every_n_epochs:
            from pytorch_lightning.strategies import DDPStrategy, SingleDeviceStrategy

            if not isinstance(trainer.strategy, (SingleDeviceStrategy, DDPStrategy)):
                raise ReductionError(f"reducing inside a fit (at_epochs / every_n_epochs) needs a single-device or DDP "
                                     f"strategy, not {type(trainer.strategy).__name__}; use at_end=True between fits")
        dm = getattr(trainer, "datamodule", None)
        if self.config.reference == "test" and dm is not None and not has_loader(dm, "test"):
            raise ReductionError("reference='test' but the DataModule defines no test_dataloader")
        self._watch_checkpoint_loading(pl_module)

    def network(self, pl_module: pl.LightningModule) -> DeepStackNetwork:
        """The module's network (and remember which attribute holds it)."""
        from .reduction.pipeline import ReductionError

        if self.attribute is not None:
            net = getattr(pl_module, self.attribute, None)
            if not isinstance(net, DeepStackNetwork):
                raise ReductionError(f"{type(pl_module).__name__}.{self.attribute} is {type(net).__name__}, not a DeepStackNetwork")
            return net
        found = [name for name, child in pl_module.named_children() if isinstance(child, DeepStackNetwork)]
        if len(found) != 1:
            what = "no DeepStackNetwork attribute" if not found else f"several DeepStackNetwork attributes {found}"
            raise ReductionError(
                f"{type(pl_module).__name__} has {what}: hold the network as e.g. self.net = DeepStackNetwork(...) "
                "(DeepStackNetwork.from_sequential converts a ReLU MLP), or name it with ReductionCallback(attribute=...)")
        self.attribute = found[0]
        return getattr(pl_module, found[0])

    def _watch_checkpoint_loading(self, pl_module: pl.LightningModule) -> None:
        """Resuming a fit whose network this callback reduced: the checkpoint's weights have the
        reduced shapes, so the network is rebuilt to them before Lightning loads the weights
        (the module's ``on_load_checkpoint`` runs just before; callbacks' hooks run after)."""
        if getattr(pl_module, "_reduction_watch", False):
            return
        original = pl_module.on_load_checkpoint
        attribute = self.attribute

        def on_load_checkpoint(checkpoint: dict) -> None:
            arch = (checkpoint.get(CHECKPOINT_KEY) or {}).get(attribute)
            net = getattr(pl_module, attribute)
            if arch and arch != net.architecture():
                p = next(net.parameters())
                setattr(pl_module, attribute, DeepStackNetwork.from_architecture(arch).to(device=p.device, dtype=p.dtype))
            original(checkpoint)

        pl_module.on_load_checkpoint = on_load_checkpoint
        pl_module._reduction_watch = True

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if self.attribute is not None:
            checkpoint.setdefault(CHECKPOINT_KEY, {})[self.attribute] = getattr(pl_module, self.attribute).architecture()

    # ------------------------------------------------------------------ when to reduce
    def _due(self, epoch: int) -> bool:
        return epoch in self.at_epochs or (self.every_n_epochs > 0 and epoch > 0 and epoch % self.every_n_epochs == 0)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self.enabled and self._due(epoch) and epoch not in self.done_epochs:
            self._reduce(trainer, pl_module, in_fit=True)
            self.done_epochs.append(epoch)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.logged_steps and trainer.logger:  # resumed: keep the step axis past the rows logged before
            from .training import with_step_offset

            logger = with_step_offset(trainer.logger)
            logger.step_offset = max(logger.step_offset, self.logged_steps)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.run(trainer, pl_module)

    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The end-of-fit reduction, now (idempotent; the rounds driver calls it after a fit that
        ran no epoch, where Lightning calls no ``on_train_end``)."""
        if self.enabled and self.at_end and not self.done_end:
            self._reduce(trainer, pl_module, in_fit=False)
            self.done_end = True

    # ------------------------------------------------------------------ the reduction
    def _task(self, pl_module: pl.LightningModule, train_source) -> str:
        if self.task is not None:
            return self.task
        task = getattr(pl_module, "task", None)
        if task in ("classification", "regression"):
            return task
        from .batches import iter_pairs

        for _, y in iter_pairs(train_source, 1024, torch.device("cpu")):
            return "regression" if torch.is_floating_point(y) else "classification"
        from .reduction.pipeline import ReductionError

        raise ReductionError("the training data yielded no batch")

    def _settings(self, pl_module: pl.LightningModule):
        from .reduction.job import settings_from_config

        history = getattr(pl_module, "history", None)
        return settings_from_config(self.config, history if isinstance(history, list) and history else self.reports)

    def _reduce(self, trainer: pl.Trainer, pl_module: pl.LightningModule, in_fit: bool) -> None:
        from .loaders import split_sources
        from .reduction.job import print_step, reduce_on_sources, resolve_device
        from .reduction.pipeline import ReductionError

        net = self.network(pl_module)
        param = next(net.parameters())
        train_device, dtype = param.device, param.dtype
        old_state = optimizer_state_by_name(trainer, net) if self.config.optimizer_state == "carry" else {}
        payload = None
        if trainer.is_global_zero:
            try:
                sources = split_sources(trainer)
                if "train" not in sources:
                    raise ReductionError("the fit has no training data to reduce on")
                device = train_device if self.config.device == "auto" else resolve_device(self.config.device)
                reduced, report = reduce_on_sources(net, self._task(pl_module, sources["train"]), self._settings(pl_module),
                                                    sources, self.config.reference, self.config.reference_size, device,
                                                    log=print_step if self.verbose else None)
                report_dict = report.to_dict()
                report_dict["round"] = len(self.reports) if self.round_index is None else self.round_index
                report_dict["epoch"] = trainer.current_epoch
                payload = {"architecture": reduced.architecture(), "report": report_dict,
                           "state_dict": {k: v.cpu() for k, v in reduced.state_dict().items()}}
            except (ReductionError, ValueError) as err:  # every rank must leave the broadcast below
                payload = {"error": f"{type(err).__name__}: {err}"}
        payload = trainer.strategy.broadcast(payload, src=0)
        if "error" in payload:
            raise ReductionError(f"reduction failed: {payload['error']}")
        new = DeepStackNetwork.from_architecture(payload["architecture"])
        new.load_state_dict(payload["state_dict"])
        new = new.to(device=train_device, dtype=dtype)
        report = payload["report"]
        replace = getattr(pl_module, "replace_network", None)
        if callable(replace) and self.attribute == "net":
            replace(new, report)
        else:
            setattr(pl_module, self.attribute, new)
        self.reports.append(report)
        sliced = slice_optimizer_state(old_state, new, report["kept_ids"]) if old_state else {}
        if in_fit:
            self._rebuild_training(trainer, pl_module, sliced)
        elif sliced and hasattr(pl_module, "pending_optimizer_state"):
            pl_module.pending_optimizer_state = sliced  # StackModule: the next fit's optimizer starts from it
        if trainer.is_global_zero:
            self._log(trainer, pl_module, report)
            self._write_report(trainer, pl_module)

    def _rebuild_training(self, trainer: pl.Trainer, pl_module: pl.LightningModule, sliced: dict) -> None:
        """Inside a fit: new optimizers (and DDP wrapper) around the reduced network's parameters."""
        from lightning_fabric.utilities.optimizer import _optimizers_to_device
        from pytorch_lightning.strategies import DDPStrategy

        strategy = trainer.strategy
        if isinstance(strategy, DDPStrategy):
            strategy.model = pl_module  # unwrap; configure_ddp wraps the module with its new parameters
            strategy.configure_ddp()
        strategy.setup_optimizers(trainer)
        _optimizers_to_device(strategy.optimizers, strategy.root_device)
        if sliced and strategy.optimizers:
            opt = strategy.optimizers[0]
            for name, p in getattr(pl_module, self.attribute).named_parameters():
                if name in sliced and not opt.state.get(p):
                    opt.state[p] = {k: (v.to(p.device) if torch.is_tensor(v) else v) for k, v in sliced[name].items()}

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, report: dict) -> None:
        """One logger row per reduction step, each at its own step after the current one; the
        logger's later steps are shifted past them, so the step axis only grows (the logger's
        class gets a step offset, see :func:`~lightning_stacks.training.with_step_offset`)."""
        from .training import with_step_offset

        logger = with_step_offset(trainer.logger)
        if not logger:
            return
        start = trainer.global_step + 1
        for k, rec in enumerate(report["steps"]):
            logger.log_metrics(step_metrics(rec, report["round"], k), step=start + k)
        shift = len(report["steps"]) + 1
        logger.step_offset += shift
        self.logged_steps += shift
        log_table = getattr(logger, "log_table", None)  # WandbLogger: the paper's table
        if log_table is not None:
            columns, rows = report_table_rows(report)
            log_table(key=f"reduce/table_round_{report['round']}", columns=columns, data=rows)
        self._log_figures(trainer, pl_module, report["round"])
        logger.save()

    def _log_figures(self, trainer: pl.Trainer, pl_module: pl.LightningModule, index: int) -> None:
        """WandB: the figs. 6-7 style plot of the reduced network (1-D bottlenecks only)."""
        log_image = getattr(trainer.logger, "log_image", None)
        net = getattr(pl_module, self.attribute)
        if log_image is None or any(s.d_in != 1 for s in net.stacks):
            return
        from .batches import reservoir_sample
        from .loaders import split_sources
        from .plots import plot_stacks

        x, _ = reservoir_sample(split_sources(trainer, ("train",))["train"], 4096, 0)
        path = Path(trainer.default_root_dir) / "figures" / f"round_{index}.png"
        plot_stacks(net, x, path, title=f"round {index}: neurons per stack {net.widths}")
        log_image(key=f"reduce/figure_round_{index}", images=[str(path)])

    def _write_report(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.report_path is None:
            return
        from .reduction.job import write_reduction_report

        path = Path(trainer.log_dir or trainer.default_root_dir) / "reduction_report.json" if self.report_path == "auto" \
            else Path(self.report_path)
        history = getattr(pl_module, "history", None)
        write_reduction_report(path, history if isinstance(history, list) and history else self.reports)


CHECKPOINT_KEY = "lightning_stacks_architecture"  # attribute name -> architecture, in checkpoints of reduced modules


def load_reduced_checkpoint(pl_module: pl.LightningModule, path: str | Path) -> pl.LightningModule:
    """Load a checkpoint written after :class:`ReductionCallback` shrank ``pl_module``'s network:
    the network attribute is rebuilt to the checkpoint's shapes, then the weights are loaded."""
    from .checkpoint import read_raw_checkpoint

    ckpt = read_raw_checkpoint(path)
    for attribute, arch in (ckpt.get(CHECKPOINT_KEY) or {}).items():
        setattr(pl_module, attribute, DeepStackNetwork.from_architecture(arch))
    pl_module.load_state_dict(ckpt["state_dict"])
    return pl_module

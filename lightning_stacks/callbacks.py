"""``ReductionCallback``: the Reduction Algorithm as a Lightning pipeline stage.

It reduces the network at the end of a fit (``on_train_end``, while the model is still on the
training device), between retrain-reduce rounds: each round is its own ``trainer.fit``, so the
next round builds fresh optimizers and a fresh DDP wrapper around the reduced parameters.

DDP: the reduction (k-means included) runs once, on rank 0, and its result (architecture +
weights + report) is broadcast, so every rank ends with an identical model (the round driver
writes a checksum per rank so tests and users can verify it).

The hooks live in the class; what they call lives beside it: the target network
(:mod:`.targets`), Adam's state across a reduction (:mod:`.optim_state`), the logger rows and
report files (:mod:`.reduction_log`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from .checkpoint import CHECKPOINT_KEY
from .config import ConfigError, reduce_config, to_container
from .model import DeepStackNetwork
from .optim_state import optimizer_state_by_name, rebuild_training, slice_optimizer_state
from .reduction.settings import ReductionError
from .reduction_log import log_reduction, write_report
from .targets import find_network, put_network, watch_checkpoint_loading

CLI_ONLY = ("output", "after_training")  # reduce.py / train.py keys, not reduction settings


def check_when(at_epochs, every_n_epochs, at_end, task, attribute) -> list[int]:
    """Refuse bad scheduling arguments (ConfigError naming the argument); ``at_epochs`` as a list."""
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
    return at_epochs


def check_fit(cb: ReductionCallback, trainer: pl.Trainer, net: DeepStackNetwork) -> None:
    """Before training: the settings fit the network, the device exists, ``at_epochs`` fall inside
    the fit, an in-fit reduction has a strategy it can rebuild, ``reference='test'`` has data."""
    from .loaders import has_loader
    from .reduction.job import resolve_device, settings_from_config

    try:
        settings_from_config(cb.config).validate(net.widths)
    except ReductionError as err:
        raise ReductionError(f"ReductionCallback (network widths {net.widths}): {err}") from None
    resolve_device(cb.config.device)
    max_epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else None
    late = [e for e in cb.at_epochs if max_epochs is not None and e >= max_epochs]
    if late:
        raise ReductionError(f"at_epochs={cb.at_epochs}: {late} not before the Trainer's max_epochs={max_epochs} "
                             "(a reduction after the last epoch is at_end=True)")
    if cb.at_epochs or cb.every_n_epochs:
        from pytorch_lightning.strategies import DDPStrategy, SingleDeviceStrategy

        if not isinstance(trainer.strategy, (SingleDeviceStrategy, DDPStrategy)):
            raise ReductionError(f"reducing inside a fit (at_epochs / every_n_epochs) needs a single-device or DDP "
                                 f"strategy, not {type(trainer.strategy).__name__}; use at_end=True between fits")
    dm = getattr(trainer, "datamodule", None)
    if cb.config.reference == "test" and dm is not None and not has_loader(dm, "test"):
        raise ReductionError("reference='test' but the DataModule defines no test_dataloader")


def infer_task(pl_module: pl.LightningModule, train_source) -> str:
    """The module's ``task`` attribute, else integer training labels mean classification."""
    task = getattr(pl_module, "task", None)
    if task in ("classification", "regression"):
        return task
    from .batches import iter_pairs

    for _, y in iter_pairs(train_source, 1024, torch.device("cpu")):
        return "regression" if torch.is_floating_point(y) else "classification"
    raise ReductionError("the training data yielded no batch")


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

    CLI_ONLY = CLI_ONLY

    def __init__(self, max_drop: float = -1.0, *, at_epochs: list[int] | tuple[int, ...] = (), every_n_epochs: int = 0,
                 at_end: bool = True, attribute: str | None = None, task: str | None = None,
                 report_path: str | Path | None = "auto", verbose: bool = True, round_index: int | None = None,
                 **settings: Any):
        bad = [k for k in CLI_ONLY if k in settings]
        if bad:
            raise ConfigError(f"ReductionCallback does not take {bad}: those are reduce.py / train.py options")
        self.config = reduce_config({"max_drop": max_drop, **settings}, source="ReductionCallback")
        at_epochs = check_when(at_epochs, every_n_epochs, at_end, task, attribute)
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
        values = {k: v for k, v in to_container(reduce_cfg).items() if k not in CLI_ONLY}
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
        check_fit(self, trainer, self.network(pl_module))
        watch_checkpoint_loading(pl_module, self.attribute)

    def network(self, pl_module: pl.LightningModule) -> DeepStackNetwork:
        """The module's network (and remember which attribute holds it)."""
        self.attribute, net = find_network(pl_module, self.attribute)
        return net

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
            from .loggers import with_step_offset

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
    def _history(self, pl_module: pl.LightningModule) -> list[dict]:
        """The module's reduction history (a StackModule's spans its rounds), else this callback's."""
        history = getattr(pl_module, "history", None)
        return history if isinstance(history, list) and history else self.reports

    def _reduce(self, trainer: pl.Trainer, pl_module: pl.LightningModule, in_fit: bool) -> None:
        from .loaders import split_sources
        from .reduction.job import (
            print_step,
            reduce_on_sources,
            resolve_device,
            settings_from_config,
        )

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
                task = self.task or infer_task(pl_module, sources["train"])
                reduced, report = reduce_on_sources(net, task, settings_from_config(self.config, self._history(pl_module)),
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
        put_network(pl_module, self.attribute, new, report)
        self.reports.append(report)
        sliced = slice_optimizer_state(old_state, new, report["kept_ids"]) if old_state else {}
        if in_fit:
            rebuild_training(trainer, pl_module, new, sliced)
        elif sliced and hasattr(pl_module, "pending_optimizer_state"):
            pl_module.pending_optimizer_state = sliced  # StackModule: the next fit's optimizer starts from it
        if trainer.is_global_zero:
            self.logged_steps += log_reduction(trainer, new, report)
            write_report(trainer, self.report_path, self._history(pl_module))

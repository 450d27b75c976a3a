"""``ReductionCallback``: the Reduction Algorithm as a Lightning pipeline stage, on the blocks
of any LightningModule (a Deep Stack Network, or a plain ReLU MLP ``nn.Sequential`` anywhere in
the model), reduced in place and written back in their own form.

It reduces at chosen epochs inside a fit (the optimizers, LR schedulers and DDP wrapper are
rebuilt around the reduced parameters and training goes on) and at the end of a fit (between
retrain-reduce rounds, each its own ``trainer.fit``).

DDP: the reduction (k-means included) runs once, on rank 0, and its result (architectures +
weights + reports) is broadcast, so every rank ends with an identical model.

The hooks live in the class; what they call lives beside it: the targets (:mod:`.targets`), the
reduction of blocks on a fit's data (:mod:`.block_reduction`), training state across a
reduction (:mod:`.optim_state`), the logger rows and report files (:mod:`.reduction_log`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from .blocks import Block, architecture
from .capture import default_forward, default_targets
from .checkpoint import CHECKPOINT_KEY, watch_checkpoint_loading
from .config import ConfigError, reduce_config, to_container
from .errors import LightningStacksError
from .names import block_neuron_metrics
from .optim_state import optimizer_state_by_name, rebuild_training, slice_optimizer_state
from .reduction.settings import ReductionError
from .reduction_log import log_reduction, write_report
from .targets import check_paths, put_block, resolve_targets

CLI_ONLY = ("output", "after_training")  # reduce.py / train.py keys, not reduction settings


def check_keywords(settings: dict) -> None:
    """Refuse keywords the callback does not take, listing exactly the ones it does."""
    import dataclasses
    import inspect

    from .config import ReduceConfig

    bad = [k for k in CLI_ONLY if k in settings]
    if bad:
        raise ConfigError(f"ReductionCallback does not take {bad}: those are reduce.py / train.py options")
    reduce_keys = [f.name for f in dataclasses.fields(ReduceConfig) if f.name not in CLI_ONLY]
    unknown = sorted(k for k in settings if k not in reduce_keys)
    if unknown:
        own = [p for p in inspect.signature(ReductionCallback.__init__).parameters if p not in ("self", "settings")]
        raise ConfigError(f"ReductionCallback got unknown keyword(s) {unknown}; it takes {', '.join(own)} and the reduction "
                          f"settings {', '.join(reduce_keys)}")


def check_when(at_epochs, every_n_epochs, at_end, task) -> list[int]:
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
    return at_epochs


def check_fit(cb: ReductionCallback, trainer: pl.Trainer, blocks: list[Block]) -> None:
    """Before training: the settings fit every block, the device exists, ``at_epochs`` fall inside
    the fit, an in-fit reduction has a strategy it can rebuild, ``reference='test'`` has data."""
    from .loaders import has_loader
    from .reduction.job import resolve_device, settings_from_config

    for block in blocks:
        widths = block.network().widths
        try:
            settings_from_config(cb.config).validate(widths)
        except ReductionError as err:
            raise ReductionError(f"ReductionCallback ({block.name}: widths {widths}): {err}") from None
        if cb.config.merge_identity_layers and not block.allow_skip:
            raise ReductionError(f"ReductionCallback ({block.name}): merge_identity_layers folds a ReLU layer into a skip path, "
                                 f"which a plain {type(block.module).__name__} does not have; turn it off")
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


def resave_last_checkpoints(trainer: pl.Trainer) -> list[str]:
    """Rewrite every ``ModelCheckpoint``'s last checkpoint (written before an end-of-fit
    reduction) so it holds the reduced model; a ``last.ckpt`` link becomes a file of its own."""
    import os

    from pytorch_lightning.callbacks import ModelCheckpoint

    done = []
    for cb in trainer.checkpoint_callbacks:
        path = getattr(cb, "last_model_path", "") if isinstance(cb, ModelCheckpoint) else ""
        if path and (os.path.lexists(path)) and path not in done:
            if trainer.is_global_zero and os.path.islink(path):
                os.unlink(path)  # never write the reduced model through a link onto the best checkpoint
            trainer.strategy.barrier("resave_last")
            trainer.save_checkpoint(path, weights_only=False)
            done.append(path)
    return done


class ReductionCallback(pl.Callback):
    """The Reduction Algorithm as a drop-in Lightning callback, on any LightningModule::

        trainer = pl.Trainer(max_epochs=30, callbacks=[ReductionCallback(max_drop=1e-3, at_epochs=[20])])
        trainer.fit(module, datamodule=dm)

    Targets: every outermost :class:`~lightning_stacks.model.DeepStackNetwork` or plain ReLU MLP
    ``nn.Sequential`` (Linear, ReLU, BatchNorm1d, Dropout) of the module, or the blocks named in
    ``modules``. Each is reduced in place and written back in its own form: a Sequential stays a
    Sequential of the same layers with fewer units (BatchNorm1d folded into its Linear). A block
    inside a bigger model (a head over a CNN) gets its inputs from a forward hook while the data
    runs through the model, and automatic mode measures the drop on the model's outputs; several
    blocks share one budget. Inside a fit the optimizers, LR schedulers (state carried) and the DDP
    wrapper are rebuilt; checkpoints record the blocks' shapes (reload with
    :func:`~lightning_stacks.checkpoint.load_reduced_checkpoint`), and an end-of-fit reduction
    re-saves every ``ModelCheckpoint``'s last checkpoint.

    Data: the fit's own dataloaders. Under DDP, rank 0 reduces on every training sample (a
    distributed sampler is replaced by a sequential one) and broadcasts the result.

    Args:
        max_drop: automatic mode (>= 0): the largest metric drop allowed on ``reference``
            (accuracy points, or relative MSE increase); -1 = manual mode (``tolerances``,
            ``clusters``).
        at_epochs: reduce after this many epochs of training (before that epoch starts), e.g.
            ``[20, 40]``; each must be < the Trainer's ``max_epochs``.
        every_n_epochs: reduce after every n epochs of training (0 = off).
        at_end: reduce when the fit ends.
        modules: attribute paths of the blocks to reduce (``["model.head"]``; default: all found).
        attribute: older name of ``modules`` (one path).
        task: ``classification`` or ``regression`` (default: the module's ``task`` attribute, else
            inferred from the training labels: integer labels mean classification).
        forward: ``forward(module, batch) -> outputs`` (default ``module(batch[0])``).
        targets: ``targets(batch) -> labels`` (default ``batch[1]`` or ``batch["y"]``).
        report_path: where to write the JSON report (and the tables as ``.txt`` beside it);
            ``"auto"`` = ``<trainer.log_dir or default_root_dir>/reduction_report.json``, None = none.
        verbose: print each step's row as it finishes.
        round_index: label of the reductions in logs (the rounds driver sets it).
        **settings: every other ``reduce.*`` setting by name (``refit``, ``polish``, ``clusters``,
            ``tolerances``, ``reference``, ``reference_size``, ``sample``, ``device``,
            ``optimizer_state``, ...; see ``docs/CONFIG.md``). Unknown names are refused.

    Raises:
        ConfigError: an argument or setting is unknown or out of range (at construction).
        ReductionError: the module, Trainer or data cannot be reduced (in ``setup``, before training).
    """

    CLI_ONLY = CLI_ONLY

    def __init__(self, max_drop: float = -1.0, *, at_epochs: list[int] | tuple[int, ...] = (), every_n_epochs: int = 0,
                 at_end: bool = True, modules: list[str] | str | None = None, attribute: str | None = None,
                 task: str | None = None, forward: Callable | None = None, targets: Callable | None = None,
                 report_path: str | Path | None = "auto", verbose: bool = True, round_index: int | None = None,
                 **settings: Any):
        check_keywords(settings)
        self.reference_auto = "reference" not in settings  # a user's callback: the validation data when the fit has some
        self.config = reduce_config({"max_drop": max_drop, **settings}, source="ReductionCallback")
        at_epochs = check_when(at_epochs, every_n_epochs, at_end, task)
        self.paths = check_paths(modules, attribute)
        self.at_epochs, self.every_n_epochs, self.at_end = sorted(set(at_epochs)), every_n_epochs, at_end
        self.task, self.report_path, self.verbose, self.round_index = task, report_path, verbose, round_index
        self.forward, self.targets = forward or default_forward, targets or default_targets
        self.enabled = True
        self.done_epochs: list[int] = []
        self.done_end = False
        self.reports: list[dict] = []
        self.logged_steps = 0  # logger steps this callback added for its reduction rows
        self._widths: dict[str, list[int]] = {}
        self._task: str | None = task
        self._sliced: dict[str, dict] = {}  # the last reduction's optimizer state, by block and parameter

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
        blocks = resolve_targets(pl_module, self.paths)
        self.paths = [b.name for b in blocks]
        check_fit(self, trainer, blocks)
        nets = [b.network() for b in blocks]
        self._widths = {b.name: net.widths for b, net in zip(blocks, nets, strict=True)}
        self._task = self._decide_task(trainer, pl_module, nets[-1].output_dim)
        watch_checkpoint_loading(pl_module)

    def _decide_task(self, trainer: pl.Trainer, pl_module: pl.LightningModule, width: int) -> str:
        """The task (:func:`~.fit_checks.decide_task`: given, the module's, or read from the labels
        where unambiguous, printed once), refused with the fix otherwise."""
        from .fit_checks import decide_task

        task, how = decide_task(self.task, pl_module, trainer, self.forward, self.targets, width)
        if how.startswith("inferred") and self.verbose and trainer.is_global_zero:
            print(f"[reduce] task: {task} ({how}; give task= to set it)", flush=True)
        return task

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if self.paths:
            checkpoint.setdefault(CHECKPOINT_KEY, {}).update({p: architecture(pl_module.get_submodule(p)) for p in self.paths})

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

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        """Neuron counts on the training curves' steps (a StackModule logs its own)."""
        if trainer.logger and self._widths and not getattr(pl_module, "logs_neuron_counts", False) and \
                getattr(trainer._logger_connector, "should_update_logs", True):
            pl_module.log_dict(block_neuron_metrics(self._widths), on_step=True, on_epoch=False)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # a ModelCheckpoint saving a last checkpoint writes it before or after this hook: its optimizer
        # state must fit the reduced model either way
        if self.run(trainer, pl_module) and any(getattr(c, "save_last", False) for c in trainer.checkpoint_callbacks):
            rebuild_training(trainer, pl_module, self._sliced)
            for path in resave_last_checkpoints(trainer):
                if self.verbose and trainer.is_global_zero:
                    print(f"[reduce] {path} re-saved with the reduced model", flush=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A fit that trained no epoch (``max_epochs=0``) calls no ``on_train_end``: reduce the model
        as it was loaded, and say so."""
        if self.enabled and self.at_end and not self.done_end:
            if self.verbose and trainer.is_global_zero:
                print(f"[reduce] the fit trained no epoch (max_epochs={trainer.max_epochs}): reducing the model as loaded", flush=True)
            self.run(trainer, pl_module)

    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        """The end-of-fit reduction, now (idempotent; the rounds driver calls it after a fit that
        ran no epoch, where Lightning calls no ``on_train_end``). Returns whether it reduced."""
        if self.enabled and self.at_end and not self.done_end:
            self._reduce(trainer, pl_module, in_fit=False)
            self.done_end = True
            return True
        return False

    # ------------------------------------------------------------------ the reduction
    def _history(self, pl_module: pl.LightningModule) -> list[dict]:
        """The module's reduction history (a StackModule's spans its rounds), else this callback's."""
        history = getattr(pl_module, "history", None)
        return history if isinstance(history, list) and history else self.reports

    def _compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        """Rank 0: reduce every target on the fit's data; the payload every rank installs."""
        from .block_reduction import reduce_blocks
        from .fit_checks import budget_split
        from .loaders import split_sources
        from .reduction.job import print_step, resolve_device, settings_from_config

        try:
            sources = split_sources(trainer)
            if "train" not in sources:
                raise ReductionError("the fit has no training data to reduce on")
            device = None if self.config.device == "auto" else resolve_device(self.config.device)
            if self._task is None:  # run() outside a fit's setup: decided as setup() does
                self._task = self._decide_task(trainer, pl_module, resolve_targets(pl_module, self.paths)[-1].network().output_dim)
            task = self._task
            reference, why = budget_split(None if self.reference_auto else self.config.reference, sources)
            if why and self.verbose and not self.reports:
                print(f"[reduce] {why}", flush=True)
            settings = settings_from_config(self.config, self._history(pl_module), reference=reference)
            results = reduce_blocks(pl_module, self.paths, sources, settings, task, reference=reference,
                                    reference_size=self.config.reference_size, device=device, forward=self.forward,
                                    targets=self.targets, log=print_step if self.verbose else None)
        except (LightningStacksError, ValueError) as err:  # every rank must leave the broadcast
            return {"error": f"{type(err).__name__}: {err}"}
        for item in results:
            item["report"]["round"] = len(self.reports) if self.round_index is None else self.round_index
            item["report"]["epoch"] = trainer.current_epoch
        return {"blocks": results}

    def _reduce(self, trainer: pl.Trainer, pl_module: pl.LightningModule, in_fit: bool) -> None:
        from .block_reduction import rebuild

        blocks = resolve_targets(pl_module, self.paths)  # as they are now: the unit maps need them
        carry = self.config.optimizer_state == "carry"
        old_state = {b.name: optimizer_state_by_name(trainer, b.module) for b in blocks} if carry else {}
        payload = trainer.strategy.broadcast(self._compute(trainer, pl_module) if trainer.is_global_zero else None, src=0)
        if "error" in payload:
            raise ReductionError(f"reduction failed: {payload['error']}")
        sliced, reports = {}, []
        for block, item in zip(blocks, payload["blocks"], strict=True):
            new = rebuild(pl_module, block.name, item["architecture"], item["state_dict"])
            put_block(pl_module, block.name, new, item["report"])
            reports.append(item["report"])
            self._widths[block.name] = item["report"]["steps"][-1]["widths"]
            if old_state.get(block.name):
                sliced[block.name] = slice_optimizer_state(old_state[block.name], new, block.unit_maps(item["report"]["kept_ids"]))
        self.reports.extend(reports)
        self._sliced = sliced
        notes = [n for r in reports for n in r.get("notes", [])]
        if in_fit:
            notes += rebuild_training(trainer, pl_module, sliced)
        elif "net" in sliced and hasattr(pl_module, "pending_optimizer_state"):
            pl_module.pending_optimizer_state = sliced["net"]  # StackModule: the next fit's optimizer starts from it
        if trainer.is_global_zero:
            for note in notes if self.verbose else []:
                print(f"[reduce] {note}", flush=True)
            self.logged_steps += log_reduction(trainer, reports, {p: pl_module.get_submodule(p) for p in self.paths})
            write_report(trainer, self.report_path, self._history(pl_module))

"""Wiring for ``train.py``: logger, Trainer, checkpointing and the final report.

Kept separate from the CLI so tests and other drivers build exactly the same Trainer.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig
from pytorch_lightning.callbacks import RichProgressBar, TQDMProgressBar

from . import names
from .config import ConfigError, to_container
from .data import build_datamodule
from .errors import one_line
from .loggers import build_logger, log_summary
from .module import StackModule, load_module
from .rundir import check_out_dir, is_launch_rank_zero


def parse_devices(devices: str):
    """"auto" | "2" (a count) | "0,1" (a list of indices) -> what ``pl.Trainer`` takes."""
    devices = str(devices).strip()
    if devices == "auto":
        return "auto"
    try:
        if "," in devices:
            return [int(d) for d in devices.split(",") if d.strip()]
        return int(devices)
    except ValueError:
        raise ConfigError(f"trainer.devices='{devices}' is not 'auto', a count or a list like '0,1'") from None


def build_trainer(cfg: DictConfig, callbacks: list | None = None, logger=None,
                  ckpt_dir: str | Path | None = None, desc: str = "train", steps_per_epoch=None,
                  **overrides) -> pl.Trainer:
    """A Trainer for ``cfg`` whose :class:`AtomicLastCheckpoint` writes ``last.ckpt`` every epoch
    into ``ckpt_dir`` (default ``out_dir/checkpoints``); ``overrides`` go to ``pl.Trainer``.
    ``desc`` labels the progress bar; ``steps_per_epoch`` (the fewest batches an epoch will have
    on each rank: a count, or a function of the Trainer's world size) caps ``log_every_n_steps``
    so that short epochs still log."""
    from .checkpoint import AtomicLastCheckpoint
    from .progress import EpochProgressBar

    t = cfg.trainer
    out = Path(cfg.out_dir)
    check_accelerator(t.accelerator, t.cuda_graphs)
    devices = parse_devices(t.devices)
    ckpt = AtomicLastCheckpoint(ckpt_dir or out / "checkpoints")
    bars = {"epochs": lambda: EpochProgressBar(desc), "rich": RichProgressBar, "tqdm": lambda: TQDMProgressBar(refresh_rate=20)}
    show_bar = t.enable_progress_bar and not cfg.logger.quiet
    cbs = [ckpt] + ([bars[t.progress_bar]()] if show_bar else []) + list(callbacks or [])
    logger = build_logger(cfg) if logger is None else logger
    kwargs = dict(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator, devices=devices, strategy=t.strategy,
        num_nodes=t.num_nodes, precision=t.precision, log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=show_bar, gradient_clip_val=t.gradient_clip_val or None,
        deterministic=t.deterministic, check_val_every_n_epoch=t.check_val_every_n_epoch,
        reload_dataloaders_every_n_epochs=1,  # the batch size grows per epoch
        use_distributed_sampler=False,  # TensorBatchLoader shards itself by rank
        default_root_dir=str(out), callbacks=cbs, enable_checkpointing=False, enable_model_summary=False,
        logger=logger,
    )
    try:
        trainer = pl.Trainer(**{**kwargs, **overrides})
    except (MisconfigurationException, ValueError, TypeError) as err:  # Lightning's checks of the trainer.* values
        raise ConfigError(f"Lightning refused the trainer settings (accelerator={t.accelerator}, devices={t.devices}, "
                          f"strategy={t.strategy}, num_nodes={t.num_nodes}, precision={t.precision}): {one_line(err)}; "
                          "fix those trainer.* keys") from None
    if t.cuda_graphs:  # the Trainer's real device and strategy (StackModule.setup checks again)
        from .graphed_step import check_trainer

        check_trainer(trainer, str(t.compile))
    steps = steps_per_epoch(trainer.world_size) if callable(steps_per_epoch) else steps_per_epoch
    if steps and "log_every_n_steps" not in overrides:  # each rank's epoch: the world size is known only now
        trainer.log_every_n_steps = max(1, min(t.log_every_n_steps, steps))
    return trainer


def check_accelerator(accelerator: str, cuda_graphs: bool = False) -> None:
    """Refuse a GPU accelerator, or ``trainer.cuda_graphs``, on a machine without one (before
    Lightning's own error, and before the data is read)."""
    if cuda_graphs and not torch.cuda.is_available():
        raise ConfigError("trainer.cuda_graphs=true needs a CUDA device; this machine has none: train on a GPU machine "
                          "or set trainer.cuda_graphs=false")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        mps = getattr(torch.backends, "mps", None)
        if accelerator == "cuda" or mps is None or not mps.is_available():
            raise ConfigError(f"trainer.accelerator={accelerator} but no GPU is available; use auto or cpu")


def loader_options(dm, cfg: DictConfig) -> dict:
    """Trainer options that depend on the data: the built-in DataModules shard their own loaders
    by rank and take their batch size from the schedule; a user's DataModule is sharded by
    Lightning (a DistributedSampler under DDP). ``log_every_n_steps`` is capped at the shortest
    epoch's batch count on each rank (a function of the world size, which the Trainer knows)."""
    from .data import TensorDataModule

    return {"use_distributed_sampler": not isinstance(dm, TensorDataModule),
            "steps_per_epoch": lambda world_size: fewest_steps_per_epoch(dm, cfg, world_size)}


def fewest_steps_per_epoch(dm, cfg: DictConfig, world_size: int = 1) -> int | None:
    """Batches in the shortest epoch of a built-in DataModule on each of ``world_size`` ranks (its
    largest batch size); None for a user's DataModule, whose loader length is its own business."""
    from .data import TensorDataModule

    if not isinstance(dm, TensorDataModule):
        return None
    n = dm.split("train")[0].shape[0] // max(1, int(world_size))
    return max(1, -(-n // max(cfg.schedule.batch_start, cfg.schedule.batch_end)))


def fit(trainer: pl.Trainer, module, datamodule, ckpt_path: str | None = None) -> None:
    """``trainer.fit`` that resumes with ``weights_only=True`` (Lightning >= 2.6 takes the
    argument): a checkpoint is unpickled as tensors and plain data only."""
    import inspect

    extra = {"weights_only": True} if "weights_only" in inspect.signature(trainer.fit).parameters else {}
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, **extra)


def method_callbacks(cfg: DictConfig) -> list:
    """Training-time callbacks of the optional methods (group sparsity, layer sparsity, pruning)."""
    out = []
    gs, ls = cfg.group_sparsity, cfg.layer_sparsity

    def start(epoch: int) -> int:  # -1 = after the unregularized warm-up
        return cfg.schedule.warmup_epochs if epoch < 0 else epoch

    if gs.lambdas:
        from .methods.group_sparsity import GroupSparsityCallback

        out.append(GroupSparsityCallback(list(gs.lambdas), gs.alpha, gs.include_bias, start(gs.start_epoch)))
    if ls.penalties:
        from .methods.layer_sparsity import LayerSparsityCallback

        out.append(LayerSparsityCallback(list(ls.penalties), start(ls.start_epoch)))
    pr = cfg.pruning
    if pr.sparsity or pr.compression:
        from .methods.magnitude_pruning import PolynomialPruningCallback

        out.append(PolynomialPruningCallback(pr.sparsity, pr.begin_epoch, pr.end_epoch, pr.frequency, scope=pr.scope,
                                             compression=pr.compression))
    return out


def initial_module(cfg: DictConfig, dm=None) -> StackModule:
    """The module a new job starts from, for the job's data (``dm``, built from ``cfg.data`` if
    None): ``init_from``'s network, checked against the data and with its input scaling kept or
    refitted (:func:`~lightning_stacks.lineage.start_generation`), or a fresh one with the data's
    input/output widths, task and standardization."""
    from .data import data_summary, describe_data
    from .lineage import first_generation, start_generation

    dm = dm if dm is not None else build_datamodule(cfg.data, seed=cfg.seed)
    info = describe_data(dm)
    if is_launch_rank_zero():
        print(data_summary(info), flush=True)
    if cfg.init_from:
        return start_generation(cfg, dm, info)
    return StackModule(to_container(cfg), data_info=first_generation(info))


def follow_schedule(dm, module: StackModule) -> None:
    """The built-in DataModules take each epoch's batch size from the module's schedule (a user's
    DataModule keeps its own batch size)."""
    from .data import TensorDataModule

    if isinstance(dm, TensorDataModule):
        dm.schedule = module.schedule


TEACHER_PREVIOUS = "previous"  # distill.teacher: the previous round's trained network


def load_teacher(cfg: DictConfig, default: str | Path | None = None) -> StackModule:
    """The frozen module ``distill`` trains toward (its input layer and network; give it to
    ``StackModule.set_teacher``): ``distill.teacher``, else ``default`` (a rounds job's full
    network, or for ``teacher: previous`` the previous round's network).
    Raises ConfigError if there is none or the file is missing."""
    if cfg.distill.teacher == TEACHER_PREVIOUS and not default:
        raise ConfigError("distill.teacher=previous (the previous round's network) is for a round of a rounds job; "
                          "a single fit needs distill.teacher=<checkpoint>")
    path = default if cfg.distill.teacher == TEACHER_PREVIOUS else cfg.distill.teacher or default
    if not path:
        raise ConfigError("distill.weight > 0 needs a teacher: set distill.teacher=<checkpoint> "
                          "(only a rounds job has a default, its full network)")
    if not Path(path).is_file():
        raise ConfigError(f"distill teacher checkpoint '{path}' does not exist")
    return load_module(path, to_container(cfg))


def final_metrics(module: StackModule, dm) -> dict[str, float]:
    """Metrics on train/val/test computed outside the Trainer (same code as the reduction uses):
    ``module.net`` on the splits as its input layer gives them to it."""
    from .evaluation import evaluate_source
    from .reduction.job import module_sources

    task = module.task
    return metric_keys({split: evaluate_source(module.net, source, task)
                        for split, source in module_sources(module, module.cfg, dm).items()}, task)


def metric_keys(per_split: dict[str, float], task: str) -> dict[str, float]:
    """``{"val": 0.03}`` -> ``{"val_mse": 0.03}`` (the names train.py prints)."""
    return {names.metric_name(split, task).replace("/", "_"): value for split, value in per_split.items()}


def run_training(cfg: DictConfig) -> tuple[StackModule, dict[str, float], pl.Trainer]:
    """Seed, build, fit and (on rank 0) report; the final checkpoint is ``out_dir/final.ckpt``."""
    pl.seed_everything(cfg.seed, workers=True)
    if cfg.init_from and cfg.ckpt_path:
        raise ConfigError("give init_from (start a new fit from weights) or ckpt_path (resume a fit), not both")
    if is_launch_rank_zero():
        check_out_dir(cfg)
    ckpt_path = cfg.ckpt_path or None
    if ckpt_path == "last":
        ckpt_path = str(Path(cfg.out_dir) / "checkpoints" / "last.ckpt")
    if ckpt_path:
        if not Path(ckpt_path).is_file():
            raise ConfigError(f"ckpt_path '{cfg.ckpt_path}' does not exist (looked for {ckpt_path})")
        from .checkpoint import read_resume_checkpoint

        read_resume_checkpoint(ckpt_path)  # refuse a damaged, foreign or diverged file before Lightning reads it
    check_accelerator(cfg.trainer.accelerator, cfg.trainer.cuda_graphs)
    dm = build_datamodule(cfg.data, seed=cfg.seed)
    module = initial_module(cfg, dm)
    if cfg.augment.shift > 0:
        module.image_layout()  # fails before the Trainer starts
    if cfg.distill.weight > 0:
        module.set_teacher(load_teacher(cfg))
    follow_schedule(dm, module)
    trainer = build_trainer(cfg, callbacks=method_callbacks(cfg), **loader_options(dm, cfg))
    if ckpt_path and trainer.is_global_zero and not cfg.logger.quiet:
        print(f"[train] resuming the fit from {ckpt_path}", flush=True)
    fit(trainer, module, dm, ckpt_path)
    final = Path(cfg.out_dir) / "final.ckpt"
    trainer.save_checkpoint(str(final), weights_only=False)
    metrics = final_metrics(module, dm) if trainer.is_global_zero else {}
    if trainer.is_global_zero and trainer.logger:
        log_summary(trainer.logger, module, metrics, step=trainer.global_step + 1)
        trainer.logger.finalize("success")
    return module, metrics, trainer

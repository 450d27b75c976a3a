"""The config schema: the choice constants, ConfigError, and the job's Config with its rounds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import LightningStacksError
from .methods import (
    AugmentConfig,
    DistillConfig,
    GroupSparsityConfig,
    LayerSparsityConfig,
    PruningConfig,
    ReduceConfig,
)
from .sections import (
    DataConfig,
    LoggerConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TrainerConfig,
)

VARIANTS = ("stack", "simplified", "plain")
DATASETS = ("sine", "mnist", "digits", "csv", "npz", "module")
FILE_DATASETS = ("csv", "npz")
DATA_TASKS = ("auto", "classification", "regression")
LOGGERS = ("wandb", "csv", "none")
WANDB_MODES = ("auto", "offline", "online", "disabled")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
PRECISIONS = ("32-true", "64-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed", "32", "64", "16", "bf16")
COMPILE_MODES = ("none", "default", "reduce-overhead")
DATA_DEVICES = ("auto", "cpu")
SCALINGS = ("keep", "refit")


class ConfigError(LightningStacksError):
    """A configuration value or key is invalid; the message names it and the valid choices."""


@dataclass
class RoundConfig:
    """One retrain-reduce round: train ``epochs`` (0 = reduce only; -1 = ``trainer.max_epochs``),
    then reduce if ``reduce``.

    ``schedule``, ``optim`` and ``reduction`` override the top-level ``schedule.*``, ``optim.*``
    and ``reduce.*`` keys for this round only; ``group_sparsity``, ``layer_sparsity`` and
    ``pruning`` override the training-time methods' keys (e.g. ``{lambdas: []}`` turns group
    sparsity off for a fine-tuning round), ``distill`` the distillation keys (e.g. ``{weight:
    0.5}`` for a fine-tuning round), ``augment`` the augmentation keys (e.g. ``{shift: 2}``).
    Validated: unknown keys are refused.

    ``within`` (>= 0; -1 = no check): a guard for rounds that may end worse than the full
    network (an overshooting reduction whose fine-tuning does not win it back). After the round,
    if its network is more than ``within`` below the full network's metric on
    ``reduce.reference`` (``max_drop``'s unit), the job goes on from the latest earlier round's
    network that is within it; the rejected network is kept as ``rounds/round_i.rejected.ckpt``.
    """

    epochs: int = 0
    reduce: bool = True
    within: float = -1.0
    schedule: dict[str, Any] = field(default_factory=dict)
    optim: dict[str, Any] = field(default_factory=dict)
    reduction: dict[str, Any] = field(default_factory=dict)
    group_sparsity: dict[str, Any] = field(default_factory=dict)
    layer_sparsity: dict[str, Any] = field(default_factory=dict)
    pruning: dict[str, Any] = field(default_factory=dict)
    distill: dict[str, Any] = field(default_factory=dict)
    augment: dict[str, Any] = field(default_factory=dict)


def default_rounds() -> list[RoundConfig]:
    """The job ``python train.py`` runs with no arguments (the product in one command): train
    the composite-sine network (``trainer.max_epochs`` = 300 epochs, the paper's schedule) and reduce it within 5% of its
    training MSE (automatic mode with the least-squares refit and polish), fine-tune the reduced
    network for 60 epochs at a low LR, and reduce again within 5% of the FULL network's MSE."""
    reduce = {"max_drop": 0.05, "refit": True, "polish": True}
    return [
        RoundConfig(epochs=-1, reduction=dict(reduce)),  # trainer.max_epochs: 300 unless overridden
        RoundConfig(epochs=60, schedule={"warmup_epochs": 0, "l2_start": 3.0e-5, "l2_end": 3.0e-5, "lr_end_mult": 0.1},
                    optim={"lr": 1.0e-3}, reduction={**reduce, "baseline": "first"}),
    ]


@dataclass
class Config:
    """The whole job. ``out_dir`` receives checkpoints, logs and reports.

    ``rounds``: retrain-reduce rounds; the default is the short sine job of
    :func:`default_rounds` (train, reduce, fine-tune, reduce). ``rounds=[]`` = one fit of
    ``trainer.max_epochs``, reduced after training if ``reduce.after_training``. ``ckpt_path``: resume an interrupted fit (a path, or
    ``last``). ``init_from``: start a new fit
    from a checkpoint's network (e.g. fine-tune a reduced network) with this config's optimizer
    and schedule; the data is checked against the checkpoint's first (columns, target, classes),
    ``data.scaling`` says whether its input scaling is kept; its reduction history is carried on
    when the data is the same, and restarts on new data (``data_info.lineage`` records each
    generation). ``python train.py continue=<job> ...`` fills ``init_from`` and the rest of the
    config from a finished job (docs/RETRAIN.md). ``key+=[...]`` on the command line appends to
    a list: ``'rounds+=[{epochs: 10}]'`` adds a round.

    ``overwrite``: nothing a job did not ask to replace is replaced. ``train.py`` refuses an
    ``out_dir`` that holds a finished or interrupted single fit (``final.ckpt`` or
    ``checkpoints/last.ckpt``; resume one with ``ckpt_path=last``) and ``reduce.py`` refuses an
    existing reduced checkpoint or report, unless ``overwrite=true``. It is never read from a
    checkpoint's stored config. A job holds ``out_dir/.lock`` while it runs, so a second job on
    the same ``out_dir`` is refused whatever ``overwrite`` says.
    """

    seed: int = 0
    out_dir: str = "runs/default"
    overwrite: bool = False
    ckpt_path: str = ""
    init_from: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    reduce: ReduceConfig = field(default_factory=ReduceConfig)
    group_sparsity: GroupSparsityConfig = field(default_factory=GroupSparsityConfig)
    layer_sparsity: LayerSparsityConfig = field(default_factory=LayerSparsityConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    rounds: list[RoundConfig] = field(default_factory=default_rounds)

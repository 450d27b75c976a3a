"""The config package: the dataclass schema, loading with overrides, and validation.

Structured configuration: the dataclasses in :mod:`.sections`, :mod:`.methods` and :mod:`.schema`
are the single source of defaults. YAML files in ``configs/`` only override them, and
command-line ``key=value`` dotlist overrides override the YAML. Unknown keys and values of the
wrong type are refused with a :class:`ConfigError` that names the key and the valid choices.
"""

from .loading import from_container, load_config, to_container
from .methods import (
    AugmentConfig,
    DistillConfig,
    GroupSparsityConfig,
    LayerSparsityConfig,
    PruningConfig,
    ReduceConfig,
)
from .schema import (
    ACCELERATORS,
    COMPILE_MODES,
    DATA_DEVICES,
    DATA_TASKS,
    DATASETS,
    FILE_DATASETS,
    LOGGERS,
    PRECISIONS,
    SCALINGS,
    VARIANTS,
    WANDB_MODES,
    Config,
    ConfigError,
    RoundConfig,
    default_rounds,
)
from .sections import (
    DataConfig,
    LoggerConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TrainerConfig,
)
from .validate import (
    cuda_graphs_refusal,
    reduce_config,
    round_config,
    round_epochs,
    validate,
    validate_reduce,
)

__all__ = [
    "ACCELERATORS", "COMPILE_MODES", "DATASETS", "DATA_DEVICES", "DATA_TASKS", "FILE_DATASETS", "LOGGERS",
    "PRECISIONS", "SCALINGS", "VARIANTS", "WANDB_MODES",
    "AugmentConfig", "Config", "ConfigError", "DataConfig", "DistillConfig", "GroupSparsityConfig",
    "LayerSparsityConfig", "LoggerConfig", "ModelConfig", "OptimConfig", "PruningConfig", "ReduceConfig",
    "RoundConfig", "ScheduleConfig", "TrainerConfig",
    "cuda_graphs_refusal", "default_rounds", "from_container", "load_config", "reduce_config", "round_config", "round_epochs",
    "to_container", "validate", "validate_reduce",
]

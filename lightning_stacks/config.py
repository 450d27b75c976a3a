"""Structured configuration: the dataclasses below are the single source of defaults.

YAML files in ``configs/`` only override them, and command-line ``key=value`` dotlist overrides
override the YAML. Unknown keys and values of the wrong type are refused with a
:class:`ConfigError` that names the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from .errors import LightningStacksError

VARIANTS = ("stack", "simplified", "plain")
DATASETS = ("sine", "mnist", "digits", "csv", "npz", "module")
FILE_DATASETS = ("csv", "npz")
DATA_TASKS = ("auto", "classification", "regression")
LOGGERS = ("wandb", "csv", "none")
WANDB_MODES = ("auto", "offline", "online", "disabled")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
PRECISIONS = ("32-true", "64-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed", "32", "64", "16", "bf16")


class ConfigError(LightningStacksError):
    """A configuration value or key is invalid; the message names it and the valid choices."""


@dataclass
class ModelConfig:
    """Architecture of the Deep Stack Network (SPEC section 1).

    ``widths`` are the ReLU widths n_j (one per stack, 0 allowed); ``bottleneck`` are the
    hidden bottleneck widths d_1..d_{J-1} (the last stack's output width is the data's output
    dimension). ``variant``: ``stack`` (affine path A2 A1 of width min(d_in, d_out)),
    ``simplified`` (direct skip matrix S) or ``plain`` (no skip path).
    """

    variant: str = "stack"
    widths: list[int] = field(default_factory=lambda: [1024, 1024, 1024])
    bottleneck: list[int] = field(default_factory=lambda: [1, 1])


@dataclass
class DataConfig:
    """Data set and loading.

    ``name``: ``sine`` (the composite sine), ``mnist``, ``digits`` (scikit-learn's 8x8 digits),
    ``csv`` or ``npz`` (your file at ``path``), or ``module`` (your own LightningDataModule).

    ``root`` for MNIST only: a folder holding the IDX files (gzip or not), directly or under
    ``MNIST/raw``; empty means ``$LIGHTNING_STACKS_DATA`` or ``./data``. ``val_size``: points held
    out of the training set for validation (MNIST: 0 means validate on the test set, as the paper
    reports test accuracy). ``x_min``/``x_max``: the composite sine's input range (the paper
    does not state it).

    Files (``csv``/``npz``): ``path`` is the file. A CSV has a header row of column names, or no
    header when every cell of its first row is a number (columns are then named ``0``, ``1``, ...).
    ``target`` (CSV only): the label column, by name or 0-based index (empty = the last column);
    a list of columns gives a multi-output regression. ``task``: ``auto`` infers it from the
    labels (text or integer-valued numbers: classification; other numbers: regression), or force
    ``classification``/``regression``. ``val_fraction``/``test_fraction``: each in [0, 1), sum
    < 1; the split is seeded by the job's seed. A fraction of 0 means no such split: validation
    then uses the test split, testing the validation split, and with both 0, both use the
    training split. An npz file with ``x_train``/``y_train`` (and optionally ``x_val``/``y_val``,
    ``x_test``/``y_test``) is used as split (fractions unused, the same fallbacks for a missing
    split). ``standardize``: scale every input feature by the training split's mean and std
    (regression targets are left as they are).

    ``device`` (built-in and file data sets): ``auto`` keeps a copy of the splits on the
    training device when they take under half of its free memory (batches are then drawn there:
    no per-step host-to-device copy); ``cpu`` keeps them on the host.

    Your own LightningDataModule: ``module`` is ``package.module:ClassName``, built with
    ``kwargs`` (and ``seed=<the job's seed>`` when its constructor takes a ``seed`` the kwargs
    do not set). Setting ``module`` sets ``name`` to ``module``; a different explicit
    ``name`` than the default ``sine`` is refused.
    """

    name: str = "sine"
    root: str = ""
    download: bool = True
    n_train: int = 2000
    n_val: int = 2000
    n_test: int = 2000
    noise: float = 0.05
    x_min: float = -1.0
    x_max: float = 1.0
    val_size: int = 0
    eval_batch_size: int = 4096
    path: str = ""
    target: Any = ""
    task: str = "auto"
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    standardize: bool = True
    module: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"


COMPILE_MODES = ("none", "default", "reduce-overhead")
DATA_DEVICES = ("auto", "cpu")


@dataclass
class OptimConfig:
    """Adam with two param groups: non-linear (V, b, W, c) and affine (A1, A2 or S)."""

    lr: float = 2e-3
    affine_lr_mult: float = 10.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class ScheduleConfig:
    """The paper's schedule: an unregularized warm-up, then per epoch l2 rising geometrically,
    LR falling geometrically and batch size growing geometrically until the last epoch.

    ``l2_*`` is the coefficient per squared weight added to the mean loss for the non-linear
    weights (V, b, W); the affine weights get ``affine_l2_mult`` times it; the bottleneck biases c
    get none. Defaults: the composite-sine recipe measured here (val MSE ~0.03 in ~100 s on 2
    CPU cores, see docs/RESULTS.md); MNIST overrides them in ``configs/mnist.yaml``.
    """

    warmup_epochs: int = 100
    l2_start: float = 3e-6
    l2_end: float = 3e-5
    affine_l2_mult: float = 1.0
    lr_end_mult: float = 0.1
    batch_start: int = 16
    batch_end: int = 128


@dataclass
class TrainerConfig:
    """Passed to ``pl.Trainer``. ``devices``: "auto", a count such as "2", or a list "0,1".
    ``progress_bar``: ``epochs`` (one bar per fit over its epochs, with the live neuron count and
    metrics), ``tqdm`` or ``rich`` (Lightning's per-batch bars). ``log_every_n_steps`` is capped
    at the shortest epoch's number of batches, so short epochs still log.
    ``compile``: ``none``, or a ``torch.compile`` mode (``default``, ``reduce-overhead``) for the
    network, re-applied after a reduction replaces it; where compiling fails the fit runs eagerly
    and says why."""

    max_epochs: int = 300
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    log_every_n_steps: int = 50
    enable_progress_bar: bool = True
    progress_bar: str = "epochs"
    gradient_clip_val: float = 0.0
    deterministic: bool = False
    check_val_every_n_epoch: int = 1
    compile: str = "none"


@dataclass
class LoggerConfig:
    """``kind``: wandb (offline unless an account is configured, see ``wandb_mode``), csv, none.
    ``quiet`` (``train.py --quiet``): no progress bar and no per-round / per-step lines; the
    final table and summary are still printed."""

    kind: str = "wandb"
    project: str = "lightning_stacks"
    name: str = ""
    wandb_mode: str = "auto"
    quiet: bool = False


@dataclass
class ReduceConfig:
    """The Reduction Algorithm's settings (``reduce.py`` and the reduction callback).

    Manual mode: per-stack ``tolerances`` (step 2) and ``clusters`` (step 3; 0 = do not cluster
    that stack); an empty list skips the step. Automatic mode: ``max_drop`` in [0, 1] (accuracy
    points, or relative MSE increase, on the ``reference`` split); -1 = manual. ``weak_share``:
    the part of that budget the weak steps may use (clustering gets the rest). ``refit``: beyond
    the paper, least-squares refit of each reduced stack's W and c to the original stack outputs.
    ``polish``: beyond the paper, automatic mode then spends what its per-stack budget ramp left:
    one neuron at a time (merge two, or drop the weakest), in whichever stack costs least, while
    the whole network stays within ``max_drop``. ``bottleneck_tol``: beyond the paper, >= 0 shrinks the linear bottlenecks to the rank of their
    values on the checked inputs (relative singular-value cut-off; 0 = exact); -1 = off.
    ``baseline``: automatic mode measures the drop from the ``current`` network's metric, or from
    the ``first`` one in the reduction history (the full network, across retrain-reduce rounds).
    ``sample``: step 1 checks this many random training inputs (0 = all).
    ``reference_size``: automatic mode measures the drop on a seeded random subsample of this many
    points of the ``reference`` split (0 = all of it); bounds its memory on large data.
    ``device``: where to reduce (``auto`` = the model's training device: CUDA when available).
    ``kmeans``: step 3's weighted k-means: ``torch`` (on the reduction's device) or ``sklearn``
    (scikit-learn on the CPU, the reference implementation).
    ``output``: path of the reduced checkpoint (empty = ``<input>_reduced.ckpt``).
    ``after_training``: ``train.py`` reduces its final network and writes ``final_reduced.ckpt``.
    ``optimizer_state``: what the next round's Adam starts from: ``reset`` (fresh state) or
    ``carry`` (moments of the neurons that survived unmerged are sliced over, merged neurons and
    re-factorized affine weights start at zero).
    ``merge_identity_layers``: a "layers" step folds stack 1's ReLU layer into its affine path when
    it acts as the identity (V >= 0, b >= 0 and inputs >= 0: ``reduce.domain`` with lower >= 0,
    or data whose inputs are all >= 0). ``domain``: ``[lower, upper]`` of a box input domain (e.g. ``[0, 1]`` for images): a first
    "domain" step removes units proven stable on the whole box (interval and linear bounds, then a
    MILP per undecided unit with ``domain_milp_seconds`` each, for at most ``domain_milp_units``
    units) — equivalent on the whole domain. ``tighten``: report how many of step 1's decisions
    (made on training points) also hold on the whole domain (needs ``domain``).
    """

    outside: bool = True
    sample: int = 0
    tolerances: list[float] = field(default_factory=list)
    clusters: list[int] = field(default_factory=list)
    max_drop: float = -1.0
    weak_share: float = 0.25
    refit: bool = False
    polish: bool = False
    bottleneck_tol: float = -1.0
    baseline: str = "current"
    reference: str = "train"
    seed: int = 0
    kmeans_n_init: int = 3
    kmeans: str = "torch"
    device: str = "auto"
    reference_size: int = 0
    output: str = ""
    after_training: bool = False
    optimizer_state: str = "reset"
    merge_identity_layers: bool = False
    domain: list[float] = field(default_factory=list)
    domain_milp_seconds: float = 5.0
    domain_milp_units: int = 2000
    tighten: bool = False


@dataclass
class GroupSparsityConfig:
    """Sparse group lasso on each ReLU neuron's incoming weights (Alvarez & Salzmann), applied
    by its prox after every optimizer step. ``lambdas``: per stack, or one value for all; empty
    = off. ``alpha``: l1 share in [0, 1]. ``start_epoch``: -1 = after ``schedule.warmup_epochs``.
    """

    lambdas: list[float] = field(default_factory=list)
    alpha: float = 0.0
    include_bias: bool = True
    start_epoch: int = -1


@dataclass
class PruningConfig:
    """Magnitude pruning with retraining (the baseline, TF-MOT style): during training the masks
    follow the polynomial sparsity schedule from 0 at ``begin_epoch`` to ``sparsity`` at
    ``end_epoch`` (-1 = the last epoch), re-ranked every ``frequency`` steps; the zeros are made
    permanent at the end. ``sparsity`` = 0 is off; or give ``compression`` (>= 1, nonzero
    parameters before / after, converted to a weight sparsity at the start of training).
    ``scope``: global or layer.
    """

    sparsity: float = 0.0
    compression: float = 0.0
    scope: str = "global"
    begin_epoch: float = 0.0
    end_epoch: float = -1.0
    frequency: int = 50


@dataclass
class LayerSparsityConfig:
    """Negative-part layer regularizer (Hebiri & Lederer), applied by its prox after every
    optimizer step. ``penalties``: r_j per stack or one for all; empty = off. ``start_epoch``: -1 =
    after ``schedule.warmup_epochs``. Identity-acting layers merge in the reduction's ``layers``
    step when ``reduce.merge_identity_layers`` is on."""

    penalties: list[float] = field(default_factory=list)
    start_epoch: int = -1


@dataclass
class DistillConfig:
    """Beyond the paper: fine-tune against a teacher network's outputs (knowledge distillation,
    Hinton et al. 2015), so that a reduced network relearns the full network's function and not
    only the labels. ``weight``: the teacher term's share of the data loss, in [0, 1] (0 = off;
    the loss is ``(1 - weight) * label loss + weight * teacher loss``). ``temperature`` (> 0):
    classification compares the softened class distributions (KL, scaled by T^2); regression
    uses the squared distance to the teacher's outputs. ``teacher``: a checkpoint of ours; empty
    = in a rounds job, the full network (round 0's trained network, before its reduction);
    ``previous`` = in a rounds job, the network the previous round trained, before its reduction.
    """

    weight: float = 0.0
    temperature: float = 4.0
    teacher: str = ""


@dataclass
class AugmentConfig:
    """Beyond the paper: random translations of the training images (evaluation and the
    reduction see the inputs as they are). ``shift``: each training image moves by a random
    whole number of pixels in [-shift, shift] along each axis, drawn per image and per step
    (0 = off); the uncovered border takes ``fill`` (in the network's input units: 0 is MNIST's
    background). ``image_shape``: [H, W] or [C, H, W] of the flattened inputs (C-major, as
    ``x.reshape(N, C, H, W)`` reads them); empty = the data set's own (MNIST 28x28, digits 8x8).
    A distillation teacher sees the same moved images as the network it teaches.
    """

    shift: int = 0
    fill: float = 0.0
    image_shape: list[int] = field(default_factory=list)


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
    from a checkpoint's architecture and weights (e.g. fine-tune a reduced network) with this
    config's optimizer and schedule; its reduction history is carried on.

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


def _valid_keys(schema: Any, dotted: str) -> tuple[str, list[str]]:
    """Walk ``dotted`` down the dataclass schema; return (parent path, valid keys there)."""
    parts = dotted.split(".")
    node = schema
    parent: list[str] = []
    for part in parts[:-1]:
        names = {f.name: f for f in dataclasses.fields(node)}
        if part not in names or not dataclasses.is_dataclass(getattr(node, part, None)):
            break
        node = getattr(node, part)
        parent.append(part)
    return ".".join(parent) or "<top level>", sorted(f.name for f in dataclasses.fields(node))


def _merge(base: DictConfig, other: Any, schema: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except (ConfigKeyError, ConfigAttributeError) as err:
        key = getattr(err, "full_key", None) or str(err)
        parent, valid = _valid_keys(schema, str(key))
        raise ConfigError(
            f"unknown config key '{key}' (from {source}); valid keys under {parent}: {', '.join(valid)}"
        ) from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "?")
        msg = str(err).splitlines()[0]
        raise ConfigError(f"bad value for config key '{key}' (from {source}): {msg}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None) -> DictConfig:
    """Build a validated config: dataclass defaults <- ``base`` <- YAML file <- overrides.

    Args:
        base: a saved config (e.g. a checkpoint's) to start from instead of the bare defaults.
        path: optional YAML file with overrides of the defaults.
        overrides: dotlist such as ``["trainer.max_epochs=3", "model.widths=[8,8]"]``.

    Raises:
        ConfigError: unknown key, wrong type, malformed override or invalid value.
    """
    schema = Config()
    cfg = OmegaConf.structured(schema)
    if base is not None:
        cfg = _merge(cfg, base, schema, "checkpoint")
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = OmegaConf.load(path)
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML ({_yaml_reason(err)}); fix the syntax there") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {path} cannot be read ({type(err).__name__}: {err})") from None
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(loaded).__name__}")
        cfg = _merge(cfg, loaded, schema, str(path))
    for item in overrides or []:
        key = item.partition("=")[0]
        if "=" not in item or not key or any(not part.strip() or part != part.strip() for part in key.split(".")):
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. trainer.max_epochs=3)")
        try:
            dot = OmegaConf.from_dotlist([item])
        except yaml.YAMLError as err:
            raise ConfigError(f"override '{item}': the value is not valid YAML ({_yaml_reason(err)}); "
                              "quote it or fix the brackets, e.g. model.widths=[16,16]") from None
        if _LIST_INDEX.search(key):  # a key inside a list entry, e.g. rounds.1.reduction.max_drop
            cfg = _update_in_list(cfg, item, dot)
        else:
            cfg = _merge(cfg, dot, schema, f"override '{item}'")
    validate(cfg)
    return cfg


_LIST_INDEX = re.compile(r"(^|\.)\d+(\.|$)")


def _update_in_list(cfg: DictConfig, item: str, dot: DictConfig) -> DictConfig:
    """Apply ``key=value`` whose key indexes a list (``rounds.1.optim.lr=1e-4``): the entry must
    exist; the value is merged into it and checked like every other value."""
    key = item.partition("=")[0]
    parts = key.split(".")
    node: Any = cfg
    for depth, part in enumerate(parts[:-1]):
        where = ".".join(parts[:depth]) or "<top level>"
        if part.isdigit():
            if not OmegaConf.is_list(node):
                raise ConfigError(f"override '{item}': '{where}' is not a list, so it has no entry {part}")
            if int(part) >= len(node):
                raise ConfigError(f"override '{item}': '{where}' has {len(node)} entries (0-{len(node) - 1}), "
                                  f"not {int(part) + 1}; give the whole list to add entries")
            node = node[int(part)]
        else:
            if not OmegaConf.is_dict(node) or part not in node:
                raise ConfigError(f"override '{item}': no key '{part}' under '{where}'")
            node = node[part]
    if not (OmegaConf.is_list(node) or OmegaConf.is_dict(node)):
        raise ConfigError(f"override '{item}': '{'.'.join(parts[:-1])}' holds a value, not a list or mapping")
    value = OmegaConf.select(dot, key)
    try:  # cfg is load_config's own, built by merges: updating it in place touches no caller's config
        OmegaConf.update(cfg, key, OmegaConf.to_container(value) if OmegaConf.is_config(value) else value, merge=True)
    except (ConfigKeyError, ConfigAttributeError) as err:
        raise ConfigError(f"unknown config key in override '{item}': {str(err).splitlines()[0]}") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"bad value in override '{item}': {str(err).splitlines()[0]}") from None
    return cfg


def _yaml_reason(err: Exception) -> str:
    """A YAML error's problem and place, one line."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def _nonfinite(node: Any, path: str) -> list[str]:
    """Dotted keys under ``node`` (a plain container) whose value is a NaN or infinite float."""
    if isinstance(node, float):
        return [] if math.isfinite(node) else [path]
    if isinstance(node, dict):
        return [k for key, v in node.items() for k in _nonfinite(v, f"{path}.{key}" if path else str(key))]
    if isinstance(node, list):
        return [k for i, v in enumerate(node) for k in _nonfinite(v, f"{path}[{i}]")]
    return []


def _check_finite(cfg: DictConfig) -> None:
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain["data"].pop("kwargs", None)  # the user's DataModule's own arguments: its business
    bad = _nonfinite(plain, "")
    if bad:
        raise ConfigError(f"{bad[0]} must be a finite number, got {OmegaConf.select(cfg, bad[0])}; "
                          "give a finite value (NaN and infinity are refused)")


def _choice(value: str, allowed: tuple[str, ...], key: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}='{value}' is not one of: {', '.join(allowed)}")


def validate(cfg: DictConfig) -> None:
    """Check values that types alone cannot (choices, lengths, ranges)."""
    m, d, s = cfg.model, cfg.data, cfg.schedule
    _check_finite(cfg)
    if not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"seed must be in [0, 2**32), got {cfg.seed}")
    _choice(m.variant, VARIANTS, "model.variant")
    _choice(cfg.trainer.accelerator, ACCELERATORS, "trainer.accelerator")
    _choice(str(cfg.trainer.precision), PRECISIONS, "trainer.precision")
    if d.module and d.name == DataConfig.name:
        d.name = "module"  # the default name counts as unset: data.module alone selects it
    _choice(d.name, DATASETS, "data.name")
    _choice(cfg.logger.kind, LOGGERS, "logger.kind")
    _choice(cfg.logger.wandb_mode, WANDB_MODES, "logger.wandb_mode")
    if len(m.widths) < 1:
        raise ConfigError("model.widths needs at least one stack")
    if any(n < 0 for n in m.widths):
        raise ConfigError(f"model.widths must be >= 0, got {list(m.widths)}")
    if len(m.bottleneck) != len(m.widths) - 1:
        raise ConfigError(
            f"model.bottleneck needs len(model.widths)-1 = {len(m.widths) - 1} entries "
            f"(the last stack's width is the output dimension), got {list(m.bottleneck)}"
        )
    if any(b < 1 for b in m.bottleneck):
        raise ConfigError(f"model.bottleneck widths must be >= 1, got {list(m.bottleneck)}")
    if s.warmup_epochs < 0 or cfg.trainer.max_epochs < 1:
        raise ConfigError("schedule.warmup_epochs must be >= 0 and trainer.max_epochs >= 1")
    if min(s.l2_start, s.l2_end, s.affine_l2_mult) < 0:
        raise ConfigError("schedule.l2_start, l2_end and affine_l2_mult must be >= 0")
    if s.l2_start == 0 and s.l2_end > 0:
        raise ConfigError("schedule.l2_start must be > 0 for a geometric ramp to l2_end > 0")
    if s.batch_start < 1 or s.batch_end < 1 or s.lr_end_mult <= 0:
        raise ConfigError("schedule.batch_start/batch_end must be >= 1 and lr_end_mult > 0")
    if cfg.optim.lr <= 0 or cfg.optim.affine_lr_mult <= 0:
        raise ConfigError("optim.lr and optim.affine_lr_mult must be > 0")
    if len(cfg.optim.betas) != 2:
        raise ConfigError("optim.betas needs two values")
    if min(d.n_train, d.n_val, d.n_test) < 1 and d.name == "sine":
        raise ConfigError("data.n_train, n_val, n_test must be >= 1")
    if not d.x_min < d.x_max:
        raise ConfigError(f"data.x_min must be < data.x_max, got {d.x_min} and {d.x_max}")
    if d.noise < 0 or d.val_size < 0:
        raise ConfigError("data.noise and data.val_size must be >= 0")
    # data: refuse keys the chosen data set would silently ignore
    _choice(d.task, DATA_TASKS, "data.task")
    for key in ("val_fraction", "test_fraction"):
        if not 0 <= d[key] < 1:
            raise ConfigError(f"data.{key} must be in [0, 1), got {d[key]}")
    if not d.val_fraction + d.test_fraction < 1:
        raise ConfigError(f"data.val_fraction + data.test_fraction must be < 1 (the rest trains), "
                          f"got {d.val_fraction} + {d.test_fraction}")
    if d.module and d.name != "module":
        raise ConfigError(f"data.module='{d.module}' conflicts with data.name='{d.name}': drop data.name "
                          f"(or set data.name=module) to use your DataModule, or drop data.module")
    if d.name == "module":
        if not d.module:
            raise ConfigError("data.name=module needs data.module=package.module:ClassName")
        mod, _, cls = d.module.partition(":")
        if not mod or not cls or ":" in cls or not all(p.isidentifier() for p in mod.split(".") + cls.split(".")):
            raise ConfigError(f"data.module='{d.module}' must have the form package.module:ClassName")
    elif len(d.kwargs):
        raise ConfigError("data.kwargs are passed to data.module's class only; set data.module=package.module:ClassName or drop data.kwargs")
    if d.root and d.name != "mnist":
        hint = "give the file as data.path" if d.name in FILE_DATASETS else f"data.name={d.name} reads no files"
        raise ConfigError(f"data.root is read for data.name=mnist only, not '{d.name}'; drop it ({hint})")
    if d.name in FILE_DATASETS:
        if not d.path:
            raise ConfigError(f"data.name={d.name} needs data.path=<your .{d.name} file>")
    elif d.path:
        raise ConfigError(f"data.path is read for data.name=csv or npz only, not '{d.name}'; drop it or set data.name")
    targets = list(d.target) if OmegaConf.is_list(d.target) else [d.target]
    if any(isinstance(t, bool) or not isinstance(t, (str, int)) for t in targets) or (len(targets) > 1 and "" in targets) or not targets:
        raise ConfigError(f"data.target must be a column name, a 0-based index or a list of them, got {d.target!r}")
    if targets != [""] and d.name != "csv":
        raise ConfigError(f"data.target selects a CSV column; data.name='{d.name}' does not read it (npz files hold y arrays): drop it")
    if d.name not in FILE_DATASETS:
        defaults = DataConfig()
        for key in ("task", "val_fraction", "test_fraction", "standardize"):
            if d[key] != getattr(defaults, key):
                raise ConfigError(f"data.{key} applies to data.name=csv or npz only, not '{d.name}'; drop it")
    _choice(cfg.trainer.progress_bar, ("epochs", "tqdm", "rich"), "trainer.progress_bar")
    _choice(cfg.trainer.compile, COMPILE_MODES, "trainer.compile")
    _choice(d.device, DATA_DEVICES, "data.device")
    gs = cfg.group_sparsity
    if any(not v >= 0 for v in gs.lambdas) or not 0 <= gs.alpha <= 1:
        raise ConfigError(f"group_sparsity.lambdas must be >= 0 and alpha in [0, 1], got {list(gs.lambdas)} and {gs.alpha}")
    if len(gs.lambdas) not in (0, 1, len(m.widths)):
        raise ConfigError(f"group_sparsity.lambdas needs one value or one per stack ({len(m.widths)}), got {list(gs.lambdas)}")
    ls = cfg.layer_sparsity
    if any(not v >= 0 for v in ls.penalties) or len(ls.penalties) not in (0, 1, len(m.widths)):
        raise ConfigError(f"layer_sparsity.penalties must be >= 0, one value or one per stack, got {list(ls.penalties)}")
    pr = cfg.pruning
    _choice(pr.scope, ("global", "layer"), "pruning.scope")
    if not 0 <= pr.sparsity < 1 or pr.compression < 0 or 0 < pr.compression < 1 or (pr.sparsity and pr.compression):
        raise ConfigError(f"pruning: give sparsity in [0, 1) or compression >= 1 (not both), got sparsity={pr.sparsity}, compression={pr.compression}")
    if pr.begin_epoch < 0 or pr.frequency < 1 or (pr.end_epoch >= 0 and pr.end_epoch < pr.begin_epoch):
        raise ConfigError(f"pruning: need 0 <= begin_epoch <= end_epoch (or -1) and frequency >= 1, got {pr.begin_epoch}, {pr.end_epoch}, {pr.frequency}")
    ds = cfg.distill
    if not 0 <= ds.weight <= 1 or not ds.temperature > 0:
        raise ConfigError(f"distill.weight must be in [0, 1] and distill.temperature > 0, got {ds.weight} and {ds.temperature}")
    au = cfg.augment
    if au.shift < 0 or not math.isfinite(au.fill) or any(n < 1 for n in au.image_shape) or len(au.image_shape) not in (0, 2, 3):
        raise ConfigError(f"augment: need shift >= 0, a finite fill and image_shape [] or [H, W] or [C, H, W] of positive sizes, "
                          f"got shift={au.shift}, fill={au.fill}, image_shape={list(au.image_shape)}")
    validate_reduce(cfg.reduce)
    if cfg.reduce.after_training and cfg.rounds:
        raise ConfigError("reduce.after_training is for a single fit (rounds=[]): a job with rounds reduces in each "
                          "round (rounds[i].reduce), so drop reduce.after_training or set rounds=[]")


def validate_reduce(r: DictConfig, prefix: str = "reduce.") -> None:
    """Check a ``ReduceConfig``'s values (``prefix`` names them in messages)."""
    if r.reference_size < 0:
        raise ConfigError(f"{prefix}reference_size must be >= 0 (0 = the whole reference split), got {r.reference_size}")
    _choice(r.reference, ("train", "val", "test"), f"{prefix}reference")
    _choice(r.baseline, ("current", "first"), f"{prefix}baseline")
    _choice(r.optimizer_state, ("reset", "carry"), f"{prefix}optimizer_state")
    _choice(r.kmeans, ("torch", "sklearn"), f"{prefix}kmeans")
    if r.domain and (len(r.domain) != 2 or not r.domain[0] <= r.domain[1]):
        raise ConfigError(f"{prefix}domain must be [lower, upper] with lower <= upper, got {list(r.domain)}")
    if r.tighten and not r.domain:
        raise ConfigError(f"{prefix}tighten needs {prefix}domain=[lower, upper]")
    if r.domain_milp_seconds <= 0 or r.domain_milp_units < 0:
        raise ConfigError(f"{prefix}domain_milp_seconds must be > 0 and {prefix}domain_milp_units >= 0")
    if r.max_drop != -1.0 and not 0 <= r.max_drop <= 1:
        raise ConfigError(f"{prefix}max_drop must be in [0, 1] (or -1 for manual mode), got {r.max_drop}")
    if any(not t >= 0 for t in r.tolerances):
        raise ConfigError(f"{prefix}tolerances must all be >= 0, got {list(r.tolerances)}")
    if any(k < 0 for k in r.clusters):
        raise ConfigError(f"{prefix}clusters must all be >= 0 (0 = no clustering), got {list(r.clusters)}")
    if r.bottleneck_tol != -1.0 and not r.bottleneck_tol >= 0:
        raise ConfigError(f"{prefix}bottleneck_tol must be >= 0 (or -1 = off), got {r.bottleneck_tol}")
    if not 0 <= r.weak_share <= 1:
        raise ConfigError(f"{prefix}weak_share must be in [0, 1], got {r.weak_share}")
    if r.polish and r.max_drop < 0:
        raise ConfigError(f"{prefix}polish needs the automatic mode ({prefix}max_drop >= 0): it spends the unused part of max_drop")
    if r.sample < 0 or r.kmeans_n_init < 1:
        raise ConfigError(f"{prefix}sample must be >= 0 and {prefix}kmeans_n_init >= 1")


def reduce_config(values: dict, source: str = "settings") -> DictConfig:
    """A validated ``ReduceConfig`` from plain keyword values (the callback's settings)."""
    schema = ReduceConfig()
    cfg = OmegaConf.structured(schema)
    try:
        cfg = OmegaConf.merge(cfg, values)
    except (ConfigKeyError, ConfigAttributeError) as err:
        key = getattr(err, "full_key", None) or str(err)
        valid = sorted(f.name for f in dataclasses.fields(schema))
        raise ConfigError(f"unknown reduction setting '{key}' (from {source}); valid settings: {', '.join(valid)}") from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "?")
        raise ConfigError(f"bad value for reduction setting '{key}' (from {source}): {str(err).splitlines()[0]}") from None
    validate_reduce(cfg, prefix="")
    return cfg


def round_epochs(cfg: DictConfig, index: int) -> int:
    """Epochs round ``index`` trains: its ``epochs``, where -1 means the job's ``trainer.max_epochs``."""
    epochs = int(cfg.rounds[index].epochs)
    return int(cfg.trainer.max_epochs) if epochs == -1 else epochs


def round_config(cfg: DictConfig, index: int) -> DictConfig:
    """The config of round ``index``: the job's config with that round's overrides applied and
    ``trainer.max_epochs`` set to its epochs; round 0 of a job without ``rounds`` is the job."""
    if not cfg.rounds:
        if index != 0:
            raise ConfigError(f"round {index} does not exist: this job has no rounds")
        return cfg
    if not 0 <= index < len(cfg.rounds):
        raise ConfigError(f"round {index} does not exist: this job has {len(cfg.rounds)} rounds")
    r = cfg.rounds[index]
    if r.epochs < -1:
        raise ConfigError(f"rounds[{index}].epochs must be >= 0 (or -1 = trainer.max_epochs), got {r.epochs}")
    if r.within != -1.0 and not 0 <= r.within <= 1:
        raise ConfigError(f"rounds[{index}].within must be in [0, 1] (or -1 = no check), got {r.within}")
    over = {"trainer": {"max_epochs": max(1, round_epochs(cfg, index))}, "schedule": dict(r.schedule),
            "optim": dict(r.optim), "reduce": dict(r.reduction), "group_sparsity": dict(r.group_sparsity),
            "layer_sparsity": dict(r.layer_sparsity), "pruning": dict(r.pruning),
            "distill": dict(r.distill), "augment": dict(r.augment)}
    schema = Config()
    out = _merge(cfg, OmegaConf.create(over), schema, f"rounds[{index}]")
    validate(out)
    return out


def to_container(cfg: DictConfig) -> dict:
    """A plain dict (for checkpoints and logger run configs)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def from_container(data: dict) -> DictConfig:
    """Rebuild a validated config from a dict saved in a checkpoint (keys we no longer know fail)."""
    return load_config(base=data)

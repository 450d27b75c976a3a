"""Checks that types alone cannot make (choices, lengths, ranges), and the per-round and reduction configs."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from .merge import _merge
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
    DataConfig,
    ReduceConfig,
)


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
    if cfg.logger.wandb_mode in ("False", "True"):  # YAML 1.1 booleans: off/no/false, on/yes/true
        meant = "disabled" if cfg.logger.wandb_mode == "False" else "online"
        raise ConfigError(f"logger.wandb_mode is the boolean {cfg.logger.wandb_mode.lower()} (YAML reads off/no/false and "
                          f"on/yes/true as booleans); write logger.wandb_mode={meant}")
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
    _choice(d.scaling, SCALINGS, "data.scaling")
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
        for key in ("task", "val_fraction", "test_fraction", "standardize", "scaling"):
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
    if cfg.trainer.cuda_graphs:
        _check_cuda_graphs(cfg)
    validate_reduce(cfg.reduce)
    if cfg.reduce.after_training and cfg.rounds:
        raise ConfigError("reduce.after_training is for a single fit (rounds=[]): a job with rounds reduces in each "
                          "round (rounds[i].reduce), so drop reduce.after_training or set rounds=[]")


CUDA_GRAPHS_OFF = "or set trainer.cuda_graphs=false"


def cuda_graphs_refusal(device: str | None, devices: str | None, precision: str, clip: float, compile_mode: str) -> str | None:
    """Why ``trainer.cuda_graphs=true`` cannot train with these settings (one line naming the fix),
    or None. ``device``: the device type the fit runs on (None: not known yet); ``devices``: what
    spreads it over more than one device (None: a single device); the rest as the Trainer has them."""
    if device is not None and device != "cuda":
        return (f"trainer.cuda_graphs=true needs a CUDA device; this fit runs on {device}: train on a GPU "
                f"(trainer.accelerator=gpu) {CUDA_GRAPHS_OFF}")
    if devices is not None:
        return (f"trainer.cuda_graphs=true needs a single device, not {devices}: set trainer.devices=1 and "
                f"trainer.strategy=auto, {CUDA_GRAPHS_OFF}")
    if str(precision) not in ("32-true", "32"):
        return f"trainer.cuda_graphs=true needs trainer.precision=32-true, not {precision}: set it, {CUDA_GRAPHS_OFF}"
    if clip:
        return (f"trainer.cuda_graphs=true cannot clip gradients (trainer.gradient_clip_val={clip}): the whole step is "
                f"one captured graph; set trainer.gradient_clip_val=0 {CUDA_GRAPHS_OFF}")
    if compile_mode != "none":
        return (f"trainer.cuda_graphs=true captures the step itself: set trainer.compile=none (not {compile_mode}) "
                f"{CUDA_GRAPHS_OFF}")
    return None


def _device_count(devices: str) -> int | None:
    """How many devices ``trainer.devices`` names (None: ``auto``, ``-1`` or not a count)."""
    text = str(devices).strip()
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    try:
        n = int(text)
    except ValueError:
        return None
    return n if n >= 0 else None


def _check_cuda_graphs(cfg: DictConfig) -> None:
    """``trainer.cuda_graphs=true`` against what the config alone settles (the Trainer's real
    device and strategy are checked again when the fit starts)."""
    t = cfg.trainer
    device = None if t.accelerator in ("auto", "gpu", "cuda") else t.accelerator
    spread = [f"trainer.strategy={t.strategy}"] if t.strategy not in ("auto", "single_device") else []
    count = _device_count(t.devices)
    spread += [f"trainer.devices={t.devices}"] if count is not None and count > 1 else []
    spread += [f"trainer.num_nodes={t.num_nodes}"] if t.num_nodes != 1 else []
    why = cuda_graphs_refusal(device, spread[0] if spread else None, str(t.precision), t.gradient_clip_val, t.compile)
    pr = cfg.pruning
    if why is None and (pr.sparsity or pr.compression):
        why = ("trainer.cuda_graphs=true cannot follow pruning's masks (torch.nn.utils.prune re-parametrizes the weights "
               f"during the fit): set pruning.sparsity=0 and pruning.compression=0, {CUDA_GRAPHS_OFF}")
    if why:
        raise ConfigError(why)


def validate_reduce(r: DictConfig, prefix: str = "reduce.") -> None:
    """Check a ``ReduceConfig``'s values (``prefix`` names them in messages)."""
    if r.reference_size < 0:
        raise ConfigError(f"{prefix}reference_size must be >= 0 (0 = the whole reference split), got {r.reference_size}")
    _choice(r.reference, ("train", "val", "test"), f"{prefix}reference")
    _choice(r.baseline, ("current", "first"), f"{prefix}baseline")
    _choice(r.optimizer_state, ("reset", "carry"), f"{prefix}optimizer_state")
    _choice(r.kmeans, ("torch", "sklearn"), f"{prefix}kmeans")
    _choice(r.report, ("steps", "final"), f"{prefix}report")
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


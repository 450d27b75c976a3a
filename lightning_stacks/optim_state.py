"""Training state across a reduction: Adam's moments sliced to the units that survived, and
inside a fit the optimizers, the learning-rate schedulers (their step count and current rates
carried over) and the DDP wrapper rebuilt around the reduced blocks."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn

UnitMaps = dict[str, list[tuple[int, list[int]]]]  # parameter name -> [(dim, old unit index per entry, -1 = new)]


def optimizer_state_by_name(trainer: pl.Trainer, block: nn.Module) -> dict[str, dict]:
    """Optimizer state of ``block``'s parameters, keyed by parameter name (empty if none yet)."""
    out = {}
    for opt in trainer.optimizers:
        for name, p in block.named_parameters():
            st = opt.state.get(p)
            if st:
                out[name] = {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in st.items()}
    return out


def slice_optimizer_state(old: dict[str, dict], block: nn.Module, unit_maps: UnitMaps) -> dict[str, dict]:
    """Carry Adam's moments to the reduced ``block``: along each dimension ``unit_maps`` gives for a
    parameter, entries of units that survived are copied, new (merged or refolded) units get
    zeros; a parameter without a map is copied when its shape is unchanged and zeroed otherwise.
    ``step`` is kept."""
    new = {}
    for name, p in block.named_parameters():
        src = old.get(name)
        if src is None:
            continue
        state = {k: v for k, v in src.items() if not torch.is_tensor(v) or v.dim() == 0}  # step and other scalars
        for key, old_t in src.items():
            if not torch.is_tensor(old_t) or old_t.dim() == 0:
                continue
            t = torch.zeros_like(p)
            maps = unit_maps.get(name)
            if maps:
                t.copy_(_gather(old_t, maps, p.shape).to(p.device, p.dtype))
            elif old_t.shape == p.shape:
                t.copy_(old_t)
            state[key] = t
        new[name] = state
    return new


def _gather(old: torch.Tensor, maps: list[tuple[int, list[int]]], shape: torch.Size) -> torch.Tensor:
    """``old`` re-indexed along each mapped dimension (index -1 gives 0)."""
    out = old
    for dim, ids in maps:
        idx = torch.as_tensor(ids, dtype=torch.long, device=old.device)
        keep = idx >= 0
        picked = out.index_select(dim, idx.clamp_min(0))
        mask_shape = [1] * picked.dim()
        mask_shape[dim] = -1
        out = picked * keep.view(mask_shape).to(picked.dtype)
    if out.shape != shape:  # a dimension without a map changed size: nothing to carry
        return torch.zeros(shape, dtype=old.dtype, device=old.device)
    return out


def rebuild_training(trainer: pl.Trainer, pl_module: pl.LightningModule, blocks: dict[str, dict[str, dict]]) -> list[str]:
    """Inside a fit: new optimizers (``configure_optimizers`` again) and DDP wrapper around the
    reduced parameters. Each param group keeps the learning rate it had, every LR scheduler its
    state (step count, last rates), and ``blocks`` (``path -> {name: sliced state}``) goes onto the
    new parameters. Returns what was carried over, one line each (for the log)."""
    from lightning_fabric.utilities.optimizer import _optimizers_to_device
    from pytorch_lightning.strategies import DDPStrategy

    strategy = trainer.strategy
    old_groups = [[dict(lr=g.get("lr"), initial_lr=g.get("initial_lr")) for g in opt.param_groups] for opt in strategy.optimizers]
    old_scheds = [cfg.scheduler for cfg in strategy.lr_scheduler_configs]
    if isinstance(strategy, DDPStrategy):
        strategy.model = pl_module  # unwrap; configure_ddp wraps the module with its new parameters
        strategy.configure_ddp()
    strategy.setup_optimizers(trainer)
    _optimizers_to_device(strategy.optimizers, strategy.root_device)
    notes = []
    for old, opt in zip(old_groups, strategy.optimizers, strict=False):
        if len(old) != len(opt.param_groups):
            notes.append(f"{type(opt).__name__}: {len(old)} param groups before, {len(opt.param_groups)} now: learning rates restart")
            continue
        for g_old, g in zip(old, opt.param_groups, strict=True):
            g.update({k: v for k, v in g_old.items() if v is not None})
    for old, cfg in zip(old_scheds, strategy.lr_scheduler_configs, strict=False):
        new = cfg.scheduler
        if type(old) is not type(new):
            notes.append(f"LR scheduler {type(new).__name__} replaces {type(old).__name__}: it starts anew")
            continue
        new.load_state_dict(old.state_dict())
        step = getattr(new, "last_epoch", None)
        lrs = ", ".join(f"{g['lr']:.3g}" for g in new.optimizer.param_groups)
        notes.append(f"LR scheduler {type(new).__name__} continues" + (f" at step {step}" if step is not None else "") + f", lr {lrs}")
    owner = {p: opt for opt in strategy.optimizers for g in opt.param_groups for p in g["params"]}
    for path, sliced in blocks.items():
        for name, p in pl_module.get_submodule(path).named_parameters():
            opt = owner.get(p)
            if opt is not None and name in sliced and not opt.state.get(p):
                opt.state[p] = {k: (v.to(p.device) if torch.is_tensor(v) else v) for k, v in sliced[name].items()}
    return notes

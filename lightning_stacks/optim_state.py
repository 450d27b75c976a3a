"""Training state across a reduction: Adam's moments sliced to the neurons that survived, and
the optimizers (and the DDP wrapper) rebuilt around a reduced network inside a fit."""

from __future__ import annotations

import pytorch_lightning as pl
import torch


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


def rebuild_training(trainer: pl.Trainer, pl_module: pl.LightningModule, net: torch.nn.Module, sliced: dict) -> None:
    """Inside a fit: new optimizers (and DDP wrapper) around the reduced network ``net``'s
    parameters (``net`` is an attribute of ``pl_module``); Adam state ``sliced`` by parameter name
    (see :func:`slice_optimizer_state`) is put on the new parameters."""
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
        for name, p in net.named_parameters():
            if name in sliced and not opt.state.get(p):
                opt.state[p] = {k: (v.to(p.device) if torch.is_tensor(v) else v) for k, v in sliced[name].items()}

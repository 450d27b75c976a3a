"""Which part of a LightningModule the reduction works on, and putting the reduced one back:
the network attribute, found or named, and rebuilt to a checkpoint's shapes before its weights
load."""

from __future__ import annotations

import pytorch_lightning as pl

from .checkpoint import CHECKPOINT_KEY
from .model import DeepStackNetwork
from .reduction.settings import ReductionError


def find_network(pl_module: pl.LightningModule, attribute: str | None) -> tuple[str, DeepStackNetwork]:
    """``(attribute, network)``: the module's :class:`DeepStackNetwork` named by ``attribute``, or
    the only one among its children when ``attribute`` is None."""
    if attribute is not None:
        net = getattr(pl_module, attribute, None)
        if not isinstance(net, DeepStackNetwork):
            raise ReductionError(f"{type(pl_module).__name__}.{attribute} is {type(net).__name__}, not a DeepStackNetwork")
        return attribute, net
    found = [name for name, child in pl_module.named_children() if isinstance(child, DeepStackNetwork)]
    if len(found) != 1:
        what = "no DeepStackNetwork attribute" if not found else f"several DeepStackNetwork attributes {found}"
        raise ReductionError(
            f"{type(pl_module).__name__} has {what}: hold the network as e.g. self.net = DeepStackNetwork(...) "
            "(DeepStackNetwork.from_sequential converts a ReLU MLP), or name it with ReductionCallback(attribute=...)")
    return found[0], getattr(pl_module, found[0])


def put_network(pl_module: pl.LightningModule, attribute: str, net: DeepStackNetwork, report: dict) -> None:
    """Install the reduced ``net`` (through ``pl_module.replace_network(net, report)`` when the
    module defines it for its ``net``)."""
    replace = getattr(pl_module, "replace_network", None)
    if callable(replace) and attribute == "net":
        replace(net, report)
    else:
        setattr(pl_module, attribute, net)


def watch_checkpoint_loading(pl_module: pl.LightningModule, attribute: str) -> None:
    """Resuming a fit whose network a reduction shrank: the checkpoint's weights have the reduced
    shapes, so the network is rebuilt to them before Lightning loads the weights (the module's
    ``on_load_checkpoint`` runs just before; callbacks' hooks run after)."""
    if getattr(pl_module, "_reduction_watch", False):
        return
    original = pl_module.on_load_checkpoint

    def on_load_checkpoint(checkpoint: dict) -> None:
        arch = (checkpoint.get(CHECKPOINT_KEY) or {}).get(attribute)
        net = getattr(pl_module, attribute)
        if arch and arch != net.architecture():
            p = next(net.parameters())
            setattr(pl_module, attribute, DeepStackNetwork.from_architecture(arch).to(device=p.device, dtype=p.dtype))
        original(checkpoint)

    pl_module.on_load_checkpoint = on_load_checkpoint
    pl_module._reduction_watch = True

"""Reducible blocks: one adapter per kind of block (a Deep Stack Network, a plain ReLU MLP
``nn.Sequential``) turns it into the reduction's Deep Stack Network form and back into its own
form. A new kind of block is one more adapter in :data:`KINDS`."""

from __future__ import annotations

from torch import nn

from ..model import DeepStackNetwork
from .base import Block, BlockError, set_child
from .sequential import SequentialBlock
from .stack_network import StackNetworkBlock

KINDS: dict[str, type[Block]] = {StackNetworkBlock.kind: StackNetworkBlock, SequentialBlock.kind: SequentialBlock}


def block_for(module: nn.Module, name: str) -> Block:
    """The adapter for ``module`` (named ``name`` in messages); BlockError says why there is none."""
    if isinstance(module, DeepStackNetwork):
        return StackNetworkBlock(module, name)
    if isinstance(module, nn.Sequential):
        return SequentialBlock(module, name)
    raise BlockError(f"{name} is a {type(module).__name__}: a reducible block is a DeepStackNetwork or an nn.Sequential "
                     "ReLU MLP (Linear, ReLU, BatchNorm1d, Dropout layers)")


def find_blocks(root: nn.Module) -> tuple[list[tuple[str, nn.Module]], dict[str, str]]:
    """Every outermost reducible block under ``root`` (``root`` itself excluded), as
    ``(dotted path, module)`` in module order, and for the Sequentials that are not reducible,
    why (``path -> reason``)."""
    found: list[tuple[str, nn.Module]] = []
    skipped: dict[str, str] = {}

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if isinstance(child, (DeepStackNetwork, nn.Sequential)):
                try:
                    block_for(child, path)
                except BlockError as err:
                    skipped[path] = str(err)
                else:
                    found.append((path, child))
                    continue
            visit(child, f"{path}.")

    visit(root, "")
    return found, skipped


def architecture(module: nn.Module) -> dict:
    """JSON-able shapes of a reducible block (what a checkpoint stores to rebuild it)."""
    kind = StackNetworkBlock if isinstance(module, DeepStackNetwork) else SequentialBlock
    return kind.architecture(module)


def build(arch: dict, like: nn.Module | None = None) -> nn.Module:
    """A block of ``arch``'s shapes (``like``: the module to reshape in place where the kind allows);
    an architecture without ``kind`` is a Deep Stack Network's (older checkpoints)."""
    kind = arch.get("kind", StackNetworkBlock.kind)
    if kind not in KINDS:
        raise BlockError(f"unknown block kind {kind!r} in a checkpoint's architecture; known: {', '.join(KINDS)}")
    if kind == SequentialBlock.kind:
        return SequentialBlock.build(arch, like)
    return KINDS[kind].build(arch)


__all__ = ["KINDS", "Block", "BlockError", "SequentialBlock", "StackNetworkBlock", "architecture", "block_for", "build",
           "find_blocks", "set_child"]

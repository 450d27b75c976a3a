"""What every kind of reducible block offers the reduction: its exact Deep Stack Network form,
the parameter count of the module a list of stacks writes back to, the write-back in the
user's own form, and the shapes a checkpoint needs to rebuild it."""

from __future__ import annotations

import torch
from torch import nn

from ..model import DeepStackNetwork
from ..reduction.core import StackWeights
from ..reduction.settings import ReductionError


def set_child(root: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the submodule at dotted ``path`` under ``root`` (``"head.2"``) by ``module``."""
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    if isinstance(parent, (nn.Sequential, nn.ModuleList)) and name.isdigit():
        parent[int(name)] = module
    else:
        setattr(parent, name, module)


def bare_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """An ``nn.Linear`` holding ``weight`` (out, in) and ``bias`` (out,) or none, built without
    a random initialisation (a layer of width 0 has nothing to draw, and PyTorch warns)."""
    lin = nn.Linear.__new__(nn.Linear)
    nn.Module.__init__(lin)
    lin.in_features, lin.out_features = weight.shape[1], weight.shape[0]
    lin.weight = nn.Parameter(weight)
    if bias is None:
        lin.register_parameter("bias", None)
    else:
        lin.bias = nn.Parameter(bias)
    return lin


class BlockError(ReductionError):
    """A module cannot be reduced (the message names the layer and why)."""


class Block:
    """One reducible block of a model, prepared for the reduction.

    Subclasses set ``kind`` and implement the methods below. A block is built from the module as
    it is (validated in ``__init__``: a :class:`BlockError` names the offending layer), and keeps
    what the write-back needs to restore the user's form.

    Attributes:
        kind: the block kind, as written in checkpoints.
        allow_skip: whether the reduction may add an affine skip path (a plain MLP has none, so
            always-active neurons are folded into fewer always-active neurons instead).
        notes: what preparing the block changed (e.g. a BatchNorm1d folded), for the report.
    """

    kind = ""
    allow_skip = True

    def __init__(self, module: nn.Module, name: str):
        self.module, self.name = module, name
        self.notes: list[str] = []

    def network(self) -> DeepStackNetwork:
        """The block as a Deep Stack Network computing the same function (eval mode)."""
        raise NotImplementedError

    def count(self, stacks: list[StackWeights]) -> int:
        """Parameters of the module that ``stacks`` write back to (the deployed size)."""
        raise NotImplementedError

    def write_back(self, net: DeepStackNetwork) -> nn.Module:
        """The reduced network in the block's own form (same kind of module, fewer units)."""
        raise NotImplementedError

    def unit_maps(self, kept_ids: list[list[int]]) -> dict[str, list[tuple[int, list[int]]]]:
        """For the written-back module's parameters: ``name -> [(dim, ids)]``, the old unit index of
        each entry along ``dim`` (-1 = a new unit), so optimizer state can follow the units."""
        raise NotImplementedError

    @staticmethod
    def architecture(module: nn.Module) -> dict:
        """JSON-able shapes that :meth:`build` turns back into an (untrained) module."""
        raise NotImplementedError

    @staticmethod
    def build(arch: dict) -> nn.Module:
        raise NotImplementedError

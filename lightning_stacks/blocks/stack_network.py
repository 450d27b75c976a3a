"""A :class:`~lightning_stacks.model.DeepStackNetwork` as a reducible block: it is its own
Deep Stack Network form, and the reduced network is written back as it comes."""

from __future__ import annotations

import copy

from torch import nn

from ..model import DeepStackNetwork
from ..reduction.core import StackWeights
from ..reduction.stacks import count_parameters
from .base import Block, BlockError


class StackNetworkBlock(Block):
    """A Deep Stack Network (any skip kinds); folding may add affine skip paths."""

    kind = "deep_stack_network"
    allow_skip = True

    def __init__(self, module: nn.Module, name: str):
        if not isinstance(module, DeepStackNetwork):
            raise BlockError(f"{name} is a {type(module).__name__}, not a DeepStackNetwork")
        super().__init__(module, name)

    def network(self) -> DeepStackNetwork:
        return self.module

    def count(self, stacks: list[StackWeights]) -> int:
        return count_parameters(stacks)

    def write_back(self, net: DeepStackNetwork) -> nn.Module:
        return net

    def unit_maps(self, kept_ids: list[list[int]]) -> dict[str, list[tuple[int, list[int]]]]:
        out: dict[str, list[tuple[int, list[int]]]] = {}
        for j, ids in enumerate(kept_ids):
            out[f"stacks.{j}.V.weight"] = [(0, ids)]
            out[f"stacks.{j}.V.bias"] = [(0, ids)]
            out[f"stacks.{j}.W.weight"] = [(1, ids)]
        return out

    @staticmethod
    def architecture(module: nn.Module) -> dict:
        return {"kind": StackNetworkBlock.kind, **module.architecture()}

    @staticmethod
    def build(arch: dict) -> nn.Module:
        arch = {k: v for k, v in copy.deepcopy(arch).items() if k != "kind"}
        return DeepStackNetwork.from_architecture(arch)

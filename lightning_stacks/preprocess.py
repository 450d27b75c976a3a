"""The input layer: the preprocessing a fit used (input standardization), held by the saved
module as buffers, so a checkpoint takes the raw rows of its data file.

A CSV or NPZ fit standardizes every feature by its training split's mean and std; that becomes
:class:`Standardize` (buffers ``mean`` and ``std``, in the module's ``state_dict``). Data sets
without standardization (sine, MNIST, digits, your DataModule) get ``nn.Identity``: no buffers,
no state, the same checkpoints as before.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Standardize(nn.Module):
    """``(x - mean) / std`` per feature, on raw rows x (B, d_0).

    Args:
        mean: per-feature means (d_0,) of the training split the network was trained on.
        std: per-feature standard deviations (d_0,), each > 0 (a constant feature has std 1).
    """

    def __init__(self, mean, std):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean.shape != std.shape or mean.numel() == 0:
            raise ValueError(f"Standardize needs mean and std of one equal length, got {tuple(mean.shape)} and {tuple(std.shape)}")
        if not bool(torch.isfinite(mean).all()) or not bool((std > 0).all()) or not bool(torch.isfinite(std).all()):
            raise ValueError("Standardize needs finite means and finite stds > 0")
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    @property
    def input_dim(self) -> int:
        return int(self.mean.numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, d_0) raw -> (B, d_0) standardized
        if x.dim() != 2 or x.shape[1] != self.mean.numel():
            raise ValueError(f"expected input of shape (batch, {self.mean.numel()}), got {tuple(x.shape)}")
        return (x - self.mean.to(x)) / self.std.to(x)  # .to(x): the rows' device and dtype

    def statistics(self) -> dict[str, list[float]]:
        """``{"x_mean": [...], "x_std": [...]}``, the keys a data set's ``info()`` uses."""
        return {"x_mean": [float(v) for v in self.mean.cpu()], "x_std": [float(v) for v in self.std.cpu()]}

    def extra_repr(self) -> str:
        return f"features={self.mean.numel()}"


def input_layer(info: dict[str, Any]) -> nn.Module:
    """The input layer ``info`` (a data set's ``info()`` dict) describes: :class:`Standardize` with
    its ``x_mean``/``x_std``, else ``nn.Identity`` (the data is not standardized)."""
    if info.get("x_mean") is None:
        return nn.Identity()
    if info.get("x_std") is None:
        raise ValueError("data_info holds x_mean but no x_std")
    return Standardize(info["x_mean"], info["x_std"])


def has_statistics(layer: nn.Module) -> bool:
    """Whether ``layer`` changes the rows (a :class:`Standardize`), as opposed to the identity."""
    return isinstance(layer, Standardize)

"""Checks of what ``reduce_network`` is given: input tensors, reference labels, numpy arrays."""

from __future__ import annotations

import torch

from ..batches import Source, all_finite, iter_inputs
from ..evaluation import is_probability_rows
from .settings import ReductionError


def all_nonnegative(x: Source, device: torch.device, width: int) -> bool:
    """Whether every checked input is >= 0 (one pass; the flag stays on the device until the end)."""
    ok = torch.ones((), dtype=torch.bool, device=device)
    for z in iter_inputs(x, 1 << 16, device, width=width):
        ok &= (z >= 0).all()
    return bool(ok)


def as_tensors(value, name: str):
    """A numpy array (or a tuple of them) as tensors; anything else unchanged."""
    import numpy as np

    if isinstance(value, np.ndarray):
        if value.dtype == object or not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
            raise ReductionError(f"{name} is a numpy array of {value.dtype}; give numbers")
        return torch.as_tensor(value)
    if isinstance(value, tuple) and any(isinstance(v, np.ndarray) for v in value):
        return tuple(as_tensors(v, name) for v in value)
    return value


def check_inputs(x, width: int, name: str) -> None:
    """An in-memory input tensor: (N, width), floating point, finite."""
    if not isinstance(x, torch.Tensor):
        raise ReductionError(f"{name} must be a tensor (N, {width}), an (x, y) tuple or an iterable of batches, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != width:
        raise ReductionError(f"{name} must have shape (N, {width}) for this network, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ReductionError(f"{name} holds {x.dtype} values; give floating-point inputs (e.g. x.float())")
    if not all_finite(x):
        raise ReductionError(f"{name} holds NaN or infinite values; remove or fix those rows")


def check_labels(y, task: str, outputs: int | None) -> torch.Tensor:
    """Reference labels: class indices in [0, outputs) of shape (N,) (one-hot or probability rows
    become their argmax), or finite regression targets of shape (N, outputs) ((N,) for one
    output); ``outputs`` None: the labels are for a bigger model's outputs, widths unchecked."""
    if not isinstance(y, torch.Tensor):
        raise ReductionError(f"y_ref must be a tensor, got {type(y).__name__}")
    if task == "classification":
        if is_probability_rows(y, outputs):
            y = y.argmax(1)
        if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool:
            raise ReductionError(f"y_ref for classification must be integer class indices of shape (N,), got {y.dtype} of shape {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or (outputs is not None and int(y.max()) >= outputs)):
            raise ReductionError(f"y_ref holds class indices in [{int(y.min())}, {int(y.max())}]; this network has {outputs} classes (0..{outputs - 1})")
        return y
    if not y.is_floating_point():
        y = y.to(torch.get_default_dtype())
    if y.dim() == 1 and outputs in (1, None):
        y = y[:, None]
    if y.dim() != 2 or (outputs is not None and y.shape[1] != outputs):
        raise ReductionError(f"y_ref for regression must have shape (N, {outputs}) for this network, got {tuple(y.shape)}")
    if not bool(torch.isfinite(y).all()):
        raise ReductionError("y_ref holds NaN or infinite values; remove or fix those rows")
    return y


"""A block inside a bigger model: its inputs captured by a forward hook while the data runs
through the whole model (eval mode, no gradients, one batch at a time), and the model's outputs
with the block's output replaced (to measure the budget where the user's metric reads it).

A *model batch* is whatever the fit's loaders yield; ``forward(model, batch)`` gives the model's
outputs (default: ``model(x)`` with ``x = batch[0]`` or ``batch["x"]``) and ``targets(batch)``
the labels (default: ``batch[1]`` or ``batch["y"]``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from .batches import Source, is_streamed
from .errors import LightningStacksError

Forward = Callable[[nn.Module, Any], torch.Tensor]
Targets = Callable[[Any], torch.Tensor]


class CaptureError(LightningStacksError):
    """The model's batches or the block's inputs are not what the reduction can use."""


class _Stop(Exception):
    """Raised by the capturing hook: the rest of the model is not needed."""


def default_forward(model: nn.Module, batch: Any) -> torch.Tensor:
    """``model(x)`` for a batch ``(x, y, ...)`` or ``{"x": ..., "y": ...}``."""
    if isinstance(batch, dict) and "x" in batch:
        return model(batch["x"])
    if isinstance(batch, (tuple, list)) and batch:
        return model(batch[0])
    raise CaptureError(f"a batch is a {type(batch).__name__}: give forward=lambda model, batch: model(...) to the callback")


def default_targets(batch: Any) -> torch.Tensor:
    """``y`` of a batch ``(x, y, ...)`` or ``{"x": ..., "y": ...}``."""
    if isinstance(batch, dict) and "y" in batch:
        return batch["y"]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[1]
    raise CaptureError(f"a batch is a {type(batch).__name__} without labels: give targets=lambda batch: ... to the callback")


def model_batches(source: Source, batch_size: int = 1024) -> Iterator[Any]:
    """The batches of a split: a loader's own, or an ``(x, y)`` pair of tensors cut into batches."""
    if not is_streamed(source):
        x, y = source if isinstance(source, tuple) else (source, None)
        for i in range(0, x.shape[0], batch_size):
            yield (x[i : i + batch_size], y[i : i + batch_size]) if y is not None else (x[i : i + batch_size],)
        return
    yield from source


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


@contextlib.contextmanager
def evaluating(model: nn.Module):
    """Eval mode and no gradients for the duration; the caller's mode comes back."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was)


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _block_input(args: tuple, path: str) -> torch.Tensor:
    z = args[0] if args else None
    if not isinstance(z, torch.Tensor) or z.dim() != 2:
        what = f"shape {tuple(z.shape)}" if isinstance(z, torch.Tensor) else type(z).__name__
        raise CaptureError(f"block {path} receives {what}; a reducible block takes (batch, features) inputs")
    return z


def probe(model: nn.Module, path: str, batch: Any, forward: Forward = default_forward) -> tuple[bool, bool]:
    """On one batch: whether ``path`` receives the model's own input tensor and returns the
    model's output tensor (then the block is the whole model and the data can go to it directly)."""
    block = model.get_submodule(path)
    seen: dict[str, torch.Tensor] = {}
    pre = block.register_forward_pre_hook(lambda m, args: seen.setdefault("in", args[0] if args else None))
    post = block.register_forward_hook(lambda m, args, out: seen.setdefault("out", out))
    try:
        with evaluating(model):
            batch = to_device(batch, _device(model))
            out = forward(model, batch)
    finally:
        pre.remove(), post.remove()
    if "in" not in seen:
        raise CaptureError(f"block {path} is not called when the model runs on a batch; name a block the forward pass uses")
    x = batch["x"] if isinstance(batch, dict) else batch[0] if isinstance(batch, (tuple, list)) else None
    return seen["in"] is x, seen.get("out") is out


class BlockInputs:
    """A re-iterable source of ``(z, y)`` batches: the block's inputs z (B, d) when the model runs
    on each batch of ``source``, and the batch's labels y. Each pass runs the model up to the block
    (a hook stops it there), so memory stays at one batch."""

    def __init__(self, model: nn.Module, path: str, source: Source, forward: Forward = default_forward,
                 targets: Targets = default_targets):
        self.model, self.path, self.source, self.forward, self.targets = model, path, source, forward, targets

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        block, device = self.model.get_submodule(self.path), _device(self.model)
        for batch in model_batches(self.source):
            seen: list[torch.Tensor] = []

            def hook(module, args, seen=seen):
                seen.append(_block_input(args, self.path).detach())
                raise _Stop

            handle = block.register_forward_pre_hook(hook)
            try:
                with evaluating(self.model):
                    self.forward(self.model, to_device(batch, device))
            except _Stop:
                pass
            finally:
                handle.remove()
            if not seen:
                raise CaptureError(f"block {self.path} was not called on a batch of the data")
            yield seen[0], self.targets(batch)


@contextlib.contextmanager
def replaced_output(model: nn.Module, path: str, make: Callable[[torch.Tensor], torch.Tensor]):
    """While inside, the block at ``path`` returns ``make(its input)`` instead of its own output."""
    block = model.get_submodule(path)
    handle = block.register_forward_hook(lambda m, args, out: make(_block_input(args, path)).to(out.device, out.dtype))
    try:
        yield
    finally:
        handle.remove()


class ModelReference:
    """A split held in memory for automatic mode: its model batches, the block's inputs on them
    (``x``, (N, d)) and labels (``y``); :meth:`outputs` maps candidate block outputs for those rows to
    the model's outputs.

    Args:
        max_rows: keep whole batches until at least this many rows (0 = the whole split).
    """

    def __init__(self, model: nn.Module, path: str, source: Source, forward: Forward = default_forward,
                 targets: Targets = default_targets, max_rows: int = 0):
        self.model, self.path, self.forward = model, path, forward
        self.batches, zs, ys = [], [], []
        for batch in model_batches(source):
            z, y = next(iter(BlockInputs(model, path, [batch], forward, targets)))
            self.batches.append(batch)
            zs.append(z)
            ys.append(y)
            if max_rows and sum(t.shape[0] for t in zs) >= max_rows:
                break
        if not zs:
            raise CaptureError("the reference split holds no batches")
        self.x, self.y = torch.cat(zs), torch.cat([y.reshape(y.shape[0], *y.shape[1:]) for y in ys])
        self.sizes = [z.shape[0] for z in zs]

    def outputs(self, block_out: torch.Tensor) -> torch.Tensor:
        """The model's outputs when the block outputs ``block_out`` (N, d_J) on the reference rows."""
        device, outs, start = _device(self.model), [], 0
        for batch, size in zip(self.batches, self.sizes, strict=True):
            rows = block_out[start : start + size]
            start += size
            with replaced_output(self.model, self.path, lambda z, rows=rows: rows), evaluating(self.model):
                outs.append(self.forward(self.model, to_device(batch, device)))
        return torch.cat(outs)

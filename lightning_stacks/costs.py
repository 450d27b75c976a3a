"""What a model costs where it is deployed, counted from the module itself: parameters, bytes,
FLOPs per example (torch's FLOP counter: 2 per multiply-add) and the median latency of a
forward pass at batch 1 and batch 1024 on the model's device."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn

from .capture import Forward, default_forward, evaluating, model_batches, to_device


def parameter_count(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def parameter_bytes(module: nn.Module) -> int:
    return int(sum(p.numel() * p.element_size() for p in module.parameters()))


def _rows(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, dict):
        return next(_rows(v) for v in batch.values() if isinstance(v, torch.Tensor))
    return next(_rows(v) for v in batch if isinstance(v, torch.Tensor))


def _take(batch: Any, n: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[:n]
    if isinstance(batch, dict):
        return {k: _take(v, n) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_take(v, n) for v in batch)
    return batch


def _cat(batches: list) -> Any:
    first = batches[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(batches)
    if isinstance(first, dict):
        return {k: _cat([b[k] for b in batches]) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(_cat(list(parts)) for parts in zip(*batches, strict=True))
    return first


def sample_batch(source, n: int) -> Any | None:
    """A model batch of exactly ``n`` rows from a split (rows repeated when it holds fewer);
    None when its batches cannot be cut and joined (not tensors, tuples or dicts of them)."""
    got, rows = [], 0
    try:
        for batch in model_batches(source):
            got.append(batch)
            rows += _rows(batch)
            if rows >= n:
                break
        if not got:
            return None
        while rows < n:
            got, rows = got + got, rows * 2
        return _take(_cat(got), n)
    except (StopIteration, TypeError, RuntimeError):
        return None


def flops_per_example(model: nn.Module, batch: Any, forward: Forward = default_forward) -> int | None:
    """FLOPs of one forward pass on one example (``batch`` cut to one row); None if not countable."""
    from torch.utils.flop_counter import FlopCounterMode

    one = _take(batch, 1)
    device = next(model.parameters()).device
    try:
        with evaluating(model), FlopCounterMode(display=False) as counter:
            forward(model, to_device(one, device))
    except Exception:  # noqa: BLE001 - an op the counter cannot trace: report no figure, not an error
        return None
    return int(counter.get_total_flops())


def latency_ms(model: nn.Module, batch: Any, forward: Forward = default_forward, repeats: int = 10) -> float:
    """Median milliseconds of a forward pass on ``batch`` (eval mode, after two warm-up passes)."""
    device = next(model.parameters()).device
    batch = to_device(batch, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with evaluating(model):
        for i in range(repeats + 2):
            sync()
            t0 = time.perf_counter()
            forward(model, batch)
            sync()
            if i >= 2:
                times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def model_costs(model: nn.Module, source, forward: Forward = default_forward) -> dict[str, Any]:
    """Parameters, bytes, FLOPs per example and latency (ms) at batch 1 and 1024 of ``model``
    on batches of ``source`` (figures that need a batch are None when one cannot be made)."""
    out: dict[str, Any] = {"params": parameter_count(model), "bytes": parameter_bytes(model)}
    big = sample_batch(source, 1024)
    if big is None:
        return {**out, "flops_per_example": None, "latency_ms_batch_1": None, "latency_ms_batch_1024": None}
    out["flops_per_example"] = flops_per_example(model, big, forward)
    out["latency_ms_batch_1"] = latency_ms(model, _take(big, 1), forward, repeats=20)
    out["latency_ms_batch_1024"] = latency_ms(model, big, forward, repeats=5)
    return out

"""Metrics as the paper reports them, on whole tensors (no Trainer needed)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def predict(net: nn.Module, x: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """Chunked forward pass on the net's device; returns outputs on that device, (N, d_J)."""
    device = next(net.parameters()).device
    outs = [net(x[i : i + batch_size].to(device)) for i in range(0, x.shape[0], batch_size)]
    return torch.cat(outs) if outs else torch.empty(0, net.output_dim, device=device)


def metric_from_outputs(out: torch.Tensor, y: torch.Tensor, task: str) -> float:
    """Accuracy (classification) or per-sample MSE: squared error summed over outputs, averaged
    over samples (the paper's convention; with noise sigma on 7 outputs the floor is 7 sigma^2)."""
    y = y.to(out.device)
    if task == "classification":
        return (out.argmax(1) == y).double().mean().item()
    return ((out.double() - y.double()) ** 2).sum(1).mean().item()


def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str) -> float:
    """The task's metric of ``net`` on (x, y)."""
    was_training = net.training
    net.eval()
    try:
        return metric_from_outputs(predict(net, x), y, task)
    finally:
        net.train(was_training)


def metric_drop(task: str, baseline: float, metric: float) -> float:
    """How much worse ``metric`` is than ``baseline``: accuracy points lost, or the relative MSE
    increase (the unit of ``reduce.max_drop``)."""
    if task == "classification":
        return baseline - metric
    return (metric - baseline) / max(baseline, 1e-30)


def higher_is_better(task: str) -> bool:
    return task == "classification"

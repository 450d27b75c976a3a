"""Metrics as the paper reports them, on whole tensors or streamed batches (no Trainer needed)."""

from __future__ import annotations

import torch
from torch import nn

from .batches import Source, iter_pairs
from .errors import LightningStacksError


class TargetError(LightningStacksError):
    """Labels or targets do not fit the network's outputs or the task."""


@torch.no_grad()
def predict(net: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """Chunked forward pass on the net's device; returns outputs on that device, (N, d_J)."""
    device = next(net.parameters()).device
    outs = [net(x[i : i + batch_size].to(device)) for i in range(0, x.shape[0], batch_size)]
    return torch.cat(outs) if outs else torch.empty(0, net.output_dim, device=device)


def is_probability_rows(y: torch.Tensor, width: int | None = None) -> bool:
    """Whether ``y`` (B, C) holds one-hot or class-probability rows: float, C > 1 columns (``width``
    when given), every entry >= 0 and every row summing to 1."""
    if not y.is_floating_point() or y.dim() != 2 or y.shape[1] < 2 or (width is not None and y.shape[1] != width):
        return False
    return bool((y >= 0).all()) and bool(torch.allclose(y.sum(1), torch.ones((), dtype=y.dtype, device=y.device), atol=1e-4))


def infer_task(y: torch.Tensor, width: int) -> tuple[str | None, str]:
    """The task labels ``y`` mean for outputs of ``width`` columns, or None when they do not say:
    integer labels mean classification, float targets of the output width regression, and float
    rows that are one-hot or probabilities could be either. Returns (task or None, the reason)."""
    shape = tuple(y.shape)
    if not y.is_floating_point() and y.dtype != torch.bool and not y.is_complex():
        if y.dim() == 1 or (y.dim() == 2 and y.shape[1] == 1):
            return "classification", "integer class labels"
        return None, f"integer labels of shape {shape}"
    if y.is_floating_point():
        if is_probability_rows(y, width):
            return None, f"float targets of shape {shape} whose rows are >= 0 and sum to 1 (one-hot or class probabilities)"
        if (y.dim() == 2 and y.shape[1] == width) or (y.dim() == 1 and width == 1):
            return "regression", f"float targets of the output width ({width})"
        return None, f"float labels of shape {shape} for outputs of width {width}"
    return None, f"{y.dtype} labels of shape {shape}"


def targets_for(out: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """``y`` checked against the outputs ``out`` (B, d_J): class indices (B,) for classification
    (one-hot or probability rows (B, d_J) become their argmax), (B, d_J) for regression, where a
    (B,) target of a one-output network becomes (B, 1) (left as it is, ``out - y`` would broadcast
    to (B, B) and give a silently wrong loss)."""
    if task == "classification":
        if is_probability_rows(y, out.shape[1] if out.dim() == 2 else None) and y.shape[0] == out.shape[0]:
            return y.argmax(1)
        if y.dim() != 1 or y.shape[0] != out.shape[0] or torch.is_floating_point(y):
            raise TargetError(f"classification labels must be integer class indices of shape ({out.shape[0]},) or one-hot / "
                              f"probability rows ({out.shape[0]}, {out.shape[-1]}), got {y.dtype} of shape {tuple(y.shape)}")
        return y
    if y.dim() == 1 and out.dim() == 2 and out.shape[1] == 1 and y.shape[0] == out.shape[0]:
        return y[:, None]
    if y.shape != out.shape:
        raise TargetError(f"regression targets must have the outputs' shape {tuple(out.shape)}, got {tuple(y.shape)}")
    return y


def metric_from_outputs(out: torch.Tensor, y: torch.Tensor, task: str) -> float:
    """Accuracy (classification) or per-sample MSE: squared error summed over outputs, averaged
    over samples (the paper's convention; with noise sigma on 7 outputs the floor is 7 sigma^2)."""
    y = targets_for(out, y.to(out.device), task)
    if task == "classification":
        return (out.argmax(1) == y).double().mean().item()
    return ((out.double() - y.double()) ** 2).sum(1).mean().item()


class MetricSum:
    """The task's metric accumulated over batches on the outputs' device (no host sync per batch):
    correct predictions (accuracy) or per-sample squared errors summed over outputs (MSE)."""

    def __init__(self, task: str):
        if task not in ("classification", "regression"):
            raise TargetError(f"task must be 'classification' or 'regression', got {task!r}")
        self.task, self.total, self.rows = task, None, 0

    def add(self, out: torch.Tensor, y: torch.Tensor) -> None:
        """One batch: outputs (B, d_J) and labels (B,) or targets (B, d_J)."""
        y = targets_for(out, y.to(out.device), self.task)
        if self.total is None:
            self.total = torch.zeros((), dtype=torch.float64, device=out.device)
        if self.task == "classification":
            self.total += (out.argmax(1) == y).sum()
        else:
            self.total += ((out.double() - y.double()) ** 2).sum(1).sum()  # per sample first, as metric_from_outputs
        self.rows += out.shape[0]

    def value(self) -> float:
        """The metric so far (nan when no rows were added)."""
        return (self.total / self.rows).item() if self.rows else float("nan")


@torch.no_grad()
def evaluate_source(net: nn.Module, source: Source, task: str, batch_size: int = 2048) -> float:
    """The task's metric of ``net`` over every (x, y) batch of ``source``.

    Accuracy is correct / total; MSE is the per-sample squared error summed over outputs,
    averaged over samples (as :func:`metric_from_outputs`). Sums stay on the net's device, so a
    batch costs no host synchronisation; the one ``.item()`` is at the end.

    Args:
        net: any module mapping (B, d_0) -> (B, d_J); evaluated in eval mode, then restored.
        source: an ``(x (N, d_0), y)`` tuple of tensors or an iterable of (x, y) batches
            (see :mod:`lightning_stacks.batches`).
        task: ``classification`` (y (N,) class indices) or ``regression`` (y (N, d_J)).
        batch_size: rows per forward pass.

    Returns:
        The metric as a float (nan when the source holds no rows).
    """
    total = MetricSum(task)
    p = next(net.parameters())
    was_training = net.training
    net.eval()
    try:
        for x, y in iter_pairs(source, batch_size, p.device, width=getattr(net, "input_dim", None)):
            total.add(net(x), y)  # (B, d_J)
    finally:
        net.train(was_training)
    return total.value()


def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str) -> float:
    """The task's metric of ``net`` on the tensors (x (N, d_0), y); see :func:`evaluate_source`."""
    return evaluate_source(net, (x, y), task)


def metric_drop(task: str, baseline: float, metric: float) -> float:
    """How much worse ``metric`` is than ``baseline``: accuracy points lost, or the relative MSE
    increase (the unit of ``reduce.max_drop``)."""
    if task == "classification":
        return baseline - metric
    return (metric - baseline) / max(baseline, 1e-30)


def higher_is_better(task: str) -> bool:
    return task == "classification"

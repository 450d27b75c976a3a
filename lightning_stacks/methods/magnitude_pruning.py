"""Magnitude pruning: the baseline the paper compares against (SPEC section 4).

Unstructured pruning of the smallest-magnitude weights to a target sparsity, global (one
threshold over all weight matrices) or per layer, via ``torch.nn.utils.prune``; no retraining
(:func:`prune_network`), or on TensorFlow Model Optimization's polynomial sparsity schedule with
retraining (:class:`PolynomialPruningCallback`). Biases are not pruned (as in TF-MOT).

Compression factor = nonzero parameters before / after, counted the same way for every method
(:func:`nonzero_parameters`). Pruned weights stay dense-shaped: no speed-up without sparse kernels.
"""

from __future__ import annotations

import copy

import pytorch_lightning as pl
from torch import nn
from torch.nn.utils import prune


def nonzero_parameters(net: nn.Module) -> int:
    """Entries != 0 over all parameters (the compression accounting for every method)."""
    return int(sum((p != 0).sum().item() for p in net.parameters()))


def _weights(net: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in net.modules() if isinstance(m, nn.Linear) and m.weight.numel() > 0]


def _mask(params: list[tuple[nn.Module, str]], sparsity: float, scope: str) -> None:
    """Mask the ``sparsity`` fraction of smallest-|w| entries, over all ``params`` or per layer."""
    if scope == "global":
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=float(sparsity))
    else:
        for module, name in params:
            prune.l1_unstructured(module, name, amount=float(sparsity))


def prune_network(net: nn.Module, sparsity: float, scope: str = "global", inplace: bool = False) -> nn.Module:
    """Zero the ``sparsity`` fraction of smallest-|w| weights (global or per layer); permanent."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope='{scope}' is not one of: global, layer")
    net = net if inplace else copy.deepcopy(net)
    params = _weights(net)
    _mask(params, sparsity, scope)
    for module, name in params:
        prune.remove(module, name)
    return net


def max_compression(net: nn.Module) -> float:
    """The factor weight pruning approaches as every weight goes (biases stay); reachable only below it."""
    total = nonzero_parameters(net)
    rest = total - sum(int((m.weight != 0).sum()) for m, _ in _weights(net))
    return total / rest if rest else float("inf")


def sparsity_for_compression(net: nn.Module, factor: float) -> float:
    """The weight sparsity that divides ``net``'s nonzero parameters by ``factor``.

    Biases stay, so the reachable factor is bounded; asking beyond it is an error.
    """
    if factor < 1:
        raise ValueError(f"compression factor must be >= 1, got {factor}")
    total = nonzero_parameters(net)
    weights = sum(int((m.weight != 0).sum()) for m, _ in _weights(net))
    to_remove = total - total / factor
    if to_remove > weights:
        raise ValueError(f"compression {factor:.1f}x needs removing {to_remove:.0f} entries but only {weights} weights are nonzero")
    zeros = sum(int((m.weight == 0).sum()) for m, _ in _weights(net))  # already-zero weights rank first
    return (zeros + to_remove) / sum(m.weight.numel() for m, _ in _weights(net))


def prune_to_compression(net: nn.Module, factor: float, scope: str = "global") -> tuple[nn.Module, float]:
    """Prune weights so that nonzero parameters drop by ``factor``; returns (net, sparsity used)."""
    sparsity = sparsity_for_compression(net, factor)
    return prune_network(net, sparsity, scope), sparsity


def polynomial_sparsity(step: float, begin: float, end: float, initial: float, final: float, power: float = 3.0) -> float:
    """TF-MOT's PolynomialDecay: ``final + (initial - final) (1 - p)^power``, p = progress in [0, 1]."""
    if step < begin:
        return 0.0
    p = min(1.0, (step - begin) / max(end - begin, 1e-12))
    return final + (initial - final) * (1 - p) ** power


class PolynomialPruningCallback(pl.Callback):
    """Prune with retraining: every ``frequency`` steps between ``begin_epoch`` and ``end_epoch``
    (fractional epochs; -1 = the end of training) set the masks to the schedule's sparsity
    (magnitude, global or per layer); masked weights stay zero in between. Masks are made
    permanent at the end of training. ``compression`` (instead of ``final_sparsity``) is converted
    to a sparsity on the network at the start of training."""

    def __init__(self, final_sparsity: float = 0.0, begin_epoch: float = 0.0, end_epoch: float = -1.0, frequency: int = 50,
                 initial_sparsity: float = 0.0, scope: str = "global", compression: float = 0.0):
        if not 0 <= initial_sparsity <= final_sparsity < 1 and not compression:
            raise ValueError(f"need 0 <= initial_sparsity <= final_sparsity < 1, got {initial_sparsity}, {final_sparsity}")
        if scope not in ("global", "layer"):
            raise ValueError(f"scope='{scope}' is not one of: global, layer")
        self.final, self.initial, self.scope, self.compression = final_sparsity, initial_sparsity, scope, compression
        self.begin, self.end, self.frequency = begin_epoch, end_epoch, max(1, frequency)
        self.current = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        if self.compression:
            self.final = sparsity_for_compression(pl_module.net, self.compression)
        if self.end < 0:
            self.end = float(trainer.max_epochs)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        epoch = trainer.current_epoch + (batch_idx + 1) / max(1, trainer.num_training_batches)
        if epoch < self.begin or (trainer.global_step % self.frequency and epoch < self.end):
            return
        target = polynomial_sparsity(epoch, self.begin, self.end, self.initial, self.final)
        if target <= self.current:
            return
        params = _weights(pl_module.net)
        for module, name in params:  # re-rank from the current (masked) weights
            if prune.is_pruned(module):
                prune.remove(module, name)
        _mask(params, target, self.scope)
        self.current = target

    def on_train_end(self, trainer, pl_module) -> None:
        for module, name in _weights(pl_module.net):
            if prune.is_pruned(module):
                prune.remove(module, name)

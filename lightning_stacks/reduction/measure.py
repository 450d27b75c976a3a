"""What each row of the reduction's report measures, in as few passes as the rows need: the
largest output change on the checked inputs and the metric on every split, the training split's
from the same forward pass as the output change; a step that changed nothing is not measured
again; ``report="final"`` measures the full network and the final one only."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from ..batches import Source, is_streamed
from ..evaluation import evaluate_source
from ..model import DeepStackNetwork
from .core import StackWeights
from .stacks import (
    Ranges,
    acts_cache_fits,
    build_network,
    output_pass,
    same_network,
    scan_with_outputs,
)

Evaluator = Callable[[DeepStackNetwork], dict[str, float]]


def _inputs(source: Source):
    """The inputs a split's source holds: x of an (x, y) pair, else the source itself."""
    return source[0] if isinstance(source, tuple) and not is_streamed(source) else source


class StepMeter:
    """Measures the rows of one reduction.

    Args:
        original: the network before the reduction (the output change is measured against it).
        checked: the checked inputs (a tensor or a streamed source).
        streamed: whether ``checked`` is the caller's streamed source (its original outputs are
            then recomputed per batch instead of kept).
        evaluate: None; a function ``net -> {split: metric}``; or ``{split: source}`` of (x, y)
            data, measured here with ``task`` (a split whose inputs are the checked inputs shares
            the output change's pass).
        task: the metric's task (needed with a dict ``evaluate``).
        every_step: False measures only the full network and :meth:`final`.
        prescan: the full network's row makes step 1's scan (:attr:`scan`, :attr:`scan_seconds`)
            in the same pass as its outputs, for step 1 to take instead of a pass of its own.
    """

    def __init__(self, original: list[StackWeights], checked: Source, streamed: bool, evaluate: Evaluator | dict | None,
                 task: str | None, every_step: bool = True, prescan: bool = False):
        self.original, self.checked, self.evaluate, self.task, self.every_step = original, checked, evaluate, task, every_step
        self.prescan = prescan
        self.cache: list[torch.Tensor] | None = None if streamed else []
        # the first stack's activations on in-memory inputs, kept by the full row's pass when they
        # fit: later rows whose first stack keeps original neurons read them instead of redoing
        # its (N, d_0) x (d_0, n) product
        keep_acts = prescan and isinstance(checked, torch.Tensor) and acts_cache_fits(checked.shape[0], original[0])
        self.acts: list[torch.Tensor] | None = [] if keep_acts else None
        self.fused = None
        if isinstance(evaluate, dict):
            if task is None:
                raise ValueError("evaluating splits needs the task")
            self.fused = next((name for name, src in evaluate.items() if _inputs(src) is checked), None)
        self.last: tuple[list[StackWeights], float, dict] | None = None
        self.scan: tuple[Ranges, int] | None = None  # step 1's ranges of ``original``, from the full row's pass
        self.scan_seconds = 0.0

    def measure(self, step: str, current: list[StackWeights]) -> tuple[float, dict[str, float]]:
        """(max output change, metrics) of a row (nan and {} for a row ``every_step`` skips)."""
        if not self.every_step and step != "full":
            return math.nan, {}
        if self.last is not None and same_network(self.last[0], current):
            return self.last[1], dict(self.last[2])
        change, metrics = self._run(current)
        self.last = (current, change, metrics)
        return change, metrics

    def final(self, current: list[StackWeights]) -> tuple[float, dict[str, float]]:
        """The final network's row when only the full and the final network are measured."""
        self.every_step, self.last = True, None
        return self.measure("final", current)

    def _run(self, current: list[StackWeights]) -> tuple[float, dict[str, float]]:
        labels = None
        if self.fused is not None:
            src = self.evaluate[self.fused]
            labels = src[1] if isinstance(src, tuple) and not is_streamed(src) else None
        task = self.task if self.fused is not None else None
        if self.prescan and current is self.original and self.scan is None:
            # the unreduced network: one pass gives its outputs, its metric and step 1's ranges
            t0 = time.perf_counter()
            ranges, rows, fused_metric = scan_with_outputs(current, self.checked, self.cache, task, labels, self.acts)
            self.scan, self.scan_seconds, change = (ranges, rows), time.perf_counter() - t0, 0.0
        else:
            change, fused_metric = output_pass(self.original, current, self.checked, self.cache, task, labels, acts=self.acts)
        if self.evaluate is None:
            return change, {}
        net = build_network(current)
        if callable(self.evaluate):
            return change, self.evaluate(net)
        return change, {name: fused_metric if name == self.fused else evaluate_source(net, src, self.task)
                        for name, src in self.evaluate.items()}

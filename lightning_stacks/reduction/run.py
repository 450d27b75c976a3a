"""What the steps of one reduction share: the settings, the network so far and its data (the
checked inputs, the same inputs in memory when a step needs them, the reference set)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..batches import Source, iter_pairs, reservoir_sample
from .core import StackWeights
from .settings import Form, ReduceSettings, ReductionError
from .stacks import Fit, Ranges, network_ranges


@dataclass
class ReductionRun:
    """The state one reduction's steps read and update.

    Attributes:
        settings: the validated settings.
        task: ``classification`` or ``regression``.
        stacks: the network as it is after the steps run so far.
        source: the caller's step-1 inputs (a tensor (N, d_0) or a streamed source).
        device, dtype: where and in which dtype the reduction computes (the network's).
        input_dim: d_0.
        checked: what step 1 and the output change run over: ``source``, or its ``sample``.
        x_ref, y_ref: automatic mode's reference set (on ``device``), set by
            :meth:`resolve_reference`.
        fit: ``refit``'s fit set: (inputs, the original network's stack outputs on them).
        budget: automatic mode's metric budget (set by the automatic step, used by polish).
        chosen: the settings automatic mode chose (for the report).
        form: how the result is deployed (whether a step may add a skip path; its parameter count).
        head: network outputs on ``x_ref`` -> what the metric reads (None: the outputs themselves).
        scan: (stacks, step-1 ranges, rows, seconds) of a pass the report already made over the
            checked inputs; :meth:`ranges_of` hands it to step 1 and moves its seconds to
            ``borrowed`` (the driver counts them as that step's time).
    """

    settings: ReduceSettings
    task: str
    stacks: list[StackWeights]
    source: Source
    device: torch.device
    dtype: torch.dtype
    input_dim: int
    streamed: bool
    checked: Source = None
    x_ref: torch.Tensor | None = None
    y_ref: torch.Tensor | None = None
    fit: Fit | None = None
    budget: Any = None
    form: Form = field(default_factory=Form)
    head: Any = None
    chosen: dict = field(default_factory=dict)
    held: dict[str, torch.Tensor | None] = field(default_factory=dict)
    scan: tuple | None = None
    borrowed: float = 0.0

    def __post_init__(self) -> None:
        s, x = self.settings, self.source
        if self.streamed and s.sample:
            xs, ys = reservoir_sample(x, s.sample, s.seed, width=self.input_dim)
            self.held = {"x": xs.to(self.device, self.dtype), "y": ys}
            self.checked = self.held["x"]
        elif not self.streamed and s.sample and s.sample < x.shape[0]:
            g = torch.Generator().manual_seed(s.seed)
            idx = torch.randperm(x.shape[0], generator=g)[: s.sample]
            self.checked = x[idx.to(x.device)].to(self.device, self.dtype)
            self.held = {"x": self.checked, "y": None}
        else:
            self.checked = x

    def ranges_of(self, stacks: list[StackWeights]) -> tuple[Ranges, int]:
        """Step 1's (ranges, rows) of ``stacks`` on the checked inputs: the report's pass when it
        was over these very stacks, else a new scan."""
        if self.scan is not None and self.scan[0] is stacks:
            _, ranges, rows, seconds = self.scan
            self.scan, self.borrowed = None, self.borrowed + seconds
            return ranges, rows
        return network_ranges(stacks, self.checked)

    def in_memory(self) -> torch.Tensor:
        """The checked inputs as one device tensor (plus their labels in ``held["y"]`` when the
        batches carry them), built the first time a step needs them."""
        if "x" not in self.held:
            if self.streamed:
                parts = list(iter_pairs(self.source, 2**62, self.device, self.dtype, width=self.input_dim, need_labels=False))
                x = torch.cat([p[0] for p in parts]) if parts else torch.empty(0, self.input_dim, device=self.device, dtype=self.dtype)
                labelled = bool(parts) and all(p[1] is not None for p in parts)
                self.held = {"x": x, "y": torch.cat([p[1] for p in parts]) if labelled else None}
            else:
                self.held = {"x": self.source.to(self.device, self.dtype), "y": None}
        return self.held["x"]

    def resolve_reference(self, x_ref: torch.Tensor | None, y_ref: torch.Tensor | None) -> None:
        """Automatic mode's reference set: ``x_ref`` (default: the in-memory checked inputs; a
        tensor's default is all of it, even when step 1 samples) with ``y_ref`` (default: the
        labels of a streamed source's batches)."""
        streamed = self.streamed
        if x_ref is None and not streamed and "x" in self.held:
            x_ref = self.source.to(self.device, self.dtype)
        elif x_ref is None:
            x_ref = self.in_memory()
            if y_ref is None and streamed:
                y_ref = self.held["y"]
        else:
            x_ref = x_ref.to(self.device, self.dtype)
        if y_ref is None:
            raise ReductionError("automatic mode (max_drop) needs reference labels y_ref")
        if x_ref.shape[0] != y_ref.shape[0]:
            hint = " (a streamed x_check with sample > 0 defaults x_ref to its sample: give x_ref too)" if streamed and self.settings.sample else ""
            raise ReductionError(f"reference inputs ({x_ref.shape[0]}) and labels ({y_ref.shape[0]}) differ in length{hint}")
        self.x_ref, self.y_ref = x_ref, y_ref.to(self.device)

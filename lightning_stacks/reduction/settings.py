"""The reduction's settings (:class:`ReduceSettings`) and its error type (:class:`ReductionError`)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from ..errors import LightningStacksError


class ReductionError(LightningStacksError):
    """Invalid reduction settings or data; the message names the problem."""


@dataclass
class ReduceSettings:
    """What to reduce and how (mirrors ``ReduceConfig`` in the config).

    Attributes:
        outside: run step 1 (exact on the checked inputs).
        sample: check only this many random inputs in step 1 (0 = all of them).
        tolerances: per-stack step-2 tolerances (empty = skip step 2, unless automatic).
        clusters: per-stack step-3 cluster counts; 0 = leave that stack unclustered (empty =
            skip step 3, unless automatic).
        max_drop: automatic mode when >= 0: the largest allowed metric drop on the reference set.
        weak_share: automatic mode's share of ``max_drop`` for the weak steps (rest: clustering).
        refit: beyond the paper: after each lossy step, refit every stack's W and c by least
            squares so its outputs on the checked inputs match the original network's stack
            outputs (see :func:`~.core.refit_outgoing`). Off = the paper's algorithm.
        polish: beyond the paper, automatic mode only: after the ramped search, remove one neuron
            at a time (merge two by k-means with K = n - 1, or drop the weakest) in whichever
            stack's candidate costs least, while the whole network stays within ``max_drop``
            (see :func:`~.auto.polish_stacks`).
        bottleneck_tol: beyond the paper: when >= 0, a last step shrinks every hidden linear
            bottleneck to the affine subspace its values span on the checked inputs (singular
            values > bottleneck_tol * the largest; 0 = exact rank). -1 = off.
        domain: optional (lower, upper) box: a first step removes units proven stable on all of it
            (see :mod:`lightning_stacks.methods.stable_units`); ``domain_milp_seconds`` and
            ``domain_milp_units`` bound its MILPs. ``tighten``: also report how many of step 1's
            data-based decisions hold on the whole domain.
        merge_identity_layers: a "layers" step folds stack 1's ReLU layer when it acts as the
            identity (V >= 0, b >= 0, and inputs >= 0: the domain's lower bound, or every checked
            input). Exact on all non-negative inputs.
        baseline: automatic mode measures the drop from this metric value (e.g. the full
            network's, before earlier rounds' reductions); None = the network being reduced.
        seed: k-means and sampling seed.
        kmeans_n_init: k-means restarts.
        kmeans: ``torch`` (on the reduction's device, :mod:`.kmeans`) or ``sklearn`` (scikit-learn
            on the CPU, the reference implementation).
        report: ``steps`` measures every row of the report (output change, metrics); ``final``
            only the full network and the final one (a last row ``final``): less time.
    """

    outside: bool = True
    sample: int = 0
    tolerances: list[float] = field(default_factory=list)
    clusters: list[int] = field(default_factory=list)
    max_drop: float = -1.0
    weak_share: float = 0.25
    refit: bool = False
    polish: bool = False
    bottleneck_tol: float = -1.0
    baseline: float | None = None
    merge_identity_layers: bool = False
    domain: tuple[float, float] | None = None
    domain_milp_seconds: float = 5.0
    domain_milp_units: int = 2000
    tighten: bool = False
    seed: int = 0
    kmeans_n_init: int = 3
    kmeans: str = "torch"
    report: str = "steps"

    @property
    def automatic(self) -> bool:
        return self.max_drop >= 0

    def validate(self, widths: list[int]) -> None:
        """Check the settings against a network of ``widths`` (ReductionError naming the setting);
        integral float cluster counts and sample sizes (``8.0``) become ints."""
        J = len(widths)
        self._check_numbers()
        if self.sample < 0:
            raise ReductionError(f"sample must be >= 0 (0 = all inputs), got {self.sample}")
        if self.automatic:
            if not 0 <= self.max_drop <= 1:
                raise ReductionError(f"max_drop must be in [0, 1], got {self.max_drop}")
            if self.tolerances or self.clusters:
                raise ReductionError("give either max_drop (automatic) or tolerances/clusters (manual), not both")
        elif self.max_drop != -1.0 and not 0 <= self.max_drop <= 1:
            raise ReductionError(f"max_drop must be in [0, 1] (or -1 for manual mode), got {self.max_drop}")
        for name, vals in (("tolerances", self.tolerances), ("clusters", self.clusters)):
            if vals and len(vals) != J:
                raise ReductionError(f"{name} needs one value per stack ({J}), got {list(vals)}")
        for j, t in enumerate(self.tolerances):
            if not t >= 0:
                raise ReductionError(f"tolerance for stack {j + 1} must be >= 0, got {t}")
        for j, (k, n) in enumerate(zip(self.clusters, widths, strict=False)):
            if k < 0:
                raise ReductionError(f"clusters for stack {j + 1} must be >= 0 (0 = no clustering), got {k}")
            if k > n:
                raise ReductionError(f"clusters for stack {j + 1} is {k} > its {n} neurons (K must be <= n)")
        if self.bottleneck_tol != -1.0 and not self.bottleneck_tol >= 0:
            raise ReductionError(f"bottleneck_tol must be >= 0 (or -1 = off), got {self.bottleneck_tol}")
        if not 0 <= self.weak_share <= 1:
            raise ReductionError(f"weak_share must be in [0, 1], got {self.weak_share}")
        if self.polish and not self.automatic:
            raise ReductionError("polish needs the automatic mode (max_drop >= 0): it spends the unused part of max_drop")
        if self.kmeans_n_init < 1:
            raise ReductionError(f"kmeans_n_init must be >= 1, got {self.kmeans_n_init}")
        if self.kmeans not in ("torch", "sklearn"):
            raise ReductionError(f"kmeans={self.kmeans!r} is not one of: torch, sklearn")
        if self.report not in ("steps", "final"):
            raise ReductionError(f"report={self.report!r} is not one of: steps, final")

    def _check_numbers(self) -> None:
        def integer(name: str, value):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
                    not isinstance(value, numbers.Integral) and not float(value).is_integer()):
                raise ReductionError(f"{name} must be a whole number, got {value!r}")
            return int(value)

        def real(name: str, value, inf_ok: bool = False) -> float:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value) or (
                    math.isinf(value) and not inf_ok):
                raise ReductionError(f"{name} must be a finite number, got {value!r}")
            return float(value)

        for name in ("tolerances", "clusters"):
            if not isinstance(getattr(self, name), list | tuple):
                raise ReductionError(f"{name} must be a list with one value per stack, got {getattr(self, name)!r}")
        self.clusters = [integer(f"clusters[{j}]", k) for j, k in enumerate(self.clusters)]
        self.tolerances = [real(f"tolerances[{j}]", t, inf_ok=True) for j, t in enumerate(self.tolerances)]  # inf: drop all weak
        for name in ("sample", "seed", "kmeans_n_init", "domain_milp_units"):
            setattr(self, name, integer(name, getattr(self, name)))
        for name in ("max_drop", "weak_share", "bottleneck_tol", "domain_milp_seconds"):
            setattr(self, name, real(name, getattr(self, name)))
        if self.baseline is not None:
            self.baseline = real("baseline", self.baseline)
        if self.domain is not None:
            if not isinstance(self.domain, list | tuple) or len(self.domain) != 2:
                raise ReductionError(f"domain must be (lower, upper), got {self.domain!r}")
            self.domain = (real("domain[0]", self.domain[0]), real("domain[1]", self.domain[1]))

    @classmethod
    def coerce(cls, settings) -> ReduceSettings:
        """``settings`` as ReduceSettings: one already, or a dict of its fields (unknown keys refused)."""
        if isinstance(settings, cls):
            return settings
        if isinstance(settings, dict):
            valid = [f.name for f in fields(cls)]
            unknown = sorted(str(k) for k in settings if k not in valid)
            if unknown:
                raise ReductionError(f"unknown reduction setting(s) {unknown}; valid settings: {', '.join(valid)}")
            return cls(**settings)
        raise ReductionError(f"settings must be a ReduceSettings or a dict of its fields, got {type(settings).__name__}")



@dataclass
class Form:
    """How the reduced network will be deployed (the block's own form).

    Attributes:
        allow_skip: whether a step may add an affine skip path (False for a plain ReLU MLP: step 1
            then folds always-active neurons into fewer always-active neurons instead, see
            :func:`~.core.fold_always_active_plain`).
        count: parameters of the deployed module for a list of stacks (default: the Deep Stack
            Network's, :func:`~.stacks.count_parameters`).
        full_params: the deployed module's parameters before the reduction (the "full" row).
    """

    allow_skip: bool = True
    count: Callable[[list], int] | None = None
    full_params: int | None = None

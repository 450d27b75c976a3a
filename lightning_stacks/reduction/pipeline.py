"""The Reduction Algorithm on a whole :class:`DeepStackNetwork` (SPEC section 2).

Order (as in the paper's tables): step 1 on every stack in order (each stack's inputs are the
earlier stacks' outputs, which step 1 leaves unchanged on the checked inputs, so one pass
through the unreduced network finds every stack's neurons), then step 2 on every stack, then
step 3 on every stack. Each step yields a
:class:`StepRecord`; together they form a :class:`ReductionReport` (printed like table 1/2 and
saved as JSON).

Manual mode takes per-stack tolerances and cluster counts. Automatic mode (``max_drop``) picks
them by binary search so that the metric on a reference set drops by at most ``max_drop``
(accuracy points for classification, relative MSE increase for regression). The budget is a
cumulative ramp over the 2J lossy stages: the weak steps of stacks 1..J share ``weak_share`` of
it, the clustering steps the rest (clustering removes far more neurons per unit of budget).

The checked inputs may be a tensor or a streamed source (a DataLoader, a list of batches; see
:mod:`lightning_stacks.batches`): step 1 and the per-step output change then take one pass over
the batches, a chunk at a time on the network's device, so their memory does not grow with N.
"""

from __future__ import annotations

import json
import math
import numbers
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace

import torch

from ..batches import Source, is_streamed, iter_inputs, iter_pairs, reservoir_sample
from ..errors import LightningStacksError
from ..evaluation import metric_drop, metric_from_outputs
from ..model import DeepStackNetwork
from .core import (
    SCAN_BLOCK_BYTES,
    StackWeights,
    bottleneck_basis,
    cluster_stack,
    find_outside_neurons,
    fold_always_active,
    fold_constant_neurons,
    preactivation_range,
    project_bottleneck,
    refit_outgoing,
    remove_weak,
    weak_scores,
)


class ReductionError(LightningStacksError):
    """Invalid reduction settings or data; the message names the problem."""


# --------------------------------------------------------------------------- settings
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
            (see :func:`polish_stacks`).
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


# --------------------------------------------------------------------------- report
@dataclass
class StepRecord:
    """One row of the paper's table."""

    step: str  # full | zeroed | layers | domain | outside | weak | cluster | bottleneck
    widths: list[int]
    dims: list[int] = field(default_factory=list)  # bottleneck widths d_1..d_J
    params: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    max_output_change: float = 0.0
    seconds: float = 0.0  # the reduction itself, evaluation excluded
    details: list[dict] = field(default_factory=list)  # per stack


@dataclass
class ReductionReport:
    task: str
    steps: list[StepRecord] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    evaluations: int = 0  # metric evaluations spent by the automatic search
    kept_ids: list[list[int]] = field(default_factory=list)  # per stack: original index of each neuron, -1 = new
    reduce_seconds: float = 0.0
    eval_seconds: float = 0.0
    flushed_tiny: int = 0  # weight entries below 1e-20 set to 0 in the returned network (DeepStackNetwork.flush_tiny_)

    def table(self) -> str:
        """The paper's table 1/2 layout, with a metric column per split that was evaluated
        (train, val, test order; none when ``reduce_network`` had no ``evaluate``)."""
        metric = "acc" if self.task == "classification" else "MSE"
        J = len(self.steps[0].widths) if self.steps else 0
        seen = {k for s in self.steps for k in s.metrics}
        splits = [k for k in ("train", "val", "test") if k in seen] + sorted(seen - {"train", "val", "test"})
        head = f"{'step':<10}" + "".join(f"{'n' + str(j + 1):>7}" for j in range(J)) + f"{'params':>9}"
        head += "".join(f"{name + ' ' + metric:>12}" for name in splits) + f"{'max|dout|':>11}{'time s':>9}"
        lines = [head, "-" * len(head)]
        for s in self.steps:
            row = f"{s.step:<10}"[:10] + "".join(f"{n:>7}" for n in s.widths) + f"{s.params:>9}"
            row += "".join(f"{s.metrics.get(name, float('nan')):>12.4f}" for name in splits)
            row += f"{s.max_output_change:>11.2e}{s.seconds:>9.2f}"
            lines.append(row)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)


# --------------------------------------------------------------------------- module <-> tensors
def stack_weights(net: DeepStackNetwork) -> list[StackWeights]:
    """Detached copies of every stack's parameters."""
    out = []
    for s in net.stacks:
        extra = {}
        if s.skip == "affine":
            extra = {"A1": s.A1.weight.detach().clone(), "A2": s.A2.weight.detach().clone()}
        elif s.skip == "direct":
            extra = {"S": s.S.weight.detach().clone()}
        out.append(StackWeights(s.V.weight.detach().clone(), s.V.bias.detach().clone(), s.W.weight.detach().clone(),
                                s.W.bias.detach().clone(), skip=s.skip, ids=torch.arange(s.n, device=s.V.weight.device), **extra))
    return out


def _moved(st: StackWeights, device: torch.device | str, dtype: torch.dtype) -> StackWeights:
    """``st`` on ``device`` in ``dtype`` (``ids`` keep their integer type)."""
    conv = {k: getattr(st, k).to(device=device, dtype=dtype) for k in ("V", "b", "W", "c", "A1", "A2", "S") if getattr(st, k) is not None}
    if st.ids is not None:
        conv["ids"] = st.ids.to(device)
    return replace(st, **conv)


def build_network(stacks: list[StackWeights]) -> DeepStackNetwork:
    """A new network whose parameters are exactly ``stacks`` (same device and dtype)."""
    ref = stacks[0].V
    net = DeepStackNetwork(stacks[0].d_in, [s.n for s in stacks], [s.d_out for s in stacks], [s.skip for s in stacks])
    net = net.to(device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        for mod, st in zip(net.stacks, stacks, strict=True):
            mod.V.weight.copy_(st.V), mod.V.bias.copy_(st.b), mod.W.weight.copy_(st.W), mod.W.bias.copy_(st.c)
            if st.skip == "affine":
                mod.A1.weight.copy_(st.A1), mod.A2.weight.copy_(st.A2)
            elif st.skip == "direct":
                mod.S.weight.copy_(st.S)
    return net


def run_stacks(stacks: list[StackWeights], z: torch.Tensor, start: int = 0, chunk: int = 16384) -> torch.Tensor:
    """Forward z_{start} (N, d) through ``stacks[start:]`` in chunks."""
    if not stacks[start:]:
        return z
    outs = []
    for i in range(0, z.shape[0], chunk):
        h = z[i : i + chunk]
        for st in stacks[start:]:
            h = st.forward(h)
        outs.append(h)
    return torch.cat(outs)


def scan_stack(st: StackWeights, Z: torch.Tensor, need_output: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One pass over Z (N, d_in): min/max pre-activation per neuron (n,) and, if asked, the stack's
    output (N, d_out) from the same pre-activation blocks (one matmul per block, not two)."""
    outs: list[torch.Tensor] = []
    aff = st.affine_matrix().T if st.skip != "none" else None

    def output(H: torch.Tensor, z: torch.Tensor) -> None:
        out = torch.addmm(st.c, H.clamp_min_(0), st.W.T)  # (B, d_out)
        outs.append(out.addmm_(z, aff) if aff is not None else out)

    hmin, hmax = preactivation_range(st.V, st.b, Z, on_block=output if need_output else None)
    return hmin, hmax, (torch.cat(outs) if need_output else None)


# --------------------------------------------------------------------------- steps, network-wide
def scan_chunk(stacks: list[StackWeights]) -> int:
    """Rows per block of a network-wide scan: keeps the widest stack's (B, n) pre-activations
    under ``SCAN_BLOCK_BYTES``."""
    width = max([st.n for st in stacks] + [1])
    return max(1, SCAN_BLOCK_BYTES // (width * stacks[0].V.element_size()))


def network_ranges(stacks: list[StackWeights], x: Source, chunk: int | None = None) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
    """Every stack's pre-activation min/max over the checked inputs, in one pass through ``stacks``.

    Stack j's inputs are stack j-1's outputs on the same block, so each block of x travels the
    whole network once and only one block's activations are alive at a time.

    Args:
        stacks: the network, unchanged here.
        x: the checked inputs: a tensor (N, d_0) on any device, or a streamed source of x batches.
        chunk: rows per block (default :func:`scan_chunk`); each block is moved to the stacks' device.

    Returns:
        ([(hmin (n_j,), hmax (n_j,)) per stack], number of rows seen). With no rows: (+inf, -inf).
    """
    ref = stacks[0].V
    ranges = [(torch.full((st.n,), math.inf, dtype=ref.dtype, device=ref.device),
               torch.full((st.n,), -math.inf, dtype=ref.dtype, device=ref.device)) for st in stacks]
    rows = 0
    for z in iter_inputs(x, chunk or scan_chunk(stacks), ref.device, ref.dtype, width=stacks[0].d_in):
        rows += z.shape[0]
        for j, st in enumerate(stacks):
            hmin, hmax, z = scan_stack(st, z, need_output=j < len(stacks) - 1)
            ranges[j] = (torch.minimum(ranges[j][0], hmin), torch.maximum(ranges[j][1], hmax))
    return ranges, rows


def outside_masks(stacks: list[StackWeights], x: Source) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Step 1's (dead, always-active) masks per stack on the checked inputs x (no reduction)."""
    return [find_outside_neurons(hmin, hmax) for hmin, hmax in network_ranges(stacks, x)[0]]


def step_outside(stacks: list[StackWeights], x: Source, chunk: int | None = None) -> tuple[list[StackWeights], list[dict]]:
    """Step 1 on every stack, checking the inputs x: a tensor (N, d_0) or a streamed source
    (one pass, see :func:`network_ranges`)."""
    ranges, rows = network_ranges(stacks, x, chunk)
    out, details = [], []
    for j, (st, (hmin, hmax)) in enumerate(zip(stacks, ranges, strict=True)):
        dead, active = find_outside_neurons(hmin, hmax)
        if rows == 0:  # nothing checked: decide nothing
            dead = active = torch.zeros_like(dead)
        red = fold_always_active(st, active)
        red = red.keep(~dead[~active])
        details.append({"stack": j + 1, "dead": int(dead.sum()), "always_active": int(active.sum()), "before": st.n, "after": red.n})
        out.append(red)
    return out, details


def max_output_change(original: list[StackWeights], current: list[StackWeights], x: Source,
                      cache: list[torch.Tensor] | None = None, chunk: int = 16384) -> float:
    """max |current(x) - original(x)| over the checked inputs, one block at a time.

    Args:
        original, current: two networks with the same d_0 and d_J.
        x: the checked inputs, a tensor (N, d_0) or a streamed source.
        cache: a list kept by the caller between calls on the same x: the first call fills it
            with original's outputs per block, later calls reuse them (memory (N, d_J); pass
            None for a streamed source, whose original outputs are recomputed per batch).
        chunk: rows per block.
    """
    if current is original:
        return 0.0
    ref = original[0].V
    worst = torch.zeros((), dtype=ref.dtype, device=ref.device)
    fill = cache is not None and not cache
    for i, z in enumerate(iter_inputs(x, chunk, ref.device, ref.dtype, width=original[0].d_in)):
        if cache is not None and not fill:
            before = cache[i]
        else:
            before = run_stacks(original, z, chunk=chunk)  # (B, d_J)
            if fill:
                cache.append(before)
        after = run_stacks(current, z, chunk=chunk)
        if after.numel():
            worst = torch.maximum(worst, (after - before).abs().max())  # on the device: no sync per block
    return float(worst)


Fit = tuple[torch.Tensor, list[torch.Tensor]]  # (checked inputs x, original stack outputs on x)


def _lossy_pass(stacks: list[StackWeights], reduce_one: Callable[[int, StackWeights], tuple[StackWeights, dict]],
                fit: Fit | None) -> tuple[list[StackWeights], list[dict]]:
    """Apply ``reduce_one`` to every stack in order; with ``fit``, refit each reduced stack's W, c
    on its current inputs (through the already-reduced earlier stacks) to the original outputs."""
    out, details = [], []
    z = fit[0] if fit is not None else None
    for j, st in enumerate(stacks):
        red, det = reduce_one(j, st)
        if fit is not None:
            red = refit_outgoing(red, z, fit[1][j])
            z = run_stacks([red], z)
        out.append(red)
        details.append({"stack": j + 1, "before": st.n, "after": red.n, **det})
    return out, details


def step_weak(stacks: list[StackWeights], tolerances: list[float], fit: Fit | None = None) -> tuple[list[StackWeights], list[dict]]:
    def one(j, st):
        red, bound, removed = remove_weak(st, tolerances[j])
        return red, {"tolerance": float(tolerances[j]), "removed": removed, "bound_coef": bound}

    return _lossy_pass(stacks, one, fit)


def step_cluster(stacks: list[StackWeights], clusters: list[int], seed: int, n_init: int, fit: Fit | None = None,
                 backend: str = "torch") -> tuple[list[StackWeights], list[dict]]:
    def one(j, st):
        k = clusters[j]
        if k == 0 or k >= st.n:
            return st, {"clusters": int(k), "dropped": 0}
        red, info = cluster_stack(st, k, seed=seed + j, n_init=n_init, backend=backend)
        return red, {"clusters": int(k), "dropped": info.dropped}

    return _lossy_pass(stacks, one, fit)


def step_bottleneck(stacks: list[StackWeights], x: torch.Tensor, rel_tol: float) -> tuple[list[StackWeights], list[dict]]:
    """Shrink each hidden bottleneck d_j (j < J) to the rank its values have on x (beyond the paper)."""
    stacks = list(stacks)
    details, z = [], x
    for j in range(len(stacks) - 1):
        z_out = run_stacks([stacks[j]], z)
        P, mu, s = bottleneck_basis(z_out, rel_tol)
        before = stacks[j].d_out
        if P.shape[1] < before:
            stacks[j], stacks[j + 1] = project_bottleneck(stacks[j], stacks[j + 1], P, mu)
        details.append({"stack": j + 1, "dim_before": before, "dim_after": stacks[j].d_out,
                        "singular_values": [float(v) for v in s]})
        z = run_stacks([stacks[j]], z)
    return stacks, details


def count_parameters(stacks: list[StackWeights]) -> int:
    """Parameters of the dense network these stacks make (the compression accounting)."""
    total = 0
    for st in stacks:
        total += st.V.numel() + st.b.numel() + st.W.numel() + st.c.numel()
        total += sum(t.numel() for t in (st.A1, st.A2, st.S) if t is not None)
    return total


# --------------------------------------------------------------------------- automatic search
class _Budget:
    """Evaluates candidate stacks on the reference set and checks the metric drop."""

    def __init__(self, stacks, x_ref, y_ref, task, max_drop, weak_share, baseline=None):
        self.task, self.y_ref, self.max_drop, self.weak_share = task, y_ref, max_drop, weak_share
        self.J = len(stacks)
        self.x_ref = x_ref
        self.ref_metric = metric_from_outputs(run_stacks(stacks, x_ref), y_ref, task) if baseline is None else baseline
        self.evaluations = 0

    def drop(self, metric: float) -> float:
        return metric_drop(self.task, self.ref_metric, metric)

    def allowed(self, stage: int) -> float:
        """Cumulative drop allowed after stage (0..J-1 weak, J..2J-1 cluster)."""
        J, w = self.J, self.weak_share
        if stage < J:
            return self.max_drop * w * (stage + 1) / J
        return self.max_drop * (w + (1 - w) * (stage - J + 1) / J)

    def trial_drop(self, stacks, j, cand, z_j) -> float:
        """Whole-network drop with stack j replaced by ``cand`` (z_j: stack j's inputs)."""
        trial = list(stacks)
        trial[j] = cand
        self.evaluations += 1
        return self.drop(metric_from_outputs(run_stacks(trial, z_j, start=j), self.y_ref, self.task))

    def ok(self, stacks, j, cand, z_j, stage) -> bool:
        return self.trial_drop(stacks, j, cand, z_j) <= self.allowed(stage) + 1e-12


def _largest_ok(lo: int, hi: int, ok: Callable[[int], bool]) -> int:
    """Largest r in [lo, hi] with ok(r), assuming ok(lo) and monotone ok."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def weak_candidates(st: StackWeights) -> tuple[Callable[[int], StackWeights], torch.Tensor]:
    """``make(r)``: the stack without its r weakest neurons; and the cumulative scores in that order."""
    scores = weak_scores(st).double()
    order = torch.argsort(scores, stable=True)
    csum = torch.cumsum(scores[order], 0)

    def make(r):
        keep = torch.ones(st.n, dtype=torch.bool, device=st.V.device)
        keep[order[:r]] = False
        return st.keep(keep)

    return make, csum


def auto_tolerances_and_clusters(stacks, x_ref, y_ref, task, max_drop, seed, n_init, weak_share=0.25, fit: Fit | None = None,
                                 backend: str = "torch",
                                 baseline: float | None = None):
    """Automatic mode: per stack, the largest weak-removal prefix, then the fewest clusters, whose
    metric drop on (x_ref, y_ref) stays within the ramped budget (with ``fit``: each candidate is
    refitted first, see :func:`_lossy_pass`). Returns the stacks after each phase, the chosen
    tolerances and cluster counts, and the budget (which counted the evaluations)."""
    J = len(stacks)
    budget = _Budget(stacks, x_ref, y_ref, task, max_drop, weak_share, baseline)

    def finish(cand, z_fit, j):
        return refit_outgoing(cand, z_fit, fit[1][j]) if fit is not None else cand

    def phase(current, stage0, search):
        z_ref = x_ref
        z_fit = fit[0] if fit is not None else None
        chosen = []
        for j in range(J):
            cache: dict[int, StackWeights] = {}
            make = search(j, current[j])

            def cand(t, j=j, z_fit=z_fit, cache=cache, make=make):
                if t not in cache:  # t = 0 is the stack as it is: accepted unchecked, so never refitted
                    cache[t] = make(t) if t == 0 else finish(make(t), z_fit, j)
                return cache[t]

            n = current[j].n
            t = _largest_ok(0, search.limit(current[j]), lambda t, j=j, z_ref=z_ref, cand=cand: t == 0 or budget.ok(current, j, cand(t), z_ref, stage0 + j))
            chosen.append((t, n))
            current[j] = cand(t)
            z_ref = run_stacks([current[j]], z_ref)
            if fit is not None:
                z_fit = run_stacks([current[j]], z_fit)
        return chosen

    class WeakSearch:
        """Candidates remove the t weakest neurons."""

        def __init__(self):
            self.csums: dict[int, torch.Tensor] = {}

        def __call__(self, j, st):
            make, csum = weak_candidates(st)
            self.csums[j] = csum
            return make

        @staticmethod
        def limit(st):
            return st.n

    class ClusterSearch:
        """Candidates merge the stack into n - t clusters."""

        def __call__(self, j, st):
            # t = number of neurons saved: K = n - t, so "largest ok t" is "fewest ok clusters"
            return lambda t: st if t == 0 else cluster_stack(st, st.n - t, seed=seed + j, n_init=n_init, backend=backend)[0]

        @staticmethod
        def limit(st):
            return max(st.n - 1, 0)

    after_weak = list(stacks)
    ws = WeakSearch()
    picked = phase(after_weak, 0, ws)
    tolerances = [float(ws.csums[j][r - 1]) if r > 0 else 0.0 for j, (r, _) in enumerate(picked)]
    after_cluster = list(after_weak)
    picked = phase(after_cluster, J, ClusterSearch())
    clusters = [n - t if n else 0 for t, n in picked]
    return after_weak, after_cluster, tolerances, clusters, budget


def polish_stacks(stacks: list[StackWeights], x_ref, budget: _Budget, seed: int, n_init: int, backend: str = "torch",
                  fit: Fit | None = None) -> tuple[list[StackWeights], list[int]]:
    """Spend the budget the per-stack ramp left unused, one neuron at a time.

    The ramp gives stack j's clustering only part of ``max_drop``, so a cheap merge in a late stack
    can go untried while an early stack used its share. Each pass tries, in every stack, merging
    into K = n - 1 clusters and deleting the weakest neuron (each refitted with ``fit``), evaluates
    the whole network on the reference set, and keeps the cheapest candidate whose total drop is
    within ``max_drop``; it stops when none is. Returns the stacks and the neurons removed per stack.
    """
    current = list(stacks)
    removed = [0] * len(current)
    while True:
        best = None
        z_ref, z_fit = x_ref, (fit[0] if fit is not None else None)
        for j, st in enumerate(current):
            if st.n > 0:
                cands = []
                if st.n > 1:
                    cands.append(cluster_stack(st, st.n - 1, seed=seed + j, n_init=n_init, backend=backend)[0])
                cands.append(weak_candidates(st)[0](1))
                for cand in cands:
                    if fit is not None:
                        cand = refit_outgoing(cand, z_fit, fit[1][j])
                    drop = budget.trial_drop(current, j, cand, z_ref)
                    if drop <= budget.max_drop + 1e-12 and (best is None or drop < best[0]):
                        best = (drop, j, cand)
            z_ref = run_stacks([st], z_ref)
            if fit is not None:
                z_fit = run_stacks([st], z_fit)
        if best is None:
            return current, removed
        _, j, current[j] = best
        removed[j] += 1


# --------------------------------------------------------------------------- driver
def _all_nonnegative(x: Source, device: torch.device, width: int) -> bool:
    """Whether every checked input is >= 0 (one pass; the flag stays on the device until the end)."""
    ok = torch.ones((), dtype=torch.bool, device=device)
    for z in iter_inputs(x, 1 << 16, device, width=width):
        ok &= (z >= 0).all()
    return bool(ok)


Evaluator = Callable[[DeepStackNetwork], dict[str, float]]


def _as_tensors(value, name: str):
    """A numpy array (or a tuple of them) as tensors; anything else unchanged."""
    import numpy as np

    if isinstance(value, np.ndarray):
        if value.dtype == object or not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
            raise ReductionError(f"{name} is a numpy array of {value.dtype}; give numbers")
        return torch.as_tensor(value)
    if isinstance(value, tuple) and any(isinstance(v, np.ndarray) for v in value):
        return tuple(_as_tensors(v, name) for v in value)
    return value


def _check_inputs(x, width: int, name: str) -> None:
    """An in-memory input tensor: (N, width), floating point, finite."""
    if not isinstance(x, torch.Tensor):
        raise ReductionError(f"{name} must be a tensor (N, {width}), an (x, y) tuple or an iterable of batches, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != width:
        raise ReductionError(f"{name} must have shape (N, {width}) for this network, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ReductionError(f"{name} holds {x.dtype} values; give floating-point inputs (e.g. x.float())")
    if not bool(torch.isfinite(x).all()):
        raise ReductionError(f"{name} holds NaN or infinite values; remove or fix those rows")


def _check_labels(y, task: str, outputs: int) -> torch.Tensor:
    """Reference labels: class indices in [0, outputs) of shape (N,), or finite regression
    targets of shape (N, outputs) ((N,) for one output)."""
    if not isinstance(y, torch.Tensor):
        raise ReductionError(f"y_ref must be a tensor, got {type(y).__name__}")
    if task == "classification":
        if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool:
            raise ReductionError(f"y_ref for classification must be integer class indices of shape (N,), got {y.dtype} of shape {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= outputs):
            raise ReductionError(f"y_ref holds class indices in [{int(y.min())}, {int(y.max())}]; this network has {outputs} classes (0..{outputs - 1})")
        return y
    if not y.is_floating_point():
        y = y.to(torch.get_default_dtype())
    if y.dim() == 1 and outputs == 1:
        y = y[:, None]
    if y.dim() != 2 or y.shape[1] != outputs:
        raise ReductionError(f"y_ref for regression must have shape (N, {outputs}) for this network, got {tuple(y.shape)}")
    if not bool(torch.isfinite(y).all()):
        raise ReductionError("y_ref holds NaN or infinite values; remove or fix those rows")
    return y


def reduce_network(
    net: DeepStackNetwork,
    x_check: Source,
    settings: ReduceSettings,
    task: str = "classification",
    y_ref: torch.Tensor | None = None,
    x_ref: torch.Tensor | None = None,
    evaluate: Evaluator | None = None,
    log: Callable[[StepRecord], None] | None = None,
) -> tuple[DeepStackNetwork, ReductionReport]:
    """Reduce ``net`` (not modified) and return the reduced copy and the report.

    The reduction runs on the network's device and the reduced network is returned there. The
    caller's data stay where they are: blocks of them are copied to that device as needed.

    Args:
        net: the trained network (any device; the reduction runs there).
        x_check: step-1 inputs, normally all training inputs: a tensor (N, d_0), or a streamed
            source (a DataLoader or any re-iterable of batches x or (x, y, ...); see
            :mod:`lightning_stacks.batches`). Streamed, step 1 and the per-step output change
            make passes over the batches in bounded memory. The steps that need the inputs in
            memory (``refit``'s fit set, ``bottleneck_tol``'s SVD, automatic mode's default
            reference set) use ``reservoir_sample(x_check, settings.sample, settings.seed)``
            when ``settings.sample > 0`` (then step 1 checks that sample too, as for a tensor),
            else all batches gathered on the device: set ``sample`` to bound their memory. A
            tensor's sample is a ``randperm`` subset instead, so for ``sample > 0`` a tensor and
            its streamed copy check different subsets.
        settings: manual or automatic settings.
        task: ``classification`` or ``regression`` (for automatic mode's metric).
        x_ref, y_ref: reference set for automatic mode (default: the in-memory checked inputs
            with y_ref; for a streamed x_check whose batches carry labels, y_ref defaults to them).
        evaluate: optional ``net -> {"train": m, "test": m}`` called after every step (its time
            is reported separately and excluded from ``reduce_seconds``).
        log: optional callback called with each finished :class:`StepRecord`.
    """
    if not isinstance(net, DeepStackNetwork):
        raise ReductionError(f"net is a {type(net).__name__}; reduce_network takes a DeepStackNetwork (a StackModule's .net, "
                             "or DeepStackNetwork.from_sequential(your nn.Sequential))")
    if task not in ("classification", "regression"):
        raise ReductionError(f"task={task!r} is not one of: classification, regression")
    settings = ReduceSettings.coerce(settings)
    widths = net.widths
    settings.validate(widths)
    for name, p in net.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise ReductionError(f"the network's parameter '{name}' holds NaN or infinite values; reduce a network with finite weights")
    x_check = _as_tensors(x_check, "x_check")
    streamed = is_streamed(x_check)
    if not streamed:
        if isinstance(x_check, tuple):  # an (x, y) pair: the labels are not needed here
            x_check = x_check[0]
        _check_inputs(x_check, net.input_dim, "inputs")
    if x_ref is not None:
        x_ref = _as_tensors(x_ref, "x_ref")
        _check_inputs(x_ref, net.input_dim, "x_ref")
    if y_ref is not None:
        y_ref = _check_labels(_as_tensors(y_ref, "y_ref"), task, net.output_dim)
    device, dtype = next(net.parameters()).device, next(net.parameters()).dtype
    report = ReductionReport(task=task, settings=asdict(settings))
    stacks = stack_weights(net)

    # ``checked``: what step 1 and the output change run over. ``in_memory()``: the same inputs
    # as one device tensor (plus labels if the batches carry them), built only for the steps
    # that need it.
    held: dict[str, torch.Tensor | None] = {}
    if streamed and settings.sample:
        xs, ys = reservoir_sample(x_check, settings.sample, settings.seed, width=net.input_dim)
        held = {"x": xs.to(device, dtype), "y": ys}
        checked: Source = held["x"]
    elif settings.sample and settings.sample < x_check.shape[0]:
        g = torch.Generator().manual_seed(settings.seed)
        idx = torch.randperm(x_check.shape[0], generator=g)[: settings.sample]
        checked = x_check[idx.to(x_check.device)].to(device, dtype)
        held = {"x": checked, "y": None}
    else:
        checked = x_check

    def in_memory() -> torch.Tensor:
        if "x" not in held:
            if streamed:
                parts = list(iter_pairs(x_check, 2**62, device, dtype, width=net.input_dim, need_labels=False))
                held["x"] = torch.cat([p[0] for p in parts]) if parts else torch.empty(0, net.input_dim, device=device, dtype=dtype)
                labelled = bool(parts) and all(p[1] is not None for p in parts)
                held["y"] = torch.cat([p[1] for p in parts]) if labelled else None
            else:
                held["x"], held["y"] = x_check.to(device, dtype), None
        return held["x"]

    if settings.automatic:
        if x_ref is None and not streamed and "x" in held:
            x_ref = x_check.to(device, dtype)  # a tensor's default reference set is all of it, even when step 1 samples
        elif x_ref is None:
            x_ref = in_memory()
            if y_ref is None and streamed:
                y_ref = held["y"]
        else:
            x_ref = x_ref.to(device, dtype)
        if y_ref is None:
            raise ReductionError("automatic mode (max_drop) needs reference labels y_ref")
        if x_ref.shape[0] != y_ref.shape[0]:
            hint = " (a streamed x_check with sample > 0 defaults x_ref to its sample: give x_ref too)" if streamed and settings.sample else ""
            raise ReductionError(f"reference inputs ({x_ref.shape[0]}) and labels ({y_ref.shape[0]}) differ in length{hint}")
        y_ref = y_ref.to(device)

    t_eval = 0.0
    original = stacks
    # original outputs per block are kept for inputs already in memory (as big as the inputs'
    # outputs); a streamed source recomputes them per batch instead
    out_ref: list[torch.Tensor] | None = None if streamed and checked is x_check else []

    def record(step: str, current: list[StackWeights], seconds: float, details: list[dict]) -> None:
        nonlocal t_eval
        t0 = time.perf_counter()
        rec = StepRecord(step=step, widths=[s.n for s in current], dims=[s.d_out for s in current],
                         params=count_parameters(current), seconds=seconds, details=details)
        rec.max_output_change = max_output_change(original, current, checked, out_ref)
        if evaluate is not None:
            rec.metrics = evaluate(build_network(current))
        t_eval += time.perf_counter() - t0
        report.steps.append(rec)
        if log is not None:
            log(rec)

    record("full", stacks, 0.0, [])
    t_red = 0.0
    t0 = time.perf_counter()
    zeroed = [fold_constant_neurons(st) for st in stacks]  # exact everywhere: v_k = 0 or w_k = 0
    if any(k for _, k in zeroed):
        stacks = [st for st, _ in zeroed]
        t_red += (dt := time.perf_counter() - t0)
        record("zeroed", stacks, dt, [{"stack": j + 1, "removed": k} for j, (_, k) in enumerate(zeroed)])
    fit: Fit | None = None
    if settings.refit:
        t0 = time.perf_counter()
        x = in_memory()
        targets, z = [], x
        for st in stacks:  # the original network's stack outputs on the checked inputs
            z = run_stacks([st], z)
            targets.append(z)
        fit = (x, targets)
        t_red += time.perf_counter() - t0
    if settings.merge_identity_layers:
        from ..methods.layer_sparsity import merge_identity_layers

        nonneg = settings.domain[0] >= 0 if settings.domain is not None else _all_nonnegative(checked, device, net.input_dim)
        t0 = time.perf_counter()
        stacks, merged = merge_identity_layers(stacks, nonneg)
        t_red += (dt := time.perf_counter() - t0)
        record("layers", stacks, dt, [{"stack": j + 1, "merged": m} for j, m in enumerate(merged)])
    milp = {"time_limit": settings.domain_milp_seconds, "max_milp_units": settings.domain_milp_units}
    if settings.domain is not None:
        from ..methods.stable_units import remove_stable_units

        t0 = time.perf_counter()
        # The bound propagation and the MILPs run on the CPU (scipy), whatever the reduction's device.
        stacks64, stab = remove_stable_units([_moved(st, "cpu", torch.float64) for st in stacks], *settings.domain, **milp)
        stacks = [_moved(st, device, dtype) for st in stacks64]
        t_red += (dt := time.perf_counter() - t0)
        record("domain", stacks, dt, [{"stack": j + 1, "inactive": stab.inactive[j], "active": stab.active[j],
                                       "undecided": stab.undecided[j]} for j in range(len(stacks))])
    if settings.outside:
        t0 = time.perf_counter()
        before = stacks
        stacks, det = step_outside(stacks, checked)
        t_red += (dt := time.perf_counter() - t0)
        if settings.tighten:
            from ..methods.stable_units import certified_folds

            masks = outside_masks(before, checked)
            tight = certified_folds([_moved(st, "cpu", torch.float64) for st in before], [m[0].cpu() for m in masks],
                                    [m[1].cpu() for m in masks],
                                    *settings.domain, **milp)
            for d, t in zip(det, tight["stacks"], strict=True):
                d.update(t)
        record("outside", stacks, dt, det)
    if settings.automatic:
        t0 = time.perf_counter()
        after_weak, after_cluster, tols, ks, budget = auto_tolerances_and_clusters(
            stacks, x_ref, y_ref, task, settings.max_drop, settings.seed, settings.kmeans_n_init, settings.weak_share, fit,
            backend=settings.kmeans, baseline=settings.baseline)
        dt = time.perf_counter() - t0
        t_red += dt
        report.evaluations = budget.evaluations
        wdet = [{"stack": j + 1, "tolerance": t, "before": a.n, "after": b.n} for j, (t, a, b) in enumerate(zip(tols, stacks, after_weak, strict=True))]
        record("weak", after_weak, dt / 2, wdet)
        cdet = [{"stack": j + 1, "clusters": k, "before": a.n, "after": b.n} for j, (k, a, b) in enumerate(zip(ks, after_weak, after_cluster, strict=True))]
        record("cluster", after_cluster, dt / 2, cdet)
        report.settings.update({"chosen_tolerances": tols, "chosen_clusters": ks})
        stacks = after_cluster
        if settings.polish:
            t0 = time.perf_counter()
            n_eval = budget.evaluations
            polished, removed = polish_stacks(stacks, x_ref, budget, settings.seed, settings.kmeans_n_init, settings.kmeans, fit)
            t_red += (dt := time.perf_counter() - t0)
            report.evaluations = budget.evaluations
            record("polish", polished, dt, [{"stack": j + 1, "removed": r, "before": a.n, "after": b.n, "evaluations": budget.evaluations - n_eval}
                                            for j, (r, a, b) in enumerate(zip(removed, stacks, polished, strict=True))])
            stacks = polished
    else:
        if settings.tolerances:
            t0 = time.perf_counter()
            stacks, det = step_weak(stacks, list(settings.tolerances), fit)
            t_red += (dt := time.perf_counter() - t0)
            record("weak", stacks, dt, det)
        if settings.clusters:
            t0 = time.perf_counter()
            stacks, det = step_cluster(stacks, list(settings.clusters), settings.seed, settings.kmeans_n_init, fit,
                                       backend=settings.kmeans)
            t_red += (dt := time.perf_counter() - t0)
            record("cluster", stacks, dt, det)
    if settings.bottleneck_tol >= 0:
        t0 = time.perf_counter()
        stacks, det = step_bottleneck(stacks, in_memory(), settings.bottleneck_tol)
        t_red += (dt := time.perf_counter() - t0)
        record("bottleneck", stacks, dt, det)
    report.reduce_seconds = t_red
    report.eval_seconds = t_eval
    report.kept_ids = [st.ids.tolist() if st.ids is not None else [-1] * st.n for st in stacks]
    reduced = build_network(stacks)
    # Weights that strong l2 left below 1e-20 change no float32 output but make CPU inference
    # slow (subnormal products): the reduced network is the one users deploy, so it leaves clean.
    report.flushed_tiny = reduced.flush_tiny_()
    return reduced, report

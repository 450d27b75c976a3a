"""The steps of the Reduction Algorithm on a whole network, and the list the driver runs.

The first part is the network-wide math (each step on every stack, in order). The second part
wraps each step for :func:`~.pipeline.reduce_network`: a step takes the :class:`~.run.ReductionRun`
and returns the table rows it produced, ``[(name, stacks after, per-stack details), ...]``, or
None when its settings leave it off. The driver times each step and records its rows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..batches import Source
from .auto import auto_tolerances_and_clusters, polish_stacks
from .core import (
    StackWeights,
    bottleneck_basis,
    cluster_stack,
    find_outside_neurons,
    fold_always_active,
    fold_always_active_plain,
    fold_constant_neurons,
    project_bottleneck,
    refit_outgoing,
    remove_weak,
)
from .inputs import all_nonnegative
from .run import ReductionRun
from .stacks import Fit, Ranges, moved, network_ranges, run_stacks

Row = tuple[str, list[StackWeights], list[dict]]  # (step name, the stacks after it, per-stack details)


# --------------------------------------------------------------------------- network-wide math
def outside_masks(stacks: list[StackWeights], x: Source) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Step 1's (dead, always-active) masks per stack on the checked inputs x (no reduction)."""
    return [find_outside_neurons(hmin, hmax) for hmin, hmax in network_ranges(stacks, x)[0]]


def step_outside(stacks: list[StackWeights], x: Source, chunk: int | None = None, allow_skip: bool = True,
                 scanned: tuple[Ranges, int] | None = None) -> tuple[list[StackWeights], list[dict]]:
    """Step 1 on every stack, checking the inputs x: a tensor (N, d_0) or a streamed source
    (one pass, see :func:`network_ranges`; ``scanned``: that pass's (ranges, rows), already made).
    ``allow_skip=False`` (a plain MLP's form): always-active neurons fold into fewer always-active
    neurons instead of a skip path (:func:`~.core.fold_always_active_plain`), and only where that
    removes neurons."""
    ranges, rows = scanned if scanned is not None else network_ranges(stacks, x, chunk)
    out, details = [], []
    for j, (st, (hmin, hmax)) in enumerate(zip(stacks, ranges, strict=True)):
        dead, active = find_outside_neurons(hmin, hmax)
        if rows == 0:  # nothing checked: decide nothing
            dead = active = torch.zeros_like(dead)
        red = st.keep(~dead)
        if allow_skip:
            red = fold_always_active(red, active[~dead])
        else:
            red, _ = fold_always_active_plain(red, active[~dead], hmin[~dead], hmax[~dead])
        details.append({"stack": j + 1, "dead": int(dead.sum()), "always_active": int(active.sum()), "before": st.n, "after": red.n})
        out.append(red)
    return out, details



def lossy_pass(stacks: list[StackWeights], reduce_one: Callable[[int, StackWeights], tuple[StackWeights, dict]],
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

    return lossy_pass(stacks, one, fit)


def step_cluster(stacks: list[StackWeights], clusters: list[int], seed: int, n_init: int, fit: Fit | None = None,
                 backend: str = "torch") -> tuple[list[StackWeights], list[dict]]:
    def one(j, st):
        k = clusters[j]
        if k == 0 or k >= st.n:
            return st, {"clusters": int(k), "dropped": 0}
        red, info = cluster_stack(st, k, seed=seed + j, n_init=n_init, backend=backend)
        return red, {"clusters": int(k), "dropped": info.dropped}

    return lossy_pass(stacks, one, fit)


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



# --------------------------------------------------------------------------- the driver's steps
def zeroed(run: ReductionRun) -> list[Row] | None:
    """Neurons with v_k = 0 or w_k = 0: exact to remove everywhere (a row only when there were any)."""
    folded = [fold_constant_neurons(st) for st in run.stacks]
    if not any(k for _, k in folded):
        return None
    return [("zeroed", [st for st, _ in folded], [{"stack": j + 1, "removed": k} for j, (_, k) in enumerate(folded)])]


def refit_targets(run: ReductionRun) -> list[Row] | None:
    """``refit``: the original network's stack outputs on the checked inputs (no row; timed)."""
    if not run.settings.refit:
        return None
    x = run.in_memory()
    targets, z = [], x
    for st in run.stacks:
        z = run_stacks([st], z)
        targets.append(z)
    run.fit = (x, targets)
    return []


def layers(run: ReductionRun) -> list[Row] | None:
    """``merge_identity_layers``: stack 1's ReLU layer folded when it acts as the identity."""
    s = run.settings
    if not s.merge_identity_layers:
        return None
    from ..methods.layer_sparsity import merge_identity_layers

    nonneg = s.domain[0] >= 0 if s.domain is not None else all_nonnegative(run.checked, run.device, run.input_dim)
    stacks, merged = merge_identity_layers(run.stacks, nonneg)
    return [("layers", stacks, [{"stack": j + 1, "merged": m} for j, m in enumerate(merged)])]


def _milp(run: ReductionRun) -> dict:
    return {"time_limit": run.settings.domain_milp_seconds, "max_milp_units": run.settings.domain_milp_units}


def domain(run: ReductionRun) -> list[Row] | None:
    """``domain``: units proven stable on the whole input box removed (exact on all of it)."""
    if run.settings.domain is None:
        return None
    from ..methods.stable_units import remove_stable_units

    # The bound propagation and the MILPs run on the CPU (scipy), whatever the reduction's device.
    stacks64, stab = remove_stable_units([moved(st, "cpu", torch.float64) for st in run.stacks], *run.settings.domain,
                                         allow_skip=run.form.allow_skip, **_milp(run))
    stacks = [moved(st, run.device, run.dtype) for st in stacks64]
    return [("domain", stacks, [{"stack": j + 1, "inactive": stab.inactive[j], "active": stab.active[j],
                                 "undecided": stab.undecided[j]} for j in range(len(stacks))])]


def outside(run: ReductionRun) -> list[Row] | None:
    """Step 1 on the checked inputs; with ``tighten``, how many of its decisions hold on the domain."""
    if not run.settings.outside:
        return None
    scanned = run.ranges_of(run.stacks)
    stacks, details = step_outside(run.stacks, run.checked, allow_skip=run.form.allow_skip, scanned=scanned)
    if run.settings.tighten:
        from ..methods.stable_units import certified_folds

        masks = [find_outside_neurons(hmin, hmax) for hmin, hmax in scanned[0]]
        tight = certified_folds([moved(st, "cpu", torch.float64) for st in run.stacks], [m[0].cpu() for m in masks],
                                [m[1].cpu() for m in masks], *run.settings.domain, **_milp(run))
        for d, t in zip(details, tight["stacks"], strict=True):
            d.update(t)
    return [("outside", stacks, details)]


def automatic(run: ReductionRun) -> list[Row] | None:
    """Automatic mode: the weak and the clustering step with settings searched within ``max_drop``
    (two rows; the time is split between them)."""
    s = run.settings
    if not s.automatic:
        return None
    before = run.stacks
    after_weak, after_cluster, tols, ks, run.budget = auto_tolerances_and_clusters(
        before, run.x_ref, run.y_ref, run.task, s.max_drop, s.seed, s.kmeans_n_init, s.weak_share, run.fit,
        backend=s.kmeans, baseline=s.baseline, head=run.head)
    wdet = [{"stack": j + 1, "tolerance": t, "before": a.n, "after": b.n} for j, (t, a, b) in enumerate(zip(tols, before, after_weak, strict=True))]
    cdet = [{"stack": j + 1, "clusters": k, "before": a.n, "after": b.n} for j, (k, a, b) in enumerate(zip(ks, after_weak, after_cluster, strict=True))]
    run.chosen = {"chosen_tolerances": tols, "chosen_clusters": ks}
    return [("weak", after_weak, wdet), ("cluster", after_cluster, cdet)]


def polish(run: ReductionRun) -> list[Row] | None:
    """``polish`` (automatic mode): the budget the ramp left, spent one neuron at a time."""
    s = run.settings
    if not (s.automatic and s.polish):
        return None
    n_eval = run.budget.evaluations
    polished, removed = polish_stacks(run.stacks, run.x_ref, run.budget, s.seed, s.kmeans_n_init, s.kmeans, run.fit)
    return [("polish", polished, [{"stack": j + 1, "removed": r, "before": a.n, "after": b.n, "evaluations": run.budget.evaluations - n_eval}
                                  for j, (r, a, b) in enumerate(zip(removed, run.stacks, polished, strict=True))])]


def weak(run: ReductionRun) -> list[Row] | None:
    """Step 2 with the given per-stack tolerances (manual mode)."""
    if run.settings.automatic or not run.settings.tolerances:
        return None
    stacks, details = step_weak(run.stacks, list(run.settings.tolerances), run.fit)
    return [("weak", stacks, details)]


def cluster(run: ReductionRun) -> list[Row] | None:
    """Step 3 with the given per-stack cluster counts (manual mode)."""
    s = run.settings
    if s.automatic or not s.clusters:
        return None
    stacks, details = step_cluster(run.stacks, list(s.clusters), s.seed, s.kmeans_n_init, run.fit, backend=s.kmeans)
    return [("cluster", stacks, details)]


def bottleneck(run: ReductionRun) -> list[Row] | None:
    """``bottleneck_tol``: hidden bottlenecks shrunk to the rank of their values (beyond the paper)."""
    if run.settings.bottleneck_tol < 0:
        return None
    stacks, details = step_bottleneck(run.stacks, run.in_memory(), run.settings.bottleneck_tol)
    return [("bottleneck", stacks, details)]


Step = Callable[[ReductionRun], "list[Row] | None"]

"""Automatic mode: per-stack tolerances and cluster counts chosen by binary search so the metric
on a reference set drops by at most ``max_drop`` (a cumulative budget ramp over the 2J lossy
stages), and the polish that spends what the ramp left, one neuron at a time."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..evaluation import metric_drop, metric_from_outputs
from .core import StackWeights, cluster_stack, refit_outgoing, weak_scores
from .stacks import Fit, run_stacks


class Budget:
    """Evaluates candidate stacks on the reference set and checks the metric drop.

    ``head`` maps the network's outputs on the reference inputs to what the metric reads (the
    outputs of the model the network sits in); None = the network's outputs themselves.
    """

    def __init__(self, stacks, x_ref, y_ref, task, max_drop, weak_share, baseline=None, head=None):
        self.task, self.y_ref, self.max_drop, self.weak_share = task, y_ref, max_drop, weak_share
        self.J = len(stacks)
        self.x_ref = x_ref
        self.head = head
        self.ref_metric = self.metric(run_stacks(stacks, x_ref)) if baseline is None else baseline
        self.evaluations = 0

    def metric(self, out):
        """The metric of the network's outputs ``out`` on the reference inputs."""
        return metric_from_outputs(out if self.head is None else self.head(out), self.y_ref, self.task)

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
        return self.drop(self.metric(run_stacks(trial, z_j, start=j)))

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
                                 baseline: float | None = None, head=None):
    """Automatic mode: per stack, the largest weak-removal prefix, then the fewest clusters, whose
    metric drop on (x_ref, y_ref) stays within the ramped budget (with ``fit``: each candidate is
    refitted first, see :func:`_lossy_pass`). Returns the stacks after each phase, the chosen
    tolerances and cluster counts, and the budget (which counted the evaluations)."""
    J = len(stacks)
    budget = Budget(stacks, x_ref, y_ref, task, max_drop, weak_share, baseline, head)

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


def polish_stacks(stacks: list[StackWeights], x_ref, budget: Budget, seed: int, n_init: int, backend: str = "torch",
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


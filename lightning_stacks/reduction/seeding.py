"""The seedings of the weighted k-means of step 3: the initial centres, for all restarts at once.

- ``"greedy-batched"`` (default): greedy weighted k-means++ (scikit-learn's: each step draws
  ``2 + ln k`` candidates by weight x squared distance and keeps the one that lowers the inertia
  most), every restart's candidates scored in one batched call per step; same draws and picks as
  ``"k-means++"``, fewer kernels.
- ``"k-means||"`` (Bahmani et al. 2012): a few rounds each sample ~2k candidates at once, then the
  greedy step picks k of them, each candidate weighted by the points nearest to it.
- ``"k-means++"``: the step-by-step replica of scikit-learn's seeding.
"""

from __future__ import annotations

import math

import torch

GRAM_MAX_ELEMENTS = 4096 * 4096
# One E-step block (rows, n_init * k) of distances is kept under this many bytes; larger blocks
# gain nothing in GEMM speed and fall out of cache on CPUs.
DIST_BLOCK_BYTES = 32 * 2**20
# On accelerators the stopping test needs a device-to-host copy; it runs every this many Lloyd
# iterations (a restart that converges in between is frozen on the device, so the result is the
# same as checking every iteration). On the CPU the test costs nothing and runs every iteration.
CHECK_EVERY = 8
# k-means|| seeding: rounds of sampling, and how many candidates a round draws in expectation
# (l = OVERSAMPLING * k). Bahmani et al. find 5 rounds with l = 2k as good as k-means++.
PARALLEL_ROUNDS = 5
OVERSAMPLING = 2
# Seedings (see the module docstring); the first is the default.
INIT_METHODS = ("greedy-batched", "k-means||", "k-means++")
DEFAULT_INIT = INIT_METHODS[0]



def _cpu_paths(device: torch.device) -> bool:
    """Whether to take the CPU code paths: index_add_ sums, the Gram E-step, a stopping test every
    iteration. Elsewhere the paths avoid atomics (deterministic) and host syncs; tests run those
    paths on the CPU too by patching this function."""
    return device.type == "cpu"


def _seed_wants_gram(n: int, k: int, R: int, init: str) -> bool:
    """Whether the seeding alone pays for the Gram matrix X X^T (n^2 p): when it would otherwise
    compute at least n rows of distances (GEMM rows, each n p) over all R restarts."""
    rows = R * (2 + int(math.log(k))) * k  # k-means++: trials per step, k steps
    if init == "k-means||" and _parallel_rounds_shrink(n, k):
        rows = R * PARALLEL_ROUNDS * OVERSAMPLING * k  # expected candidates of all rounds
    return n <= rows


def _parallel_rounds_shrink(n: int, k: int) -> bool:
    """Whether k-means|| runs its rounds: only while they can leave fewer candidates than points
    (their expected candidate count ``1 + PARALLEL_ROUNDS * l`` is below n). Otherwise every point
    is a candidate with its own weight, which makes k-means|| the ``"greedy-batched"`` seeding."""
    return n > 1 + PARALLEL_ROUNDS * OVERSAMPLING * k




def _kmeanspp(X, w, k: int, R: int, seed: int, gram=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy weighted k-means++ for R restarts at once; returns centres (R, k, p), indices (R, k).

    Each step draws ``2 + int(log k)`` candidates with probability proportional to
    ``w_i * D(x_i)^2`` and keeps the one that most lowers the weighted potential (sklearn's
    ``_kmeans_plusplus``); the first centre is drawn with probability proportional to ``w_i``.
    Candidate distances come from rows of ``gram`` (n, n) = X X^T when given, else from a GEMM.
    """
    n = X.shape[0]
    T = 2 + int(math.log(k))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    # All draws up front: (R,) for the first centre, (R, k-1, T) for the candidates.
    u_first = torch.rand(R, generator=gen, dtype=torch.float64).to(X.device, X.dtype)
    u_cand = torch.rand(R, max(k - 1, 0), T, generator=gen, dtype=torch.float64).to(X.device, X.dtype)

    sq = (X * X).sum(dim=1)  # (n,)
    XT = X.T.contiguous()  # (p, n): MKL is slow on a transposed operand with few columns
    def dist_to(idx: torch.Tensor) -> torch.Tensor:  # idx (m,) -> (m, n) squared distances
        dots = gram.index_select(0, idx) if gram is not None else X.index_select(0, idx) @ XT
        return (sq.index_select(0, idx)[:, None] - 2 * dots + sq[None, :]).clamp_min_(0)

    cw = torch.cumsum(w, dim=0)
    # side right, like numpy's choice: a draw never lands on a weight-0 point.
    first = torch.searchsorted(cw, (u_first * cw[-1]).unsqueeze(1), right=True).squeeze(1).clamp_max_(n - 1)  # (R,)
    idx = torch.empty(R, k, dtype=torch.long, device=X.device)
    idx[:, 0] = first
    closest = dist_to(first)  # (R, n)
    # Products with the weight vector as multiply-and-sum: BLAS gemv is far slower at these sizes.
    pot = (closest * w).sum(dim=1)  # (R,)
    for c in range(1, k):
        # Rounding can push the cumulative sum past the draw; clamp like sklearn.
        cum = torch.cumsum(closest * w, dim=1)  # (R, n)
        cand = torch.searchsorted(cum, u_cand[:, c - 1] * pot[:, None]).clamp_max_(n - 1)  # (R, T)
        d = torch.minimum(dist_to(cand.reshape(-1)).view(R, T, n), closest[:, None, :])  # (R, T, n)
        cand_pot = (d * w).sum(dim=2)  # (R, T)
        j = torch.argmin(cand_pot, dim=1, keepdim=True)  # (R, 1)
        pot = cand_pot.gather(1, j).squeeze(1)
        closest = d.gather(1, j[..., None].expand(R, 1, n)).squeeze(1)
        idx[:, c] = cand.gather(1, j).squeeze(1)
    return X.index_select(0, idx.flatten()).view(R, k, -1), idx


def _kmeanspp_batched(X, w, k: int, R: int, seed: int, gram=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``"greedy-batched"``: the greedy weighted k-means++ of :func:`_kmeanspp` (same draws, same
    picks up to rounding) with fewer, batched kernels per step (:func:`_greedy_reduce` over all
    points); returns centres (R, k, p), indices (R, k).

    The weighted distance matrix of all points is precomputed (if it fits) on accelerators, where
    the n^2 work is cheap and each kernel saved counts, and on the CPU when the steps would compute
    at least n rows of it anyway (``n <= R T k``, the rule that builds ``gram`` for the seeding);
    otherwise each step computes its rows, from ``gram`` when given. Either way the picks are
    the same up to rounding.
    """
    n = X.shape[0]
    T = 2 + int(math.log(k))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    u_first = torch.rand(R, generator=gen, dtype=torch.float64).to(X.device, X.dtype)
    u_cand = torch.rand(R, k - 1, T, generator=gen, dtype=torch.float64).to(X.device, X.dtype)
    sq = (X * X).sum(dim=1)  # (n,)
    precompute = n <= R * T * k or not _cpu_paths(X.device)  # on accelerators n^2 work is cheap, kernels are not
    idx = _greedy_reduce(X, sq, None, w[None, :], k, u_first, u_cand, gram, precompute=precompute)
    return X.index_select(0, idx.flatten()).view(R, k, -1), idx


def _kmeans_parallel(X, w, k: int, R: int, seed: int, gram=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``"k-means||"`` for R restarts at once; returns centres (R, k, p), row indices (R, k).

    The rounds (see the module docstring) run on X's device, a few batched kernels each over one
    (R, candidates, n) block of distances (rows of ``gram`` = X X^T when given, else a GEMM), and
    one host sync (the largest candidate count over restarts). The candidate weights are summed on
    the host (exact, and in a fixed order on every device). :func:`_greedy_reduce` then picks the
    ``k`` centres among the union of all restarts' candidates (a restart gives weight 0 to the
    others'). Without rounds (:func:`_parallel_rounds_shrink`) this is :func:`_kmeanspp_batched`.
    """
    n = X.shape[0]
    if not _parallel_rounds_shrink(n, k):
        return _kmeanspp_batched(X, w, k, R, seed, gram)
    dev, dt = X.device, X.dtype
    L, ell = PARALLEL_ROUNDS, OVERSAMPLING * k
    T = 2 + int(math.log(k))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    # Every draw from the CPU generator, in a fixed order: the same on any device.
    u_first, u_round, u_red_first, u_red = (
        torch.rand(*shape, generator=gen, dtype=torch.float64).to(dev, dt) for shape in ((R,), (L, R, n), (R,), (R, k - 1, T))
    )
    sq = (X * X).sum(dim=1)  # (n,)
    XT = X.T.contiguous() if gram is None else None  # (p, n): MKL is slow on a transposed operand

    def half_dist(idx: torch.Tensor) -> torch.Tensor:  # idx (m,) -> |c|^2 - 2 c.x, (m, n)
        if gram is not None:
            return gram.index_select(0, idx).mul_(-2).add_(sq.index_select(0, idx)[:, None])
        return torch.addmm(sq.index_select(0, idx)[:, None], X.index_select(0, idx), XT, alpha=-2)

    cw = torch.cumsum(w, dim=0)
    # side right, like numpy's choice: a draw never lands on a weight-0 point.
    first = torch.searchsorted(cw, (u_first * cw[-1]).unsqueeze(1), right=True).squeeze(1).clamp_max_(n - 1)  # (R,)
    closest = (half_dist(first) + sq).clamp_min_(0)  # (R, n): squared distance to the nearest candidate
    owner = first[:, None].expand(R, n).contiguous()  # (R, n): that candidate's row
    block = max(1, DIST_BLOCK_BYTES // (X.element_size() * R * n))  # candidates per restart per block
    for r in range(L):
        mass = closest * w  # (R, n)
        picked = u_round[r] * mass.sum(dim=1, keepdim=True) < ell * mass  # P = min(1, l mass / phi)
        count = picked.sum(dim=1)  # (R,)
        most = int(count.max())  # host sync
        if most == 0:  # every point of positive weight sits on a candidate
            break
        # Each restart's picks in row order, padded with its first centre (a repeat changes
        # nothing: only a strictly nearer candidate takes a point over).
        picks = torch.argsort(picked.to(torch.uint8), dim=1, descending=True, stable=True)[:, :most]  # (R, most)
        picks = torch.where(torch.arange(most, device=dev) < count[:, None], picks, first[:, None])
        for s in range(0, most, block):
            c = picks[:, s:s + block]
            h, j = half_dist(c.reshape(-1)).view(R, c.shape[1], n).min(dim=1)  # (R, n); first on ties
            d = (h + sq).clamp_min_(0)
            nearer = d < closest
            closest = torch.where(nearer, d, closest)
            owner = torch.where(nearer, c.gather(1, j), owner)
    # Candidate weights: the weight of the points nearest to each candidate, summed on the host.
    Wc = torch.zeros(R, n, dtype=torch.float64).scatter_add_(1, owner.cpu(), w.to("cpu", torch.float64).expand(R, n))
    cand = torch.nonzero((Wc > 0).any(dim=0)).squeeze(1)  # (m,) rows of X, ascending
    wc = Wc.index_select(1, cand).to(dev, dt)  # (R, m)
    cand = cand.to(dev)
    pos = _greedy_reduce(X, sq, cand, wc, k, u_red_first, u_red, gram, precompute=True)  # (R, k)
    idx = cand[pos]
    return X.index_select(0, idx.flatten()).view(R, k, -1), idx


def _greedy_reduce(X, sq, cand, wc, k: int, u_first, u_cand, gram=None, precompute: bool = True) -> torch.Tensor:
    """Greedy weighted k-means++ over candidate rows of X, for R restarts; returns positions (R, k).

    sklearn's ``_kmeans_plusplus`` on the points ``X[cand]`` (all rows when ``cand`` is None) with
    weights ``wc``: (R, m), one row per restart, or (1, m) shared by all. The first centre is drawn
    with probability proportional to weight; then each step draws ``T = u_cand.shape[2]``
    candidates proportionally to ``weight * D^2`` and keeps the one that lowers the weighted
    potential most (the first on ties). All restarts' candidates are scored in one batched call
    on weighted squared distances ``wc_b |x_a - x_b|^2``: weighting commutes exactly with the
    minimum (``w >= 0``), so the sums are sklearn's, and a step is nine small kernels when those
    distances are precomputed (``precompute`` and at most ``GRAM_MAX_ELEMENTS`` entries: (m, m)
    shared, or (R, m, m)), about fifteen when each step computes its (R T, m) rows (from ``gram``
    when given, else a GEMM); :func:`_kmeanspp` takes about twenty-one.
    """
    R = u_first.shape[0]
    m = wc.shape[1]
    Xm = X if cand is None else X.index_select(0, cand)  # (m, p)
    sqm = sq if cand is None else sq.index_select(0, cand)  # (m,)
    if precompute and wc.shape[0] * m * m <= GRAM_MAX_ELEMENTS:
        if gram is None:
            G = Xm @ Xm.T
        else:
            G = gram if cand is None else gram.index_select(0, cand).index_select(1, cand)
        D = G.mul(-2).add_(sqm[:, None]).add_(sqm[None, :]).clamp_min_(0)  # (m, m)
        Dw = (D.mul_(wc) if wc.shape[0] == 1 else D * wc[:, None, :]).view(-1, m)  # (R' m, m)
        del D, G
        off = None if wc.shape[0] == 1 else (torch.arange(R, device=X.device) * m)[:, None]

        def rows(pos: torch.Tensor) -> torch.Tensor:  # (R, t) positions -> (R, t, m)
            return Dw.index_select(0, (pos if off is None else pos + off).flatten()).view(R, -1, m)
    else:
        XmT = Xm.T.contiguous() if gram is None else None

        def rows(pos: torch.Tensor) -> torch.Tensor:
            f = pos.flatten()
            if gram is None:
                d = torch.addmm(sqm.index_select(0, f)[:, None], Xm.index_select(0, f), XmT, alpha=-2)
            else:
                g = gram.index_select(0, f if cand is None else cand.index_select(0, f))
                d = (g if cand is None else g.index_select(1, cand)).mul(-2).add_(sqm.index_select(0, f)[:, None])
            return d.add_(sqm[None, :]).clamp_min_(0).view(R, -1, m).mul_(wc[:, None, :])

    cw = torch.cumsum(wc, dim=1).expand(R, m).contiguous()
    # side right, like numpy's choice: a draw never lands on a weight-0 point.
    first = torch.searchsorted(cw, u_first[:, None] * cw[:, -1:], right=True).clamp_max_(m - 1)  # (R, 1)
    closest = rows(first).squeeze(1)  # (R, m): weighted squared distance to the nearest centre
    cands, choices = [], []
    for c in range(k - 1):
        cum = torch.cumsum(closest, dim=1)
        # u < 1, so u * pot <= pot = cum[-1]: the left search stays inside the row, and lands on
        # a point of mass 0 (weight 0, or a centre) only when every point has mass 0.
        cand_c = torch.searchsorted(cum, u_cand[:, c] * cum[:, -1:])  # (R, T)
        d = torch.minimum(rows(cand_c), closest[:, None, :])  # (R, T, m)
        j = torch.argmin(d.sum(dim=2), dim=1, keepdim=True)  # (R, 1)
        closest = d.gather(1, j[..., None].expand(R, 1, m)).squeeze(1)
        cands.append(cand_c)
        choices.append(j)
    if k == 1:
        return first
    picked = torch.stack(cands, dim=1).gather(2, torch.stack(choices, dim=1)).squeeze(2)  # (R, k-1)
    return torch.cat([first, picked], dim=1)

"""Weighted k-means in torch, on the data's own device (the clustering of SPEC section 2, step 3).

Objective, for points ``x_i`` (n, p) with weights ``w_i >= 0`` and centres ``c_j`` (k, p)::

    inertia = sum_i w_i |x_i - c_{l_i}|^2,   l_i = argmin_j |x_i - c_j|^2

Lloyd follows scikit-learn's ``KMeans(algorithm="lloyd")`` step for step, so that both reach the
same centres from the same start (the tests check this to 1e-10): Lloyd iterations on data centred
by its mean, sklearn's stopping rule and its relocation of empty clusters.

Seeding (``init``) is sklearn's greedy weighted k-means++ (each of ``k`` steps draws
``T = 2 + int(log k)`` candidates with probability proportional to ``w_i D_i^2``, ``D_i`` the
distance to the nearest centre so far, and keeps the one that lowers the weighted potential
``sum_i w_i D_i^2`` most), in one of three layouts:

- ``"greedy-batched"`` (the default): every step scores the candidates of all restarts in one
  batched call on weighted squared distances ``w_b |x_a - x_b|^2``, precomputed as one (n, n)
  matrix where that pays and fits (on accelerators always, on the CPU when ``n <= n_init T k``)
  or computed per step. A step is about nine torch ops with the matrix (fifteen without) instead
  of about twenty-one. On a GPU, where such steps cost kernel launches rather than arithmetic,
  that should make the chain of ``k`` steps about twice as fast (not measured: no GPU was at
  hand); on the CPU the seeding is faster too (bench/kmeans_speed.py). Same draws and same picks
  as ``"k-means++"`` (up to rounding; identical in the tests).
- ``"k-means||"`` (Bahmani et al. 2012, "Scalable k-means++"): a first centre drawn with
  probability proportional to ``w_i``, then ``PARALLEL_ROUNDS`` rounds in which every point joins
  the candidates at once, independently, with probability ``min(1, l w_i D_i^2 / sum_j w_j
  D_j^2)`` (``l = OVERSAMPLING * k``); each candidate is weighted by the total weight of the
  points nearest to it (so there are at most ``min(n, 1 + PARALLEL_ROUNDS * l)`` of them), and
  the greedy steps above reduce that weighted set to ``k`` centres. When ``n <= 1 +
  PARALLEL_ROUNDS * l`` the rounds cannot shrink the set and are skipped (then this is
  ``"greedy-batched"``). Not the default: its rounds compute ``PARALLEL_ROUNDS * l = 10 k``
  candidate distance rows per restart, more than the ``T k`` of the greedy steps (T <= 8 for
  k < 3000), so at the sizes here (n up to a few thousand neurons, and also n = 20000 measured)
  it is slower than ``"greedy-batched"`` on the CPU and takes more kernels and host syncs, while
  its reduction keeps the chain of ``k`` greedy steps anyway. It is kept for much larger n, where
  it makes each of those steps small.
- ``"k-means++"``: the replica of sklearn's seeding as it was (one step computes its candidates'
  distance rows and reduces them in about twenty kernels), kept for comparison.

No seeding without that chain came near sklearn's inertia: picking several centres per step
(batches of ``D^2`` samples, or of greedy picks, growing with the centres chosen) ended 14% to
290% above it at k = 100 and 300 on the bench's 1-D data, and plain (non-greedy) k-means++ 19%
to 37% above.
All three reach scikit-learn's inertia (``KMeans(n_init=3)``) within about 1% on the bench's kink
representations and the tests' data (``bench/kmeans_speed.py`` prints them against sklearn).
What differs from sklearn is how the work is laid out:

- the ``n_init`` restarts live in one ``(n_init, k, p)`` tensor, so each Lloyd E-step is one GEMM
  for all restarts, and nothing leaves the device;
- on the CPU, when ``n < k p`` (kink representations: p = 2 d_in is large), the E-step's products
  x.c come from the Gram matrix X X^T (O(n^2) per iteration instead of O(n k p));
- the random draws come from a CPU ``torch.Generator`` and are moved to the device, so one seed
  gives the same seeding on CPU and CUDA; off the CPU the sums avoid atomics (k-means||'s
  candidate weights are summed on the host), so a seed gives the same result on every run;
- off the CPU the stopping test (a device-to-host copy) runs every ``CHECK_EVERY`` iterations only.
"""

from __future__ import annotations

import math
import numbers

import torch

from .seeding import (
    CHECK_EVERY,
    DEFAULT_INIT,
    DIST_BLOCK_BYTES,
    GRAM_MAX_ELEMENTS,
    INIT_METHODS,
    _cpu_paths,
    _kmeans_parallel,
    _kmeanspp,
    _kmeanspp_batched,
    _seed_wants_gram,
)


# The Gram matrix X X^T (seeding, CPU Lloyd) is used only while it has at most this many entries.
def weighted_kmeans_torch(
    X: torch.Tensor,
    weights: torch.Tensor,
    k: int,
    seed: int = 0,
    n_init: int = 3,
    max_iter: int = 300,
    tol: float = 1e-4,
    init: torch.Tensor | str | None = DEFAULT_INIT,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Weighted k-means (Lloyd) with greedy k-means++ seeding, batched over restarts.

    Runs on ``X``'s device in ``X``'s dtype (float32 or float64). Stopping rule as scikit-learn:
    a restart stops when its labels no longer change, or when the summed squared centre shift is
    ``<= tol * mean_f var(X[:, f])`` (unweighted per-feature variance, sklearn's ``_tolerance``).
    The restart with the lowest weighted inertia is returned.

    Empty clusters: a cluster that receives no weight during Lloyd takes over the point (of
    positive weight) farthest from its centre, as in sklearn. If the final assignment still leaves
    a cluster without points, it takes the farthest point of a cluster with two or more, so
    exactly ``k`` clusters come out whenever X has ``>= k`` distinct rows; with fewer distinct
    rows, fewer non-empty clusters come out (no error). A weight-0 point still gets a label.

    Args:
        X: (n, p) points, finite, float32 or float64.
        weights: (n,) weights, finite, ``>= 0``, positive sum; cast to X's dtype and device.
        k: number of clusters, ``1 <= k <= n``. ``k == n`` returns each point as its own cluster.
        seed: seeds the CPU ``torch.Generator`` that drives the seeding.
        n_init: restarts from independent seedings (ignored when ``init`` is a tensor).
        max_iter: Lloyd iterations per restart, ``>= 1``.
        tol: relative tolerance on the centre shift, ``>= 0``.
        init: the seeding, ``"greedy-batched"`` (default; ``None`` means the same),
            ``"k-means||"`` or ``"k-means++"`` (see the module docstring); or (k, p) initial
            centres, which skip seeding and run once from them.

    Returns:
        labels (n,) long on X's device, centres (k, p) in X's dtype, inertia (float).
        Off the CPU, Lloyd holds a (n_init, k, n) one-hot matrix: sized for neuron counts, not
        for millions of points.

    Raises:
        ValueError: on a bad shape, dtype, bound, or a non-finite / negative value.
    """
    init = DEFAULT_INIT if init is None else init
    n, p = _check_args(X, weights, k, n_init, max_iter, tol, init)
    k = int(k)  # numpy integers are fine
    X = X.detach()
    w = weights.detach().to(device=X.device, dtype=X.dtype)
    if k == n:
        return torch.arange(n, device=X.device), X.clone(), 0.0
    # Centring does not change the optimum but keeps |x|^2 - 2 x.c + |c|^2 accurate (as sklearn).
    mean = X.mean(dim=0)
    Xc = X - mean
    tol_abs = float(Xc.var(dim=0, unbiased=False).mean()) * tol if tol > 0 else 0.0
    given = isinstance(init, torch.Tensor)
    R = 1 if given else n_init
    # The Gram matrix pays off in Lloyd's E-step when n < k p; Lloyd uses it on CPU only (on GPUs
    # the GEMM is cheap, and index_add_ would make the result vary from run to run).
    seed_gram = not given and _seed_wants_gram(n, k, R, init)
    lloyd_gram = _cpu_paths(X.device) and n < k * p
    gram = Xc @ Xc.T if (seed_gram or lloyd_gram) and n * n <= GRAM_MAX_ELEMENTS else None  # (n, n)
    if given:
        C0 = (init.to(device=X.device, dtype=X.dtype) - mean)[None]  # (1, k, p)
        dots = None if gram is None or not lloyd_gram else (Xc @ C0[0].T)[:, None, :]  # (n, 1, k)
    else:
        # The new seedings read the Gram matrix whenever it exists; k-means++ keeps its old rule.
        sg = gram if seed_gram or init != "k-means++" else None
        C0, idx = _seed(Xc, w, k, R, seed, init, sg)  # (R, k, p), (R, k)
        dots = None if gram is None or not lloyd_gram else gram.index_select(1, idx.flatten()).view(n, R, k)
    labels, C, inertia = _lloyd(Xc, w, C0, max_iter, tol_abs, gram if dots is not None else None, dots)
    # Lowest inertia; ties keep the earliest restart, like sklearn.
    best = int(torch.argmin(inertia))
    labels, C = _fill_empty_labels(Xc, w, labels[best], C[best])
    inertia = _inertia(Xc, w, C[None], labels[None])[0]
    return labels, C + mean, float(inertia)


def seed_centres(
    X: torch.Tensor, weights: torch.Tensor, k: int, seed: int = 0, n_init: int = 3, init: str = DEFAULT_INIT
) -> torch.Tensor:
    """The seeding step of :func:`weighted_kmeans_torch` alone: initial centres (n_init, k, p).

    The centres that :func:`weighted_kmeans_torch` starts Lloyd from for the same arguments, up to
    rounding (the full call may read distances from a Gram matrix it builds for Lloyd). Each
    centre is a row of ``X``. For benches and tests.
    """
    n, _ = _check_args(X, weights, k, n_init, 1, 0.0, init)
    X = X.detach()
    w = weights.detach().to(device=X.device, dtype=X.dtype)
    mean = X.mean(dim=0)
    Xc = X - mean
    gram = Xc @ Xc.T if _seed_wants_gram(n, int(k), n_init, init) and n * n <= GRAM_MAX_ELEMENTS else None
    idx = _seed(Xc, w, int(k), n_init, seed, init, gram)[1]  # (n_init, k)
    return X.index_select(0, idx.flatten()).view(n_init, int(k), -1)


def _seed(X, w, k: int, R: int, seed: int, init: str, gram=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres (R, k, p) and their row indices (R, k) from the seeding ``init``."""
    fn = {"greedy-batched": _kmeanspp_batched, "k-means||": _kmeans_parallel, "k-means++": _kmeanspp}[init]
    return fn(X, w, k, R, seed, gram)


# --------------------------------------------------------------------------- checks


def _check_args(X, weights, k, n_init, max_iter, tol, init) -> tuple[int, int]:
    if X.dim() != 2:
        raise ValueError(f"X must be (n, p), got shape {tuple(X.shape)}")
    if X.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"X dtype must be one of torch.float32, torch.float64, got {X.dtype}")
    n, p = X.shape
    if weights.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), got {tuple(weights.shape)}")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= n:
        raise ValueError(f"k must be an int in [1, {n}] (1 <= k <= n), got {k!r}")
    if n_init < 1 or max_iter < 1:
        raise ValueError(f"n_init and max_iter must be >= 1, got n_init={n_init}, max_iter={max_iter}")
    if not (tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be finite and >= 0, got {tol}")
    if not bool(torch.isfinite(X).all()):
        raise ValueError("X must be finite (found nan or inf)")
    if not bool(torch.isfinite(weights).all()):
        raise ValueError("weights must be finite (found nan or inf)")
    if bool((weights < 0).any()):
        raise ValueError("weights must be >= 0 (found a negative weight)")
    if not bool((weights > 0).any()):
        raise ValueError("weights must have a positive sum (all weights are 0)")
    if isinstance(init, str):
        if init not in INIT_METHODS:
            raise ValueError(f"init must be one of {', '.join(INIT_METHODS)} or a (k, p) tensor, got {init!r}")
    elif not isinstance(init, torch.Tensor):
        raise ValueError(f"init must be one of {', '.join(INIT_METHODS)} or a (k, p) tensor, got {init!r}")
    else:
        if init.shape != (k, p):
            raise ValueError(f"init must have shape ({k}, {p}), got {tuple(init.shape)}")
        if not bool(torch.isfinite(init).all()):
            raise ValueError("init must be finite (found nan or inf)")
    return n, p


# --------------------------------------------------------------------------- seeding



# --------------------------------------------------------------------------- Lloyd


def _assign(X: torch.Tensor, C: torch.Tensor, dots: torch.Tensor | None = None) -> torch.Tensor:
    """Nearest centre per point for every restart: labels (R, n).

    Minimises ``|c|^2 - 2 x.c`` (like sklearn, the ``|x|^2`` term is left out: it does not change
    the argmin). ``x.c`` is one GEMM per row block against all restarts' centres stacked as
    (R * k, p), or read from ``dots`` (n, R, k) when given.
    """
    R, k, p = C.shape
    n = X.shape[0]
    Cf = C.reshape(R * k, p)
    csq = (Cf * Cf).sum(dim=1)  # (R k,)
    rows = max(1, DIST_BLOCK_BYTES // (X.element_size() * R * k))
    labels = torch.empty(R, n, dtype=torch.long, device=X.device)
    for s in range(0, n, rows):
        if dots is None:
            D = torch.addmm(csq, X[s:s + rows], Cf.T, alpha=-2).view(-1, R, k)  # (b, R, k)
        else:
            D = csq.view(R, k) - 2 * dots[s:s + rows]
        labels[:, s:s + rows] = D.argmin(dim=2).T  # first index on ties, like sklearn
    return labels


def _weighted_sums(X: torch.Tensor, w: torch.Tensor, labels: torch.Tensor, k: int):
    """Per-cluster weighted sums (R, k, p) and weights (R, k).

    On CPU index_add_ (O(n p) per restart); elsewhere a weighted one-hot matrix product, because
    index_add_/scatter_add_ use atomics on CUDA and would make the result vary from run to run.
    """
    R, n = labels.shape
    Xw = X * w[:, None]
    if _cpu_paths(X.device):
        S = X.new_zeros(R, k, X.shape[1])
        W = X.new_zeros(R, k)
        for r in range(R):
            S[r].index_add_(0, labels[r], Xw)
            W[r].index_add_(0, labels[r], w)
        return S, W
    A = X.new_zeros(R, k, n).scatter_(1, labels[:, None, :], w.expand(R, 1, n))  # (R, k, n)
    return A @ X, A.sum(dim=2)


def _relocate_empty(X, w, C_old, labels, S, W):
    """sklearn's ``_relocate_empty_clusters_dense`` for all restarts at once, in place on S, W.

    Returns the point given to each cluster (R, k) and where that happened (R, k) bool.

    Every weight-empty cluster takes one point, the farthest ones from their (old) centres first;
    the point's weighted coordinates move from its cluster's sum to the empty one's. Points of
    weight 0 are not taken (they would leave the cluster empty). Nothing moves in a restart where
    every point sits on its centre (fewer distinct points than clusters).
    """
    R, k = W.shape
    n = X.shape[0]
    empty = W == 0  # (R, k)
    dist = _own_sq_dist(X, C_old, labels)  # (R, n)
    dist = torch.where(w > 0, dist, torch.full_like(dist, -1.0))
    m = min(k, n)
    far_d, far = torch.topk(dist, m, dim=1)  # (R, m), farthest first
    rank = (torch.cumsum(empty.long(), dim=1) - 1).clamp_(0, m - 1)  # (R, k): which far point
    f = far.gather(1, rank)  # (R, k) point given to cluster j if j is empty
    ok = empty & (far_d.gather(1, rank) > 0) & (far_d[:, :1] > 0)  # (R, k)
    okf = ok.to(X.dtype)
    wf = w.index_select(0, f.flatten()).view(R, k) * okf  # (R, k)
    moved = X.index_select(0, f.flatten()).view(R, k, -1) * wf[..., None]  # (R, k, p)
    old = labels.gather(1, f)  # (R, k)
    if _cpu_paths(X.device):
        S.scatter_add_(1, old[..., None].expand_as(moved), -moved)
        W.scatter_add_(1, old, -wf)
    else:  # several empties may draw from one cluster: a one-hot product keeps the sum's order fixed
        onehot = torch.nn.functional.one_hot(old, k).to(X.dtype).transpose(1, 2)  # (R, k, k)
        S.sub_(onehot @ moved)
        W.sub_((onehot @ wf[..., None]).squeeze(2))
    S.copy_(torch.where(ok[..., None], moved, S))
    W.copy_(torch.where(ok, wf, W))
    return f, ok


def _lloyd(X, w, C, max_iter: int, tol: float, gram=None, dots=None):
    """Lloyd iterations for R restarts from C (R, k, p); returns labels (R, n), centres, inertia (R,).

    Mirrors sklearn's ``_kmeans_single_lloyd``: assign, update (relocating empty clusters, an
    empty cluster that stays empty sits on the heaviest one), then stop on unchanged labels
    ("strict") or a summed squared shift ``<= tol``; a restart that did not stop strictly gets its
    labels recomputed against its final centres. Stopped restarts leave the batch at the next
    check (frozen on the device until then, so the check interval does not change the result).

    With ``gram`` (n, n) = X X^T and ``dots`` (n, R, k) = X C^T given, the products x.c of the next
    E-step come from the Gram matrix: x.c_j = sum_{l in j} w_l (x.x_l) / W_j, O(n^2) per restart
    instead of the O(n k p) GEMM (worth it when n < k p). Centres are still averaged explicitly.
    """
    R, k, p = C.shape
    n = X.shape[0]
    dev = X.device
    on_cpu = _cpu_paths(dev)
    Gw = None if gram is None else gram * w[:, None]  # (n, n): row l is w_l x_l.X^T
    out_labels = torch.empty(R, n, dtype=torch.long, device=dev)
    out_C = torch.empty_like(C)
    ids = torch.arange(R, device=dev)  # which restart each batch row is
    labels_old = torch.full((R, n), -1, dtype=torch.long, device=dev)
    done = torch.zeros(R, dtype=torch.bool, device=dev)
    strict = torch.zeros(R, dtype=torch.bool, device=dev)

    def finish(rows: torch.Tensor) -> None:  # sklearn's final E-step, for non-strict stops
        lab = _assign(X, C[rows], None if dots is None else dots[:, rows])
        lab = torch.where(strict[rows, None], labels_old[rows], lab)
        out_labels[ids[rows]] = lab
        out_C[ids[rows]] = C[rows]

    for it in range(max_iter):
        a = C.shape[0]  # restarts still running
        labels = _assign(X, C, dots)  # (a, n)
        S, W = _weighted_sums(X, w, labels, k)
        members = labels
        empty = W == 0
        # On CPU the check is free, so skip the relocation work when nothing is empty.
        if not on_cpu or bool(empty.any()):
            f, ok = _relocate_empty(X, w, C, labels, S, W)
            empty = W == 0
            if Gw is not None:  # the moved points now count for their new clusters
                members = labels.clone()
                flat = (torch.arange(a, device=dev)[:, None] * n + f)[ok]
                members.view(-1)[flat] = torch.arange(k, device=dev).expand(a, k)[ok]
        safe_W = torch.where(empty, torch.ones_like(W), W)
        heavy = W.argmax(dim=1)  # (a,)
        C_new = S / safe_W[..., None]
        C_new = torch.where(empty[..., None], C_new.gather(1, heavy[:, None, None].expand(a, 1, p)), C_new)
        shift = ((C_new - C) ** 2).sum(dim=(1, 2))  # (a,)
        same = (labels == labels_old).all(dim=1)
        # Frozen restarts keep their state; the rest take this iteration's.
        C = torch.where(done[:, None, None], C, C_new)
        if Gw is not None:
            dots_new = _gram_dots(Gw, members, safe_W, empty, heavy)
            dots = torch.where(done[None, :, None], dots, dots_new)
        labels_old = torch.where(done[:, None], labels_old, labels)
        strict = strict | (~done & same)
        done = done | same | (shift <= tol)
        if on_cpu or (it + 1) % CHECK_EVERY == 0:
            fin = done.cpu()
            if bool(fin.any()):
                finish(fin.to(dev))
                keep = (~fin).to(dev)
                if not bool(keep.any()):
                    break
                C, labels_old, done, strict, ids = C[keep], labels_old[keep], done[keep], strict[keep], ids[keep]
                dots = None if dots is None else dots[:, keep]
    else:
        finish(torch.ones_like(done))
    return out_labels, out_C, _inertia(X, w, out_C, out_labels)


def _gram_dots(Gw, members, W, empty, heavy) -> torch.Tensor:
    """X C^T for centres c_j = sum_{l in j} w_l x_l / W_j, from Gw = diag(w) X X^T: (n, a, k).

    A cluster left empty sits on the heaviest one, so it takes that column.
    """
    a, k = W.shape
    n = Gw.shape[0]
    St = Gw.new_zeros(a, k, n)
    for r in range(a):
        St[r].index_add_(0, members[r], Gw)  # contiguous rows: cache-friendly on CPU
    St = St / W[..., None]
    St = torch.where(empty[..., None], St.gather(1, heavy[:, None, None].expand(a, 1, n)), St)
    return St.permute(2, 0, 1)  # (n, a, k)


def _own_sq_dist(X, C, labels) -> torch.Tensor:
    """|x_i - c_{l_i}|^2 per restart from explicit differences (as sklearn): (R, n)."""
    # index_select, not advanced indexing: the latter is slow on small CPU tensors with threads.
    return torch.stack([((X - C[r].index_select(0, labels[r])) ** 2).sum(dim=1) for r in range(C.shape[0])])


def _inertia(X, w, C, labels) -> torch.Tensor:
    """sum_i w_i |x_i - c_{l_i}|^2 per restart: (R,)."""
    return (_own_sq_dist(X, C, labels) * w).sum(dim=1)


def _fill_empty_labels(X, w, labels, C):
    """Give every cluster without points one point, while X has enough distinct rows.

    Rare (Lloyd's relocation already fills weight-empty clusters); happens when the final
    assignment empties a cluster. Each such cluster takes the point farthest from its centre
    among clusters of two or more points; the donor's centre is re-averaged. If that point sits on
    its centre, no cluster holds two distinct points, so X has fewer distinct rows than k.
    """
    k = C.shape[0]
    counts = torch.bincount(labels, minlength=k)  # (k,)
    if bool((counts > 0).all()):
        return labels, C
    labels, C = labels.clone(), C.clone()
    for j in torch.nonzero(counts == 0).flatten().tolist():
        dist = _own_sq_dist(X, C[None], labels[None])[0]
        dist = torch.where(counts.index_select(0, labels) >= 2, dist, torch.full_like(dist, -1.0))
        f = int(torch.argmax(dist))
        if float(dist[f]) <= 0:
            break
        donor = int(labels[f])
        labels[f] = j
        C[j] = X[f]
        counts[donor] -= 1
        counts[j] = 1
        members = labels == donor
        wd = w[members].sum()
        if float(wd) > 0:
            C[donor] = (X[members] * w[members, None]).sum(dim=0) / wd
    return labels, C

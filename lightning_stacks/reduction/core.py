"""Reduction Algorithm math (SPEC section 2): pure functions on one stack's tensors.

Notation: ``v_k`` = row k of V (n, d_in), ``b_k`` its bias, ``w_k`` = column k of W (d_out, n).
Stack function: ``z -> W relu(V z + b) + c + skip(z)``.

Nothing here touches a Trainer or a Module: every function takes a :class:`StackWeights` (plain
tensors) and returns a new one plus what it decided. Folding and merging arithmetic runs in
float64 and is cast back, so exact rewrites stay exact to float32 round-off.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

# The scan of pre-activations materialises (chunk, n) blocks; this bounds one block's bytes. On
# the CPU small blocks stay in cache between the matmul, the min/max and the next product (1024
# rows at n = 1024, ~15% faster than 4096); on an accelerator large blocks mean few kernel launches.
SCAN_BLOCK_BYTES = 256 * 2**20
SCAN_BLOCK_BYTES_CPU = 4 * 2**20


def scan_block_bytes(device: torch.device) -> int:
    """Bytes of one (chunk, n) block of the scan on ``device``."""
    return SCAN_BLOCK_BYTES_CPU if device.type == "cpu" else SCAN_BLOCK_BYTES


@dataclass(frozen=True)
class StackWeights:
    """One stack's parameters as plain tensors (no autograd).

    Attributes:
        V: (n, d_in) incoming weights. b: (n,) biases.
        W: (d_out, n) outgoing weights. c: (d_out,) bottleneck bias.
        skip: ``affine`` (A1 (m, d_in), A2 (d_out, m)), ``direct`` (S (d_out, d_in)) or ``none``.
    """

    V: torch.Tensor
    b: torch.Tensor
    W: torch.Tensor
    c: torch.Tensor
    skip: str = "affine"
    A1: torch.Tensor | None = None
    A2: torch.Tensor | None = None
    S: torch.Tensor | None = None
    ids: torch.Tensor | None = None  # (n,) index of each neuron in the unreduced stack; -1 = new

    @property
    def n(self) -> int:
        return self.V.shape[0]

    @property
    def d_in(self) -> int:
        return self.V.shape[1]

    @property
    def d_out(self) -> int:
        return self.W.shape[0]

    def affine_matrix(self) -> torch.Tensor:
        """The skip path as one (d_out, d_in) matrix (zeros for ``none``)."""
        if self.skip == "affine":
            return self.A2 @ self.A1
        if self.skip == "direct":
            return self.S
        return self.V.new_zeros(self.d_out, self.d_in)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Stack output for z (B, d_in) -> (B, d_out); the reference the module must match."""
        out = torch.addmm(self.c, torch.addmm(self.b, z, self.V.T).clamp_min_(0), self.W.T)  # fused: no (B, n) temporaries
        if self.skip != "none":
            out.addmm_(z, self.affine_matrix().T)
        return out

    def keep(self, mask: torch.Tensor) -> StackWeights:
        """Only the ReLU neurons where ``mask`` (n,) is true (index_select surgery)."""
        idx = torch.nonzero(mask, as_tuple=False).flatten()
        ids = None if self.ids is None else self.ids.index_select(0, idx.to(self.ids.device))
        return replace(self, V=self.V.index_select(0, idx), b=self.b.index_select(0, idx), W=self.W.index_select(1, idx), ids=ids)

    def to(self, dtype: torch.dtype) -> StackWeights:
        conv = {k: (None if getattr(self, k) is None else getattr(self, k).to(dtype)) for k in ("V", "b", "W", "c", "A1", "A2", "S")}  # ids stay int
        return replace(self, **conv)


def _check_stack(st: StackWeights) -> None:
    n = st.n
    if st.b.shape != (n,) or st.W.shape[1] != n or st.c.shape != (st.d_out,):
        raise ValueError(
            f"inconsistent stack shapes: V {tuple(st.V.shape)}, b {tuple(st.b.shape)}, W {tuple(st.W.shape)}, c {tuple(st.c.shape)}"
        )


# --------------------------------------------------------------------------- step 1
def preactivation_range(V: torch.Tensor, b: torch.Tensor, Z: torch.Tensor, chunk: int | None = None,
                        on_block: Callable[[torch.Tensor, torch.Tensor], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Min and max over the rows of Z of ``h_k(z) = v_k.z + b_k``, in chunked matmuls.

    Args:
        V: (n, d_in), b: (n,), Z: (N, d_in) on the same device.
        chunk: rows per block; default keeps a block under :func:`scan_block_bytes`.
        on_block: called as ``on_block(H, z)`` with each block's pre-activations H (B, n) and
            inputs z (B, d_in), e.g. to compute the stack's outputs in the same pass. It may
            modify H in place (it is not used afterwards).

    Returns:
        (hmin, hmax), each (n,). For N = 0 they are (+inf, -inf).
    """
    if Z.dim() != 2 or Z.shape[1] != V.shape[1]:
        raise ValueError(f"stack inputs must have shape (N, {V.shape[1]}), got {tuple(Z.shape)}")
    n = V.shape[0]
    hmin = torch.full((n,), math.inf, dtype=V.dtype, device=V.device)
    hmax = torch.full((n,), -math.inf, dtype=V.dtype, device=V.device)
    if n == 0 and on_block is None:
        return hmin, hmax
    chunk = chunk or max(1, scan_block_bytes(V.device) // (max(n, 1) * V.element_size()))
    for i in range(0, Z.shape[0], chunk):
        z = Z[i : i + chunk].to(V.device, V.dtype)
        H = torch.addmm(b, z, V.T)  # (B, n)
        if n:  # amin and amax, not aminmax: on the CPU its column reduction is ~8x slower than both
            torch.minimum(hmin, H.amin(0), out=hmin)
            torch.maximum(hmax, H.amax(0), out=hmax)
        if on_block is not None:
            on_block(H, z)
    return hmin, hmax


def find_outside_neurons(hmin: torch.Tensor, hmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Classify neurons from their pre-activation range over the checked inputs.

    Returns:
        (dead, active) boolean masks (n,): dead if ``h <= 0`` on every input, always active if
        ``h > 0`` on every input.
    """
    return hmax <= 0, hmin > 0


def balanced_factors(M: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``M = A2 A1`` with A2 (d_out, m), A1 (m, d_in) from a thin SVD: ``A2 = U sqrt(s)``,
    ``A1 = sqrt(s) Vt`` (the factorization with minimal |A1|^2 + |A2|^2). Exact when rank(M) <= m;
    m = min(d_out, d_in) always is."""
    U, s, Vt = torch.linalg.svd(M, full_matrices=False)
    k = min(m, s.numel())
    r = s[:k].sqrt()
    A2 = M.new_zeros(M.shape[0], m)
    A1 = M.new_zeros(m, M.shape[1])
    A2[:, :k] = U[:, :k] * r
    A1[:k] = r[:, None] * Vt[:k]
    return A1, A2


def fold_always_active(st: StackWeights, active: torch.Tensor) -> StackWeights:
    """Fold the neurons in ``active`` into the affine path and the bias c, then delete them.

    For an always-active neuron, ``w_k relu(v_k.z + b_k) = w_k v_k.z + w_k b_k``, so
    ``W_aff = sum_k w_k v_k^T`` joins the skip matrix and ``sum_k b_k w_k`` joins c.
    ``affine``: ``A2 A1 + W_aff`` is refactorized by SVD (exact, balanced). ``direct``: added to S.
    ``none`` (plain network): an affine path of width min(d_in, d_out) is added.
    Exact wherever every folded neuron is active (on the checked inputs and their convex hull).
    """
    _check_stack(st)
    if active.shape != (st.n,):
        raise ValueError(f"active mask must have shape ({st.n},), got {tuple(active.shape)}")
    if not bool(active.any()):
        return st
    dtype = st.V.dtype
    s64 = st.to(torch.float64)
    Wm, Vm, bm = s64.W[:, active], s64.V[active], s64.b[active]
    W_aff = Wm @ Vm  # (d_out, d_in)
    c = s64.c + Wm @ bm
    folded = replace(s64, c=c)
    if st.skip == "direct":
        folded = replace(folded, S=s64.S + W_aff)
    else:
        m = min(st.d_in, st.d_out)
        A1, A2 = balanced_factors(s64.affine_matrix() + W_aff, m)
        folded = replace(folded, skip="affine", A1=A1, A2=A2, S=None)
    return folded.keep(~active).to(dtype)


def fold_always_active_plain(st: StackWeights, active: torch.Tensor, hmin: torch.Tensor, hmax: torch.Tensor,
                             rank_tol: float = 1e-10) -> tuple[StackWeights, int]:
    """Fold always-active neurons without adding a skip path (a plain ReLU MLP keeps its form).

    The neurons M in ``active`` contribute the affine map ``A z + W_M b_M`` with
    ``A = W_M V_M`` (d_out, d_in) of rank r <= min(|M|, d_in, d_out). With the thin SVD
    ``A = U S Q^T``, r new neurons ``v_i = sqrt(s_i) q_i``, ``w_i = sqrt(s_i) u_i`` carry ``A z``;
    each gets the bias ``beta_i = -L_i`` where ``L_i`` is a certified lower bound of ``v_i . z``
    over the checked inputs (``v_i`` is a combination of the v_k, k in M, whose values
    ``v_k . z = h_k(z) - b_k`` lie in ``[hmin_k - b_k, hmax_k - b_k]``), so the new neurons are
    active there and ``w_i relu(v_i . z + beta_i) = w_i v_i . z + w_i beta_i``; c absorbs the
    constants. Exact wherever the folded neurons' pre-activations stay within their checked ranges
    (the checked inputs and their convex hull), like :func:`fold_always_active`.

    Only taken when it removes neurons (r < |M|); otherwise the stack comes back unchanged.

    Args:
        st: a stack (any skip kind; the skip path is left as it is).
        active: (n,) mask of always-active neurons.
        hmin, hmax: (n,) pre-activation range of every neuron over the checked inputs.
        rank_tol: singular values below ``rank_tol * s_max`` count as zero.

    Returns:
        (stack, neurons removed). New neurons have ``ids`` -1.
    """
    _check_stack(st)
    m = int(active.sum())
    if m == 0:
        return st, 0
    dtype = st.V.dtype
    s64 = st.to(torch.float64)
    Wm, Vm, bm = s64.W[:, active], s64.V[active], s64.b[active]  # (d_out, m), (m, d_in), (m,)
    lo_h = hmin[active].double() - bm
    hi_h = hmax[active].double() - bm
    U, s, _ = torch.linalg.svd(Wm @ Vm, full_matrices=False)
    r = int((s > rank_tol * s.max().clamp_min(1e-300)).sum()) if s.numel() else 0
    if r >= m:
        return st, 0
    root = s[:r].sqrt()
    alpha = (U[:, :r].T @ Wm) / root[:, None]  # (r, m): v_i = alpha_i V_M
    v_new = alpha @ Vm  # (r, d_in) = sqrt(s_i) q_i
    w_new = U[:, :r] * root  # (d_out, r)
    lower = torch.minimum(alpha * lo_h, alpha * hi_h).sum(1)  # (r,) certified lower bound of v_i . z
    beta = -lower + 1e-9 * (lower.abs() + 1)  # a hair inside: float32 round-off must not clip
    c = s64.c + Wm @ bm - w_new @ beta
    rest = s64.keep(~active)
    ids = None
    if rest.ids is not None:
        ids = torch.cat([rest.ids, torch.full((r,), -1, dtype=rest.ids.dtype, device=rest.ids.device)])
    out = replace(rest, V=torch.cat([rest.V, v_new]), b=torch.cat([rest.b, beta]), W=torch.cat([rest.W, w_new], dim=1), c=c, ids=ids)
    return out.to(dtype), m - r


def remove_dead(st: StackWeights, dead: torch.Tensor) -> StackWeights:
    """Delete neurons that never activate (exact on the checked inputs)."""
    return st.keep(~dead)


# --------------------------------------------------------------------------- step 2
def weak_scores(st: StackWeights) -> torch.Tensor:
    """``s_k = sqrt(|v_k|^2 + b_k^2) * |w_k|``, shape (n,). A neuron moves the stack output by at
    most ``s_k sqrt(|z|^2 + 1)`` (Cauchy-Schwarz)."""
    vb = torch.sqrt((st.V.double() ** 2).sum(1) + st.b.double() ** 2)
    return (vb * st.W.double().norm(dim=0)).to(st.V.dtype)


def select_weak(scores: torch.Tensor, tol: float) -> torch.Tensor:
    """The longest ascending-score prefix whose cumulative score is <= ``tol``.

    Returns:
        Boolean mask (n,) of neurons to remove.
    """
    if not tol >= 0:  # also refuses NaN
        raise ValueError(f"tolerance must be >= 0, got {tol}")
    order = torch.argsort(scores.double(), stable=True)
    csum = torch.cumsum(scores.double()[order], 0)
    count = int((csum <= tol).sum().item())
    mask = torch.zeros(scores.shape[0], dtype=torch.bool, device=scores.device)
    mask[order[:count]] = True
    return mask


def remove_weak(st: StackWeights, tol: float) -> tuple[StackWeights, float, int]:
    """Step 2. Returns the reduced stack, the certified bound coefficient ``sum_removed s_k``
    (output moves by at most that times ``sqrt(|z|^2 + 1)``) and the number removed."""
    scores = weak_scores(st)
    mask = select_weak(scores, tol)
    return st.keep(~mask), float(scores.double()[mask].sum().item()), int(mask.sum().item())


def weak_bound(removed_score_sum: float, z: torch.Tensor) -> torch.Tensor:
    """Per-input certified bound ``sum_removed s_k * sqrt(|z|^2 + 1)`` for z (B, d_in) -> (B,)."""
    return removed_score_sum * torch.sqrt((z.double() ** 2).sum(1) + 1)


# --------------------------------------------------------------------------- step 3
def fold_constant_neurons(st: StackWeights, eps: float = 0.0) -> tuple[StackWeights, int]:
    """Neurons with ``v_k = 0`` output the constant ``relu(b_k) w_k``: add it to c and delete them;
    neurons with ``w_k = 0`` contribute nothing: delete them. Both would break the kink
    representation (division by |v_k|) and are exact to remove."""
    nv = st.V.double().norm(dim=1)
    nw = st.W.double().norm(dim=0)
    const = nv <= eps
    drop = const | (nw <= eps)
    if not bool(drop.any()):
        return st, 0
    c = (st.c.double() + st.W.double()[:, const] @ torch.relu(st.b.double()[const])).to(st.c.dtype)
    return replace(st, c=c).keep(~drop), int(drop.sum().item())


def kink_representation(st: StackWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """``r_k = [b_k v_k / |v_k|^2, v_k / |v_k|]`` (n, 2 d_in) and weights ``|v_k| |w_k|`` (n,).
    Requires no zero rows of V (see :func:`fold_constant_neurons`)."""
    V, b = st.V.double(), st.b.double()
    nv = V.norm(dim=1)
    if bool((nv == 0).any()):
        raise ValueError("kink representation needs |v_k| > 0; fold constant neurons first")
    R = torch.cat([(b / nv**2)[:, None] * V, V / nv[:, None]], dim=1)
    return R, nv * st.W.double().norm(dim=0)


def weighted_kmeans(R: torch.Tensor, weights: torch.Tensor, k: int, seed: int = 0, n_init: int = 3,
                    backend: str = "torch") -> torch.Tensor:
    """Weighted k-means labels (n,) on R's device: ``torch`` runs on R's device
    (:func:`~.kmeans.weighted_kmeans_torch`), ``sklearn`` is scikit-learn's
    ``KMeans(k).fit(R, sample_weight=weights)`` on the CPU (the reference)."""
    n = R.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"number of clusters must be in [1, {n}], got {k}")
    if k == n:
        return torch.arange(n, device=R.device)
    if backend == "torch":
        from .kmeans import weighted_kmeans_torch

        return weighted_kmeans_torch(R, weights, k, seed=seed, n_init=n_init)[0]
    if backend != "sklearn":
        raise ValueError(f"k-means backend {backend!r} is not one of: torch, sklearn")
    from sklearn.cluster import KMeans

    Rn = R.detach().cpu().double().numpy()
    wn = weights.detach().cpu().double().numpy()
    # sklearn warns (and may return fewer clusters) when points coincide; that is harmless here.
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed)
    labels = km.fit(Rn, sample_weight=wn).labels_
    return torch.as_tensor(np.asarray(labels, dtype=np.int64), device=R.device)


@dataclass(frozen=True)
class MergeInfo:
    clusters: int  # requested
    neurons: int  # produced
    dropped: int  # clusters whose merged neuron vanished (opposing w_k or v_k)


def merge_clusters(st: StackWeights, labels: torch.Tensor, eps: float = 1e-12) -> tuple[StackWeights, MergeInfo]:
    """Replace each cluster C of neurons by one neuron (SPEC section 2, step 3)::

        xi = sum_C(-b_k |w_k|) / sum_C(|w_k| |v_k|)      wh = sum_C w_k |v_k|,  s = |wh|
        u  = normalize(sum_C |w_k| v_k)                  G = sqrt(xi^2 + 1)
        v  = u sqrt(s / G),  b = -xi |v|,  w = wh / sqrt(s / G)

    Exact when the cluster's neurons share direction and kink; a singleton cluster keeps its
    function and comes out balanced (``|w| = sqrt(|v|^2 + b^2)``). A cluster whose ``s`` or
    ``|sum |w_k| v_k|`` is ~0 (opposing neurons) yields no neuron and is counted in ``dropped``.

    Args:
        st: stack with no zero rows of V or zero columns of W.
        labels: (n,) cluster index per neuron, values in [0, K).
    """
    _check_stack(st)
    if labels.shape != (st.n,):
        raise ValueError(f"labels must have shape ({st.n},), got {tuple(labels.shape)}")
    if st.n == 0:
        return st, MergeInfo(0, 0, 0)
    dtype = st.V.dtype
    V, b, W = st.V.double(), st.b.double(), st.W.double()
    labels = labels.to(V.device).long()
    _, labels = torch.unique(labels, return_inverse=True)  # compact ids 0..K-1
    K = int(labels.max().item()) + 1
    nv, nw = V.norm(dim=1), W.norm(dim=0)  # (n,), (n,)
    num = torch.zeros(K, dtype=V.dtype, device=V.device).index_add_(0, labels, -b * nw)
    den = torch.zeros(K, dtype=V.dtype, device=V.device).index_add_(0, labels, nw * nv)
    wh = torch.zeros(W.shape[0], K, dtype=V.dtype, device=V.device).index_add_(1, labels, W * nv)  # (d_out, K)
    us = torch.zeros(K, V.shape[1], dtype=V.dtype, device=V.device).index_add_(0, labels, nw[:, None] * V)  # (K, d_in)
    s = wh.norm(dim=0)
    us_norm = us.norm(dim=1)
    scale_ref = (nw * nv).max()
    ok = (s > eps * scale_ref) & (us_norm > eps * nw.max() * nv.max()) & (den > eps * scale_ref)
    xi = torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(den))
    u = us / torch.where(ok, us_norm, torch.ones_like(us_norm))[:, None]
    G = torch.sqrt(xi**2 + 1)
    scale = torch.sqrt(torch.where(ok, s, torch.ones_like(s)) / G)  # (K,)
    v_new = u * scale[:, None]
    b_new = -xi * scale  # |v_new| = scale since |u| = 1
    w_new = wh / scale[None, :]
    ids = None
    if st.ids is not None:  # a singleton cluster keeps its neuron's identity; a merge is new
        sizes = torch.zeros(K, dtype=torch.long, device=labels.device).index_add_(0, labels, torch.ones_like(labels))
        first = torch.full((K,), -1, dtype=torch.long, device=labels.device).scatter_(0, labels, st.ids.to(labels.device))
        ids = torch.where(sizes == 1, first, torch.full_like(first, -1))[ok]
    merged = replace(st, V=v_new[ok].to(dtype), b=b_new[ok].to(dtype), W=w_new[:, ok].to(dtype), ids=ids)
    return merged, MergeInfo(K, int(ok.sum().item()), int((~ok).sum().item()))


def cluster_stack(st: StackWeights, k: int, seed: int = 0, n_init: int = 3, backend: str = "torch") -> tuple[StackWeights, MergeInfo]:
    """Step 3 for one stack: fold constant neurons, weighted k-means on kink representations into
    ``k`` clusters, merge each cluster. ``k >= n`` leaves the stack unchanged."""
    if k < 1:
        raise ValueError(f"number of clusters must be >= 1, got {k}")
    st, _ = fold_constant_neurons(st)
    if k >= st.n:
        return st, MergeInfo(k, st.n, 0)
    R, omega = kink_representation(st)
    labels = weighted_kmeans(R, omega, k, seed=seed, n_init=n_init, backend=backend)
    return merge_clusters(st, labels)


# --------------------------------------------------------------------------- beyond the paper
def refit_outgoing(st: StackWeights, Z: torch.Tensor, target: torch.Tensor, ridge: float = 1e-9, chunk: int = 16384) -> StackWeights:
    """Least-squares refit of the outgoing weights W and bias c (V, b and the skip path fixed).

    Minimizes ``sum_rows |W relu(V z + b) + c + skip(z) - target|^2`` over (W, c) on the inputs
    Z (N, d_in) with targets (N, d_out), typically the original network's stack outputs. The
    current (W, c) is a feasible point, so the fit error on Z never grows (up to the tiny ridge
    ``ridge * mean diag`` that keeps the normal equations well posed).
    """
    if Z.shape[0] != target.shape[0] or target.shape[1] != st.d_out or Z.shape[1] != st.d_in:
        raise ValueError(f"refit needs Z (N, {st.d_in}) and target (N, {st.d_out}), got {tuple(Z.shape)} and {tuple(target.shape)}")
    K = st.n
    s64 = st.to(torch.float64)
    aff = s64.affine_matrix().T if st.skip != "none" else None
    G = torch.zeros(K + 1, K + 1, dtype=torch.float64, device=Z.device)
    R = torch.zeros(K + 1, st.d_out, dtype=torch.float64, device=Z.device)
    for i in range(0, Z.shape[0], chunk):
        z = Z[i : i + chunk].double()
        phi = torch.cat([torch.relu(z @ s64.V.T + s64.b), torch.ones(z.shape[0], 1, dtype=torch.float64, device=Z.device)], 1)
        t = target[i : i + chunk].double()
        if aff is not None:
            t = t - z @ aff
        G += phi.T @ phi
        R += phi.T @ t
    G += torch.eye(K + 1, dtype=torch.float64, device=Z.device) * ridge * max(G.diagonal().mean().item(), 1e-30)
    beta = torch.linalg.solve(G, R)  # (K + 1, d_out)
    return replace(st, W=beta[:K].T.contiguous().to(st.W.dtype), c=beta[K].to(st.c.dtype))


def bottleneck_basis(Z: torch.Tensor, rel_tol: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Affine subspace holding the bottleneck values Z (N, d) up to ``rel_tol``.

    Returns:
        P (d, r) orthonormal basis, mu (d,) the mean, s (d,) all singular values of Z - mu;
        r = number of singular values > ``rel_tol * s_max`` (at least 1).
    """
    if not rel_tol >= 0:
        raise ValueError(f"bottleneck tolerance must be >= 0, got {rel_tol}")
    Zd = Z.double()
    mu = Zd.mean(0)
    _, s, Vt = torch.linalg.svd(Zd - mu, full_matrices=False)
    r = max(1, int((s > rel_tol * s.max().clamp_min(1e-300)).sum().item())) if s.numel() else 1
    return Vt[:r].T.contiguous(), mu, s


def _with_skip(st: StackWeights, M: torch.Tensor) -> StackWeights:
    """``st`` with its skip path set to the matrix M (refactorized for ``affine``)."""
    if st.skip == "direct":
        return replace(st, S=M)
    if st.skip == "affine":
        A1, A2 = balanced_factors(M, min(M.shape))
        return replace(st, A1=A1, A2=A2)
    return st


def project_bottleneck(st: StackWeights, nxt: StackWeights, P: torch.Tensor, mu: torch.Tensor) -> tuple[StackWeights, StackWeights]:
    """Shrink the bottleneck between ``st`` and ``nxt`` from d to r = P.shape[1].

    The new bottleneck carries ``y = P^T z`` (so ``st``'s W, c and skip are multiplied by P^T)
    and ``nxt`` reads ``z ~ P y + q`` with ``q = (I - P P^T) mu`` (so its V and skip are
    multiplied by P and the constant goes into b and c). Exact wherever z lies in the affine
    subspace ``mu + span(P)``; skip paths are refactorized to width min(d_in, d_out).
    A ``none`` skip stays ``none`` (its stack's outputs have no skip term to project).
    """
    if P.shape[0] != st.d_out or nxt.d_in != st.d_out or mu.shape != (st.d_out,):
        raise ValueError(f"basis {tuple(P.shape)} / mean {tuple(mu.shape)} do not fit a bottleneck of width {st.d_out}")
    dtype = st.V.dtype
    a, b = st.to(torch.float64), nxt.to(torch.float64)
    P = P.double().to(a.V.device)
    q = mu.double().to(a.V.device) - P @ (P.T @ mu.double().to(a.V.device))
    new_st = replace(a, W=P.T @ a.W, c=P.T @ a.c)
    if a.skip != "none":
        new_st = _with_skip(new_st, P.T @ a.affine_matrix())
    new_nxt = replace(b, V=b.V @ P, b=b.b + b.V @ q)
    if b.skip != "none":
        M = b.affine_matrix()
        new_nxt = _with_skip(replace(new_nxt, c=b.c + M @ q), M @ P)
    return new_st.to(dtype), new_nxt.to(dtype)

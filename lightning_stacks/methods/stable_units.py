"""Stable units over a whole input domain (Kumar, Serra & Ramalingam; SPEC section 4).

For a box domain D = [lower, upper]^{d_0}, a ReLU unit is *stably inactive* if
``max_{x in D} h(x) <= 0`` and *stably active* if ``min_{x in D} h(x) > 0``. Inactive units are
deleted, active ones fold into the affine path (as in step 1 of the Reduction Algorithm); the
result is equivalent to the original network on all of D, not only on training points.

Bounds, cheapest first, each sound:
- ``interval``: interval arithmetic through the stacks;
- ``linear``: forward linear bounds ``L x + l0 <= z <= U x + u0`` through the stacks (ReLUs
  relaxed by their triangle), concretized on the box — exact for the first stack;
- ``milp``: for units still undecided, the exact max/min of h over D by a mixed-integer program
  (big-M ReLU encoding with a binary per unstable earlier unit), solved by HiGHS through
  ``scipy.optimize.milp`` with a time limit; a unit whose solve runs out of time stays undecided
  unless the solver's dual bound already decides it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import LightningStacksError
from ..reduction.core import StackWeights, fold_always_active, fold_always_active_plain


class DomainError(LightningStacksError):
    """The domain is not a valid box for this network."""


def make_box(lower, upper, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and broadcast a box domain to (dim,) float64 tensors."""
    lo = torch.as_tensor(lower, dtype=torch.float64).flatten()
    hi = torch.as_tensor(upper, dtype=torch.float64).flatten()
    if lo.numel() == 1:
        lo = lo.expand(dim).clone()
    if hi.numel() == 1:
        hi = hi.expand(dim).clone()
    if lo.numel() != dim or hi.numel() != dim:
        raise DomainError(f"domain bounds must be scalars or have the input dimension {dim}; got {lo.numel()} and {hi.numel()} values")
    if not torch.all(torch.isfinite(lo)) or not torch.all(torch.isfinite(hi)):
        raise DomainError("domain bounds must be finite")
    if torch.any(lo > hi):
        bad = int(torch.nonzero(lo > hi)[0])
        raise DomainError(f"domain lower bound exceeds the upper bound at input {bad}: {lo[bad].item()} > {hi[bad].item()}")
    return lo, hi


# --------------------------------------------------------------------------- bounds
def interval_bounds(stacks: list[StackWeights], lo: torch.Tensor, hi: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Interval bounds (hmin, hmax) of every stack's pre-activations over the box."""
    out = []
    zl, zu = lo, hi
    for st in stacks:
        s = st.to(torch.float64)
        c0, r = (zl + zu) / 2, (zu - zl) / 2
        h0, hr = s.V @ c0 + s.b, s.V.abs() @ r
        hl, hu = h0 - hr, h0 + hr
        out.append((hl, hu))
        al, au = hl.clamp_min(0), hu.clamp_min(0)
        Wp, Wn = s.W.clamp_min(0), s.W.clamp_max(0)
        ol = Wp @ al + Wn @ au + s.c
        ou = Wp @ au + Wn @ al + s.c
        if st.skip != "none":
            M = s.affine_matrix()
            m0, mr = M @ c0, M.abs() @ r
            ol, ou = ol + m0 - mr, ou + m0 + mr
        zl, zu = ol, ou
    return out


def _concretize(A: torch.Tensor, a0: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, upper: bool) -> torch.Tensor:
    """max (upper) or min over the box of ``A x + a0`` for each row of A."""
    Ap, An = A.clamp_min(0), A.clamp_max(0)
    return (Ap @ hi + An @ lo + a0) if upper else (Ap @ lo + An @ hi + a0)


def linear_bounds(stacks: list[StackWeights], lo: torch.Tensor, hi: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Forward linear bound propagation: (hmin, hmax) per stack, sound and exact for stack 1."""
    d0 = lo.numel()
    # z in [Lz x + lz, Uz x + uz]; start with the identity
    Lz = Uz = torch.eye(d0, dtype=torch.float64)
    lz = uz = torch.zeros(d0, dtype=torch.float64)
    out = []
    for st in stacks:
        s = st.to(torch.float64)
        Vp, Vn = s.V.clamp_min(0), s.V.clamp_max(0)
        HL, hl0 = Vp @ Lz + Vn @ Uz, Vp @ lz + Vn @ uz + s.b  # h >= HL x + hl0
        HU, hu0 = Vp @ Uz + Vn @ Lz, Vp @ uz + Vn @ lz + s.b  # h <= HU x + hu0
        hmin, hmax = _concretize(HL, hl0, lo, hi, False), _concretize(HU, hu0, lo, hi, True)
        out.append((hmin, hmax))
        # ReLU relaxation: inactive -> 0; active -> h; unstable -> upper chord, lower 0 or h
        act, dead = hmin >= 0, hmax <= 0
        unst = ~(act | dead)
        slope = torch.where(unst, hmax / (hmax - hmin).clamp_min(1e-30), act.double())
        AU = slope[:, None] * HU
        au0 = slope * hu0 - torch.where(unst, slope * hmin, torch.zeros_like(hmin))
        lam = (act | (unst & (hmax > -hmin))).double()
        AL, al0 = lam[:, None] * HL, lam * hl0
        Wp, Wn = s.W.clamp_min(0), s.W.clamp_max(0)
        NL, nl0 = Wp @ AL + Wn @ AU, Wp @ al0 + Wn @ au0 + s.c
        NU, nu0 = Wp @ AU + Wn @ AL, Wp @ au0 + Wn @ al0 + s.c
        if st.skip != "none":
            M = s.affine_matrix()
            Mp, Mn = M.clamp_min(0), M.clamp_max(0)
            NL, nl0 = NL + Mp @ Lz + Mn @ Uz, nl0 + Mp @ lz + Mn @ uz
            NU, nu0 = NU + Mp @ Uz + Mn @ Lz, nu0 + Mp @ uz + Mn @ lz
        Lz, lz, Uz, uz = NL, nl0, NU, nu0
    return out


def tightest_bounds(stacks, lo, hi) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Elementwise best of the interval and linear bounds."""
    ib, lb = interval_bounds(stacks, lo, hi), linear_bounds(stacks, lo, hi)
    return [(torch.maximum(a[0], b[0]), torch.minimum(a[1], b[1])) for a, b in zip(ib, lb, strict=True)]


# --------------------------------------------------------------------------- MILP
class _Program:
    """The network's stacks 1..j-1 over the box as MILP constraints (big-M ReLUs).

    Variables: x (d0), then per earlier stack t: a_t (n_t, the ReLU outputs) and z_t (d_t, the
    stack output); binaries for unstable units. h_t = V_t z_{t-1} + b_t stays an expression.
    """

    def __init__(self, stacks: list[StackWeights], bounds, lo, hi, j: int):
        self.cols_lb, self.cols_ub, self.integrality = [], [], []
        self.rows, self.row_lb, self.row_ub = [], [], []
        self._cons = None  # the rows as one sparse matrix, built on the first MILP
        self.x = self._vars(lo.numpy(), hi.numpy())
        zin = [{i: 1.0} for i in self.x]  # each z coordinate as a sparse linear expression
        zconst = np.zeros(len(self.x))
        for t in range(j):
            s = stacks[t].to(torch.float64)
            V, b, W, c = s.V.numpy(), s.b.numpy(), s.W.numpy(), s.c.numpy()
            hl, hu = (v.numpy() for v in bounds[t])
            h_expr = [self._combine(zin, zconst, V[k], b[k]) for k in range(s.n)]
            a_idx = self._vars(np.zeros(s.n), np.maximum(hu, 0))
            for k in range(s.n):
                hk, hk0 = h_expr[k]
                ak = a_idx[k]
                if hu[k] <= 0:  # inactive on D: a = 0
                    self._row({ak: 1.0}, 0.0, 0.0)
                elif hl[k] >= 0:  # active on D: a = h
                    self._row({**{i: -v for i, v in hk.items()}, ak: 1.0}, hk0, hk0)
                else:  # a >= h, a <= h - hl (1 - y), a <= hu y
                    (y,) = self._vars(np.zeros(1), np.ones(1), integer=True)
                    self._row({**{i: -v for i, v in hk.items()}, ak: 1.0}, hk0, np.inf)
                    self._row({**{i: -v for i, v in hk.items()}, ak: 1.0, y: -hl[k]}, -np.inf, hk0 - hl[k])
                    self._row({ak: 1.0, y: -hu[k]}, -np.inf, 0.0)
            # z_t = W a + c + M z_{t-1}: keep it as expressions (no new variables)
            M = s.affine_matrix().numpy() if s.skip != "none" else None
            new_expr, new_const = [], np.zeros(s.d_out)
            for o in range(s.d_out):
                e = {a_idx[k]: W[o, k] for k in range(s.n) if W[o, k] != 0}
                const = c[o]
                if M is not None:
                    me, mc = self._combine(zin, zconst, M[o], 0.0)
                    for i, v in me.items():
                        e[i] = e.get(i, 0.0) + v
                    const += mc
                new_expr.append(e)
                new_const[o] = const
            zin, zconst = new_expr, new_const
        self.zin, self.zconst = zin, zconst

    @staticmethod
    def _combine(exprs, consts, coef, bias):
        out: dict[int, float] = {}
        total = float(bias)
        for e, c0, w in zip(exprs, consts, coef, strict=True):
            if w == 0:
                continue
            for i, v in e.items():
                out[i] = out.get(i, 0.0) + w * v
            total += w * c0
        return out, total

    def _vars(self, lb, ub, integer: bool = False) -> list[int]:
        start = len(self.cols_lb)
        self.cols_lb.extend(lb.tolist())
        self.cols_ub.extend(ub.tolist())
        self.integrality.extend([1 if integer else 0] * len(lb))
        return list(range(start, start + len(lb)))

    def _row(self, coefs: dict[int, float], lb: float, ub: float) -> None:
        self.rows.append(coefs)
        self.row_lb.append(lb)
        self.row_ub.append(ub)

    def _constraints(self):
        """The constraint rows as one sparse matrix, built once (every unit's MILP shares them)."""
        if self._cons is None:
            from scipy.optimize import LinearConstraint
            from scipy.sparse import csr_matrix

            rows = [r for r, coefs in enumerate(self.rows) for _ in coefs]
            cols = [i for coefs in self.rows for i in coefs]
            vals = [val for coefs in self.rows for val in coefs.values()]
            A = csr_matrix((vals, (rows, cols)), shape=(max(len(self.rows), 1), len(self.cols_lb)))
            self._cons = LinearConstraint(A, self.row_lb or [-np.inf], self.row_ub or [np.inf])
        return self._cons

    def optimize(self, v: np.ndarray, b: float, maximize: bool, time_limit: float) -> tuple[float, bool]:
        """Bound of ``v . z_{j-1} + b`` over D: (value, proven). With a time-out, the dual bound."""
        from scipy.optimize import Bounds, milp

        expr, const = self._combine(self.zin, self.zconst, v, b)
        n = len(self.cols_lb)
        cost = np.zeros(n)
        for i, val in expr.items():
            cost[i] = -val if maximize else val
        res = milp(cost, constraints=[self._constraints()], integrality=np.array(self.integrality),
                   bounds=Bounds(self.cols_lb, self.cols_ub), options={"time_limit": time_limit, "disp": False})
        if res.status == 0:
            val = -res.fun if maximize else res.fun
            return val + const, True
        dual = getattr(res, "mip_dual_bound", None)
        if dual is None or not np.isfinite(dual):
            return (np.inf if maximize else -np.inf), False
        return ((-dual) if maximize else dual) + const, False


# --------------------------------------------------------------------------- the method
@dataclass
class StabilityReport:
    """Per stack: units stably inactive / active / undecided, and how they were decided."""

    inactive: list[int] = field(default_factory=list)
    active: list[int] = field(default_factory=list)
    undecided: list[int] = field(default_factory=list)
    milp_solved: int = 0
    milp_timeouts: int = 0
    seconds: float = 0.0
    certified: bool = True  # every removed/folded unit is proven stable on the whole domain
    bounds: list = field(default_factory=list, repr=False)  # per stack (hmin, hmax) over the domain

    def summary(self) -> str:
        return (f"inactive {self.inactive}, active {self.active}, undecided {self.undecided}; "
                f"{self.milp_solved} MILPs solved, {self.milp_timeouts} timed out, {self.seconds:.2f}s")


def classify_units(stacks: list[StackWeights], lower, upper, use_milp: bool = True, time_limit: float = 5.0,
                   max_milp_units: int = 10_000) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], StabilityReport]:
    """Per stack, masks (inactive, active) of units proven stable on the box; the rest undecided.

    Bounds of later stacks are computed on the *original* network, so every decision is about
    the original function on D.
    """
    t0 = time.perf_counter()
    lo, hi = make_box(lower, upper, stacks[0].d_in)
    bounds = [(a.clone(), b.clone()) for a, b in tightest_bounds(stacks, lo, hi)]
    report = StabilityReport()
    budget = max_milp_units
    for j, st in enumerate(stacks):
        hl, hu = bounds[j]
        undecided = torch.nonzero((hl <= 0) & (hu > 0)).flatten().tolist()
        if use_milp and undecided and j > 0 and budget > 0:
            prog = _Program(stacks, bounds, lo, hi, j)
            V, b = st.V.double().numpy(), st.b.double().numpy()
            for k in undecided[:budget]:
                budget -= 1
                mx, ok1 = prog.optimize(V[k], b[k], True, time_limit)
                hu[k] = min(hu[k].item(), mx)
                if hu[k] > 0:
                    mn, ok2 = prog.optimize(V[k], b[k], False, time_limit)
                    hl[k] = max(hl[k].item(), mn)
                else:
                    ok2 = True
                report.milp_solved += int(ok1) + int(ok2)
                report.milp_timeouts += int(not ok1) + int(not ok2)
        dead, act = hu <= 0, hl > 0
        report.inactive.append(int(dead.sum()))
        report.active.append(int(act.sum()))
        report.undecided.append(int((~dead & ~act).sum()))
        bounds[j] = (hl, hu)
    report.seconds = time.perf_counter() - t0
    masks = [(hu <= 0, hl > 0) for hl, hu in bounds]
    report.bounds = bounds
    return masks, report


def remove_stable_units(stacks: list[StackWeights], lower, upper, allow_skip: bool = True,
                        **kwargs) -> tuple[list[StackWeights], StabilityReport]:
    """Delete stably inactive units and fold stably active ones, stack by stack; the result
    equals the original network on the whole box (a stack whose units are all stable becomes
    purely affine). ``allow_skip=False`` (a plain MLP's form): active units fold into fewer
    active units, certified on the box by their bounds (:func:`fold_always_active_plain`)."""
    masks, report = classify_units(stacks, lower, upper, **kwargs)
    out = []
    for st, (dead, act), (hl, hu) in zip(stacks, masks, report.bounds, strict=True):
        dev = st.V.device
        red = st.keep((~dead).to(dev))
        keep = (~dead).to(dev)
        if allow_skip:
            red = fold_always_active(red, act.to(dev)[keep])
        else:
            red, _ = fold_always_active_plain(red, act.to(dev)[keep], hl.to(dev)[keep], hu.to(dev)[keep])
        out.append(red)
    return out, report


def certified_folds(stacks: list[StackWeights], data_dead: list[torch.Tensor], data_active: list[torch.Tensor], lower, upper,
                    **kwargs) -> dict:
    """"Tighten": of the Reduction Algorithm's step-1 decisions (made on training points), how
    many hold on the whole domain? ``data_dead``/``data_active``: its masks per stack."""
    masks, report = classify_units(stacks, lower, upper, **kwargs)
    per_stack = []
    for (dead, act), dd, da in zip(masks, data_dead, data_active, strict=True):
        per_stack.append({"dead_on_data": int(dd.sum()), "dead_on_domain": int((dd & dead.to(dd.device)).sum()),
                          "active_on_data": int(da.sum()), "active_on_domain": int((da & act.to(da.device)).sum())})
    return {"stacks": per_stack, "stability": report.summary()}

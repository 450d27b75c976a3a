"""The reduction math tested against itself: exact rewrites are allclose, bounds hold."""

import math
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_stacks.reduction import (
    StackWeights,
    balanced_factors,
    cluster_stack,
    find_outside_neurons,
    fold_always_active,
    fold_constant_neurons,
    kink_representation,
    merge_clusters,
    preactivation_range,
    remove_weak,
    select_weak,
    weak_bound,
    weak_scores,
    weighted_kmeans,
)


@pytest.fixture(autouse=True, scope="module")
def float64_math():
    """The laws are checked in float64 (tight tolerances); restored for other test modules."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def random_stack(n=12, d_in=3, d_out=2, skip="affine", seed=0) -> StackWeights:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    extra = {}
    if skip == "affine":
        m = min(d_in, d_out)
        extra = {"A1": r(m, d_in), "A2": r(d_out, m)}
    elif skip == "direct":
        extra = {"S": r(d_out, d_in)}
    return StackWeights(r(n, d_in), r(n), r(d_out, n), r(d_out), skip=skip, **extra)


def on(stack: StackWeights, device) -> StackWeights:
    """``stack`` moved to ``device`` (built on the CPU first, so the seeded draws do not depend on it)."""
    moved = {k: getattr(stack, k).to(device) for k in ("V", "b", "W", "c", "A1", "A2", "S", "ids") if getattr(stack, k) is not None}
    return replace(stack, **moved)


# ----------------------------------------------------------------------------- step 1
@pytest.mark.parametrize("skip", ["affine", "direct", "none"])
@pytest.mark.parametrize("d_in,d_out", [(3, 2), (2, 3), (1, 1), (4, 1), (1, 4)])
def test_fold_always_active_is_exact_where_active(skip, d_in, d_out, device):
    stack = on(random_stack(n=30, d_in=d_in, d_out=d_out, skip=skip, seed=d_in * 10 + d_out), device)
    Z = torch.randn(500, d_in).to(device)
    hmin, hmax = preactivation_range(stack.V, stack.b, Z)
    # force a third of the neurons to be always active on Z by raising their bias
    active = torch.zeros(stack.n, dtype=torch.bool, device=device)
    active[::3] = True
    b = stack.b.clone()
    b[active] = b[active] - hmin[active] + 0.1
    stack = StackWeights(stack.V, b, stack.W, stack.c, stack.skip, stack.A1, stack.A2, stack.S)
    folded = fold_always_active(stack, active)
    assert folded.n == stack.n - int(active.sum())
    assert folded.skip == ("direct" if skip == "direct" else "affine")
    if folded.skip == "affine":
        m = min(d_in, d_out)
        assert folded.A1.shape == (m, d_in) and folded.A2.shape == (d_out, m)
    assert folded.V.device == Z.device
    torch.testing.assert_close(folded.forward(Z), stack.forward(Z), rtol=1e-10, atol=1e-10)


def test_fold_gives_balanced_factors():
    M = torch.randn(5, 3)
    A1, A2 = balanced_factors(M, 3)
    torch.testing.assert_close(A2 @ A1, M)
    # balanced: A1 A1^T == A2^T A2 (both equal diag(s))
    torch.testing.assert_close(A1 @ A1.T, A2.T @ A2)


def test_outside_classification():
    V = torch.tensor([[1.0], [1.0], [1.0]])
    b = torch.tensor([-5.0, 5.0, 0.0])
    Z = torch.linspace(-1, 1, 11)[:, None]
    dead, active = find_outside_neurons(*preactivation_range(V, b, Z))
    assert dead.tolist() == [True, False, False]
    assert active.tolist() == [False, True, False]


def test_preactivation_range_chunking_matches_full():
    stack = random_stack(n=50, d_in=4)
    Z = torch.randn(1000, 4)
    full = Z @ stack.V.T + stack.b
    hmin, hmax = preactivation_range(stack.V, stack.b, Z, chunk=7)
    torch.testing.assert_close(hmin, full.min(0).values)
    torch.testing.assert_close(hmax, full.max(0).values)


def test_preactivation_range_rejects_wrong_shape():
    stack = random_stack(d_in=3)
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        preactivation_range(stack.V, stack.b, torch.randn(5, 4))


def test_fold_rejects_wrong_mask():
    stack = random_stack(n=5)
    with pytest.raises(ValueError, match="active mask must have shape"):
        fold_always_active(stack, torch.ones(4, dtype=torch.bool))


def test_fold_all_neurons_leaves_zero_width_stack_that_works(device):
    stack = on(random_stack(n=6, d_in=2, d_out=1), device)
    Z = torch.randn(100, 2).to(device)
    b = stack.b + 100.0  # every neuron active on Z
    stack = StackWeights(stack.V, b, stack.W, stack.c, stack.skip, stack.A1, stack.A2)
    folded = fold_always_active(stack, torch.ones(6, dtype=torch.bool, device=device))
    assert folded.n == 0 and folded.V.shape == (0, 2) and folded.W.shape == (1, 0)
    torch.testing.assert_close(folded.forward(Z), stack.forward(Z))


# ----------------------------------------------------------------------------- step 2
def test_weak_scores_formula():
    stack = random_stack(n=8)
    expected = torch.sqrt((stack.V**2).sum(1) + stack.b**2) * stack.W.norm(dim=0)
    torch.testing.assert_close(weak_scores(stack), expected)


def test_select_weak_takes_longest_prefix_under_tolerance():
    scores = torch.tensor([5.0, 1.0, 3.0, 0.5, 2.0])
    # ascending 0.5, 1, 2, 3, 5 -> cumulative 0.5, 1.5, 3.5, 6.5, 11.5
    assert select_weak(scores, 3.5).tolist() == [False, True, False, True, True]
    assert select_weak(scores, 3.49).tolist() == [False, True, False, True, False]
    assert not select_weak(scores, 0.0).any()
    assert select_weak(scores, math.inf).all()


@pytest.mark.parametrize("tol", [-1.0, float("nan")])
def test_select_weak_rejects_bad_tolerance(tol):
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        select_weak(torch.ones(3), tol)


def test_weak_removal_certified_bound_holds_on_random_inputs(device):
    stack = on(random_stack(n=40, d_in=3, d_out=2, seed=3), device)
    reduced, coef, removed = remove_weak(stack, tol=4.0)
    assert removed > 0
    Z = (torch.randn(5000, 3) * 10).to(device)
    change = (reduced.forward(Z) - stack.forward(Z)).norm(dim=1)
    bound = weak_bound(coef, Z)
    assert torch.all(change <= bound + 1e-9)
    # and the bound is not vacuous: somewhere it is within a factor 20 of the change
    assert (change / bound).max() > 0.05


def test_weak_removal_can_empty_a_stack():
    stack = random_stack(n=5)
    reduced, _, removed = remove_weak(stack, tol=math.inf)
    assert removed == 5 and reduced.n == 0
    Z = torch.randn(10, 3)
    torch.testing.assert_close(reduced.forward(Z), Z @ stack.affine_matrix().T + stack.c)


# ----------------------------------------------------------------------------- step 3
def same_kink_cluster(k=4, d_in=3, d_out=2, seed=0):
    """k neurons with the same direction u and kink xi, different magnitudes and w."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d_in, generator=g)
    u = u / u.norm()
    xi = 0.7
    a = torch.rand(k, generator=g) + 0.5
    V = a[:, None] * u[None, :]
    b = -xi * a
    W = torch.rand(d_out, k, generator=g) + 0.1  # same sign: no cancellation
    return StackWeights(V, b, W, torch.zeros(d_out), skip="none")


def test_merge_same_direction_and_kink_is_exact(device):
    stack = on(same_kink_cluster(), device)
    merged, info = merge_clusters(stack, torch.zeros(stack.n, dtype=torch.long, device=device))
    assert merged.n == 1 and info.dropped == 0
    Z = (torch.randn(1000, 3) * 3).to(device)
    torch.testing.assert_close(merged.forward(Z), stack.forward(Z))


def test_merge_singletons_keep_function_and_balance(device):
    stack = on(random_stack(n=10, skip="none"), device)
    merged, info = merge_clusters(stack, torch.arange(10, device=device))
    assert merged.n == 10
    Z = (torch.randn(1000, 3) * 3).to(device)
    torch.testing.assert_close(merged.forward(Z), stack.forward(Z))
    torch.testing.assert_close(merged.W.norm(dim=0), torch.sqrt((merged.V**2).sum(1) + merged.b**2))


def test_cluster_with_k_equal_n_changes_nothing():
    stack = random_stack(n=9)
    out, info = cluster_stack(stack, 9)
    assert out.n == 9
    for a, b in ((out.V, stack.V), (out.b, stack.b), (out.W, stack.W), (out.c, stack.c)):
        torch.testing.assert_close(a, b)


def test_cluster_reduces_to_k_neurons_and_only_near_equal_kinks_merge_exactly(device):
    # two groups of identical-kink neurons -> K = 2 merges exactly
    s1, s2 = same_kink_cluster(seed=1), same_kink_cluster(seed=2)
    stack = StackWeights(torch.cat([s1.V, s2.V]), torch.cat([s1.b, s2.b]), torch.cat([s1.W, s2.W], 1), torch.zeros(2), skip="none")
    stack = on(stack, device)
    out, info = cluster_stack(stack, 2, seed=0, n_init=5)
    assert out.n == 2 and out.V.device == stack.V.device
    Z = torch.randn(500, 3).to(device)
    torch.testing.assert_close(out.forward(Z), stack.forward(Z))


def test_merge_guards_opposing_outgoing_weights():
    stack = same_kink_cluster(k=2, d_out=1)
    W = torch.stack([stack.W[:, 0], -stack.W[:, 0] * stack.V[0].norm() / stack.V[1].norm()], 1)
    stack = StackWeights(stack.V, stack.b, W, stack.c, skip="none")
    merged, info = merge_clusters(stack, torch.zeros(2, dtype=torch.long))
    assert info.dropped == 1 and merged.n == 0
    Z = torch.randn(50, 3)
    torch.testing.assert_close(merged.forward(Z), stack.forward(Z))  # they cancelled exactly


def test_constant_neurons_fold_into_bias(device):
    stack = on(random_stack(n=4, skip="none"), device)
    V = stack.V.clone()
    V[1] = 0.0
    W = stack.W.clone()
    W[:, 2] = 0.0
    stack = StackWeights(V, stack.b, W, stack.c, skip="none")
    out, dropped = fold_constant_neurons(stack)
    assert dropped == 2 and out.n == 2
    Z = torch.randn(20, 3).to(device)
    torch.testing.assert_close(out.forward(Z), stack.forward(Z))
    with pytest.raises(ValueError, match="fold constant neurons first"):
        kink_representation(stack)


def test_kink_representation_layout():
    stack = random_stack(n=3, d_in=2)
    R, omega = kink_representation(stack)
    nv = stack.V.norm(dim=1)
    torch.testing.assert_close(R[:, :2], stack.b[:, None] * stack.V / nv[:, None] ** 2)
    torch.testing.assert_close(R[:, 2:], stack.V / nv[:, None])
    torch.testing.assert_close(omega, nv * stack.W.norm(dim=0))


@pytest.mark.parametrize("k", [0, 13])
def test_kmeans_rejects_bad_cluster_count(k):
    with pytest.raises(ValueError, match=r"number of clusters must be in \[1, 12\]"):
        weighted_kmeans(torch.randn(12, 4), torch.ones(12), k)


def test_cluster_stack_rejects_zero_clusters():
    with pytest.raises(ValueError, match="must be >= 1"):
        cluster_stack(random_stack(), 0)


def test_merge_rejects_wrong_labels():
    with pytest.raises(ValueError, match="labels must have shape"):
        merge_clusters(random_stack(n=5), torch.zeros(4, dtype=torch.long))


def test_bottleneck_width_one_full_pipeline_of_steps():
    stack = random_stack(n=20, d_in=1, d_out=1, seed=5)
    Z = torch.linspace(-2, 2, 200)[:, None]
    dead, active = find_outside_neurons(*preactivation_range(stack.V, stack.b, Z))
    s1 = fold_always_active(stack, active).keep(~dead[~active])
    torch.testing.assert_close(s1.forward(Z), stack.forward(Z))
    s2, _, _ = remove_weak(s1, 0.0)
    s3, _ = cluster_stack(s2, max(1, s2.n // 2))
    assert s3.forward(Z).shape == (200, 1)


# ----------------------------------------------------------------------------- properties
@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 6), d_in=st.integers(1, 4), d_out=st.integers(1, 3), xi=st.floats(-3, 3), seed=st.integers(0, 10_000))
def test_property_identical_kink_clusters_merge_exactly(k, d_in, d_out, xi, seed):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d_in, generator=g)
    u = u / u.norm()
    a = torch.rand(k, generator=g) + 0.1
    W = torch.rand(d_out, k, generator=g) + 0.1
    stack = StackWeights(a[:, None] * u, -xi * a, W, torch.randn(d_out, generator=g), skip="none")
    merged, _ = merge_clusters(stack, torch.zeros(k, dtype=torch.long))
    Z = torch.randn(200, d_in, generator=g) * 4
    torch.testing.assert_close(merged.forward(Z), stack.forward(Z), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(merged.W.norm(dim=0), torch.sqrt((merged.V**2).sum(1) + merged.b**2))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 20), d_in=st.integers(1, 4), d_out=st.integers(1, 4),
       skip=st.sampled_from(["affine", "direct", "none"]), seed=st.integers(0, 10_000))
def test_property_fold_preserves_function_on_checked_inputs(n, d_in, d_out, skip, seed):
    stack = random_stack(n=n, d_in=d_in, d_out=d_out, skip=skip, seed=seed)
    Z = torch.randn(64, d_in, generator=torch.Generator().manual_seed(seed))
    dead, active = find_outside_neurons(*preactivation_range(stack.V, stack.b, Z))
    reduced = fold_always_active(stack, active).keep(~dead[~active])
    torch.testing.assert_close(reduced.forward(Z), stack.forward(Z), rtol=1e-9, atol=1e-9)
    # and on the convex hull: midpoints of checked inputs
    mid = 0.5 * (Z[:32] + Z[32:])
    torch.testing.assert_close(reduced.forward(mid), stack.forward(mid), rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- beyond the paper
@pytest.mark.parametrize("skip", ["affine", "direct", "none"])
def test_refit_never_increases_fit_error(skip, device):
    from lightning_stacks.reduction import refit_outgoing

    stack = on(random_stack(n=30, d_in=3, d_out=2, skip=skip, seed=7), device)
    Z = torch.randn(400, 3).to(device)
    target = stack.forward(Z)
    reduced, _ = cluster_stack(stack, 8, seed=0)
    refit = refit_outgoing(reduced, Z, target)
    err = lambda s: ((s.forward(Z) - target) ** 2).sum().item()  # noqa: E731
    assert err(refit) <= err(reduced) + 1e-9
    assert err(refit) < 0.9 * err(reduced)  # and it does help
    # V, b and the skip path are untouched
    torch.testing.assert_close(refit.V, reduced.V)
    torch.testing.assert_close(refit.affine_matrix(), reduced.affine_matrix())


def test_refit_rejects_wrong_shapes():
    from lightning_stacks.reduction import refit_outgoing

    with pytest.raises(ValueError, match=r"refit needs Z \(N, 3\) and target \(N, 2\)"):
        refit_outgoing(random_stack(), torch.randn(5, 3), torch.randn(5, 3))


@pytest.mark.parametrize("skip_a,skip_b", [("affine", "affine"), ("direct", "direct"), ("none", "none"), ("none", "affine")])
def test_bottleneck_projection_is_exact_on_a_low_rank_affine_subspace(skip_a, skip_b, device):
    from lightning_stacks.reduction import bottleneck_basis, project_bottleneck

    a = on(random_stack(n=20, d_in=3, d_out=6, skip=skip_a, seed=1), device)
    b = on(random_stack(n=15, d_in=6, d_out=2, skip=skip_b, seed=2), device)
    Z = torch.randn(300, 3).to(device)
    # make a's outputs live on a 2-dim affine subspace of R^6: rows of W and skip = combos of 2 rows
    mix = torch.randn(6, 2).to(device)
    W = mix @ a.W[:2]
    a = StackWeights(a.V, a.b, W, a.c, a.skip, a.A1, None if a.A2 is None else mix @ a.A2[:2] @ torch.eye(a.A2.shape[1], device=device),
                     None if a.S is None else mix @ a.S[:2])
    out = a.forward(Z)
    P, mu, s = bottleneck_basis(out, 1e-9)
    assert P.shape == (6, 2)
    a2, b2 = project_bottleneck(a, b, P, mu)
    assert a2.d_out == 2 and b2.d_in == 2
    torch.testing.assert_close(b2.forward(a2.forward(Z)), b.forward(out))


def test_bottleneck_basis_rejects_bad_tolerance():
    from lightning_stacks.reduction import bottleneck_basis

    with pytest.raises(ValueError, match="bottleneck tolerance must be >= 0"):
        bottleneck_basis(torch.randn(5, 3), -0.1)

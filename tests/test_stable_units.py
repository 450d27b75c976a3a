"""Stable units over a box domain: sound bounds, exact MILP, removal equivalent on the domain."""

import pytest
import torch

from lightning_stacks.methods.stable_units import (
    DomainError,
    _Program,
    certified_folds,
    classify_units,
    interval_bounds,
    linear_bounds,
    make_box,
    remove_stable_units,
    tightest_bounds,
)
from lightning_stacks.model import DeepStackNetwork
from lightning_stacks.reduction import run_stacks, stack_weights


def tiny(seed=0, skip="affine"):
    torch.manual_seed(seed)
    return stack_weights(DeepStackNetwork(2, [12, 10, 6], [3, 3, 2], skip).double())


def grid(n=301):
    g = torch.linspace(0, 1, n, dtype=torch.float64)
    return torch.cartesian_prod(g, g)


@pytest.mark.parametrize("skip", ["affine", "direct", "none"])
def test_interval_and_linear_bounds_are_sound(skip):
    st = tiny(1, skip)
    lo, hi = make_box(0.0, 1.0, 2)
    X, z = grid(), None
    z = X
    for j, (ib, lb) in enumerate(zip(interval_bounds(st, lo, hi), linear_bounds(st, lo, hi), strict=True)):
        H = z @ st[j].V.T + st[j].b
        for lower, upper in (ib, lb):
            assert torch.all(H.min(0).values >= lower - 1e-9) and torch.all(H.max(0).values <= upper + 1e-9)
        if j == 0:  # pre-activations of stack 1 are linear in x: the linear bounds are exact
            torch.testing.assert_close(lb[1], H.max(0).values)
        z = run_stacks([st[j]], z)


def test_milp_agrees_with_brute_force():
    st = tiny(0)
    lo, hi = make_box(0.0, 1.0, 2)
    H = run_stacks(st[:2], grid(401)) @ st[2].V.T + st[2].b
    prog = _Program(st, tightest_bounds(st, lo, hi), lo, hi, 2)
    for k in range(st[2].n):
        mx, ok1 = prog.optimize(st[2].V[k].numpy(), st[2].b[k].item(), True, 10.0)
        mn, ok2 = prog.optimize(st[2].V[k].numpy(), st[2].b[k].item(), False, 10.0)
        assert ok1 and ok2
        # the grid can only under-reach the true extremes; the MILP is exact
        assert H[:, k].max().item() <= mx + 1e-7 and mx - H[:, k].max().item() < 1e-3
        assert H[:, k].min().item() >= mn - 1e-7 and H[:, k].min().item() - mn < 1e-3


def test_removal_on_trained_net_is_identical_on_random_domain_points(trained_digits):
    module, _, _ = trained_digits
    st = stack_weights(module.net.double())
    try:
        reduced, report = remove_stable_units(st, 0.0, 1.0, time_limit=1.0, max_milp_units=12)
    finally:
        module.net.float()
    assert sum(report.inactive) + sum(report.active) > 0, report.summary()
    assert sum(s.n for s in reduced) < sum(s.n for s in st)
    x = torch.rand(10_000, 64, dtype=torch.float64)
    torch.testing.assert_close(run_stacks(reduced, x), run_stacks(st, x), rtol=1e-9, atol=1e-9)
    # the domain's corners too (the box's extreme points)
    corners = (torch.rand(2000, 64) > 0.5).double()
    torch.testing.assert_close(run_stacks(reduced, corners), run_stacks(st, corners), rtol=1e-9, atol=1e-9)


def test_tighten_reports_how_many_data_folds_hold_on_the_domain():
    st = tiny(2)
    lo, hi = make_box(0.0, 1.0, 2)
    bounds = tightest_bounds(st, lo, hi)
    dead_data = [hu <= 0 for _, hu in bounds]  # a subset of what the domain certifies
    act_data = [hl > 0 for hl, _ in bounds]
    out = certified_folds(st, dead_data, act_data, 0.0, 1.0)
    for s, d, a in zip(out["stacks"], dead_data, act_data, strict=True):
        assert s["dead_on_domain"] == int(d.sum()) and s["active_on_domain"] == int(a.sum())


@pytest.mark.parametrize("lower,upper,pattern", [
    (1.0, 0.0, "lower bound exceeds the upper bound at input 0"),
    ([0.0, 0.0, 0.0], 1.0, "must be scalars or have the input dimension 2"),
    (0.0, float("inf"), "must be finite"),
])
def test_bad_domains_fail_clearly(lower, upper, pattern):
    with pytest.raises(DomainError, match=pattern):
        classify_units(tiny(), lower, upper)


def test_domain_step_and_tighten_in_the_pipeline():
    from lightning_stacks.reduction import ReduceSettings, reduce_network

    torch.manual_seed(3)
    net = DeepStackNetwork(2, [30, 20, 10], [3, 3, 2])
    x = torch.rand(2000, 2)
    reduced, report = reduce_network(net, x, ReduceSettings(domain=(0.0, 1.0), tighten=True, domain_milp_seconds=2.0),
                                     task="regression")
    steps = [s.step for s in report.steps]
    assert steps == ["full", "domain", "outside"]
    dom = report.steps[1]
    assert sum(d["inactive"] + d["active"] for d in dom.details) > 0
    z = torch.rand(10_000, 2)
    with torch.no_grad():  # the domain step alone is exact on the whole box
        from lightning_stacks.methods.stable_units import remove_stable_units

        only, _ = remove_stable_units(stack_weights(net.double()), 0.0, 1.0, time_limit=2.0)
        net.float()
        torch.testing.assert_close(run_stacks(only, z.double()).float(), net(z), rtol=1e-5, atol=1e-5)
    for d in report.steps[2].details:
        assert {"dead_on_data", "dead_on_domain", "active_on_data", "active_on_domain"} <= set(d)
        assert d["dead_on_domain"] <= d["dead_on_data"] and d["active_on_domain"] <= d["active_on_data"]


def test_reduce_config_domain_validation():
    from lightning_stacks.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"reduce.domain must be \[lower, upper\] with lower <= upper"):
        load_config(None, ["reduce.domain=[1,0]"])
    with pytest.raises(ConfigError, match="reduce.tighten needs reduce.domain"):
        load_config(None, ["reduce.tighten=true"])

"""The reduction report's measurements cost what the rows need: the training split's metric from
the output change's own forward pass (equal to a separate evaluation), no second measurement of
a step that changed nothing, and ``report="final"`` measuring the full and the final network only."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from lightning_stacks import DeepStackNetwork, reduce_network
from lightning_stacks.evaluation import evaluate
from lightning_stacks.reduction import ReduceSettings, ReductionError
from lightning_stacks.reduction.stacks import output_pass, stack_weights


def trained_net(seed=0):
    torch.manual_seed(seed)
    net = DeepStackNetwork(6, [40, 30], [5, 4])
    x = torch.randn(600, 6)
    y = (x[:, :4] * torch.tensor([1.0, -1, 0.5, 2])).argmax(1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        (torch.nn.functional.cross_entropy(net(x), y) + 1e-3 * sum(p.pow(2).sum() for p in net.parameters())).backward()
        opt.step()
    return net.eval(), x, y


def test_the_train_metric_from_the_output_pass_equals_a_separate_evaluation():
    net, x, y = trained_net()
    st = stack_weights(net)
    small = [s.keep(torch.arange(s.n) % 2 == 0) for s in st]
    change, metric = output_pass(st, small, x, cache=[], task="classification", labels=y, chunk=128)
    from lightning_stacks.reduction import build_network

    assert metric == pytest.approx(evaluate(build_network(small), x, y, "classification"), abs=1e-12)
    with torch.no_grad():
        assert change == pytest.approx(float((build_network(small)(x) - net(x)).abs().max()), rel=1e-5)
    assert output_pass(st, st, x, cache=[], task="classification", labels=y)[0] == 0.0


def test_split_evaluation_gives_the_same_report_as_a_function():
    net, x, y = trained_net(1)
    xt, yt = x[:200] + 0.1, y[:200]
    settings = ReduceSettings(tolerances=[0.5, 0.5], clusters=[12, 10])
    _, by_function = reduce_network(net, x, settings, task="classification",
                                    evaluate=lambda n: {"train": evaluate(n, x, y, "classification"),
                                                        "test": evaluate(n, xt, yt, "classification")})
    _, by_splits = reduce_network(net, x, settings, task="classification", evaluate={"train": (x, y), "test": (xt, yt)})
    for a, b in zip(by_function.steps, by_splits.steps, strict=True):
        assert a.step == b.step and a.metrics == pytest.approx(b.metrics, abs=1e-12)
        assert a.max_output_change == pytest.approx(b.max_output_change, rel=1e-6, abs=1e-7)


def test_a_step_that_changed_nothing_is_not_measured_again():
    net, x, y = trained_net(2)
    calls = []

    def counting(n):
        calls.append(sum(n.widths))
        return {"train": evaluate(n, x, y, "classification")}

    _, report = reduce_network(net, x, ReduceSettings(tolerances=[0.0, 0.0]), task="classification", evaluate=counting)
    steps = [s.step for s in report.steps]
    assert steps == ["full", "outside", "weak"]
    assert report.steps[2].widths == report.steps[1].widths, "tolerance 0 removes nothing"
    changed = sum(a.widths != b.widths for a, b in zip(report.steps, report.steps[1:], strict=False))
    assert len(calls) == 1 + changed < len(steps), "a row whose network did not change reuses the measurement before it"
    assert report.steps[2].metrics == report.steps[1].metrics


def test_report_final_measures_only_the_full_and_the_final_network():
    net, x, y = trained_net(3)
    settings = dict(tolerances=[0.5, 0.5], clusters=[12, 10])
    _, every = reduce_network(net, x, ReduceSettings(**settings), task="classification", evaluate={"train": (x, y)})
    reduced, final = reduce_network(net, x, ReduceSettings(**settings, report="final"), task="classification",
                                    evaluate={"train": (x, y)})
    assert [s.step for s in final.steps] == ["full", "outside", "weak", "cluster", "final"]
    assert all(s.metrics == {} and math.isnan(s.max_output_change) for s in final.steps[1:-1])
    assert final.steps[0].metrics == every.steps[0].metrics
    assert final.steps[-1].metrics == pytest.approx(every.steps[-1].metrics, abs=1e-12)
    assert final.steps[-1].widths == every.steps[-1].widths == reduced.widths
    assert final.eval_seconds <= every.eval_seconds + 0.5
    with pytest.raises(ReductionError, match="report='all' is not one of: steps, final"):
        reduce_network(net, x, ReduceSettings(report="all"), task="classification")


def test_step_one_takes_the_full_rows_pass_and_its_time(monkeypatch):
    """The full network's row scans once for its outputs, its metric and step 1's ranges: step 1
    makes no pass of its own, finds what a separate scan finds, and its seconds include the pass."""
    import lightning_stacks.reduction.run as run_mod
    import lightning_stacks.reduction.steps as steps_mod

    net, x, y = trained_net()
    settings = ReduceSettings(tolerances=[0.05, 0.05], clusters=[10, 8], seed=0)
    plain, plain_report = reduce_network(net, x, settings, "classification")
    calls = []
    for mod in (run_mod, steps_mod):
        real = mod.network_ranges
        monkeypatch.setattr(mod, "network_ranges", lambda *a, _real=real, **k: calls.append(1) or _real(*a, **k))
    reduced, report = reduce_network(net, x, settings, "classification", evaluate={"train": (x, y)})
    assert calls == []  # no scan beyond the full row's pass
    assert [s.widths for s in report.steps] == [s.widths for s in plain_report.steps]
    for a, b in zip(reduced.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    outside = next(s for s in report.steps if s.step == "outside")
    assert outside.details == next(s for s in plain_report.steps if s.step == "outside").details
    assert outside.seconds > 0 and report.eval_seconds >= 0
    # without the outside step the full row makes no scan at all
    off, _ = reduce_network(net, x, ReduceSettings(tolerances=[0.05, 0.05], clusters=[10, 8], seed=0, outside=False),
                            "classification", evaluate={"train": (x, y)})
    assert calls == []


def test_all_finite_reads_the_sum_and_checks_entries_only_when_it_overflows():
    from lightning_stacks.batches import all_finite

    assert all_finite(torch.zeros(0, 3)) and all_finite(torch.rand(100, 4))
    big = torch.full((10, 3), 3e38)  # finite entries whose float32 sum overflows
    assert not bool(torch.isfinite(big.sum())) and all_finite(big)
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.rand(50, 4)
        x[7, 2] = bad
        assert not all_finite(x)
    x = torch.rand(50, 4)
    x[1, 1], x[2, 2] = float("inf"), -float("inf")  # their sum is nan, still refused
    assert not all_finite(x)


def test_rows_that_keep_original_first_stack_neurons_read_its_kept_activations():
    """A row whose first stack keeps original neurons (steps 1 and 2) is measured from the first
    stack's activations kept by the full row's pass: the same change and metric as a fresh pass."""
    from lightning_stacks.reduction.stacks import first_stack_weights, scan_with_outputs

    net, x, y = trained_net()
    st = stack_weights(net)
    cache, acts = [], []
    scan_with_outputs(st, x, cache, "classification", y, acts)
    assert len(acts) == len(cache) and acts[0].shape[1] == st[0].n and bool((acts[0] >= 0).all())
    # removed neurons (a subset, as steps 1-2 leave it) and a skip path changed too
    kept = [s.keep(torch.arange(s.n) % 3 != 0) for s in st]
    kept[0] = replace(kept[0], A2=kept[0].A2 * 1.5)
    assert first_stack_weights(st[0], kept[0]) is not None
    got = output_pass(st, kept, x, list(cache), "classification", y, acts=acts)
    fresh = output_pass(st, kept, x, None, "classification", y)
    assert got[0] == pytest.approx(fresh[0], rel=1e-5) and got[1] == fresh[1]
    # an incoming weight changed or a merged (new) neuron: no shortcut
    V = kept[0].V.clone()
    V[0, 0] += 1.0
    moved_v = [replace(kept[0], V=V)] + kept[1:]
    assert first_stack_weights(st[0], moved_v[0]) is None
    ids = kept[0].ids.clone()
    ids[0] = -1
    merged = [replace(kept[0], ids=ids)] + kept[1:]
    assert first_stack_weights(st[0], merged[0]) is None
    got = output_pass(st, moved_v, x, list(cache), acts=acts)
    assert got[0] == pytest.approx(output_pass(st, moved_v, x)[0], rel=1e-6)


def test_first_stack_activations_are_kept_only_within_the_memory_budget(monkeypatch):
    import lightning_stacks.reduction.stacks as stacks_mod

    st = stack_weights(DeepStackNetwork(6, [40, 30], [5, 4]))[0]  # 40 neurons, float32: 160 bytes a row
    assert stacks_mod.acts_cache_fits(1000, st)
    assert not stacks_mod.acts_cache_fits(stacks_mod.ACTS_CACHE_BYTES // 160 + 1, st)  # over 1 GiB
    monkeypatch.setattr(stacks_mod, "available_bytes", lambda device: 4 * 160 * 999)  # a quarter of it: 999 rows
    assert stacks_mod.acts_cache_fits(999, st) and not stacks_mod.acts_cache_fits(1000, st)
    # a meter over inputs that do not fit keeps none
    monkeypatch.setattr(stacks_mod, "available_bytes", lambda device: 1000)
    net, x, y = trained_net()
    from lightning_stacks.reduction.measure import StepMeter

    meter = StepMeter(stack_weights(net), x, False, {"train": (x, y)}, "classification", prescan=True)
    assert meter.acts is None

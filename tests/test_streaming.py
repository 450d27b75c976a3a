"""Streamed data sources: the reduction and the metrics on batches equal their in-memory results."""

import copy

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_stacks.batches import (
    count_rows,
    is_streamed,
    iter_inputs,
    iter_pairs,
    reservoir_sample,
)
from lightning_stacks.evaluation import evaluate, evaluate_source, metric_from_outputs, predict
from lightning_stacks.model import DeepStackNetwork
from lightning_stacks.reduction import ReduceSettings, reduce_network, stack_weights
from lightning_stacks.reduction.stacks import max_output_change
from lightning_stacks.reduction.steps import outside_masks, step_outside


def uneven_loader(x, y=None, seed=0):
    """A DataLoader whose batches have random, uneven sizes (1 to 150 rows)."""
    g = torch.Generator().manual_seed(seed)
    cuts, i = [], 0
    while i < x.shape[0]:
        b = int(torch.randint(1, 151, (1,), generator=g))
        cuts.append(list(range(i, min(i + b, x.shape[0]))))
        i += b
    data = TensorDataset(x, y) if y is not None else TensorDataset(x)
    return DataLoader(data, batch_sampler=cuts)


def same_network(a, b):
    assert a.widths == b.widths
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- step 1
def test_streamed_step1_equals_in_memory_step1(trained_digits, device):
    """The network on the device, the batches on the CPU: each batch is moved to the network."""
    module, dm, _ = trained_digits
    x, y = dm.split("train")
    net = copy.deepcopy(module.net).to(device)
    mem, rep_mem = reduce_network(net, x, ReduceSettings(), task="classification")
    loader = uneven_loader(x, y)
    assert len({len(b) for b in loader.batch_sampler}) > 5, "the batches must really be uneven"
    streamed, rep = reduce_network(net, loader, ReduceSettings(), task="classification")
    assert sum(mem.widths) < sum(net.widths), "a trained net has outside neurons to fold"
    same_network(streamed, mem)
    assert rep.kept_ids == rep_mem.kept_ids
    assert rep.steps[1].details == rep_mem.steps[1].details  # the same dead / always-active counts
    # folding changes outputs by float32 round-off only, whose size depends on the batching (and on
    # the GPU's kernels): equal to the same 1e-5 as the outputs compared below
    assert rep.steps[1].max_output_change == pytest.approx(rep_mem.steps[1].max_output_change, rel=1e-3, abs=1e-5)
    assert next(streamed.parameters()).device == next(net.parameters()).device
    with torch.no_grad():
        torch.testing.assert_close(streamed(x.to(device)), net(x.to(device)), rtol=1e-5, atol=1e-5)


def test_one_pass_masks_equal_per_stack_scans_through_the_unreduced_network():
    """Stack j+1's inputs are stack j's outputs before its reduction, block by block."""
    torch.manual_seed(0)
    net = DeepStackNetwork(5, [30, 20, 10], [4, 3, 2], "affine")
    x = torch.randn(333, 5) * 2
    stacks = stack_weights(net)
    masks = outside_masks(stacks, x)
    z = x
    for st, (dead, active) in zip(stacks, masks, strict=True):
        H = z @ st.V.T + st.b
        assert torch.equal(dead, (H <= 0).all(0)) and torch.equal(active, (H > 0).all(0))
        z = st.forward(z)
    assert any(m[0].any() or m[1].any() for m in masks[1:]), "later stacks must have something to find"
    whole, det = step_outside(stacks, x)
    for chunk in (1, 7, 1000):
        part, det_c = step_outside(stacks, [x[:100], x[100:101], x[101:]], chunk=chunk)
        assert det_c == det
        for a, b in zip(part, whole, strict=True):
            torch.testing.assert_close(a.V, b.V), torch.testing.assert_close(a.W, b.W)


@pytest.mark.parametrize("kind", ["x", "pairs", "dicts", "lists"])
def test_list_of_batches_sources(kind):
    torch.manual_seed(1)
    net = DeepStackNetwork(3, [25, 15], [4, 2], "affine")
    x, y = torch.randn(200, 3), torch.randn(200, 2)
    parts = [slice(0, 50), slice(50, 51), slice(51, 200)]
    batches = {"x": [x[s] for s in parts], "pairs": [(x[s], y[s]) for s in parts],
               "dicts": [{"x": x[s], "y": y[s]} for s in parts], "lists": [[x[s], y[s], torch.zeros(1)] for s in parts]}[kind]
    assert is_streamed(batches) and not is_streamed(x) and not is_streamed((x, y))
    assert count_rows(batches) == 200
    torch.testing.assert_close(torch.cat(list(iter_inputs(batches, 64))), x)
    mem, _ = reduce_network(net, x, ReduceSettings(), task="regression")
    streamed, _ = reduce_network(net, batches, ReduceSettings(), task="regression")
    assert sum(mem.widths) < sum(net.widths)
    same_network(streamed, mem)
    if kind == "x":
        with pytest.raises(ValueError, match="batch 0 has no labels"):
            evaluate_source(net, batches, "regression")
    else:
        assert evaluate_source(net, batches, "regression") == pytest.approx(evaluate(net, x, y, "regression"), rel=1e-6)
        got = list(iter_pairs(batches, 40))
        assert [len(a) for a, _ in got] == [40, 10, 1, 40, 40, 40, 29]
        torch.testing.assert_close(torch.cat([b for _, b in got]), y)


# --------------------------------------------------------------------------- sampling
def test_reservoir_sample_is_deterministic_and_independent_of_batching():
    x = torch.arange(1000, dtype=torch.float32).reshape(500, 2)
    y = torch.arange(500)
    xs, ys = reservoir_sample((x, y), 37, seed=3)
    assert xs.shape == (37, 2) and torch.equal(xs[:, 0] / 2, ys.float()), "labels stay with their rows"
    assert torch.all(ys[1:] > ys[:-1]), "in data order"
    for source in (uneven_loader(x, y), [(x[:7], y[:7]), (x[7:], y[7:])], (x, y)):
        xs2, ys2 = reservoir_sample(source, 37, seed=3)
        assert torch.equal(xs2, xs) and torch.equal(ys2, ys)
    assert not torch.equal(reservoir_sample(x, 37, seed=4)[0], xs)
    assert reservoir_sample(x, 37, seed=3)[1] is None


def test_reservoir_sample_is_uniform():
    n, k, trials = 60, 6, 3000
    counts = torch.zeros(n)
    batches = [torch.arange(i, min(i + 11, n), dtype=torch.float32)[:, None] for i in range(0, n, 11)]
    for seed in range(trials):
        xs, _ = reservoir_sample(batches, k, seed=seed)
        assert xs.shape == (k, 1) and len(set(xs[:, 0].tolist())) == k
        counts[xs[:, 0].long()] += 1
    expect = trials * k / n  # 300 per row; sd ~ 16
    assert counts.min() > expect - 75 and counts.max() < expect + 75, counts
    # early and late rows alike (a reservoir that favours one end fails this)
    assert abs(counts[: n // 2].sum() - counts[n // 2 :].sum()) < 0.06 * trials * k


@pytest.mark.parametrize("k", [0, 50, 51, 1000])
def test_reservoir_sample_of_everything(k):
    x = torch.randn(50, 3)
    xs, ys = reservoir_sample([x[:20], x[20:]], k)
    assert torch.equal(xs, x) and ys is None


# --------------------------------------------------------------------------- metrics
def test_evaluate_source_equals_evaluate_for_classification(trained_digits, device):
    """Evaluation moves the (CPU) data to the network's device, never the network to the data."""
    module, dm, _ = trained_digits
    x, y = dm.split("train")
    net = copy.deepcopy(module.net).to(device)
    acc = evaluate(net, x, y, "classification")
    assert acc == metric_from_outputs(predict(net, x), y, "classification")
    assert evaluate_source(net, uneven_loader(x, y), "classification") == acc
    assert next(net.parameters()).device == device and x.device.type == "cpu"
    assert 0.5 < acc < 1.0, "a real accuracy, with errors to count"


def test_evaluate_source_equals_evaluate_for_regression():
    torch.manual_seed(0)
    net = DeepStackNetwork(2, [20, 20], [3, 4], "affine")
    x, y = torch.randn(700, 2), torch.randn(700, 4)
    mse = metric_from_outputs(predict(net, x), y, "regression")
    assert evaluate(net, x, y, "regression") == pytest.approx(mse, rel=1e-12)
    assert evaluate_source(net, uneven_loader(x, y), "regression") == pytest.approx(mse, rel=1e-6)  # float32 forwards of other batch sizes
    # per-sample squared error summed over the 4 outputs, not averaged over them
    with torch.no_grad():
        assert mse == pytest.approx(((net(x) - y) ** 2).sum(1).mean().item(), rel=1e-6)
    net.train()
    evaluate_source(net, (x, y), "regression")
    assert net.training, "the mode is restored"


# --------------------------------------------------------------------------- the whole reduction
def test_automatic_mode_on_a_streamed_source_matches_the_tensor_path(trained_digits, device):
    module, dm, _ = trained_digits
    module = copy.deepcopy(module).to(device)
    x, y = dm.split("train")
    xr, yr = dm.split("test")
    settings = ReduceSettings(max_drop=0.02)
    mem, rep_mem = reduce_network(module.net, x, settings, task="classification", x_ref=xr, y_ref=yr)
    streamed, rep = reduce_network(module.net, uneven_loader(x, y), settings, task="classification", x_ref=xr, y_ref=yr)
    assert sum(mem.widths) < sum(reduce_network(module.net, x, ReduceSettings())[0].widths), "the search removed neurons"
    assert [s.widths for s in rep.steps] == [s.widths for s in rep_mem.steps]
    assert rep.settings["chosen_clusters"] == rep_mem.settings["chosen_clusters"]
    same_network(streamed, mem)
    # without x_ref, the reference set is the gathered batches and their labels
    own, rep_own = reduce_network(module.net, uneven_loader(x, y), settings, task="classification")
    ref, rep_ref = reduce_network(module.net, x, settings, task="classification", y_ref=y)
    assert [s.widths for s in rep_own.steps] == [s.widths for s in rep_ref.steps]


def test_manual_refit_with_a_sample_on_a_streamed_source_matches_the_tensor_path(trained_digits, device):
    module, dm, _ = trained_digits
    module = copy.deepcopy(module).to(device)
    x, y = dm.split("train")
    settings = ReduceSettings(sample=300, seed=2, tolerances=[0.1] * 3, clusters=[12, 10, 8], refit=True, bottleneck_tol=0.0)
    streamed, rep = reduce_network(module.net, uneven_loader(x, y), settings, task="classification")
    # the streamed sample is reservoir_sample's; the tensor path given that sample checks the same rows
    xs, _ = reservoir_sample(x, 300, seed=2)
    mem, rep_mem = reduce_network(module.net, xs, ReduceSettings(seed=2, tolerances=[0.1] * 3, clusters=[12, 10, 8], refit=True,
                                                                 bottleneck_tol=0.0), task="classification")
    assert [s.widths for s in rep.steps] == [s.widths for s in rep_mem.steps]
    assert [s.dims for s in rep.steps] == [s.dims for s in rep_mem.steps]
    assert [s.step for s in rep.steps] == ["full", "outside", "weak", "cluster", "bottleneck"]
    same_network(streamed, mem)
    for a, b in zip(rep.steps, rep_mem.steps, strict=True):
        assert a.max_output_change == pytest.approx(b.max_output_change, rel=1e-4, abs=1e-6)
    # step 1 on a sample of 300 finds more outside neurons than on all inputs
    assert sum(rep.steps[1].widths) < sum(reduce_network(module.net, x, ReduceSettings())[0].widths)


def test_output_change_streams_or_caches_to_the_same_value():
    torch.manual_seed(0)
    net = DeepStackNetwork(4, [30, 20], [3, 2], "affine")
    other = DeepStackNetwork(4, [10, 5], [3, 2], "affine")
    x = torch.randn(400, 4)
    a, b = stack_weights(net), stack_weights(other)
    with torch.no_grad():
        expect = (net(x) - other(x)).abs().max().item()
    cache: list = []
    assert max_output_change(a, b, x, cache, chunk=64) == pytest.approx(expect, rel=1e-6)
    assert len(cache) == 7
    assert max_output_change(a, b, x, cache, chunk=64) == pytest.approx(expect, rel=1e-6)
    assert max_output_change(a, b, uneven_loader(x), None, chunk=64) == pytest.approx(expect, rel=1e-6)
    assert max_output_change(a, a, x) == 0.0


# --------------------------------------------------------------------------- misuse
@pytest.mark.parametrize("batches,pattern", [
    ([torch.randn(64, 3)] * 3 + [torch.randn(64, 5)], r"batch 3 has inputs of shape \(64, 5\); the network expects \(batch, 3\)"),
    (["abc"], "batch 0 is a str; a batch must be a tensor x"),
    ([{"inputs": torch.randn(4, 3)}], "batch 0 is a dict without key 'x'"),
    ([(torch.randn(4, 3), torch.randn(5))], r"batch 0 has 4 inputs but labels of shape \(5,\)"),
    ([([1.0, 2.0, 3.0], torch.zeros(1))], "batch 0 holds list inputs and Tensor labels; both must be tensors"),
    ([torch.randn(3)], r"batch 0 has inputs of shape \(3,\); the network expects \(batch, 3\)"),
    (5, "a data source must be a tensor, an \\(x, y\\) tuple of tensors or an iterable of batches, got int"),
])
def test_bad_batches_are_refused(batches, pattern):
    net = DeepStackNetwork(3, [8], [2], "affine")
    with pytest.raises(ValueError, match=pattern):
        reduce_network(net, batches, ReduceSettings(), task="regression")


def test_evaluate_source_refuses_an_unknown_task():
    net = DeepStackNetwork(3, [8], [2], "affine")
    with pytest.raises(ValueError, match="task must be 'classification' or 'regression', got 'ranking'"):
        evaluate_source(net, (torch.randn(4, 3), torch.randn(4, 2)), "ranking")


# --------------------------------------------------------------------------- devices
def _devices():
    out = ["cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    return out


@pytest.mark.parametrize("data_device", _devices())
@pytest.mark.parametrize("net_device", _devices())
def test_reduced_network_stays_on_the_callers_device_and_data_stay_put(net_device, data_device):
    torch.manual_seed(0)
    net = DeepStackNetwork(3, [20, 10], [4, 2], "affine").to(net_device, torch.float64)
    x, y = torch.randn(300, 3, device=data_device), torch.randn(300, 2, device=data_device)
    x_before = x.clone()
    for source in (x, uneven_loader(x, y)):
        reduced, report = reduce_network(net, source, ReduceSettings(max_drop=0.05, refit=True), task="regression",
                                         x_ref=x, y_ref=y)
        p = next(reduced.parameters())
        assert p.device == next(net.parameters()).device and p.dtype == torch.float64
        assert x.device.type == data_device and x.dtype == torch.float32 and torch.equal(x, x_before)
        assert sum(reduced.widths) < sum(net.widths)
    assert next(net.parameters()).device.type == net_device, "the caller's network is not moved"

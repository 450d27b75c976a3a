"""Reducible blocks: the exact Deep Stack Network form of a plain Sequential and back, the
refusals that name the layer, and folding always-active neurons without a skip path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_stacks.blocks import BlockError, architecture, block_for, build, find_blocks
from lightning_stacks.reduction import ReduceSettings, reduce_network, stack_weights
from lightning_stacks.reduction.core import (
    StackWeights,
    fold_always_active_plain,
    preactivation_range,
)
from lightning_stacks.reduction.settings import Form


def _warm_bn(seq: nn.Sequential, d: int) -> nn.Sequential:
    seq.train()
    with torch.no_grad():
        for _ in range(4):
            seq(torch.randn(64, d) * 2 + 1)
    return seq.eval()


def sequentials():
    torch.manual_seed(0)
    yield "bn_before_relu", _warm_bn(nn.Sequential(nn.Linear(5, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)), 5)
    yield "bn_after_relu_dropout", _warm_bn(nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.BatchNorm1d(16), nn.Dropout(0.3),
                                                          nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 2)), 5)
    yield "nested_bottleneck", nn.Sequential(nn.Sequential(nn.Linear(4, 20), nn.ReLU()), nn.Linear(20, 3), nn.Linear(3, 10),
                                             nn.ReLU(), nn.Identity(), nn.Linear(10, 1))
    yield "no_bias_input_bn", _warm_bn(nn.Sequential(nn.BatchNorm1d(6), nn.Linear(6, 8, bias=False), nn.ReLU(), nn.ReLU(),
                                                     nn.Linear(8, 8, bias=False), nn.ReLU(), nn.Linear(8, 4)), 6)


@pytest.mark.parametrize("name, seq", list(sequentials()), ids=[n for n, _ in sequentials()])
def test_sequential_form_is_exact_both_ways(name, seq):
    block = block_for(seq, "mlp")
    x = torch.randn(200, seq[0].in_features if isinstance(seq[0], nn.Linear) else next(seq.parameters()).shape[-1])
    net = block.network()
    assert all(s.skip == "none" for s in net.stacks)
    with torch.no_grad():
        torch.testing.assert_close(net(x), seq(x), rtol=1e-5, atol=1e-5)
        back = block.write_back(net)
        torch.testing.assert_close(back(x), seq(x), rtol=1e-5, atol=1e-5)
    kinds = [type(m).__name__ for m in back.modules() if not isinstance(m, nn.Sequential)]
    want = ["Identity" if k == "BatchNorm1d" else k for k in (type(m).__name__ for m in seq.modules() if not isinstance(m, nn.Sequential))]
    assert kinds == want, "same layers at the same places (a folded BatchNorm1d becomes Identity)"
    assert block.count(stack_weights(net)) == sum(p.numel() for p in back.parameters())
    assert ("BatchNorm1d" in str(block.notes)) == any(isinstance(m, nn.BatchNorm1d) for m in seq.modules())


def test_a_linear_without_bias_gains_one_only_when_the_reduction_needs_it():
    torch.manual_seed(1)
    seq = nn.Sequential(nn.Linear(3, 8, bias=False), nn.ReLU(), nn.Linear(8, 2, bias=False))
    back = block_for(seq, "m").write_back(block_for(seq, "m").network())
    assert back[0].bias is None and back[2].bias is None


@pytest.mark.parametrize("seq, match", [
    (nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)), r"layer m\.1 \(Tanh\) is not supported"),
    (nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.Linear(4, 2)), r"layer m\.0 \(Conv1d\) is not supported"),
    (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.ReLU(), nn.Linear(4, 2)),
     r"m\.1 \(BatchNorm1d\) keeps no running statistics"),
    (nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)), "3 Linear layers in a row"),
    (nn.Sequential(nn.ReLU(), nn.Linear(4, 2)), "does not start with a Linear"),
    (nn.Sequential(nn.Linear(4, 2), nn.ReLU()), "ends with a ReLU"),
    (nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)), "has no ReLU"),
    (nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(4, 2)), "layer 0 has 5 outputs but layer 2 takes 4 inputs"),
    (nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.BatchNorm1d(4)), "ends with BatchNorm1d"),
    (nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 2)), "not initialized"),
])
def test_unreducible_sequentials_are_refused_naming_the_layer(seq, match):
    with pytest.raises(BlockError, match=match):
        block_for(seq, "m")


def test_a_sequential_with_its_own_forward_is_refused():
    class Reversed(nn.Sequential):
        def forward(self, x):
            return x

    with pytest.raises(BlockError, match="overrides nn.Sequential's forward"):
        block_for(Reversed(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)), "m")
    with pytest.raises(BlockError, match="is a Conv2d"):
        block_for(nn.Conv2d(1, 1, 1), "conv")


def test_find_blocks_takes_the_outermost_mlps_and_says_why_others_are_not():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)))
            self.head = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))

    found, skipped = find_blocks(Net())
    assert [p for p, _ in found] == ["trunk.3", "head"]
    assert "trunk" in skipped and "Conv2d" in skipped["trunk"]


def test_architecture_rebuilds_the_user_sequential_in_place():
    seq = nn.Sequential(nn.Linear(5, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
    small = nn.Sequential(nn.Linear(5, 7), nn.Identity(), nn.ReLU(), nn.Dropout(0.2), nn.Linear(7, 3))
    rebuilt = build(architecture(small), like=seq)
    assert rebuilt is seq and [type(m).__name__ for m in seq] == ["Linear", "Identity", "ReLU", "Dropout", "Linear"]
    rebuilt.load_state_dict(small.state_dict())
    assert build(architecture(small)).state_dict().keys() == small.state_dict().keys()
    with pytest.raises(BlockError, match="unknown block kind"):
        build({"kind": "transformer"})


def _stack_with_active(n=40, d_in=5, d_out=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    V, b = torch.randn(n, d_in, generator=g), torch.randn(n, generator=g) + 3.0
    st = StackWeights(V, b, torch.randn(d_out, n, generator=g), torch.randn(d_out, generator=g), skip="none", ids=torch.arange(n))
    return st, torch.rand(400, d_in, generator=g) * 0.5


def test_fold_always_active_plain_is_exact_with_rank_many_neurons():
    st, X = _stack_with_active()
    hmin, hmax = preactivation_range(st.V, st.b, X)
    active = hmin > 0
    red, removed = fold_always_active_plain(st, active, hmin, hmax)
    assert red.n == st.n - int(active.sum()) + 3 and removed == int(active.sum()) - 3  # rank(W_M V_M) = d_out = 3
    assert red.skip == "none" and (red.ids[-3:] == -1).all()
    hull = 0.3 * X[:200] + 0.7 * X[200:]  # convex combinations of checked inputs
    for z in (X, hull):
        torch.testing.assert_close(red.forward(z), st.forward(z), rtol=1e-5, atol=1e-4)


def test_fold_always_active_plain_keeps_the_neurons_when_it_would_not_save_any():
    st, X = _stack_with_active(n=6, d_in=5, d_out=8)
    hmin, hmax = preactivation_range(st.V, st.b, X)
    active = torch.zeros(6, dtype=torch.bool)
    active[:2] = True  # two active neurons: rank 2, nothing to gain
    red, removed = fold_always_active_plain(st, active, hmin, hmax)
    assert red is st and removed == 0


def test_a_plain_form_never_gains_a_skip_path_or_neurons():
    torch.manual_seed(3)
    seq = nn.Sequential(nn.Linear(3, 64), nn.ReLU(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 2))
    with torch.no_grad():
        seq[0].bias += 2.0  # many always-active first-layer neurons
    x = torch.rand(500, 3)
    block = block_for(seq, "mlp")
    reduced, report = reduce_network(block.network(), x, ReduceSettings(), task="regression",
                                     form=Form(allow_skip=False, count=block.count, full_params=sum(p.numel() for p in seq.parameters())))
    assert all(s.skip == "none" for s in reduced.stacks)
    assert all(a <= b for a, b in zip(reduced.widths, [64, 48], strict=True))
    assert report.steps[1].widths[0] < 64, "the always-active first layer folded into fewer neurons"
    back = block.write_back(reduced)
    assert report.steps[-1].params == sum(p.numel() for p in back.parameters())
    torch.testing.assert_close(back(x), seq(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(Exception, match="merge_identity_layers"):
        reduce_network(block.network(), x, ReduceSettings(merge_identity_layers=True), task="regression", form=Form(allow_skip=False))

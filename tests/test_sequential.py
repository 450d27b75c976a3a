"""DeepStackNetwork.from_sequential / to_sequential: exact conversions between ReLU MLPs and stacks."""

import pytest
import torch
from torch import nn

from lightning_stacks.model import DeepStackNetwork
from lightning_stacks.reduction import ReduceSettings, reduce_network


def assert_same_function(a: nn.Module, b: nn.Module, x: torch.Tensor, rel: float = 1e-5) -> None:
    """a(x) == b(x) up to ``rel`` times the output scale (float32 round-off by default)."""
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert ya.shape == yb.shape and ya.dtype == yb.dtype
    torch.testing.assert_close(ya, yb, rtol=0, atol=rel * max(1.0, ya.abs().max().item()))


def only_linear_relu(seq: nn.Sequential) -> bool:
    return all(type(layer) in (nn.Linear, nn.ReLU) for layer in seq)


# --------------------------------------------------------------------------- from_sequential
def test_standard_mlp_maps_one_stack_per_relu():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(),
                        nn.Linear(8, 3))
    net = DeepStackNetwork.from_sequential(mlp)
    assert net.architecture() == {"input_dim": 6, "widths": [16, 12, 8], "dims": [16, 12, 3], "skips": ["none"] * 3}
    s1, s2, s3 = net.stacks
    assert torch.equal(s1.V.weight, mlp[0].weight) and torch.equal(s1.V.bias, mlp[0].bias)
    assert torch.equal(s1.W.weight, torch.eye(16)) and torch.equal(s1.W.bias, torch.zeros(16))
    assert torch.equal(s2.V.weight, mlp[2].weight) and torch.equal(s3.V.weight, mlp[4].weight)
    assert torch.equal(s3.W.weight, mlp[6].weight) and torch.equal(s3.W.bias, mlp[6].bias)
    assert_same_function(net, mlp, torch.randn(200, 6) * 3)


def test_consecutive_linears_compose():
    torch.manual_seed(1)
    mlp = nn.Sequential(nn.Linear(5, 10), nn.Linear(10, 7), nn.ReLU(), nn.Linear(7, 4), nn.Linear(4, 9), nn.ReLU(),
                        nn.Linear(9, 3), nn.Linear(3, 2))
    net = DeepStackNetwork.from_sequential(mlp)
    # V_1 = L1 then L0 composed; stack 1's W is Linear(7, 4) alone, V_2 = Linear(4, 9); W_2 = the last two.
    assert net.architecture() == {"input_dim": 5, "widths": [7, 9], "dims": [4, 2], "skips": ["none", "none"]}
    assert torch.equal(net.stacks[0].W.weight, mlp[3].weight) and torch.equal(net.stacks[1].V.weight, mlp[4].weight)
    assert_same_function(net, mlp, torch.randn(200, 5) * 3)


def test_bias_free_layers_count_as_zero_bias():
    torch.manual_seed(2)
    mlp = nn.Sequential(nn.Linear(4, 9, bias=False), nn.ReLU(), nn.Linear(9, 5, bias=False), nn.Linear(5, 6),
                        nn.ReLU(), nn.Linear(6, 2, bias=False))
    net = DeepStackNetwork.from_sequential(mlp)
    assert torch.equal(net.stacks[0].V.bias, torch.zeros(9)) and torch.equal(net.stacks[1].W.bias, torch.zeros(2))
    assert_same_function(net, mlp, torch.randn(200, 4) * 3)


def test_nested_sequential_with_identity_and_inplace_relu():
    torch.manual_seed(3)
    mlp = nn.Sequential(nn.Identity(), nn.Sequential(nn.Linear(3, 8), nn.ReLU(inplace=True)),
                        nn.Sequential(nn.Sequential(nn.Linear(8, 6)), nn.Identity(), nn.ReLU()), nn.Linear(6, 2))
    net = DeepStackNetwork.from_sequential(mlp)
    assert net.widths == [8, 6]
    assert_same_function(net, mlp, torch.randn(200, 3) * 3)


def test_repeated_relus_act_as_one():
    torch.manual_seed(4)
    mlp = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.ReLU(), nn.Linear(8, 2))
    net = DeepStackNetwork.from_sequential(mlp)
    assert net.widths == [8]
    assert_same_function(net, mlp, torch.randn(100, 3) * 3)


def test_float64_mlp_stays_float64_and_exact():
    torch.manual_seed(5)
    mlp = nn.Sequential(nn.Linear(5, 20), nn.Linear(20, 11), nn.ReLU(), nn.Linear(11, 7), nn.ReLU(),
                        nn.Linear(7, 4), nn.Linear(4, 3)).double()
    net = DeepStackNetwork.from_sequential(mlp)
    assert all(p.dtype == torch.float64 for p in net.parameters())
    x = torch.randn(200, 5, dtype=torch.float64) * 3
    assert_same_function(net, mlp, x, rel=1e-12)
    assert_same_function(net.to_sequential(), mlp, x, rel=1e-12)
    assert_same_function(net.to_sequential(fuse=True), mlp, x, rel=1e-12)


def test_from_sequential_does_not_touch_the_global_rng():
    mlp = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    state = torch.random.get_rng_state()
    DeepStackNetwork.from_sequential(mlp).to_sequential(fuse=True)
    assert torch.equal(state, torch.random.get_rng_state())


# --------------------------------------------------------------------------- to_sequential
# Input 5 -> 3 -> 1 -> 4 -> 2: a zero-width stack, a bottleneck of width 1, and a direct skip
# that widens (d_out > d_in) as well as ones that narrow.
WIDTHS, DIMS = [7, 0, 6, 4], [3, 1, 4, 2]


@pytest.mark.parametrize("skip", ["affine", "direct", "none", ["direct", "affine", "none", "affine"]])
@pytest.mark.parametrize("fuse", [False, True])
def test_to_sequential_matches_every_skip_kind(skip, fuse):
    torch.manual_seed(6)
    net = DeepStackNetwork(5, WIDTHS, DIMS, skip)
    with torch.no_grad():  # give the zero-initialized-looking parts real values
        for p in net.parameters():
            p.normal_()
    seq = net.to_sequential(fuse=fuse)
    assert only_linear_relu(seq)
    assert_same_function(seq, net, torch.randn(300, 5) * 2)
    if fuse:  # a standard MLP: Linear and ReLU alternate
        kinds = [type(layer) for layer in seq]
        assert kinds[0] is nn.Linear and kinds[-1] is nn.Linear
        assert all(a is not b for a, b in zip(kinds, kinds[1:], strict=False))


def test_to_sequential_widths_carry_the_skip_through_the_relu():
    net = DeepStackNetwork(5, WIDTHS, DIMS, ["affine", "none", "direct", "direct"])
    seq = net.to_sequential()
    outs = [layer.out_features for layer in seq if isinstance(layer, nn.Linear)]
    # affine 5->3: 7 + 2*3; none with n=0: one Linear 3->1; direct 1->4: 6 + 2*1; direct 4->2: 4 + 2*2.
    assert outs == [13, 3, 1, 8, 4, 8, 2]
    assert sum(isinstance(layer, nn.ReLU) for layer in seq) == 3


def test_zero_width_plain_stack_is_its_constant_bias():
    net = DeepStackNetwork(3, [0], [2], "none")
    (layer,) = net.to_sequential()
    assert torch.equal(layer.weight, torch.zeros(2, 3)) and torch.equal(layer.bias, net.stacks[0].W.bias)


def test_to_sequential_keeps_dtype_and_shares_no_tensors():
    net = DeepStackNetwork(4, [5, 3], [2, 3], "affine").double()
    seq = net.to_sequential()
    assert all(p.dtype == torch.float64 for p in seq.parameters())
    with torch.no_grad():
        seq[0].weight.zero_()
    assert net.stacks[0].V.weight.abs().sum() > 0


# --------------------------------------------------------------------------- round trips
def test_round_trip_of_a_plain_network_is_bit_exact():
    torch.manual_seed(7)
    net = DeepStackNetwork(5, [7, 6, 4], [3, 1, 2], "none")
    again = DeepStackNetwork.from_sequential(net.to_sequential())
    assert again.architecture() == net.architecture()
    for (name, p), (_, q) in zip(net.named_parameters(), again.named_parameters(), strict=True):
        assert torch.equal(p, q), name


def test_round_trip_of_an_mlp_is_bit_exact():
    torch.manual_seed(8)
    mlp = nn.Sequential(nn.Linear(5, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 3))
    seq = DeepStackNetwork.from_sequential(mlp).to_sequential(fuse=True)
    assert [type(layer) for layer in seq] == [type(layer) for layer in mlp]
    for p, q in zip(mlp.parameters(), seq.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("skip", ["affine", "direct"])
@pytest.mark.parametrize("fuse", [False, True])
def test_round_trip_with_skips_keeps_the_function(skip, fuse):
    torch.manual_seed(9)
    net = DeepStackNetwork(5, WIDTHS, DIMS, skip)
    again = DeepStackNetwork.from_sequential(net.to_sequential(fuse=fuse))
    assert set(again.architecture()["skips"]) == {"none"}
    assert again.widths == [7 + 2 * 3, 0 + 2 * 1, 6 + 2 * 1, 4 + 2 * 2]
    assert_same_function(again, net, torch.randn(300, 5) * 2)


# --------------------------------------------------------------------------- the reduction on a converted MLP
def mlp_5_32_24_3() -> nn.Sequential:
    torch.manual_seed(10)
    return nn.Sequential(nn.Linear(5, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 3))


def test_outside_step_on_a_converted_mlp_is_exact_on_the_checked_inputs():
    mlp = mlp_5_32_24_3()
    # A small input region: many neurons are dead or always active there, so step 1 has work.
    x = 0.1 * torch.randn(500, 5) + 0.5
    net = DeepStackNetwork.from_sequential(mlp)
    reduced, report = reduce_network(net, x, ReduceSettings(), task="regression")
    assert [s.step for s in report.steps] == ["full", "outside"]
    assert sum(reduced.widths) < sum(net.widths)
    assert_same_function(reduced, mlp, x)
    seq = reduced.to_sequential()
    assert only_linear_relu(seq)
    assert_same_function(seq, mlp, x)
    assert_same_function(reduced.to_sequential(fuse=True), mlp, x)


def test_zero_tolerance_weak_step_on_a_converted_mlp_removes_only_null_neurons():
    mlp = mlp_5_32_24_3()
    with torch.no_grad():  # neurons that cannot matter: zero in and out of stack 2
        mlp[2].weight[:4] = 0
        mlp[2].bias[:4] = 0
        mlp[4].weight[:, 4:7] = 0
    x = torch.randn(500, 5) * 2
    net = DeepStackNetwork.from_sequential(mlp)
    reduced, report = reduce_network(net, x, ReduceSettings(tolerances=[0.0, 0.0], clusters=[]), task="regression")
    steps = [s.step for s in report.steps]
    assert steps[0] == "full" and steps[-2:] == ["outside", "weak"]
    assert reduced.widths[1] <= 24 - 7
    assert_same_function(reduced, mlp, x)
    assert_same_function(reduced.to_sequential(), mlp, x)


# --------------------------------------------------------------------------- refusals
class NotSequential(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)])


@pytest.mark.parametrize("make,pattern", [
    (lambda: nn.Linear(3, 2), r"expects an nn.Sequential of Linear and ReLU layers, got Linear: wrap"),
    (NotSequential, r"expects an nn.Sequential .* got NotSequential"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Dropout(), nn.Linear(4, 2)),
     r"layer 2 \(Dropout\) is not supported: from_sequential takes Linear and ReLU layers only"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.ReLU(), nn.Tanh()), nn.Linear(4, 2)),
     r"layer 1\.1 \(Tanh\) is not supported"),
    (lambda: nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 2)), r"layer 0 \(LazyLinear\) is not initialized"),
    (lambda: nn.Sequential(nn.Identity()), r"no Linear or ReLU layers"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), r"has no ReLU, so it is one affine map"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU()), r"ends with a ReLU \(layer 1\): end with a Linear"),
    (lambda: nn.Sequential(nn.ReLU(), nn.Linear(3, 2)), r"starts with a ReLU \(layer 0\): start with a Linear"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(5, 2)),
     r"layer 0 \(Linear\) has out_features=4 but the next Linear, layer 2, has in_features=5"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2)),
     r"layer 0 \(Linear\) has out_features=4 .* layer 1, has in_features=6"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2).double()),
     r"layers 0 and 2 differ in dtype or device"),
])
def test_refusals_name_the_problem_and_the_fix(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        DeepStackNetwork.from_sequential(make())

import pytest
import torch

from lightning_stacks.model import DeepStackNetwork, Stack


@pytest.mark.parametrize("variant", ["stack", "simplified", "plain"])
@pytest.mark.parametrize("widths", [[8, 8, 8], [0, 5, 0], [0, 0, 0], [1]])
def test_forward_shapes(variant, widths, device):
    hidden = [3] * (len(widths) - 1)
    net = DeepStackNetwork.from_variant(4, widths, hidden, 2, variant).to(device)
    out = net(torch.randn(7, 4, device=device))
    assert out.shape == (7, 2) and out.device == device
    assert net.widths == widths


def test_affine_inner_width_is_min_of_in_and_out():
    net = DeepStackNetwork(10, [5, 5], [3, 4], "affine")
    assert net.stacks[0].A1.weight.shape == (3, 10) and net.stacks[0].A2.weight.shape == (3, 3)
    assert net.stacks[1].A1.weight.shape == (3, 3) and net.stacks[1].A2.weight.shape == (4, 3)


def test_zero_width_stack_is_purely_affine(device):
    stack = Stack(3, 0, 2, "direct").to(device)
    z = torch.randn(5, 3, device=device)
    torch.testing.assert_close(stack(z), z @ stack.S.weight.T + stack.W.bias)


def test_plain_stack_has_no_skip_parameters():
    stack = Stack(3, 4, 2, "none")
    assert stack.affine_parameters() == []
    names = {n for n, _ in stack.named_parameters()}
    assert names == {"V.weight", "V.bias", "W.weight", "W.bias"}


def test_architecture_round_trip_rebuilds_shapes():
    net = DeepStackNetwork(6, [5, 0, 3], [4, 2, 1], ["affine", "none", "direct"])
    again = DeepStackNetwork.from_architecture(net.architecture())
    assert [p.shape for p in again.parameters()] == [p.shape for p in net.parameters()]


def test_bad_input_shape_is_named():
    net = DeepStackNetwork(4, [3], [2])
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 4\), got \(2, 5\)"):
        net(torch.randn(2, 5))


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(input_dim=3, widths=[2, 2], dims=[1]), "one bottleneck width per stack"),
    (dict(input_dim=3, widths=[2], dims=[1], skips=["affine", "none"]), "one skip kind per stack"),
    (dict(input_dim=3, widths=[2], dims=[1], skips="resnet"), "skip='resnet' is not one of"),
    (dict(input_dim=3, widths=[-1], dims=[1]), "n >= 0"),
])
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        DeepStackNetwork(**kwargs)


def test_from_architecture_missing_keys():
    with pytest.raises(ValueError, match=r"architecture is missing keys: \['skips'\]"):
        DeepStackNetwork.from_architecture({"input_dim": 2, "widths": [1], "dims": [1]})


def test_flush_tiny_zeroes_only_the_tiny_weights_and_keeps_the_outputs(device):
    torch.manual_seed(0)
    net = DeepStackNetwork(5, [8, 6, 4], [3, 3, 2]).to(device)
    with torch.no_grad():
        w = net.stacks[0].V.weight
        w[0, :3] = torch.tensor([1e-39, -3e-25, 1e-21])  # subnormal, tiny, tiny
        w[1, 0] = 2e-20  # above the threshold: kept
    x = torch.rand(64, 5, device=device)
    with torch.no_grad():
        before = net(x)
    assert net.flush_tiny_() == 3
    assert (w[0, :3] == 0).all() and w[1, 0] == 2e-20
    with torch.no_grad():
        torch.testing.assert_close(net(x), before, rtol=0, atol=1e-30)
    assert net.flush_tiny_() == 0  # nothing left to flush
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="threshold must be a positive finite number"):
            net.flush_tiny_(bad)

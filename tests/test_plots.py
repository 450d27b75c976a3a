import pytest
import torch

from lightning_stacks.model import DeepStackNetwork
from lightning_stacks.plots import plot_stacks


def test_plot_writes_a_png_for_a_sine_network(tmp_path):
    torch.manual_seed(0)
    net = DeepStackNetwork(1, [12, 0, 5], [1, 1, 7])  # a zero-width stack plots too
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out = plot_stacks(net, torch.rand(300, 1), tmp_path / "fig.png")
    assert all(v.dtype == torch.float32 and torch.equal(v, before[k]) for k, v in net.state_dict().items())  # untouched
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_plot_refuses_wide_bottlenecks(tmp_path):
    with pytest.raises(ValueError, match="plots need 1-D stack inputs"):
        plot_stacks(DeepStackNetwork(1, [4, 4], [3, 2]), torch.rand(10, 1), tmp_path / "x.png")

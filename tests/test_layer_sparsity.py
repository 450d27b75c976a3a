"""Layer sparsity (Hebiri & Lederer): the negative-part prox and exact identity-layer merging."""

import pytest
import torch

from lightning_stacks.config import ConfigError, load_config, to_container
from lightning_stacks.methods.layer_sparsity import (
    is_identity_layer,
    merge_identity_layers,
    negative_part_prox,
)
from lightning_stacks.model import DeepStackNetwork
from lightning_stacks.reduction import ReduceSettings, reduce_network, run_stacks, stack_weights


def test_prox_keeps_positive_part_and_shrinks_negative_part():
    theta = torch.tensor([[1.0, -3.0], [2.0, -4.0]], dtype=torch.float64)  # |neg|_F = 5
    out = negative_part_prox(theta, t=0.5, r=2.0)  # factor 1 - 1/5 = 0.8
    torch.testing.assert_close(out, torch.tensor([[1.0, -2.4], [2.0, -3.2]], dtype=torch.float64))
    assert torch.all(negative_part_prox(theta, t=1.0, r=5.0) >= 0)  # t r >= |neg|: all negatives vanish


def test_prox_minimizes_its_objective():
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(10, 4, generator=g, dtype=torch.float64)
    t, r = 0.3, 1.5

    def objective(x):
        return 0.5 * ((x - theta) ** 2).sum() + t * r * x.clamp_max(0).norm()

    best = negative_part_prox(theta, t, r)
    f0 = objective(best)
    for _ in range(300):
        assert objective(best + 1e-3 * torch.randn(best.shape, generator=g, dtype=torch.float64)) >= f0 - 1e-12


def test_prox_bad_arguments():
    with pytest.raises(ValueError, match="need t >= 0 and r >= 0"):
        negative_part_prox(torch.ones(2, 2), -1.0, 1.0)


def test_merged_identity_layer_gives_allclose_outputs():
    torch.manual_seed(0)
    net = DeepStackNetwork(5, [20, 10], [3, 2]).double()
    with torch.no_grad():
        net.stacks[0].V.weight.abs_()
        net.stacks[0].V.bias.abs_()
    st = stack_weights(net)
    assert is_identity_layer(st[0], True) and not is_identity_layer(st[0], False)
    merged, flags = merge_identity_layers(st, input_nonnegative=True)
    assert flags == [True, False] and merged[0].n == 0
    x = torch.rand(2000, 5, dtype=torch.float64) * 4  # any non-negative input
    torch.testing.assert_close(run_stacks(merged, x), run_stacks(st, x))
    # inputs that may be negative: nothing is merged
    assert merge_identity_layers(st, input_nonnegative=False)[1] == [False, False]


def test_layer_penalty_training_makes_stack_one_mergeable(tmp_path):
    import pytorch_lightning as pl

    from lightning_stacks.data import build_datamodule
    from lightning_stacks.module import StackModule
    from lightning_stacks.training import build_trainer, method_callbacks

    cfg = load_config(None, ["data.name=digits", "model.widths=[32,32,16]", "model.bottleneck=[8,8]", "trainer.max_epochs=8",
                             "schedule.warmup_epochs=1", "schedule.batch_start=64", "schedule.batch_end=64", "optim.lr=3e-3",
                             "layer_sparsity.penalties=[50,0,0]", f"out_dir={tmp_path}", "logger.kind=none",
                             "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"])
    pl.seed_everything(0)
    module = StackModule(to_container(cfg))
    dm = build_datamodule(cfg.data, module.schedule)
    build_trainer(cfg, callbacks=method_callbacks(cfg), logger=False).fit(module, datamodule=dm)
    s1 = module.net.stacks[0]
    assert (s1.V.weight >= 0).all() and (s1.V.bias >= 0).all()
    x, _ = dm.split("train")  # pixels in [0, 1]
    module.eval()
    reduced, report = reduce_network(module.net, x, ReduceSettings(merge_identity_layers=True, outside=False), task="classification")
    assert [s.step for s in report.steps] == ["full", "layers"] and reduced.widths[0] == 0
    z = torch.rand(3000, 64)
    with torch.no_grad():
        torch.testing.assert_close(reduced(z), module.net(z), rtol=1e-5, atol=1e-5)


def test_layer_config_validation():
    with pytest.raises(ConfigError, match="layer_sparsity.penalties must be >= 0"):
        load_config(None, ["layer_sparsity.penalties=[1,2]"])

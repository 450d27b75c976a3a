"""Group sparsity (Alvarez & Salzmann): the prox against its closed form and its definition."""

import math

import pytest
import torch

from lightning_stacks.config import ConfigError, load_config, to_container
from lightning_stacks.methods.group_sparsity import (
    GroupSparsityCallback,
    group_lasso_penalty,
    soft_threshold,
    sparse_group_lasso_prox,
)


def test_prox_matches_closed_form_by_hand():
    theta = torch.tensor([[3.0, -4.0], [0.1, 0.2]], dtype=torch.float64)
    t, lam, a = 0.5, 1.0, 0.5
    # row 1: S(theta, 0.25) = [2.75, -3.75], norm 4.6503; shrink = 0.5*0.5*1*sqrt(2) = 0.35355
    s = torch.tensor([2.75, -3.75], dtype=torch.float64)
    expected = (1 - 0.5 * 0.5 * math.sqrt(2) / s.norm()) * s
    out = sparse_group_lasso_prox(theta, t, lam, a)
    torch.testing.assert_close(out[0], expected)
    # row 2: S = [0, 0] -> zero group
    assert torch.all(out[1] == 0)


def test_prox_zeroes_exactly_the_groups_below_threshold():
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(200, 5, generator=g, dtype=torch.float64) * torch.rand(200, 1, generator=g, dtype=torch.float64)
    t, lam, a = 0.3, 0.8, 0.2
    out = sparse_group_lasso_prox(theta, t, lam, a)
    below = soft_threshold(theta, t * a * lam).norm(dim=1) <= t * (1 - a) * lam * math.sqrt(5)
    assert below.any() and (~below).any()
    assert torch.all(out[below] == 0)
    assert torch.all(out[~below].norm(dim=1) > 0)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_prox_minimizes_its_objective(alpha):
    g = torch.Generator().manual_seed(1)
    theta = torch.randn(30, 4, generator=g, dtype=torch.float64)
    t, lam = 0.4, 0.7

    def objective(x):
        return 0.5 * ((x - theta) ** 2).sum() + t * group_lasso_penalty(x, lam, alpha)

    best = sparse_group_lasso_prox(theta, t, lam, alpha)
    f0 = objective(best)
    for _ in range(200):
        trial = best + 1e-3 * torch.randn(best.shape, generator=g, dtype=torch.float64)
        assert objective(trial) >= f0 - 1e-12


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(t=0.1, lam=-1.0, alpha=0.5), "need lam >= 0"),
    (dict(t=0.1, lam=1.0, alpha=1.5), r"alpha in \[0, 1\]"),
])
def test_prox_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        sparse_group_lasso_prox(torch.ones(2, 2), **kwargs)


def test_config_refuses_bad_group_settings():
    with pytest.raises(ConfigError, match="group_sparsity.lambdas needs one value or one per stack"):
        load_config(None, ["group_sparsity.lambdas=[0.1,0.1]"])
    with pytest.raises(ConfigError, match=r"alpha in \[0, 1\]"):
        load_config(None, ["group_sparsity.lambdas=[0.1]", "group_sparsity.alpha=2"])


def test_training_with_group_sparsity_zeroes_neurons_and_removal_is_exact(tmp_path):
    import pytorch_lightning as pl

    from lightning_stacks.data import build_datamodule
    from lightning_stacks.module import StackModule
    from lightning_stacks.reduction import ReduceSettings, reduce_network
    from lightning_stacks.training import build_trainer, method_callbacks

    cfg = load_config(None, ["data.name=digits", "model.widths=[64,64,32]", "model.bottleneck=[8,8]", "trainer.max_epochs=12",
                             "schedule.warmup_epochs=2", "schedule.batch_start=64", "schedule.batch_end=64", "optim.lr=3e-3",
                             "group_sparsity.lambdas=[1.0]", "group_sparsity.alpha=0.1", f"out_dir={tmp_path}",
                             "logger.kind=none", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"])
    pl.seed_everything(0)
    module = StackModule(to_container(cfg))
    dm = build_datamodule(cfg.data, module.schedule)
    cbs = method_callbacks(cfg)
    assert isinstance(cbs[0], GroupSparsityCallback) and cbs[0].start_epoch == 2
    build_trainer(cfg, callbacks=cbs, logger=False).fit(module, datamodule=dm)
    zeroed = cbs[0].zero_groups(module)
    assert sum(zeroed) > 20, zeroed
    x, y = dm.split("test")
    module.eval()
    reduced, report = reduce_network(module.net, x, ReduceSettings(outside=False), task="classification")
    assert report.steps[1].step == "zeroed"
    assert sum(reduced.widths) == sum(module.net.widths) - sum(zeroed)
    with torch.no_grad():
        z = torch.rand(1000, 64) * 3 - 1  # anywhere, not only on the data: the removal is exact
        torch.testing.assert_close(reduced(z), module.net(z), rtol=1e-5, atol=1e-5)
    acc = (module.net(x).argmax(1) == y).float().mean()
    assert acc > 0.8

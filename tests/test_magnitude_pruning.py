"""Magnitude pruning baseline: exact sparsity, compression accounting, polynomial schedule."""

import pytest
import torch

from lightning_stacks.config import load_config, to_container
from lightning_stacks.methods.magnitude_pruning import (
    PolynomialPruningCallback,
    max_compression,
    nonzero_parameters,
    polynomial_sparsity,
    prune_network,
    prune_to_compression,
)
from lightning_stacks.model import DeepStackNetwork


def weights(net):
    return [m.weight for m in net.modules() if isinstance(m, torch.nn.Linear) and m.weight.numel()]


def test_global_pruning_removes_the_smallest_magnitudes():
    torch.manual_seed(0)
    net = DeepStackNetwork(8, [30, 20], [4, 3])
    pruned = prune_network(net, 0.6, "global")
    before = torch.cat([w.detach().abs().flatten() for w in weights(net)])
    after = torch.cat([w.detach().flatten() for w in weights(pruned)])
    k = int(round(0.6 * before.numel()))
    assert int((after == 0).sum()) == k
    threshold = before.sort().values[k - 1]
    assert torch.all(before[after != 0] >= threshold)
    assert nonzero_parameters(net) > nonzero_parameters(pruned)  # the original is untouched


def test_layer_pruning_prunes_each_layer_to_the_sparsity():
    torch.manual_seed(1)
    pruned = prune_network(DeepStackNetwork(8, [30, 20], [4, 3]), 0.5, "layer")
    for w in weights(pruned):
        assert abs(float((w == 0).float().mean()) - 0.5) <= 1 / w.numel() + 1e-9


def test_prune_to_compression_hits_the_factor():
    torch.manual_seed(2)
    net = DeepStackNetwork(10, [50, 40], [5, 3])
    pruned, _ = prune_to_compression(net, 4.0)
    assert nonzero_parameters(net) / nonzero_parameters(pruned) == pytest.approx(4.0, rel=0.01)


def test_max_compression_is_the_bound_pruning_approaches():
    torch.manual_seed(3)
    net = DeepStackNetwork(10, [50, 40], [5, 3])
    biases = sum(int((m.bias != 0).sum()) for m in net.modules() if isinstance(m, torch.nn.Linear) and m.bias is not None)
    top = max_compression(net)
    assert top == pytest.approx(nonzero_parameters(net) / biases)
    pruned, _ = prune_to_compression(net, 0.99 * top)  # just below: every weight but a few goes
    assert nonzero_parameters(net) / nonzero_parameters(pruned) == pytest.approx(0.99 * top, rel=0.01)
    with pytest.raises(ValueError, match="only .* weights are nonzero"):
        prune_to_compression(net, 1.01 * top)


@pytest.mark.parametrize("call,pattern", [
    (lambda n: prune_network(n, 1.0), r"sparsity must be in \[0, 1\)"),
    (lambda n: prune_network(n, 0.5, "neuron"), "scope='neuron' is not one of: global, layer"),
    (lambda n: prune_to_compression(n, 0.5), "compression factor must be >= 1"),
    (lambda n: prune_to_compression(n, 1e6), "only .* weights are nonzero"),
])
def test_bad_arguments(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call(DeepStackNetwork(4, [5], [2]))


def test_polynomial_schedule_matches_tf_mot():
    assert polynomial_sparsity(0, 10, 110, 0.0, 0.8) == 0.0
    assert polynomial_sparsity(10, 10, 110, 0.0, 0.8) == pytest.approx(0.0)
    assert polynomial_sparsity(60, 10, 110, 0.0, 0.8) == pytest.approx(0.8 - 0.8 * 0.5**3)
    assert polynomial_sparsity(500, 10, 110, 0.0, 0.8) == pytest.approx(0.8)


def test_pruning_with_retraining_reaches_final_sparsity(tmp_path):
    from lightning_stacks.data import build_datamodule
    from lightning_stacks.module import StackModule
    from lightning_stacks.training import build_trainer

    cfg = load_config(None, ["data.name=digits", "model.widths=[32,32,16]", "model.bottleneck=[8,8]", "trainer.max_epochs=10",
                             "schedule.warmup_epochs=10", "optim.lr=3e-3", "schedule.batch_start=64", "schedule.batch_end=64", f"out_dir={tmp_path}",
                             "logger.kind=none", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"])
    module = StackModule(to_container(cfg))
    dm = build_datamodule(cfg.data, module.schedule)
    cb = PolynomialPruningCallback(0.8, begin_epoch=1, end_epoch=6, frequency=5)
    build_trainer(cfg, callbacks=[cb], logger=False).fit(module, datamodule=dm)
    assert cb.current == pytest.approx(0.8)
    ws = weights(module.net)
    sparsity = sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)
    assert sparsity == pytest.approx(0.8, abs=0.01)
    x, y = dm.split("test")
    module.eval()
    assert (module(x).argmax(1) == y).float().mean() > 0.8  # retraining kept it working


def test_pruning_from_config_reaches_the_compression_factor(tmp_path):
    from lightning_stacks.training import run_training

    cfg = load_config(None, ["data.name=digits", "model.widths=[32,32,16]", "model.bottleneck=[8,8]", "trainer.max_epochs=4",
                             "schedule.warmup_epochs=4", "pruning.compression=3", "pruning.end_epoch=2", "pruning.frequency=2",
                             f"out_dir={tmp_path}", "logger.kind=none", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"])
    full = nonzero_parameters(_fresh_module(cfg).net)
    module, _, _ = run_training(cfg)
    assert full / nonzero_parameters(module.net) == pytest.approx(3, rel=0.01)


def _fresh_module(cfg):
    from lightning_stacks.module import StackModule

    return StackModule(to_container(cfg))


@pytest.mark.parametrize("bad, match", [
    (["pruning.sparsity=1.2"], "sparsity in"),
    (["pruning.compression=0.5"], "compression >= 1"),
    (["pruning.sparsity=0.5", "pruning.compression=3"], "not both"),
    (["pruning.sparsity=0.5", "pruning.begin_epoch=5", "pruning.end_epoch=2"], "begin_epoch <= end_epoch"),
    (["pruning.scope=rows"], "pruning.scope"),
])
def test_bad_pruning_config_is_refused(bad, match):
    from lightning_stacks.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        load_config(None, bad)

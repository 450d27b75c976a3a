"""L2Schedule: the paper's l2 schedule on a user's own module — the values per epoch, only the
target blocks' weights regularized (as the gradient of coef |p|^2), the batch size growing, and
together with ReductionCallback in a plain Trainer."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from user_models import Digits, SeqClassifier, SmallCNN

from lightning_stacks import DeepStackNetwork, L2Schedule, ReductionCallback
from lightning_stacks.config import ConfigError
from lightning_stacks.l2_schedule import regularized


def trainer(tmp_path, callbacks, max_epochs, **kw):
    return pl.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path),
                      callbacks=callbacks, **kw)


def test_the_coefficient_rises_geometrically_after_the_warm_up(tmp_path):
    seen = []

    class Probe(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            seen.append((sched.coef, trainer.datamodule.batch_size))

    sched = L2Schedule(1e-4, 1e-2, warmup_epochs=2, batch_sizes=(32, 256))
    trainer(tmp_path, [sched, Probe()], 7, reload_dataloaders_every_n_epochs=1).fit(SeqClassifier(), datamodule=Digits())
    coefs = [c for c, _ in seen]
    assert coefs[:2] == [0.0, 0.0]
    expected = [1e-4 * (1e-2 / 1e-4) ** (i / 4) for i in range(5)]  # 5 ramp epochs, ends at l2_end
    assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(coefs[2:], expected, strict=True))
    assert [b for _, b in seen] == [32, 32, 32, 54, 91, 152, 256]


def test_only_the_target_blocks_weights_get_the_l2_gradient():
    torch.manual_seed(0)
    module = SmallCNN()
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    F.cross_entropy(module(x), y).backward()
    data_grads = {n: p.grad.clone() for n, p in module.named_parameters()}
    sched = L2Schedule(0.5, 0.5, modules=["head"])
    sched.paths, sched.coef = ["head"], 0.5
    sched.on_before_optimizer_step(None, module, torch.optim.SGD(module.parameters(), lr=0.0))
    changed = {n for n, p in module.named_parameters() if not torch.equal(p.grad, data_grads[n])}
    assert changed == {"head.0.weight", "head.0.bias", "head.2.weight"}, "the trunk and the output bias are left alone"
    torch.testing.assert_close(module.head[0].weight.grad, data_grads["head.0.weight"] + module.head[0].weight.detach())


def test_the_l2_term_is_the_gradient_of_coef_times_the_squared_norm(tmp_path):
    torch.manual_seed(1)
    module = SeqClassifier(batchnorm=False)
    x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
    sched = L2Schedule(0.3, 0.3, modules=["mlp"])
    sched.coef = 0.3
    F.cross_entropy(module(x), y).backward()
    data_grads = {n: p.grad.clone() for n, p in module.named_parameters()}
    sched.on_before_optimizer_step(None, module, torch.optim.SGD(module.parameters(), lr=0.0))
    for n, p in module.named_parameters():
        want = data_grads[n] + (0 if n == "mlp.5.bias" else 2 * 0.3 * p.detach())  # mlp.5: the output layer
        torch.testing.assert_close(p.grad, want, msg=n)


def test_a_deep_stack_network_gets_its_affine_coefficient_and_no_bottleneck_bias_term():
    net = DeepStackNetwork(4, [8, 6], [2, 3])
    weights, affine = regularized(net)
    names = {id(p): n for n, p in net.named_parameters()}
    assert {names[id(p)] for p in affine} == {"stacks.0.A1.weight", "stacks.0.A2.weight", "stacks.1.A1.weight", "stacks.1.A2.weight"}
    assert not any(".W.bias" in names[id(p)] for p in weights + affine)


def test_with_the_reduction_callback_in_a_plain_trainer(tmp_path):
    pl.seed_everything(2)
    module = SeqClassifier()
    l2, red = L2Schedule(1e-4, 3e-3, warmup_epochs=1), ReductionCallback(max_drop=0.01, at_epochs=[3], at_end=False, verbose=False)
    trainer(tmp_path, [l2, red], 5).fit(module, datamodule=Digits())
    assert red.report["steps"][-1]["widths"] == [m.out_features for m in module.mlp if isinstance(m, nn.Linear)][:2]
    assert l2._params["mlp"][0] is module.mlp, "after the reduction the l2 term follows the new block"


@pytest.mark.parametrize("kwargs, match", [
    ({"l2_start": 0}, "l2_start must be a positive finite number"),
    ({"l2_end": float("nan")}, "l2_end must be a positive finite number"),
    ({"warmup_epochs": -1}, "warmup_epochs must be a whole number >= 0"),
    ({"batch_sizes": (32,)}, r"batch_sizes must be \(start, end\)"),
    ({"modules": "not a path"}, "is not an attribute name"),
])
def test_bad_arguments_are_refused_at_construction(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        L2Schedule(**{"l2_start": 1e-4, "l2_end": 1e-3, **kwargs})


def test_batch_sizes_need_a_reloading_trainer_and_a_datamodule_batch_size(tmp_path):
    with pytest.raises(ConfigError, match="reload_dataloaders_every_n_epochs=1"):
        trainer(tmp_path, [L2Schedule(1e-4, 1e-3, batch_sizes=(16, 64))], 1).fit(SeqClassifier(), datamodule=Digits())
    from lightning_stacks import StackModule, load_config

    cfg = load_config(None, ["data.name=digits", "model.widths=[8]", "model.bottleneck=[]"])
    from lightning_stacks.config import to_container

    with pytest.raises(ConfigError, match="applies the l2 schedule itself"):
        trainer(tmp_path, [L2Schedule(1e-4, 1e-3)], 1).fit(StackModule(to_container(cfg)), datamodule=Digits())


def test_after_the_ramp_the_coefficient_is_l2_after(tmp_path):
    seen = []

    class Probe(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            seen.append(sched.coef)

    sched = L2Schedule(1e-4, 1e-2, warmup_epochs=1, ramp_epochs=3, l2_after=1e-5)
    trainer(tmp_path, [sched, Probe()], 6, limit_train_batches=2).fit(SeqClassifier(), datamodule=Digits())
    assert seen[0] == 0.0 and math.isclose(seen[1], 1e-4) and math.isclose(seen[3], 1e-2)
    assert seen[4:] == [1e-5, 1e-5]
    with pytest.raises(ConfigError, match="ramp_epochs must be a whole number >= 1"):
        L2Schedule(1e-4, 1e-3, ramp_epochs=0)

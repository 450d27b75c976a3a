"""The training loop's device path: batches drawn where the data lives, the same order on every
device, the l2 term and the optimizer per device, and the opt-in compiled forward. Tests taking
``device`` run on CUDA where the machine has it, on the CPU otherwise."""

import copy
import math

import pytest
import torch

from lightning_stacks.config import load_config, to_container
from lightning_stacks.data import SineDataModule, TensorBatchLoader, data_device, splits_nbytes
from lightning_stacks.model import DeepStackNetwork
from lightning_stacks.module import StackModule

GiB = 1 << 30


def reference_batches(x, y, batch_size, shuffle, seed=0, epoch=0, rank=0, world_size=1):
    """The loader's order as it was first written: a CPU permutation, CPU fancy indexing."""
    n = x.shape[0]
    num = n // world_size if world_size > 1 else n
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)) if shuffle else torch.arange(n)
    if world_size > 1:
        idx = idx[: num * world_size][rank::world_size]
    return [(x[idx[s : s + batch_size]], y[idx[s : s + batch_size]]) for s in range(0, idx.numel(), batch_size)]


@pytest.mark.parametrize("shuffle,rank,world_size", [(True, 0, 1), (False, 0, 1), (True, 1, 3), (True, 0, 2)])
def test_loader_order_is_unchanged_and_the_same_on_the_device(device, shuffle, rank, world_size):
    x = torch.randn(103, 3)
    y = torch.arange(103)
    want = reference_batches(x, y, 10, shuffle, seed=4, epoch=2, rank=rank, world_size=world_size)
    args = dict(shuffle=shuffle, seed=4, epoch=2, rank=rank, world_size=world_size)
    on_cpu = list(TensorBatchLoader(x, y, 10, **args))
    on_dev = list(TensorBatchLoader(x.to(device), y.to(device), 10, **args))
    assert len(on_cpu) == len(on_dev) == len(want)
    for (xa, ya), (xb, yb), (xw, yw) in zip(on_cpu, on_dev, want, strict=True):
        assert xb.device.type == device.type and yb.device.type == device.type
        assert torch.equal(xa, xw) and torch.equal(ya, yw)
        assert torch.equal(xb.cpu(), xw) and torch.equal(yb.cpu(), yw)


def test_data_device_keeps_the_splits_on_the_accelerator_only_when_they_fit():
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert data_device("auto", cuda, nbytes=GiB, free_bytes=10 * GiB) == cuda
    assert data_device("auto", cuda, nbytes=6 * GiB, free_bytes=10 * GiB) == cpu  # over half the free memory
    assert data_device("cpu", cuda, nbytes=1, free_bytes=10 * GiB) == cpu
    assert data_device("auto", cpu, nbytes=1, free_bytes=10 * GiB) == cpu


def test_splits_nbytes_counts_a_reused_split_once():
    x, y = torch.zeros(10, 4), torch.zeros(10, dtype=torch.int64)
    other = (torch.zeros(5, 4), torch.zeros(5, dtype=torch.int64))
    assert splits_nbytes({"train": other, "val": (x, y), "test": (x, y)}) == 5 * 4 * 4 + 5 * 8 + 10 * 4 * 4 + 10 * 8


def tiny_cfg(tmp_path, *extra):
    return load_config(None, [
        f"out_dir={tmp_path}", "data.n_train=256", "data.n_val=64", "data.n_test=64", "model.widths=[16,8]",
        "model.bottleneck=[4]", "trainer.max_epochs=2", "schedule.warmup_epochs=0", "schedule.l2_start=1e-3",
        "schedule.l2_end=1e-3", "schedule.batch_start=32", "schedule.batch_end=32", "logger.kind=none",
        "trainer.enable_progress_bar=false", *extra])


class BatchDevices:
    """Records the device of every training batch as the loader yields it (before Lightning's
    transfer) and as the step receives it."""

    def __init__(self):
        import pytorch_lightning as pl

        outer = self

        class Hook(pl.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                outer.seen.append(batch[0].device)

        self.seen: list[torch.device] = []
        self.callback = Hook()


@pytest.mark.parametrize("setting", ["auto", "cpu"])
def test_fit_draws_batches_from_the_training_device(tmp_path, device, setting):
    from lightning_stacks.training import build_trainer

    cfg = tiny_cfg(tmp_path, f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}", "trainer.devices=1",
                   f"data.device={setting}")
    module = StackModule(to_container(cfg))
    dm = SineDataModule(cfg.data, schedule=module.schedule)
    rec = BatchDevices()
    trainer = build_trainer(cfg, callbacks=[rec.callback], logger=False)
    yielded = []
    original = dm.train_dataloader

    def spy():
        loader = original()
        yielded.append(loader.x.device)
        return loader

    dm.train_dataloader = spy
    trainer.fit(module, datamodule=dm)
    on_device = setting == "auto" and device.type == "cuda"
    assert yielded and all(d.type == ("cuda" if on_device else "cpu") for d in yielded)
    assert bool(dm.placed) == on_device
    assert all(d.type == device.type for d in rec.seen)  # the step always gets its batch on the device
    assert dm.split("train")[0].device.type == "cpu", "split() stays on the host (reduction, evaluation)"


def old_l2(module: StackModule) -> torch.Tensor:
    """The l2 term as a per-parameter Python sum (the definition the foreach version must equal)."""
    total = module.net.stacks[0].W.bias.new_zeros(())
    for stack in module.net.stacks:
        if module.l2_coef:
            total = total + module.l2_coef * sum(p.pow(2).sum() for p in stack.nonlinear_parameters())
        if module.l2_affine_coef and stack.skip != "none":
            total = total + module.l2_affine_coef * sum(p.pow(2).sum() for p in stack.affine_parameters())
    return total


@pytest.mark.parametrize("l2,l2_affine", [(1e-3, 0.0), (0.0, 2e-3), (1e-3, 5e-4), (0.0, 0.0)])
def test_l2_penalty_equals_the_per_parameter_sum(device, l2, l2_affine):
    cfg = load_config(None, ["model.widths=[6,0,5]", "model.bottleneck=[3,2]"])
    torch.manual_seed(0)
    module = StackModule(to_container(cfg))
    module.net = DeepStackNetwork(1, [6, 0, 5], [3, 2, 7], ["affine", "none", "direct"])
    module = module.to(device)
    module.l2_coef, module.l2_affine_coef = l2, l2_affine
    got, want = module.l2_penalty(), old_l2(module)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-12)
    if l2 or l2_affine:
        g_got = torch.autograd.grad(got, list(module.net.parameters()), allow_unused=True)
        g_want = torch.autograd.grad(old_l2(module), list(module.net.parameters()), allow_unused=True)
        for a, b in zip(g_got, g_want, strict=True):
            if a is None or b is None:
                assert a is None or not a.any()
                assert b is None or not b.any()
            else:
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12)
        assert got.item() > 0
    else:
        assert got.item() == 0.0


def test_adam_is_fused_on_cuda_only(device):
    cfg = load_config(None, [])
    module = StackModule(to_container(cfg)).to(device)
    opt = module.configure_optimizers()
    assert all(g["fused"] is (True if device.type == "cuda" else None) for g in opt.param_groups)
    assert len(opt.param_groups) == len(module.param_groups())


# --------------------------------------------------------------------------- compile
def test_compile_failure_falls_back_to_eager_with_one_line(tmp_path, monkeypatch, capsys):
    def broken_compile(model, **kwargs):
        def run(x):
            raise RuntimeError("no working C++ compiler\nsecond line of the trace")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    cfg = tiny_cfg(tmp_path, "trainer.accelerator=cpu", "trainer.devices=1", "trainer.compile=default", "trainer.max_epochs=1")
    module = StackModule(to_container(cfg))
    dm = SineDataModule(cfg.data, schedule=module.schedule)
    from lightning_stacks.training import build_trainer

    build_trainer(cfg, logger=False).fit(module, datamodule=dm)
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if "torch.compile failed" in ln]
    assert len(lines) == 1 and "trainer.compile=default" in lines[0] and "no working C++ compiler" in lines[0]
    assert "second line" not in out and "training runs eagerly" in lines[0]
    assert module.__dict__.get("_compiled") is None
    assert all(math.isfinite(float(p.detach().sum())) for p in module.parameters())


def test_compile_is_reapplied_when_the_network_is_replaced(monkeypatch):
    compiled_for = []

    def recording_compile(model, **kwargs):
        compiled_for.append((model, kwargs.get("mode")))
        return model

    monkeypatch.setattr(torch, "compile", recording_compile)
    cfg = load_config(None, ["trainer.compile=reduce-overhead", "model.widths=[8,8]", "model.bottleneck=[3]"])
    module = StackModule(to_container(cfg))
    assert module.compile_network() and compiled_for[-1] == (module.net, "reduce-overhead")
    x = torch.randn(5, 1)
    torch.testing.assert_close(module(x), module.net(x))
    smaller = DeepStackNetwork.from_architecture(dict(module.net.architecture(), widths=[4, 4]))
    module.replace_network(smaller)
    assert compiled_for[-1][0] is smaller, "the compiled forward follows the new network"
    assert set(module.state_dict()) == {"net." + k for k in smaller.state_dict()}, "no compiled wrapper in checkpoints"
    assert module.compile_network("none") is False and module.__dict__["_compiled"] is None


def test_compile_none_leaves_the_forward_eager(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("compiled although trainer.compile=none"))
    module = StackModule(to_container(load_config(None, [])))
    assert module.compile_network() is False


@pytest.mark.slow
def test_compiled_forward_equals_eager(device):
    """A real torch.compile (tens of seconds on a CPU): the same outputs as the eager network, or
    the documented eager fallback where this machine cannot compile."""
    module = StackModule(to_container(load_config(None, ["trainer.compile=default", "model.widths=[16,8]",
                                                         "model.bottleneck=[4]"]))).to(device)
    eager = copy.deepcopy(module.net)
    module.compile_network()
    x = torch.randn(64, 1, device=device)
    torch.testing.assert_close(module(x), eager(x), rtol=1e-5, atol=1e-6)

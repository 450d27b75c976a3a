import math

import pytest
import pytorch_lightning as pl
import torch

from lightning_stacks import names
from lightning_stacks.checkpoint import CheckpointError, read_checkpoint, save_module
from lightning_stacks.config import load_config, to_container
from lightning_stacks.data import build_datamodule
from lightning_stacks.module import StackModule, load_module
from lightning_stacks.schedule import Schedule
from lightning_stacks.training import build_trainer


def test_schedule_per_epoch_matches_config():
    cfg = load_config(None, ["schedule.warmup_epochs=2", "schedule.l2_start=1e-4", "schedule.l2_end=1e-2",
                             "schedule.lr_end_mult=0.01", "schedule.batch_start=100", "schedule.batch_end=400",
                             "schedule.affine_l2_mult=3"])
    table = Schedule(cfg.schedule, total_epochs=5).table()
    assert [(e.l2, e.lr_mult, e.batch_size) for e in table[:2]] == [(0.0, 1.0, 100)] * 2
    # epochs 2, 3, 4 span the geometric ramp: start, middle, end
    assert table[2].l2 == pytest.approx(1e-4) and table[3].l2 == pytest.approx(1e-3) and table[4].l2 == pytest.approx(1e-2)
    assert [e.lr_mult for e in table[2:]] == pytest.approx([1.0, 0.1, 0.01])
    assert [e.batch_size for e in table[2:]] == [100, 200, 400]
    assert table[3].l2_affine == pytest.approx(3e-3)


def test_schedule_rejects_empty_span():
    with pytest.raises(ValueError, match="total_epochs must be >= 1"):
        Schedule(load_config().schedule, 0)


def make_module(*overrides):
    cfg = load_config(None, ["model.widths=[6,5,4]", "model.bottleneck=[3,2]", *overrides])
    return StackModule(to_container(cfg)), cfg


@pytest.mark.parametrize("variant", ["stack", "simplified", "plain"])
def test_param_groups_hold_every_parameter_once_with_intended_lr_and_l2(variant):
    module, cfg = make_module(f"model.variant={variant}", "optim.lr=0.002", "optim.affine_lr_mult=10")
    opt = module.configure_optimizers()
    seen = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in module.parameters())
    assert len(seen) == len(set(seen))
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["nonlinear"]["lr"] == pytest.approx(0.002) and by_name["nonlinear"]["l2"] == "nonlinear"
    assert by_name["bottleneck_bias"]["l2"] == "none"
    assert {id(p) for p in by_name["bottleneck_bias"]["params"]} == {id(s.W.bias) for s in module.net.stacks}
    if variant == "plain":
        assert "affine" not in by_name
    else:
        assert by_name["affine"]["lr"] == pytest.approx(0.02) and by_name["affine"]["l2"] == "affine"


def test_l2_penalty_excludes_bottleneck_biases_and_uses_both_coefficients():
    module, _ = make_module()
    module.l2_coef, module.l2_affine_coef = 0.5, 2.0
    module.l2_penalty().backward()
    for s in module.net.stacks:
        assert torch.all(s.W.bias.grad == 0) if s.W.bias.grad is not None else True
        torch.testing.assert_close(s.V.weight.grad, 2 * 0.5 * s.V.weight)
        torch.testing.assert_close(s.V.bias.grad, 2 * 0.5 * s.V.bias)
        torch.testing.assert_close(s.A1.weight.grad, 2 * 2.0 * s.A1.weight)
    expected = sum(0.5 * sum(p.pow(2).sum() for p in s.nonlinear_parameters()) +
                   2.0 * sum(p.pow(2).sum() for p in s.affine_parameters()) for s in module.net.stacks)
    torch.testing.assert_close(module.l2_penalty(), expected)


class Recorder(pl.Callback):
    def __init__(self):
        self.rows = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == 0:
            lrs = {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups}
            self.rows.append((trainer.current_epoch, module.l2_coef, lrs, batch[0].shape[0]))


def test_trainer_applies_schedule_each_epoch(tmp_path):
    cfg = load_config(None, [
        "model.widths=[8,8,8]", "data.n_train=512", "trainer.max_epochs=4", "schedule.warmup_epochs=1",
        "schedule.l2_start=1e-4", "schedule.l2_end=1e-2", "schedule.batch_start=32", "schedule.batch_end=128",
        "schedule.lr_end_mult=0.1", "optim.lr=0.01", f"out_dir={tmp_path}", "logger.kind=none",
        "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
    ])
    module = StackModule(to_container(cfg))
    rec = Recorder()
    build_trainer(cfg, callbacks=[rec], logger=False).fit(module, datamodule=build_datamodule(cfg.data, module.schedule))
    expected = module.schedule.table()
    assert [r[0] for r in rec.rows] == [0, 1, 2, 3]
    for (_epoch, l2, lrs, bs), exp in zip(rec.rows, expected, strict=True):
        assert l2 == pytest.approx(exp.l2) and bs == exp.batch_size
        assert lrs["nonlinear"] == pytest.approx(0.01 * exp.lr_mult)
        assert lrs["affine"] == pytest.approx(0.1 * exp.lr_mult)
    assert [r[3] for r in rec.rows] == [32, 32, 64, 128]


def test_checkpoint_round_trip_gives_identical_outputs(trained_digits, tmp_path):
    module, dm, cfg = trained_digits
    path = tmp_path / "m.ckpt"
    save_module(module, path)
    x, _ = dm.split("test")
    again = StackModule.load_from_checkpoint(path)  # no config given: the checkpoint carries it
    again.eval()
    assert again.net.architecture() == module.net.architecture()
    torch.testing.assert_close(again(x), module(x), rtol=0, atol=0)
    torch.testing.assert_close(load_module(path)(x), module(x), rtol=0, atol=0)


def test_trainer_checkpoint_loads_with_load_from_checkpoint_alone(trained_digits, tmp_path):
    module, dm, cfg = trained_digits
    ckpt = tmp_path / "t.ckpt"
    trainer = build_trainer(load_config(base=to_container(cfg), overrides=["trainer.max_epochs=1", f"out_dir={tmp_path}"]), logger=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(ckpt)
    x, _ = dm.split("val")
    torch.testing.assert_close(StackModule.load_from_checkpoint(ckpt).eval()(x), module(x), rtol=0, atol=0)


def test_bad_checkpoints_fail_clearly(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(junk)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1}}, other)
    with pytest.raises(CheckpointError, match="not a lightning_stacks checkpoint"):
        read_checkpoint(other)
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="no 'state_dict'"):
        read_checkpoint(plain)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "missing.ckpt")


def test_module_metric_names():
    module, _ = make_module()
    assert module.task == "regression"
    assert names.metric_name("val", module.task) == names.VAL_MSE
    assert names.reduce_neurons(2) == "reduce/neurons/stack_2"
    assert math.isfinite(float(module.data_loss(torch.zeros(3, 7), torch.ones(3, 7)))) and \
        float(module.data_loss(torch.zeros(3, 7), torch.ones(3, 7))) == pytest.approx(7.0)


def test_train_loss_reaches_the_logger_every_n_steps(tmp_path):
    import csv

    from pytorch_lightning.loggers import CSVLogger

    cfg = load_config(None, ["model.widths=[8,8,8]", "data.n_train=256", "trainer.max_epochs=2", "schedule.batch_start=32",
                             "schedule.batch_end=32", "trainer.log_every_n_steps=3", f"out_dir={tmp_path}",
                             "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"])
    module = StackModule(to_container(cfg))
    logger = CSVLogger(str(tmp_path), name="csv")
    build_trainer(cfg, logger=logger).fit(module, datamodule=build_datamodule(cfg.data, module.schedule))
    rows = list(csv.DictReader(open(logger.experiment.metrics_file_path)))
    steps = sorted({int(r["step"]) for r in rows if r.get(names.TRAIN_LOSS)})
    assert steps == list(range(2, 16, 3)), steps  # 16 steps: every 3rd is logged
    assert all(r.get(names.TRAIN_L2) for r in rows if r.get(names.TRAIN_LOSS))
    assert any(r.get(names.VAL_MSE) for r in rows) and any(r.get(names.TRAIN_LAMBDA) for r in rows)

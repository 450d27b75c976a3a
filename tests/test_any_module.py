"""ReductionCallback on the models users already train: an own LightningModule over a plain
nn.Sequential (BatchNorm1d, Dropout, a StepLR), a CNN whose head is reduced, checkpoints that
hold the reduced shapes (reloaded in a fresh process, resumed), DDP, dashboards and export."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from user_models import Digits, SeqClassifier, SmallCNN, accuracy

from lightning_stacks.callbacks import ReductionCallback
from lightning_stacks.checkpoint import load_reduced_checkpoint

HERE = Path(__file__).parent
ROOT = HERE.parent


def trainer(tmp_path, callbacks, max_epochs, logger=False, **kw):
    return pl.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=logger, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=str(tmp_path), callbacks=callbacks, **kw)


def kinds(seq: nn.Sequential) -> list[str]:
    return [type(m).__name__ for m in seq]


def test_own_module_sequential_reduced_in_fit_with_its_scheduler(tmp_path):
    pl.seed_everything(0)
    dm, module = Digits(), SeqClassifier(step_lr=True)
    cb = ReductionCallback(max_drop=0.02, at_epochs=[4], at_end=False, reference="val", verbose=False)
    trainer(tmp_path, [cb], 7, enable_checkpointing=False).fit(module, datamodule=dm)
    report = cb.reports[0]
    assert report["target"] == "mlp" and report["kind"] == "sequential"
    assert kinds(module.mlp) == ["Linear", "Identity", "ReLU", "Dropout", "Linear", "ReLU", "Linear"], "still a plain Sequential"
    widths = report["steps"][-1]["widths"]
    assert [module.mlp[0].out_features, module.mlp[4].out_features] == widths and sum(widths) < 192
    assert report["steps"][-1]["params"] == sum(p.numel() for p in module.mlp.parameters()), "the report counts the deployed block"
    assert report["steps"][0]["params"] == 16714, "the full row counts the block as it was (BatchNorm1d included)"
    assert any("BatchNorm1d 1 folded into Linear 0" in n for n in report["notes"])
    assert report["costs"]["after"]["params"] == sum(p.numel() for p in module.parameters())
    assert report["costs"]["after"]["flops_per_example"] < report["costs"]["before"]["flops_per_example"]
    full_val, last_val = report["steps"][0]["metrics"]["val"], report["steps"][-1]["metrics"]["val"]
    assert last_val >= full_val - 0.02 - 1e-9, "the budget holds on the held-out split"
    assert module.lrs == [3e-3, 3e-3, 1.5e-3, 1.5e-3, 7.5e-4, 7.5e-4, 3.75e-4], "StepLR went on through the reduction"
    opt_params = {id(p) for g in module.trainer.optimizers[0].param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in module.parameters()}


def test_cnn_head_is_reduced_and_the_trunk_untouched(tmp_path):
    pl.seed_everything(1)
    dm, module = Digits(images=True), SmallCNN()
    cb = ReductionCallback(max_drop=0.02, modules=["head"], reference="val", verbose=False)
    trainer(tmp_path, [cb], 4, enable_checkpointing=False).fit(module, datamodule=dm)
    trunk = {k: v.clone() for k, v in module.features.state_dict().items()}
    report = cb.report
    assert report["target"] == "head" and kinds(module.head) == ["Linear", "ReLU", "Linear"]
    assert module.head[0].out_features == report["steps"][-1]["widths"][0] < 96
    assert all(torch.equal(v, module.features.state_dict()[k]) for k, v in trunk.items())
    # the budget was measured on the model's outputs: the report's metric is the model's accuracy
    assert report["steps"][-1]["metrics"]["val"] == pytest.approx(accuracy(module, dm), abs=1e-6)
    assert report["steps"][-1]["metrics"]["val"] >= report["steps"][0]["metrics"]["val"] - 0.02 - 1e-9
    assert report["costs"]["after"]["latency_ms_batch_1024"] > 0


def test_a_block_the_data_never_reaches_is_refused_before_training(tmp_path):
    class Unused(SeqClassifier):
        def __init__(self):
            super().__init__()
            self.spare = nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))

    module = Unused()
    cb = ReductionCallback(max_drop=0.01, modules=["spare"], verbose=False)
    with pytest.raises(Exception, match="block spare is not called"):
        trainer(tmp_path, [cb], 1, enable_checkpointing=False).fit(module, datamodule=Digits())


def test_last_checkpoint_holds_the_reduced_model_in_a_fresh_process_and_resumes(tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    pl.seed_everything(2)
    dm, module = Digits(), SeqClassifier()
    ck = ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True, save_top_k=0)
    cb = ReductionCallback(max_drop=0.02, reference="val", verbose=False)
    trainer(tmp_path, [cb, ck], 3).fit(module, datamodule=dm)
    dm.setup()
    x = dm.val_set.tensors[0]
    module.eval()
    with torch.no_grad():
        torch.save({"x": x, "out": module(x)}, tmp_path / "expected.pt")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(HERE / "reload_job.py"), str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "identical outputs" in proc.stdout and "resumed" in proc.stdout


def test_load_reduced_checkpoint_refuses_a_mismatched_module(tmp_path):
    from lightning_stacks.checkpoint import CheckpointError

    pl.seed_everything(3)
    module = SeqClassifier()
    cb = ReductionCallback(max_drop=0.02, verbose=False)
    tr = trainer(tmp_path, [cb], 1, enable_checkpointing=False)
    tr.fit(module, datamodule=Digits())
    tr.save_checkpoint(tmp_path / "r.ckpt")

    class Other(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(2, 2)

    with pytest.raises(CheckpointError, match="reduced block 'mlp' that Other does not have"):
        load_reduced_checkpoint(Other(), tmp_path / "r.ckpt")


def test_neuron_counts_on_every_logging_step_and_the_dashboard_from_a_csv_run(tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    pl.seed_everything(4)
    module = SeqClassifier()
    cb = ReductionCallback(max_drop=0.02, at_epochs=[2], verbose=False)
    trainer(tmp_path, [cb], 4, logger=CSVLogger(tmp_path, name="csv"), log_every_n_steps=5,
            enable_checkpointing=False).fit(module, datamodule=Digits())
    import csv

    rows = list(csv.DictReader(open(next((tmp_path / "csv").rglob("metrics.csv")))))
    train_rows = [r for r in rows if r.get("train_loss")]
    assert train_rows and all(r["neurons/total"] and r["neurons/mlp"] for r in train_rows)
    counts = [float(r["neurons/total"]) for r in train_rows]
    assert counts[0] == 192 and counts[-1] < 192, "a staircase that drops at the reduction"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "plot_dashboard.py"), str(tmp_path / "csv"), str(tmp_path / "d.png")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "d.png").stat().st_size > 10_000


@pytest.mark.parametrize("suffix", [".pt", ".pt2", ".onnx"])
def test_export_round_trip(tmp_path, suffix):
    if suffix == ".onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    from lightning_stacks.export import export_model

    pl.seed_everything(5)
    dm, module = Digits(), SeqClassifier()
    trainer(tmp_path, [ReductionCallback(max_drop=0.02, verbose=False)], 1, enable_checkpointing=False).fit(module, datamodule=dm)
    dm.setup()
    diff = export_model(module, dm.val_set.tensors[0][:32], tmp_path / f"model{suffix}", verbose=False)
    assert diff < 1e-5 and (tmp_path / f"model{suffix}").stat().st_size > 0


def test_export_refuses_what_it_cannot_write(tmp_path):
    from lightning_stacks.export import ExportError, export_model

    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ExportError, match="unknown export format '.h5'"):
        export_model(model, torch.randn(4, 3), tmp_path / "m.h5")
    with pytest.raises(ExportError, match="at least 2 example inputs"):
        export_model(model, torch.randn(1, 3), tmp_path / "m.pt")


@pytest.mark.slow
def test_ddp_two_processes_reduce_a_sequential_identically(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(HERE / "ddp_sequential_job.py"), str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [(tmp_path / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert ranks[0] == ranks[1], f"ranks differ: {ranks}"
    assert ranks[0][1] == "Linear,ReLU,Dropout,Linear,ReLU,Linear" and ranks[0][-1] == "2"


def test_a_loader_of_whole_batches_from_a_batch_sampler_is_read_right(tmp_path):
    """DataLoader(ds, batch_size=None, sampler=BatchSampler(...)): the reduction rebuilds it
    sequentially with its own collate (no per-sample lists)."""
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    pl.seed_everything(6)
    dm = Digits()
    dm.setup()
    ds = dm.train_set
    loader = DataLoader(ds, batch_size=None, sampler=BatchSampler(RandomSampler(ds), 64, drop_last=False))
    cb = ReductionCallback(max_drop=0.02, verbose=False, report_path=None)
    val = DataLoader(dm.val_set, batch_size=None, sampler=BatchSampler(RandomSampler(dm.val_set), 64, drop_last=False))
    trainer(tmp_path, [cb], 2, enable_checkpointing=False).fit(SeqClassifier(), loader, val)
    assert cb.report["steps"][0]["metrics"]["train"] > 0.5 and "val" in cb.report["steps"][0]["metrics"]

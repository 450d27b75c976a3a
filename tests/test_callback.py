"""ReductionCallback as a drop-in stage of a user's own Trainer, module and data."""

from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl
import torch
from byo import BlobsDataModule, MyClassifier

from lightning_stacks import DeepStackNetwork
from lightning_stacks.callbacks import ReductionCallback
from lightning_stacks.checkpoint import load_reduced_checkpoint
from lightning_stacks.config import ConfigError
from lightning_stacks.reduction import ReductionError


def plain_trainer(tmp_path, callbacks, max_epochs=4, **kw):
    return pl.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path),
                      callbacks=callbacks, **kw)


def test_in_fit_reduction_rebuilds_the_optimizer_and_training_goes_on(tmp_path):
    pl.seed_everything(0)
    module, dm = MyClassifier(), BlobsDataModule()

    class Probe(pl.Callback):
        """After the reduction (list order: it runs after ReductionCallback's hook)."""

        def on_train_epoch_start(self, trainer, m):
            if trainer.current_epoch == 2:
                self.opt_params = [p for g in trainer.optimizers[0].param_groups for p in g["params"]]
                self.live = list(m.body.parameters())
                self.before = [p.detach().clone() for p in self.live]

    cb, probe = ReductionCallback(max_drop=0.02, at_epochs=[2], at_end=False, verbose=False), Probe()
    plain_trainer(tmp_path, [cb, probe]).fit(module, datamodule=dm)
    assert len(cb.reports) == 1 and cb.reports[0]["epoch"] == 2
    widths = cb.reports[0]["steps"][-1]["widths"]
    assert module.body.widths == widths and sum(widths) < 48 + 32
    assert [id(p) for p in probe.opt_params] == [id(p) for p in probe.live], "optimizer holds the reduced network's parameters"
    assert any(not torch.equal(b, p.detach()) for b, p in zip(probe.before, probe.live, strict=True)), "training went on"
    report = json.loads((tmp_path / "reduction_report.json").read_text())
    assert report["summary"]["neurons_after"] == sum(widths) and report["summary"]["neurons_before"] == 80
    assert "train acc" in (tmp_path / "reduction_report.txt").read_text()


def test_every_n_epochs_and_at_end_with_a_budget_that_holds(tmp_path):
    pl.seed_everything(1)
    module, dm = MyClassifier(), BlobsDataModule()
    cb = ReductionCallback(max_drop=0.0, every_n_epochs=2, verbose=False, report_path=tmp_path / "r.json")
    plain_trainer(tmp_path, [cb], max_epochs=5).fit(module, datamodule=dm)
    assert [r["epoch"] for r in cb.reports] == [2, 4, 5] and cb.done
    for r in cb.reports:  # max_drop=0: no step may lose accuracy on the held-out data (the default reference)
        assert r["steps"][-1]["metrics"]["val"] >= r["steps"][0]["metrics"]["val"] - 1e-12
        assert {"train", "val"} <= set(r["steps"][-1]["metrics"])
    assert len(json.loads((tmp_path / "r.json").read_text())["reports"]) == 3


def test_resume_after_an_in_fit_reduction(tmp_path):
    pl.seed_everything(2)
    dm = BlobsDataModule()
    cb = ReductionCallback(max_drop=0.02, at_epochs=[1], at_end=False, verbose=False, report_path=None)
    module = MyClassifier()
    trainer = plain_trainer(tmp_path, [cb], max_epochs=3)
    trainer.fit(module, datamodule=dm)
    ckpt = tmp_path / "mid.ckpt"
    trainer.save_checkpoint(ckpt)
    widths = module.body.widths
    # a fresh process would build the module at its full width: the checkpoint's shapes win
    fresh, cb2 = MyClassifier(), ReductionCallback(max_drop=0.02, at_epochs=[1], at_end=False, verbose=False, report_path=None)
    plain_trainer(tmp_path, [cb2], max_epochs=4).fit(fresh, datamodule=dm, ckpt_path=str(ckpt))
    assert fresh.body.widths == widths and cb2.done_epochs == [1] and len(cb2.reports) == 1, "no second reduction on resume"
    loaded = load_reduced_checkpoint(MyClassifier(), ckpt)
    assert loaded.body.widths == widths
    torch.testing.assert_close(loaded.body.stacks[0].V.weight, module.body.stacks[0].V.weight)


def test_stack_module_with_a_user_datamodule(tmp_path):
    from lightning_stacks import StackModule, load_config

    pl.seed_everything(3)
    dm = BlobsDataModule()
    cfg = load_config(None, ["model.widths=[40,30]", "model.bottleneck=[4]", "schedule.warmup_epochs=1",
                             "schedule.l2_start=1e-5", "schedule.l2_end=1e-4", "trainer.max_epochs=4"])
    module = StackModule.for_data(cfg, dm)
    assert (module.task, module.net.input_dim, module.net.output_dim) == ("classification", 6, 3)
    cb = ReductionCallback(max_drop=0.01, refit=True, verbose=False)
    plain_trainer(tmp_path, [cb]).fit(module, datamodule=dm)
    assert module.history == cb.reports and module.net.widths == cb.report["steps"][-1]["widths"]
    assert module.hparams["architecture"] == module.net.architecture()


@pytest.mark.parametrize("kwargs, match", [
    ({"max_drop": 2.0}, "max_drop must be in"),
    ({"clusters": [-1]}, "clusters must all be >= 0"),
    ({"colour": 1}, r"unknown keyword\(s\) \['colour'\]; it takes max_drop, at_epochs, every_n_epochs, at_end, modules"),
    ({"refit": "maybe"}, "bad value for reduction setting 'refit'"),
    ({"output": "x.ckpt"}, "reduce.py / train.py options"),
    ({"at_epochs": [0]}, "at_epochs must be whole numbers"),
    ({"at_epochs": [1.5]}, "at_epochs must be whole numbers"),
    ({"every_n_epochs": -2}, "every_n_epochs must be"),
    ({"at_end": False}, "would never reduce"),
    ({"task": "ranking"}, "task='ranking' is not one of"),
    ({"attribute": "not a name"}, "is not an attribute name"),
    ({"reference": "holdout"}, "reference='holdout' is not one of"),
    ({"reference_size": -5}, "reference_size must be >= 0"),
])
def test_bad_settings_are_refused_at_construction(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ReductionCallback(**kwargs)


class NoNetwork(MyClassifier):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 3))


class TwoNetworks(MyClassifier):
    def __init__(self):
        super().__init__()
        self.other = DeepStackNetwork(6, [4], [3])


@pytest.mark.parametrize("module_cls, kwargs, match", [
    (NoNetwork, {}, "NoNetwork holds no reducible block"),
    (MyClassifier, {"attribute": "head"}, "'head' not found: MyClassifier has no submodule 'head'; its submodules: body"),
    (MyClassifier, {"modules": ["bdy"]}, "did you mean 'body'"),
    (MyClassifier, {"at_epochs": [4]}, r"at_epochs=\[4\]: \[4\] not before the Trainer's max_epochs=4"),
    (MyClassifier, {"clusters": [99, 5]}, "clusters for stack 1 is 99 > its 48 neurons"),
    (MyClassifier, {"clusters": [5]}, "clusters needs one value per stack"),
    (MyClassifier, {"reference": "test"}, "defines no test_dataloader"),
])
def test_bad_module_or_trainer_is_refused_before_training(tmp_path, module_cls, kwargs, match):
    module = module_cls()
    with pytest.raises(ReductionError, match=match):
        plain_trainer(tmp_path, [ReductionCallback(**kwargs)]).fit(module, datamodule=BlobsDataModule())
    assert module.steps == 0, "nothing was trained"


def test_every_block_found_is_reduced(tmp_path):
    pl.seed_everything(0)
    module = TwoNetworks()
    cb = ReductionCallback(max_drop=0.05, verbose=False, report_path=None)
    plain_trainer(tmp_path, [cb], max_epochs=2).fit(module, datamodule=BlobsDataModule())
    assert [r["target"] for r in cb.reports] == ["body", "other"]
    assert module.body.widths == cb.reports[0]["steps"][-1]["widths"] and module.other.widths == cb.reports[1]["steps"][-1]["widths"]


def test_regression_task_is_inferred_from_float_labels(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    class Reg(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = DeepStackNetwork(3, [32], [2])

        def training_step(self, batch, batch_idx):
            x, y = batch
            return (self.net(x) - y).pow(2).sum(1).mean()

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    g = torch.Generator().manual_seed(0)
    x = torch.rand(512, 3, generator=g)
    y = torch.stack([x[:, 0] * 2 - x[:, 1], (x[:, 2] - 0.5).abs()], 1)
    cb = ReductionCallback(max_drop=0.05, verbose=False, report_path=None)
    plain_trainer(tmp_path, [cb], max_epochs=3).fit(Reg(), DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True))
    assert cb.report["task"] == "regression" and set(cb.report["steps"][0]["metrics"]) == {"train"}


@pytest.mark.slow
def test_ddp_in_fit_reduction_leaves_identical_ranks(tmp_path):
    """Two gloo processes; the reduction at epoch 2 rewraps DDP and both ranks train on."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(here / "ddp_infit_job.py"), str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [(tmp_path / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert ranks[0] == ranks[1], f"ranks differ: {ranks}"
    assert ranks[0][-1] == "2"  # the in-fit reduction and the one at the end
    assert sum(map(int, ranks[0][1:-1])) < 80

"""What ReductionCallback settles before training on a user's module: the task (never guessed
from ambiguous labels), the split its budget is measured on, and each misuse refused with one
line naming the fix."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from user_models import Digits, SeqClassifier

from lightning_stacks import reduce_network
from lightning_stacks.callbacks import ReductionCallback
from lightning_stacks.config import ConfigError
from lightning_stacks.reduction import ReduceSettings, ReductionError


def trainer(tmp_path, callbacks, max_epochs):
    return pl.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path),
                      callbacks=callbacks)


class OneHot(SeqClassifier):
    """The same MLP trained on one-hot float targets (cross-entropy accepts them)."""

    steps = 0

    def training_step(self, batch, batch_idx):
        x, y = batch
        OneHot.steps += 1
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y.argmax(1)).float().mean())


class OneHotDigits(Digits):
    def setup(self, stage=None):
        super().setup(stage)
        for name in ("train_set", "val_set"):
            x, y = getattr(self, name).tensors
            setattr(self, name, TensorDataset(x, F.one_hot(y, 10).float()))


def test_one_hot_targets_without_task_are_refused_before_training(tmp_path):
    OneHot.steps = 0
    cb = ReductionCallback(max_drop=0.01, verbose=False)
    with pytest.raises(ReductionError, match=r"cannot tell the task .*one-hot or class probabilities.*give task='classification'"):
        trainer(tmp_path, [cb], 2).fit(OneHot(), datamodule=OneHotDigits())
    assert OneHot.steps == 0, "refused before any training step"


def test_one_hot_targets_with_task_classification_stay_within_the_budget(tmp_path):
    pl.seed_everything(0)
    module = OneHot()
    cb = ReductionCallback(max_drop=0.01, task="classification", verbose=False)
    trainer(tmp_path, [cb], 4).fit(module, datamodule=OneHotDigits())
    r = cb.report
    assert r["task"] == "classification" and min(r["steps"][-1]["widths"]) > 0
    full, last = r["steps"][0]["metrics"], r["steps"][-1]["metrics"]
    assert full["val"] > 0.9, "accuracy by the argmax of the one-hot rows"
    assert last["val"] >= full["val"] - 0.01 - 1e-9


@pytest.mark.parametrize("y, task, match", [
    (lambda y: y.float(), None, r"float labels of shape \(\d+,\) for outputs of width 10"),
    (lambda y: y.float(), "classification", r"task='classification' but the training labels are torch.float32"),
    (lambda y: F.one_hot(y, 10).float(), "regression", None),
    (lambda y: y[:, None].float().repeat(1, 3), "regression", r"task='regression' but the targets have shape \(\d+, 3\)"),
])
def test_labels_that_do_not_fit_the_task_are_refused_in_setup(tmp_path, y, task, match):
    g = torch.Generator().manual_seed(0)
    x, labels = torch.randn(256, 64, generator=g), torch.randint(0, 10, (256,), generator=g)

    class Reg(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.mlp = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

        def forward(self, x):
            return self.mlp(x)

        def training_step(self, batch, batch_idx):
            return (self(batch[0]) - batch[1]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    cb = ReductionCallback(max_drop=0.05, task=task, verbose=False)
    data = DataLoader(TensorDataset(x, y(labels)), batch_size=64)
    if match is None:  # one-hot rows as regression targets: allowed when the user says so
        trainer(tmp_path, [cb], 1).fit(Reg(), data)
        assert cb.report["task"] == "regression"
        return
    with pytest.raises(ReductionError, match=match):
        trainer(tmp_path, [cb], 1).fit(Reg(), data)


def test_the_task_inferred_from_integer_labels_is_printed_once(tmp_path, capsys):
    pl.seed_everything(1)
    cb = ReductionCallback(max_drop=0.02, at_epochs=[1])
    trainer(tmp_path, [cb], 2).fit(SeqClassifier(), datamodule=Digits())
    out = capsys.readouterr().out
    assert out.count("[reduce] task: classification (inferred from integer class labels; give task= to set it)") == 1


def test_the_budget_is_measured_on_the_validation_data_by_default(tmp_path, capsys):
    pl.seed_everything(2)
    cb = ReductionCallback(max_drop=0.0, report_path=None)
    trainer(tmp_path, [cb], 3).fit(SeqClassifier(), datamodule=Digits())
    assert "[reduce] the budget is measured on the fit's validation data" in capsys.readouterr().out
    steps = cb.report["steps"]
    assert steps[-1]["metrics"]["val"] >= steps[0]["metrics"]["val"] - 1e-12 and {"train", "val"} <= set(steps[-1]["metrics"])
    cb = ReductionCallback(max_drop=0.0, reference="train", report_path=None)
    trainer(tmp_path, [cb], 3).fit(SeqClassifier(), datamodule=Digits())
    assert "budget is measured" not in capsys.readouterr().out
    assert cb.report["steps"][-1]["metrics"]["train"] >= cb.report["steps"][0]["metrics"]["train"] - 1e-12


def test_a_keyword_typo_lists_exactly_the_callbacks_keywords():
    with pytest.raises(ConfigError) as err:
        ReductionCallback(max_drop=0.01, at_epoch=[3])
    msg = str(err.value)
    assert "unknown keyword(s) ['at_epoch']" in msg and "at_epochs" in msg and "modules" in msg and "refit" in msg
    assert "after_training" not in msg and "output," not in msg


def test_max_epochs_zero_reduces_the_model_as_loaded_and_says_so(tmp_path, capsys):
    pl.seed_everything(3)
    module = SeqClassifier()
    cb = ReductionCallback(max_drop=0.05)
    trainer(tmp_path, [cb], 0).fit(module, datamodule=Digits())
    assert "the fit trained no epoch (max_epochs=0): reducing the model as loaded" in capsys.readouterr().out
    assert cb.done and len(cb.reports) == 1


def test_reduce_network_reads_the_task_only_from_unambiguous_labels(capsys):
    from lightning_stacks import DeepStackNetwork

    torch.manual_seed(4)
    net = DeepStackNetwork(5, [16], [3], skips="none")
    x = torch.randn(200, 5)
    _, report = reduce_network(net, x, ReduceSettings(max_drop=0.5), y_ref=net(x).argmax(1))
    assert report.task == "classification" and "[reduce] task: classification (from integer class labels" in capsys.readouterr().out
    with pytest.raises(ReductionError, match=r"one-hot or class probabilities\)\): give task="):
        reduce_network(net, x, ReduceSettings(max_drop=0.5), y_ref=F.one_hot(net(x).argmax(1), 3).float())
    _, report = reduce_network(net, x, ReduceSettings(max_drop=0.0), task="classification",
                               y_ref=F.one_hot(net(x).argmax(1), 3).float())
    assert report.steps[-1].widths[0] > 0
    _, report = reduce_network(net, x, ReduceSettings())  # manual mode needs no labels, so no task
    assert report.task is None and "metric" not in report.table().splitlines()[0]  # no evaluate: no metric columns
    with pytest.raises(ReductionError, match="task='ranking' is not one of"):
        reduce_network(net, x, ReduceSettings(), task="ranking")

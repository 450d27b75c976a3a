"""Models as users write them, with nothing of lightning_stacks in them: a LightningModule over a
plain ``nn.Sequential`` MLP (BatchNorm1d, Dropout), a small CNN whose head is an MLP, and
scikit-learn's digits as a plain DataModule (flat rows or 1x8x8 images)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Digits(pl.LightningDataModule):
    """sklearn's 8x8 digits scaled to [0, 1]: 1500 train / 297 val rows, seeded split."""

    def __init__(self, images: bool = False, batch_size: int = 64, seed: int = 0):
        super().__init__()
        self.images, self.batch_size, self.seed = images, batch_size, seed

    def setup(self, stage=None):
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.data, dtype=torch.float32) / 16.0
        y = torch.tensor(d.target, dtype=torch.long)
        if self.images:
            x = x.reshape(-1, 1, 8, 8)
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))
        tr, va = idx[:1500], idx[1500:]
        self.train_set, self.val_set = TensorDataset(x[tr], y[tr]), TensorDataset(x[va], y[va])

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=512)


class SeqClassifier(pl.LightningModule):
    """A user's MLP classifier: ``self.mlp`` is a plain Sequential; optional StepLR."""

    def __init__(self, hidden: int = 96, lr: float = 3e-3, step_lr: bool = False, batchnorm: bool = True):
        super().__init__()
        self.save_hyperparameters()
        norm = [nn.BatchNorm1d(hidden)] if batchnorm else []
        self.mlp = nn.Sequential(nn.Linear(64, hidden), *norm, nn.ReLU(), nn.Dropout(0.1),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10))
        self.lrs: list[float] = []

    def forward(self, x):
        return self.mlp(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y) + 1e-4 * sum((p ** 2).sum() for p in self.mlp.parameters())
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def on_train_epoch_start(self):
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        if not self.hparams.step_lr:
            return opt
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)}


class SmallCNN(pl.LightningModule):
    """Conv features over 1x8x8 images, then an MLP head (``self.head``)."""

    def __init__(self, lr: float = 3e-3):
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(128, 96), nn.ReLU(), nn.Linear(96, 10))

    def forward(self, x):
        return self.head(self.features(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y) + 1e-4 * sum((p ** 2).sum() for p in self.head.parameters())

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def accuracy(module: pl.LightningModule, dm: Digits, split: str = "val") -> float:
    ds = dm.val_set if split == "val" else dm.train_set
    x, y = ds.tensors
    module.eval()
    with torch.no_grad():
        return float((module(x).argmax(1) == y).float().mean())

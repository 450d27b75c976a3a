"""A user's own Lightning code, written without lightning_stacks' training helpers: a plain
DataModule over TensorDatasets and a LightningModule that holds a DeepStackNetwork."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_stacks import DeepStackNetwork


class BlobsDataModule(pl.LightningDataModule):
    """Three Gaussian blobs in 6-D, 3 classes; seeded."""

    def __init__(self, n: int = 600, batch_size: int = 64, seed: int = 0):
        super().__init__()
        self.n, self.batch_size, self.seed = n, batch_size, seed

    def setup(self, stage: str | None = None) -> None:
        g = torch.Generator().manual_seed(self.seed)
        centres = torch.randn(3, 6, generator=g) * 3
        y = torch.randint(0, 3, (self.n,), generator=g)
        x = centres[y] + torch.randn(self.n, 6, generator=g)
        cut = int(0.8 * self.n)
        self.train_set, self.val_set = TensorDataset(x[:cut], y[:cut]), TensorDataset(x[cut:], y[cut:])

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=256)


class MyClassifier(pl.LightningModule):
    """Holds its network as ``self.body``; knows nothing of lightning_stacks but the network."""

    def __init__(self, widths=(48, 32), lr: float = 1e-2):
        super().__init__()
        self.body = DeepStackNetwork(6, list(widths), [4, 3], skips="affine")
        self.lr = lr
        self.steps = 0

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.steps += 1
        return F.cross_entropy(self.body(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self.body(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.body.parameters(), lr=self.lr)

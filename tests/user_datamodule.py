"""A user's own LightningDataModule, loaded in tests by its dotted path (``user_datamodule:...``)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


class BlobsDataModule(pl.LightningDataModule):
    """Gaussian blobs (classification, integer labels) or a noisy linear map (regression, y (N,)
    or (N, k)), in plain TensorDatasets. ``describe``: set ``task``/``input_dim``/``output_dim``."""

    def __init__(self, n: int = 120, features: int = 5, classes: int = 3, outputs: int = 0,
                 batch_size: int = 32, seed: int = 0, describe: bool = False):
        super().__init__()
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n, self.features, self.classes_, self.outputs = n, features, classes, outputs
        self.batch_size, self.seed, self.describe = batch_size, seed, describe

    def setup(self, stage: str | None = None) -> None:
        g = torch.Generator().manual_seed(self.seed)
        x = torch.randn(self.n, self.features, generator=g)
        if self.outputs:  # regression; outputs=1 gives a 1-D target
            y = x @ torch.randn(self.features, self.outputs, generator=g)
            y = y[:, 0] if self.outputs == 1 else y
        else:
            y = torch.arange(self.n) % self.classes_
            x = x + 3 * y[:, None].float()
        self.train_set = TensorDataset(x, y)
        if self.describe:
            self.task = "regression" if self.outputs else "classification"
            self.input_dim = self.features
            self.output_dim = self.outputs or self.classes_

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)


class DictBatches(pl.LightningDataModule):
    """Batches as dicts ``{"x": (B, d), "y": (B,)}``, or in an unsupported form (``bad``)."""

    def __init__(self, bad: str = ""):
        super().__init__()
        self.bad = bad

    def train_dataloader(self):
        x, y = torch.randn(10, 2, 3), torch.arange(10) % 2
        if self.bad == "empty":
            return []
        if self.bad == "image":
            return [(x, y)]
        if self.bad == "keys":
            return [{"inputs": x.flatten(1), "labels": y}]
        return [{"x": x.flatten(1), "y": y, "id": torch.arange(10)}]


class NotADataModule:
    """Anything else."""

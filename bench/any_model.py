"""ReductionCallback on models as users write them: a plain ``nn.Sequential`` MLP classifier and a
small CNN whose MLP head is reduced (``modules=["head"]``), on scikit-learn's digits and on MNIST
(55k train / 5k val / 10k test, the offline copy). Each is trained with ``L2Schedule`` and reduced
within ``--max-drop`` of its validation accuracy at the end; the figures are those of the model
as deployed (hidden units of the block, parameters, FLOPs per example, CPU latency at batch 1 and
1024, test accuracy), before and after.

    python bench/any_model.py                       # digits and MNIST, both models (~15 min on 2 CPU cores)
    python bench/any_model.py --data digits         # digits only (~1 min)

Prints one row per model and data set, and writes ``results/any_model.json``.
"""

from __future__ import annotations

import argparse
import json
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from _common import ROOT, mnist_root
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from lightning_stacks import L2Schedule, ReductionCallback


class Images(pl.LightningDataModule):
    """Image classification data as (N, 1, H, W) in [0, 1]; ``flat`` gives (N, H W) rows."""

    def __init__(self, name: str, flat: bool, batch_size: int = 128):
        super().__init__()
        self.name, self.flat, self.batch_size = name, flat, batch_size

    def setup(self, stage=None):
        if hasattr(self, "train_set"):
            return
        if self.name == "digits":
            from sklearn.datasets import load_digits

            d = load_digits()
            x, y = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16, torch.tensor(d.target)
            perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
            parts = {"train": perm[:1200], "val": perm[1200:1500], "test": perm[1500:]}
            splits = {k: (x[i], y[i]) for k, i in parts.items()}
        else:
            from pathlib import Path

            from lightning_stacks.data.mnist import _find_idx, read_idx

            root = Path(mnist_root())

            def load(stem):
                return torch.tensor(read_idx(_find_idx(root, stem)))

            x = load("train-images-idx3-ubyte").float()[:, None] / 255
            y = load("train-labels-idx1-ubyte").long()
            perm = torch.randperm(60000, generator=torch.Generator().manual_seed(0))
            splits = {"train": (x[perm[:55000]], y[perm[:55000]]), "val": (x[perm[55000:]], y[perm[55000:]]),
                      "test": (load("t10k-images-idx3-ubyte").float()[:, None] / 255, load("t10k-labels-idx1-ubyte").long())}
        for k, (xs, ys) in splits.items():
            setattr(self, f"{k}_set", TensorDataset(xs.flatten(1) if self.flat else xs, ys))

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=None, sampler=BatchSampler(RandomSampler(self.train_set), self.batch_size, False))

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=None, sampler=BatchSampler(RandomSampler(self.val_set), 2048, False))


class Classifier(pl.LightningModule):
    def __init__(self, model: nn.Module, lr: float = 1e-3):
        super().__init__()
        self.model, self.lr = model, lr

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val_acc", (self(batch[0]).argmax(1) == batch[1]).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def mlp(d_in: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, 256), nn.ReLU(), nn.Dropout(0.1), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


class CNN(nn.Module):
    def __init__(self, side: int):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(16 * (side // 2) ** 2, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x):
        return self.head(self.features(x))


def accuracy(module, ds) -> float:
    x, y = ds.tensors
    module.eval()
    with torch.no_grad():
        return float(sum((module(x[i:i + 4096]).argmax(1) == y[i:i + 4096]).sum() for i in range(0, len(x), 4096)) / len(x))


class TestBefore(pl.Callback):
    """The test accuracy at the end of training, before ReductionCallback (listed after it) reduces."""

    def __init__(self, ds):
        self.ds, self.acc = ds, None

    def on_train_end(self, trainer, module):
        self.acc = accuracy(module, self.ds)


def one(data: str, kind: str, epochs: int, max_drop: float) -> dict:
    pl.seed_everything(0)
    dm = Images(data, flat=(kind == "mlp"))
    dm.setup()
    side = dm.train_set.tensors[0].shape[-1] if kind == "cnn" else None
    model = Classifier(mlp(dm.train_set.tensors[0].shape[1]) if kind == "mlp" else CNN(side))
    block = "model" if kind == "mlp" else "model.head"
    l2 = L2Schedule(1e-5, 1e-3, warmup_epochs=max(1, epochs // 5), modules=[block])
    red = ReductionCallback(max_drop=max_drop, modules=[block], reference="val", verbose=False, report_path=None)
    probe = TestBefore(dm.test_set)
    t0 = time.perf_counter()
    pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
               enable_checkpointing=False, callbacks=[l2, probe, red]).fit(model, datamodule=dm)
    r = red.report
    costs = r["costs"]
    return {"data": data, "model": kind, "block": block, "epochs": epochs, "max_drop": max_drop, "wall_s": time.perf_counter() - t0,
            "hidden_before": sum(r["steps"][0]["widths"]), "hidden_after": sum(r["steps"][-1]["widths"]),
            "widths_before": r["steps"][0]["widths"], "widths_after": r["steps"][-1]["widths"],
            "val_before": r["steps"][0]["metrics"]["val"], "val_after": r["steps"][-1]["metrics"]["val"],
            "test_before": probe.acc, "test_after": accuracy(model, dm.test_set), "costs": costs, "notes": r.get("notes", []),
            "module_params_check": sum(p.numel() for p in model.parameters()) == costs["after"]["params"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=["digits", "mnist"], choices=["digits", "mnist"])
    p.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn"])
    p.add_argument("--max-drop", type=float, default=0.005)
    args = p.parse_args()
    epochs = {"digits": 30, "mnist": 8}
    rows = [one(d, k, epochs[d], args.max_drop) for d in args.data for k in args.models]
    for r in rows:
        b, a = r["costs"]["before"], r["costs"]["after"]
        print(f"{r['data']:<6} {r['model']:<4} hidden {r['hidden_before']} -> {r['hidden_after']} ({'/'.join(map(str, r['widths_after']))}); "
              f"params {b['params']} -> {a['params']}; FLOPs {b['flops_per_example']} -> {a['flops_per_example']}; "
              f"latency b1 {b['latency_ms_batch_1']:.3f} -> {a['latency_ms_batch_1']:.3f} ms, "
              f"b1024 {b['latency_ms_batch_1024']:.2f} -> {a['latency_ms_batch_1024']:.2f} ms; "
              f"val acc {r['val_before']:.4f} -> {r['val_after']:.4f}; test acc {r['test_before']:.4f} -> {r['test_after']:.4f}")
    out = ROOT / "results" / "any_model.json"
    out.write_text(json.dumps(rows, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Data: the synthetic composite sine (the embedded default), MNIST from IDX files, and
scikit-learn's bundled 8x8 digits (a tiny real image set for fast tests).

All data sets live in memory as tensors; batches are sliced by index tensors (no per-sample
collate), which keeps the Lightning loop within a few percent of a plain PyTorch loop. The train
loader's batch size follows the :class:`~lightning_stacks.schedule.Schedule`, and the Trainer
reloads it every epoch. Under DDP the loader shards itself by rank, with the same number of
batches on every rank.
"""

from __future__ import annotations

import gzip
import math
import os
import urllib.request
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from .schedule import Schedule

DATA_ENV = "LIGHTNING_STACKS_DATA"
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


class DataError(RuntimeError):
    """Data cannot be found, read or downloaded; the message says where we looked."""


# --------------------------------------------------------------------------- loaders
class TensorBatchLoader:
    """Iterates ``(x, y)`` batches of in-memory tensors.

    Shuffling is seeded by ``(seed, epoch)`` so every DDP rank draws the same permutation and
    takes its own slice ``perm[rank::world_size]`` (truncated to a multiple of ``world_size``, so
    all ranks run the same number of steps).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = False,
                 seed: int = 0, epoch: int = 0, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.y, self.batch_size, self.shuffle = x, y, int(batch_size), shuffle
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        n = x.shape[0]
        self.num_samples = n // world_size if world_size > 1 else n

    def _indices(self) -> torch.Tensor:
        n = self.x.shape[0]
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            idx = torch.randperm(n, generator=g)
        else:
            idx = torch.arange(n)
        if self.world_size > 1:
            idx = idx[: self.num_samples * self.world_size][self.rank :: self.world_size]
        return idx

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self):
        idx = self._indices()
        for start in range(0, idx.numel(), self.batch_size):
            sel = idx[start : start + self.batch_size]
            yield self.x[sel], self.y[sel]


class TensorDataModule(pl.LightningDataModule):
    """Holds train/val/test tensors; subclasses fill them in :meth:`load`.

    Attributes:
        task: ``regression`` or ``classification``.
        input_dim, output_dim: network input and output widths.
    """

    task: str = "regression"
    input_dim: int = 1
    output_dim: int = 1

    def __init__(self, cfg, schedule: Schedule | None = None, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.schedule = schedule
        self.seed = seed
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self.tensors:
            self.tensors = self.load()

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``train``/``val``/``test`` tensors (x (N, d_0), y (N,) or (N, d_J))."""
        self.setup()
        return self.tensors[name]

    def current_batch_size(self) -> int:
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        if self.schedule is None:
            return 128
        return self.schedule.at(epoch).batch_size

    def _dist(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self) -> TensorBatchLoader:
        x, y = self.split("train")
        rank, world = self._dist()
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        return TensorBatchLoader(x, y, self.current_batch_size(), shuffle=True, seed=self.seed,
                                 epoch=epoch, rank=rank, world_size=world)

    def _eval_loader(self, name: str) -> TensorBatchLoader:
        # Every rank evaluates the whole (small) split; torchmetrics syncs, duplicates cancel.
        x, y = self.split(name)
        return TensorBatchLoader(x, y, self.cfg.eval_batch_size)

    def val_dataloader(self) -> TensorBatchLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> TensorBatchLoader:
        return self._eval_loader("test")


# --------------------------------------------------------------------------- composite sine
def composite_sine(x: torch.Tensor) -> torch.Tensor:
    """The paper's f: R -> R^7, ``f(x) = (f_i(sin 3 pi x))_i`` (SPEC section 3).

    f_i: one-kink ReLU, |.|, square, sign, cube, sine, exp. ``x`` (N, 1) -> (N, 7).
    """
    t = torch.sin(3 * math.pi * x)
    return torch.cat([torch.relu(t), t.abs(), t**2, torch.sign(t), t**3, torch.sin(math.pi * t), torch.exp(t)], dim=1)


class SineDataModule(TensorDataModule):
    """Composite sine with N(0, noise^2) label noise on x ~ U[x_min, x_max]; seeded splits."""

    task = "regression"
    input_dim = 1
    output_dim = 7

    def load(self):
        g = torch.Generator().manual_seed(12345 + self.seed)
        out = {}
        for name, n in (("train", self.cfg.n_train), ("val", self.cfg.n_val), ("test", self.cfg.n_test)):
            x = self.cfg.x_min + (self.cfg.x_max - self.cfg.x_min) * torch.rand(n, 1, generator=g)
            y = composite_sine(x) + self.cfg.noise * torch.randn(n, 7, generator=g)
            out[name] = (x, y)
        return out


# --------------------------------------------------------------------------- MNIST
def default_data_root(root: str = "") -> Path:
    """``root`` if given, else ``$LIGHTNING_STACKS_DATA``, else ``./data``."""
    return Path(root or os.environ.get(DATA_ENV, "") or "data").expanduser()


def _find_idx(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "MNIST" / "raw", root / "mnist"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip or not) into a numpy array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path}: header says shape {shape} but holds {body.size} bytes")
    return body.reshape(shape)


def _download_mnist(root: Path) -> None:
    """Online users: torchvision if it imports, else plain HTTP from the usual mirrors."""
    try:
        from torchvision.datasets import MNIST  # lazy: torchvision is optional

        MNIST(str(root), download=True)
        return
    except Exception:  # noqa: BLE001 - fall back to plain HTTP on any torchvision failure
        pass
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    errors = []
    for stem in MNIST_FILES.values():
        for mirror in MNIST_MIRRORS:
            try:
                with urllib.request.urlopen(mirror + stem + ".gz", timeout=20) as r:
                    payload = r.read()
                tmp = raw / (stem + ".gz.part")
                tmp.write_bytes(payload)
                tmp.replace(raw / (stem + ".gz"))
                break
            except OSError as err:
                errors.append(f"{mirror}{stem}.gz: {err}")
        else:
            raise DataError("MNIST download failed: " + "; ".join(errors))


class MNISTDataModule(TensorDataModule):
    """MNIST, pixels scaled to [0, 1] and flattened to 784; 10 classes."""

    task = "classification"
    input_dim = 784
    output_dim = 10

    def load(self):
        root = default_data_root(self.cfg.root)
        paths = {k: _find_idx(root, stem) for k, stem in MNIST_FILES.items()}
        if any(p is None for p in paths.values()):
            if not self.cfg.download:
                missing = [MNIST_FILES[k] for k, p in paths.items() if p is None]
                raise DataError(
                    f"MNIST files {missing} not found under {root} (looked in it, MNIST/raw and mnist; "
                    f"gzip or not) and data.download=false; set data.root or ${DATA_ENV}"
                )
            try:
                _download_mnist(root)
            except DataError as err:
                raise DataError(
                    f"MNIST not found under {root} and the download failed (offline?): {err}. "
                    f"Point data.root or ${DATA_ENV} at a folder with the IDX files."
                ) from None
            paths = {k: _find_idx(root, stem) for k, stem in MNIST_FILES.items()}
        arrays = {k: read_idx(p) for k, p in paths.items()}
        x_train = torch.from_numpy(arrays["train_images"].reshape(-1, 784).astype(np.float32) / 255.0)
        y_train = torch.from_numpy(arrays["train_labels"].astype(np.int64))
        x_test = torch.from_numpy(arrays["test_images"].reshape(-1, 784).astype(np.float32) / 255.0)
        y_test = torch.from_numpy(arrays["test_labels"].astype(np.int64))
        if len(x_train) != len(y_train) or len(x_test) != len(y_test):
            raise DataError(f"MNIST under {root}: image and label counts differ")
        out = {"train": (x_train, y_train), "test": (x_test, y_test)}
        if self.cfg.val_size > 0:
            g = torch.Generator().manual_seed(self.seed)
            perm = torch.randperm(len(x_train), generator=g)
            val, tr = perm[: self.cfg.val_size], perm[self.cfg.val_size :]
            out["train"], out["val"] = (x_train[tr], y_train[tr]), (x_train[val], y_train[val])
        else:
            out["val"] = out["test"]
        return out


# --------------------------------------------------------------------------- digits
class DigitsDataModule(TensorDataModule):
    """scikit-learn's bundled 8x8 digits (1797 images, no download): 64 features in [0, 1]."""

    task = "classification"
    input_dim = 64
    output_dim = 10

    def load(self):
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.data, dtype=torch.float32) / 16.0
        y = torch.tensor(d.target, dtype=torch.int64)
        g = torch.Generator().manual_seed(self.seed)
        perm = torch.randperm(len(x), generator=g)
        n_test = n_val = 300
        te, va, tr = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
        return {"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": (x[te], y[te])}


DATAMODULES = {"sine": SineDataModule, "mnist": MNISTDataModule, "digits": DigitsDataModule}


def build_datamodule(data_cfg, schedule: Schedule | None = None, seed: int = 0) -> TensorDataModule:
    """The DataModule named by ``data_cfg.name``."""
    if data_cfg.name not in DATAMODULES:
        raise ValueError(f"data.name='{data_cfg.name}' is not one of: {', '.join(DATAMODULES)}")
    return DATAMODULES[data_cfg.name](data_cfg, schedule=schedule, seed=seed)

"""Data: the synthetic composite sine (the embedded default), MNIST from IDX files,
scikit-learn's bundled 8x8 digits (a tiny real image set for fast tests), your own CSV or NPZ
file, or your own LightningDataModule.

All data sets live in memory as tensors; batches are sliced by index tensors (no per-sample
collate), which keeps the Lightning loop within a few percent of a plain PyTorch loop. On a GPU
the splits are also copied to it once when they fit (``data.device``), and batches are drawn
there: no host-to-device copy per step. The train
loader's batch size follows the :class:`~lightning_stacks.schedule.Schedule`, and the Trainer
reloads it every epoch. Under DDP the loader shards itself by rank, with the same number of
batches on every rank.

Every DataModule built here exposes, after ``setup()``, the attributes ``task``
(``classification`` or ``regression``), ``input_dim`` and ``output_dim`` (the number of classes
for classification) and an ``info()`` dict of JSON-able facts (classes, feature names,
standardization, split sizes) that a checkpoint can carry. :func:`describe_data` gives the same
dict for any LightningDataModule. Batches are ``(x, y)`` with x (B, d_0) float32 and y (B,)
int64 class indices or (B, k) float32 regression targets.
"""

from __future__ import annotations

import csv
import gzip
import importlib
import inspect
import math
import os
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from .config import DATASETS, ConfigError
from .errors import LightningStacksError
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


TASKS = ("classification", "regression")


class DataError(LightningStacksError, RuntimeError):
    """Data cannot be found, read, downloaded or understood; the message says where and why."""


# --------------------------------------------------------------------------- loaders
class TensorBatchLoader:
    """Iterates ``(x, y)`` batches of in-memory tensors.

    Shuffling is seeded by ``(seed, epoch)`` so every DDP rank draws the same permutation and
    takes its own slice ``perm[rank::world_size]`` (truncated to a multiple of ``world_size``, so
    all ranks run the same number of steps). The permutation is drawn on the CPU, so the order is
    the same on every device, and moved to the tensors' device once per epoch; the batches are
    gathered there.
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
        return idx.to(self.x.device)

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self):
        idx = self._indices()
        for start in range(0, idx.numel(), self.batch_size):
            sel = idx[start : start + self.batch_size]
            yield self.x.index_select(0, sel), self.y.index_select(0, sel)  # (B, d_0), (B,) or (B, d_J)


def _check_tensors(tensors: dict, task: str | None, input_dim: int | None, output_dim: int | None, owner: str) -> None:
    """Refuse splits whose shapes or dtypes the network and the loss code would misread."""
    if task not in TASKS:
        raise DataError(f"{owner}: task must be one of {', '.join(TASKS)}, got {task!r}")
    for name in ("train", "val", "test"):
        if name not in tensors:
            raise DataError(f"{owner}: no '{name}' split")
        x, y = tensors[name]
        if x.dim() != 2 or x.dtype != torch.float32 or x.shape[1] != input_dim:
            raise DataError(f"{owner}: {name} x must be float32 of shape (N, {input_dim}), got {x.dtype} {tuple(x.shape)}")
        want = (x.shape[0],) if task == "classification" else (x.shape[0], output_dim)
        dtype = torch.int64 if task == "classification" else torch.float32
        if tuple(y.shape) != want or y.dtype != dtype:
            raise DataError(f"{owner}: {name} y must be {dtype} of shape {want} for {task}, got {y.dtype} {tuple(y.shape)}")


def _storage_key(t: torch.Tensor) -> tuple:
    return t.data_ptr(), tuple(t.shape), t.dtype


def splits_nbytes(tensors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Bytes held by every split's x and y (a split that reuses another counts once)."""
    seen = {_storage_key(t): t.nbytes for pair in tensors.values() for t in pair}
    return sum(seen.values())


def data_device(setting: str, train_device: torch.device, nbytes: int, free_bytes: int | None = None) -> torch.device:
    """Where the loaders draw batches from: the training device when ``setting`` is ``auto``, that
    device is an accelerator and the splits take under half of its free memory (the rest is for
    the network, its activations and the optimizer); else the CPU.

    Args:
        setting: ``data.device``: ``auto`` or ``cpu``.
        train_device: the Trainer's root device.
        nbytes: size of the splits (:func:`splits_nbytes`).
        free_bytes: free memory on ``train_device`` (default: asked of CUDA).
    """
    cpu = torch.device("cpu")
    if setting == "cpu" or train_device.type == "cpu":
        return cpu
    if free_bytes is None:
        if train_device.type != "cuda":
            return cpu
        free_bytes = torch.cuda.mem_get_info(train_device)[0]
    return train_device if nbytes < 0.5 * free_bytes else cpu


class TensorDataModule(pl.LightningDataModule):
    """Holds train/val/test tensors; subclasses fill them in :meth:`load`.

    Attributes:
        task: ``regression`` or ``classification``.
        input_dim, output_dim: network input and output widths (output_dim = number of classes
            for classification). Built-in data sets know them before ``setup()`` (class
            attributes); file data sets set them in ``setup()``.
        classes: label names (classification), or None.
        image_shape: (H, W) or (C, H, W) of image inputs (what ``augment.shift`` moves), or None.
    """

    task: str | None = "regression"
    input_dim: int | None = 1
    output_dim: int | None = 1
    classes: list[str] | None = None
    image_shape: tuple[int, ...] | None = None

    def __init__(self, cfg, schedule: Schedule | None = None, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.schedule = schedule
        self.seed = seed
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        # The loaders' copy of the splits on the training device (see ``data.device``); ``tensors``
        # stay on the host for everything outside the fit (reduction, evaluation, ``split``).
        self.placed: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self.tensors:
            tensors = self.load()
            # Instance attributes, so that every DataModule answers the same way after setup().
            self.task, self.input_dim, self.output_dim = self.task, self.input_dim, self.output_dim
            self.classes = self.classes
            _check_tensors(tensors, self.task, self.input_dim, self.output_dim, type(self).__name__)
            self.tensors = tensors
        if stage is not None and self.trainer is not None:  # called by the Trainer: its device is known
            self.place(self.trainer.strategy.root_device)

    def place(self, train_device: torch.device) -> torch.device:
        """Copy the splits where :func:`data_device` says the loaders should draw from (once per
        device); returns that device."""
        target = data_device(str(getattr(self.cfg, "device", "auto")), torch.device(train_device), splits_nbytes(self.tensors))
        if target.type == "cpu":
            self.placed = {}
        elif not self.placed or self.placed["train"][0].device != target:
            copies: dict[tuple, torch.Tensor] = {}  # a split reusing another shares its copy too

            def moved(t: torch.Tensor) -> torch.Tensor:
                key = _storage_key(t)
                if key not in copies:
                    copies[key] = t.to(target)
                return copies[key]

            self.placed = {name: (moved(x), moved(y)) for name, (x, y) in self.tensors.items()}
        return target

    def _loader_split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        self.setup()
        return self.placed.get(name) or self.tensors[name]

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``train``/``val``/``test`` tensors (x (N, d_0) float32, y (N,) int64 or (N, d_J) float32)."""
        self.setup()
        return self.tensors[name]

    def info(self) -> dict[str, Any]:
        """JSON-able facts about the data (loads it if needed).

        Returns:
            ``task``, ``input_dim``, ``output_dim``, ``n_train``/``n_val``/``n_test``,
            ``dataset`` (the config's name), and where known ``classes`` (label names as
            strings), ``feature_names``, ``target``, ``x_mean``/``x_std`` (the standardization
            applied to inputs), ``source`` (the file read) and ``fallback`` (a split that reuses
            another, e.g. ``{"val": "test"}``).
        """
        self.setup()
        out: dict[str, Any] = {"task": self.task, "input_dim": int(self.input_dim), "output_dim": int(self.output_dim),
                               "dataset": str(self.cfg.name)}
        if self.classes is not None:
            out["classes"] = [str(c) for c in self.classes]
        if self.image_shape is not None:
            out["image_shape"] = [int(n) for n in self.image_shape]
        for name in ("train", "val", "test"):
            out[f"n_{name}"] = int(self.tensors[name][0].shape[0])
        return out

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
        x, y = self._loader_split("train")
        rank, world = self._dist()
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        return TensorBatchLoader(x, y, self.current_batch_size(), shuffle=True, seed=self.seed,
                                 epoch=epoch, rank=rank, world_size=world)

    def _eval_loader(self, name: str) -> TensorBatchLoader:
        # Every rank evaluates the whole (small) split; torchmetrics syncs, duplicates cancel.
        x, y = self._loader_split(name)
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
        from .resources import check_bytes

        c = self.cfg
        rows = c.n_train + c.n_val + c.n_test
        check_bytes(rows * (self.input_dim + self.output_dim) * 4 * 3, f"data.n_train/n_val/n_test={c.n_train}/{c.n_val}/{c.n_test}",
                    "use fewer points")  # x, y and the temporaries that build them, float32
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
    """Read an IDX file (gzip or not) into a numpy array of its declared shape.

    Compression is recognised by the gzip magic bytes, not the name, so a ``.gz`` name on a
    plain file (or a gzip file without the suffix) reads the same.
    """
    try:
        with open(path, "rb") as f:
            compressed = f.read(2) == b"\x1f\x8b"
        with (gzip.open if compressed else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from None
    if not data:
        raise DataError(f"{path} is empty" + (" once decompressed (an unfinished gzip write?)" if compressed else ""))
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
    classes = [str(i) for i in range(10)]
    image_shape = (28, 28)

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
    classes = [str(i) for i in range(10)]
    image_shape = (8, 8)

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


# --------------------------------------------------------------------------- your files
def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Seeded random train/val/test row indices; a positive fraction gets at least one row.

    Returns:
        ``train``/``val``/``test`` index arrays (val or test may be empty).
    """
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    if n - n_test - n_val < 1:
        raise DataError(f"{n} rows leave none to train on after val_fraction={val_fraction} and test_fraction={test_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    return {"test": perm[:n_test], "val": perm[n_test : n_test + n_val], "train": perm[n_test + n_val :]}


def _fill_missing_splits(splits: dict) -> dict[str, str]:
    """An empty val split reuses test, an empty test reuses val, both empty reuse train.

    Returns:
        Which split stands in for which (e.g. ``{"val": "test"}``); ``splits`` is filled in place.
    """
    have = {k for k in ("val", "test") if k in splits and len(splits[k][0]) > 0}
    fallback = {}
    for name, other in (("val", "test"), ("test", "val")):
        if name not in have:
            fallback[name] = other if other in have else "train"
            splits[name] = splits[fallback[name]]
    return fallback


def _labels_to_classes(y: np.ndarray, where: str, locate=None, kinds: str = "integer labels",
                       fix: str = "use data.task=regression") -> np.ndarray:
    """Integer-valued labels -> int64 class indices; refuse fractions and negatives, naming the
    first bad one with ``locate(i)`` (default ``row i holds <value>``)."""
    locate = locate or (lambda i: f"row {i} holds {y[i]:g}")
    bad = np.flatnonzero(y != np.round(y))
    if bad.size:
        raise DataError(f"{where}: classification needs {kinds}, {locate(int(bad[0]))}; {fix}")
    if y.min() < 0:
        raise DataError(f"{where}: class labels must be >= 0, {locate(int(np.argmin(y)))}; {fix}")
    return y.astype(np.int64)


def _check_finite(a: np.ndarray, what: str) -> None:
    """Refuse NaN/Inf, naming the first bad row and column (0-based) of ``a`` (N, ...)."""
    flat = a.reshape(len(a), -1)
    bad = np.argwhere(~np.isfinite(flat))
    if bad.size:
        r, c = (int(v) for v in bad[0])
        raise DataError(f"{what}: row {r}, column '{c}' is {flat[r, c]} (NaN/Inf refused)")


class FileDataModule(TensorDataModule):
    """Your data from a file: subclasses :meth:`read` arrays; this class splits them (seeded by
    the job's seed), standardizes inputs on the training split and converts to tensors.

    ``task``, ``input_dim``, ``output_dim`` and ``classes`` are None until ``setup()``.
    """

    task = None
    input_dim = None
    output_dim = None

    def __init__(self, cfg, schedule: Schedule | None = None, seed: int = 0):
        super().__init__(cfg, schedule=schedule, seed=seed)
        self.feature_names: list[str] | None = None
        self.target: str | list[str] | None = None
        self.x_mean: np.ndarray | None = None
        self.x_std: np.ndarray | None = None
        self.fallback: dict[str, str] = {}

    def read(self) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
        """Arrays ``{"all": (x, y)}`` or ``{"train": ..., "val": ..., "test": ...}`` with x (N, d)
        float64 and y (N,) int64 or (N, k) float64, and ``task``/``output_dim``/``classes``/...
        as a dict."""
        raise NotImplementedError

    def path(self) -> Path:
        path = Path(str(self.cfg.path)).expanduser()
        if not path.is_file():
            raise DataError(f"data.path={self.cfg.path} is not a file")
        return path

    def load(self):
        arrays, meta = self.read()
        if "all" in arrays:
            x, y = arrays.pop("all")
            idx = split_indices(len(x), self.cfg.val_fraction, self.cfg.test_fraction, self.seed)
            arrays = {k: (x[i], y[i]) for k, i in idx.items()}
        self.fallback = _fill_missing_splits(arrays)
        x_train = arrays["train"][0]
        if self.cfg.standardize:
            self.x_mean = x_train.mean(0)
            std = x_train.std(0)
            self.x_std = np.where(std > 0, std, 1.0)  # a constant feature is left unscaled
        self.task, self.output_dim = meta["task"], int(meta["output_dim"])
        self.input_dim = int(x_train.shape[1])
        self.classes = meta.get("classes")
        self.feature_names = meta.get("feature_names")
        self.target = meta.get("target")
        out, done = {}, {}
        for name, (x, y) in arrays.items():
            if id(x) in done:  # a fallback split shares its tensors with the split it reuses
                out[name] = done[id(x)]
                continue
            key = id(x)
            if self.x_mean is not None:
                x = (x - self.x_mean) / self.x_std
            xt = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)
            if self.task == "classification":
                yt = torch.as_tensor(np.ascontiguousarray(y), dtype=torch.int64)
            else:
                yt = torch.as_tensor(np.ascontiguousarray(y), dtype=torch.float32).reshape(len(y), -1)
            out[name] = done[key] = (xt, yt)
        return out

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["source"] = str(Path(str(self.cfg.path)).expanduser().resolve())
        if self.feature_names is not None:
            out["feature_names"] = list(self.feature_names)
        if self.target is not None:
            out["target"] = self.target
        if self.x_mean is not None:
            out["x_mean"] = [float(v) for v in self.x_mean]
            out["x_std"] = [float(v) for v in self.x_std]
        if self.fallback:
            out["fallback"] = dict(self.fallback)
        return out


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


class CSVDataModule(FileDataModule):
    """A comma-separated file: numeric feature columns and one label column (``data.target``,
    default the last), or several numeric target columns for a multi-output regression.

    The first row is a header of column names unless every cell in it is a number. Labels that
    are text make a classification with the sorted unique texts as classes; integer-valued
    numbers make a classification with classes 0..max; other numbers a regression. ``data.task``
    overrides that inference (``regression`` on integer labels, ``classification`` on text or
    integer-valued numbers).
    """

    def _target_columns(self, names: list[str], where: str) -> list[int]:
        raw = self.cfg.target
        targets = list(raw) if OmegaConf.is_list(raw) or isinstance(raw, (list, tuple)) else [raw]
        if targets in ([""], [None]):
            return [len(names) - 1]
        cols = []
        for t in targets:
            if str(t) in names:
                cols.append(names.index(str(t)))
                continue
            try:
                i = int(str(t))
            except ValueError:
                raise DataError(f"{where}: data.target='{t}' is not a column; columns: {', '.join(names)}") from None
            if not -len(names) <= i < len(names):
                raise DataError(f"{where}: data.target={t} is out of range for {len(names)} columns (0-based)")
            cols.append(i % len(names))
        if len(set(cols)) != len(cols):
            raise DataError(f"{where}: data.target names a column twice: {targets}")
        if len(cols) == len(names):
            raise DataError(f"{where}: data.target takes every column; no feature column is left")
        return cols

    def read(self):
        path = self.path()
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                rows = [(i + 1, [c.strip() for c in row]) for i, row in enumerate(csv.reader(f)) if any(c.strip() for c in row)]
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise DataError(f"cannot read CSV file {path}: {err}") from None
        if not rows:
            raise DataError(f"CSV file {path} is empty")
        width = len(rows[0][1])
        if all(_is_number(c) for c in rows[0][1]):
            names = [str(i) for i in range(width)]
        else:
            (_, names), rows = rows[0], rows[1:]
            if "" in names:
                raise DataError(f"{path}: header column {names.index('')} has no name")
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise DataError(f"{path}: header names columns {dup} more than once")
        if not rows:
            raise DataError(f"CSV file {path} has a header but no data rows")
        for line, row in rows:
            if len(row) != width:
                raise DataError(f"{path}: line {line} has {len(row)} cells, the first row {width}")
        lines = [line for line, _ in rows]
        cells = np.array([row for _, row in rows], dtype=object)  # (N, width) of str
        tcols = self._target_columns(names, str(path))
        fcols = [i for i in range(width) if i not in tcols]
        x = np.empty((len(rows), len(fcols)), dtype=np.float64)
        for j, c in enumerate(fcols):
            x[:, j] = self._numbers(cells[:, c], names[c], lines, path, "feature")
        meta: dict[str, Any] = {"feature_names": [names[c] for c in fcols]}
        task = self.cfg.task
        if len(tcols) > 1:
            if task == "classification":
                raise DataError(f"{path}: classification takes one label column, data.target names {len(tcols)}")
            y = np.stack([self._numbers(cells[:, c], names[c], lines, path, "target") for c in tcols], 1)
            meta.update(task="regression", output_dim=len(tcols), target=[names[c] for c in tcols])
            return {"all": (x, y)}, meta
        col = cells[:, tcols[0]]
        name = names[tcols[0]]
        meta["target"] = name
        where = f"{path}, label column '{name}'"
        for i, cell in enumerate(col):
            if cell == "":
                raise DataError(f"{where}: line {lines[i]} is empty")
        numeric = all(_is_number(c) for c in col)
        if not numeric:
            if task == "regression":
                first = next(c for c in col if not _is_number(c))
                raise DataError(f"{where}: data.task=regression needs numbers, found '{first}'")
            classes = sorted(set(col.tolist()))
            lookup = {c: i for i, c in enumerate(classes)}
            y = np.array([lookup[c] for c in col], dtype=np.int64)
            meta.update(task="classification", output_dim=len(classes), classes=classes)
        else:
            values = self._numbers(col, name, lines, path, "label")
            integer = bool(np.all(values == np.round(values)))
            if task == "regression" or (task == "auto" and not integer):
                meta.update(task="regression", output_dim=1)
                y = values[:, None]  # (N, 1)
            else:
                y = _labels_to_classes(values, where, lambda i: f"line {lines[i]} holds {col[i]}",
                                       kinds="integer or text labels", fix="use data.task=regression or text labels")
                n_cls = int(y.max()) + 1
                meta.update(task="classification", output_dim=n_cls, classes=[str(i) for i in range(n_cls)])
        if meta["task"] == "classification" and meta["output_dim"] < 2:
            raise DataError(f"{where}: classification needs at least 2 classes, found {meta['classes']}")
        return {"all": (x, y)}, meta

    @staticmethod
    def _numbers(col: np.ndarray, name: str, lines: list[int], path: Path, what: str) -> np.ndarray:
        """A column of cells -> float64, naming the first bad cell's line and column."""
        try:
            values = col.astype(np.float64)
        except ValueError:
            values = None
        if values is None or not np.all(np.isfinite(values)):
            for i, cell in enumerate(col):
                if cell == "":
                    raise DataError(f"{path}: line {lines[i]}, column '{name}' is empty ({what} cells must be numbers)")
                if not _is_number(cell):
                    raise DataError(f"{path}: line {lines[i]}, column '{name}' holds '{cell}', not a number "
                                    f"({what} columns must be numeric)")
                if not math.isfinite(float(cell)):
                    raise DataError(f"{path}: line {lines[i]}, column '{name}' is {cell} (NaN/Inf refused)")
        return values


NPZ_SPLIT_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
NPZ_KEYS = ("x", "y", *NPZ_SPLIT_KEYS, "feature_names", "classes")


class NPZDataModule(FileDataModule):
    """A NumPy ``.npz`` archive (``np.savez``): ``x`` (N, d) and ``y``, split by the fractions, or
    pre-split ``x_train``/``y_train`` with optional ``x_val``/``y_val`` and ``x_test``/``y_test``.
    Optional string arrays ``feature_names`` (d,) and ``classes`` name the columns and classes.

    y of an integer (or bool) dtype, shape (N,), is a classification with classes 0..max; float
    y of shape (N,) is a one-output regression, (N, k) a k-output one. ``data.task`` overrides
    (``classification`` on integer-valued floats; ``regression`` on integers). Object arrays
    (pickles) are refused.
    """

    def read(self):
        path = self.path()
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except ValueError as err:
            raise DataError(f"{path}: cannot load without pickle ({err}); save plain numeric arrays with np.savez") from None
        except (OSError, EOFError) as err:
            raise DataError(f"cannot read npz file {path}: {err}") from None
        unknown = sorted(set(arrays) - set(NPZ_KEYS))
        if unknown:
            raise DataError(f"{path}: unknown arrays {unknown}; expected x, y or x_train, y_train "
                            f"(x_val, y_val, x_test, y_test optional), and optionally feature_names, classes")
        if "x" in arrays or "y" in arrays:
            if any(k in arrays for k in NPZ_SPLIT_KEYS):
                raise DataError(f"{path}: holds both x/y and pre-split arrays {sorted(set(arrays) & set(NPZ_SPLIT_KEYS))}; keep one layout")
            parts = {"all": ("x", "y")}
        else:
            parts = {s: (f"x_{s}", f"y_{s}") for s in ("train", "val", "test") if f"x_{s}" in arrays or f"y_{s}" in arrays}
            if "train" not in parts:
                raise DataError(f"{path}: needs arrays x and y, or x_train and y_train; found {sorted(arrays)}")
        raw = {}
        for split, (kx, ky) in parts.items():
            if kx not in arrays or ky not in arrays:
                raise DataError(f"{path}: has '{kx if kx in arrays else ky}' but not '{ky if kx in arrays else kx}'")
            x, y = arrays[kx], arrays[ky]
            if x.ndim != 2:
                raise DataError(f"{path}: {kx} must be 2-D (samples, features), got shape {x.shape}; reshape it to (N, -1)")
            if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
                raise DataError(f"{path}: {kx} must be numeric, got dtype {x.dtype}")
            if len(x) != len(y):
                raise DataError(f"{path}: {kx} has {len(x)} rows but {ky} has {len(y)}")
            if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool) or y.ndim not in (1, 2):
                raise DataError(f"{path}: {ky} must be numeric of shape (N,) or (N, k), got {y.dtype} {y.shape}")
            _check_finite(x.astype(np.float64), f"{path}: {kx}")
            _check_finite(y.astype(np.float64), f"{path}: {ky}")
            raw[split] = (x.astype(np.float64), y, ky)
        widths = {s: v[0].shape[1] for s, v in raw.items()}
        if len(set(widths.values())) > 1:
            raise DataError(f"{path}: the splits have different feature counts {widths}")
        ys = [y for _, y, _ in raw.values()]
        integer = all(np.issubdtype(y.dtype, np.integer) or y.dtype == bool for y in ys)
        task = self.cfg.task if self.cfg.task != "auto" else ("classification" if integer else "regression")
        meta: dict[str, Any] = {"task": task}
        out = {}
        if task == "classification":
            for split, (x, y, ky) in raw.items():
                if y.ndim == 2 and y.shape[1] != 1:
                    raise DataError(f"{path}: classification needs {ky} of shape (N,) (class indices), got {y.shape}; "
                                    f"store a float array for a multi-output regression")
                out[split] = (x, _labels_to_classes(y.reshape(-1).astype(np.float64), f"{path}: {ky}"))
            n_cls = max(int(y.max()) for _, y in out.values() if len(y)) + 1
            classes = [str(i) for i in range(n_cls)]
            if "classes" in arrays:
                names = [str(c) for c in arrays["classes"].reshape(-1)]
                if len(names) < n_cls:
                    raise DataError(f"{path}: 'classes' names {len(names)} classes but labels go up to {n_cls - 1}")
                classes = names
            if len(classes) < 2:
                raise DataError(f"{path}: classification needs at least 2 classes, found {classes}")
            meta.update(output_dim=len(classes), classes=classes)
        else:
            widths = {s: (y.shape[1] if y.ndim == 2 else 1) for s, (_, y, _) in raw.items()}
            if len(set(widths.values())) > 1:
                raise DataError(f"{path}: the splits' y have different output counts {widths}")
            for split, (x, y, _) in raw.items():
                out[split] = (x, y.astype(np.float64).reshape(len(y), -1))  # (N,) -> (N, 1)
            meta["output_dim"] = next(iter(widths.values()))
        if "feature_names" in arrays:
            names = [str(c) for c in arrays["feature_names"].reshape(-1)]
            d = next(iter(out.values()))[0].shape[1]
            if len(names) != d:
                raise DataError(f"{path}: 'feature_names' has {len(names)} names for {d} features")
            meta["feature_names"] = names
        return out, meta


# --------------------------------------------------------------------------- your DataModule
def load_datamodule_class(spec: str) -> type:
    """Import ``package.module:ClassName`` and check it is a LightningDataModule class.

    Raises:
        ConfigError: ``spec`` is not of that form.
        DataError: the module or class cannot be imported, or is not a LightningDataModule.
    """
    mod_name, _, cls_name = str(spec).partition(":")
    if not mod_name or not cls_name or ":" in cls_name:
        raise ConfigError(f"data.module='{spec}' must have the form package.module:ClassName")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as err:
        raise DataError(f"data.module='{spec}': cannot import module '{mod_name}' ({err}); is it on the "
                        f"Python path? (a script's folder is, the working directory is not: set PYTHONPATH=.)") from None
    obj: Any = module
    for part in cls_name.split("."):
        if not hasattr(obj, part):
            found = sorted(n for n, v in vars(module).items() if inspect.isclass(v) and issubclass(v, pl.LightningDataModule))
            raise DataError(f"data.module='{spec}': module '{mod_name}' has no '{cls_name}'"
                            f" (its LightningDataModules: {', '.join(found) or 'none'})")
        obj = getattr(obj, part)
    if not (inspect.isclass(obj) and issubclass(obj, pl.LightningDataModule)):
        raise DataError(f"data.module='{spec}' is not a pytorch_lightning.LightningDataModule subclass (got {obj!r})")
    return obj


def _instantiate(data_cfg, seed: int) -> pl.LightningDataModule:
    cls = load_datamodule_class(data_cfg.module)
    raw = data_cfg.kwargs
    kwargs = dict(OmegaConf.to_container(raw, resolve=True) if OmegaConf.is_config(raw) else raw or {})
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    if "seed" in params and "seed" not in kwargs:
        kwargs["seed"] = seed
    try:
        return cls(**kwargs)
    except Exception as err:  # noqa: BLE001 - any constructor failure is reported with its kwargs
        raise DataError(f"data.module='{data_cfg.module}' failed to build with data.kwargs={kwargs}: "
                        f"{type(err).__name__}: {err}") from err


# --------------------------------------------------------------------------- any DataModule
def unpack_batch(batch: Any, task: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` from a batch: a tuple/list ``(x, y, ...)`` or a dict with ``x`` and ``y``.

    Args:
        batch: one batch from a train/val/test dataloader.
        task: when given, y is brought to the loss code's form: int64 (B,) for classification,
            float32 (B, k) for regression (a (B,) target becomes (B, 1)); x becomes float32.

    Raises:
        DataError: an unsupported batch format, or x that is not (B, d).
    """
    if isinstance(batch, dict) and "x" in batch and "y" in batch:
        x, y = batch["x"], batch["y"]
    elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
        x, y = batch[0], batch[1]
    else:
        kind = f"dict with keys {sorted(batch)}" if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f"unsupported batch format ({kind}): expected a tuple/list (x, y, ...) or a dict with 'x' and 'y'")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise DataError(f"batch x and y must be tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.dim() != 2:
        raise DataError(f"batch x must be 2-D (batch, features), got shape {tuple(x.shape)}; "
                        f"flatten it in the DataModule (x.reshape(len(x), -1))")
    if task is None:
        return x, y
    if task == "classification":
        if y.dim() == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.dim() != 1:
            raise DataError(f"classification y must be class indices of shape (batch,), got {tuple(y.shape)}")
        return x.float(), y.long()
    if y.dim() == 1:
        y = y[:, None]
    if y.dim() != 2:
        raise DataError(f"regression y must be (batch,) or (batch, k), got {tuple(y.shape)}")
    return x.float(), y.float()


def data_summary(info: dict[str, Any]) -> str:
    """One line for the log: the data set, its split sizes and what was inferred from it."""
    sizes = "/".join(str(info[k]) for k in ("n_train", "n_val", "n_test") if info.get(k) is not None)
    what = f"{info['input_dim']} inputs -> "
    if info["task"] == "classification":
        classes = info.get("classes") or []
        shown = ", ".join(classes[:6]) + (", ..." if len(classes) > 6 else "")
        what += f"classification, {info['output_dim']} classes" + (f" ({shown})" if shown else "")
    else:
        what += f"regression, {info['output_dim']} output{'s' if info['output_dim'] != 1 else ''}"
    name = " ".join(str(info[k]) for k in ("dataset", "source") if info.get(k)) or "data"
    rows = f"; train/val/test {sizes} rows" if sizes else ""
    return f"[data] {name}: {what}{rows}"


def describe_data(dm: pl.LightningDataModule) -> dict[str, Any]:
    """The :meth:`TensorDataModule.info` dict for any LightningDataModule (set up here if needed).

    Uses ``dm.info()`` if the module has one; else its attributes ``task``, ``input_dim``,
    ``output_dim`` (or ``num_classes``), and ``classes``/``feature_names``/``image_shape`` if present; whatever
    is still unknown is inferred by one pass over ``dm.train_dataloader()``: input_dim from x
    (B, d); an integer y means classification with max label + 1 classes, a float y regression
    with y.shape[1] outputs (1 for a (B,) target).

    Returns:
        A JSON-able dict with at least ``task``, ``input_dim`` and ``output_dim``.

    Raises:
        DataError: an empty train loader, an unsupported batch format, or inconsistent facts.
    """
    owner = type(dm).__name__
    if isinstance(dm, TensorDataModule):
        dm.setup("fit")  # loads once; later calls are no-ops
    if callable(getattr(dm, "info", None)):
        out = dict(dm.info())
        missing = {"task", "input_dim", "output_dim"} - set(out)
        if missing:
            raise DataError(f"{owner}.info() lacks {sorted(missing)}")
    else:
        out = {}
        for key in ("task", "input_dim", "output_dim", "classes", "feature_names", "image_shape"):
            if getattr(dm, key, None) is not None:
                out[key] = getattr(dm, key)
        if getattr(dm, "num_classes", None) is not None and out.get("task", "classification") == "classification":
            out["task"] = "classification"
            out.setdefault("output_dim", int(dm.num_classes))
        if not {"task", "input_dim", "output_dim"} <= set(out):
            out.update({k: v for k, v in _infer_from_batches(dm, out.get("task")).items() if k not in out})
        out["source"] = f"{type(dm).__module__}:{type(dm).__qualname__}"
        if "classes" in out:
            out["classes"] = [str(c) for c in out["classes"]]
        if "feature_names" in out:
            out["feature_names"] = [str(c) for c in out["feature_names"]]
        if "image_shape" in out:
            out["image_shape"] = [int(n) for n in out["image_shape"]]
    if out["task"] not in TASKS:
        raise DataError(f"{owner}: task must be one of {', '.join(TASKS)}, got {out['task']!r}")
    for key in ("input_dim", "output_dim"):
        if isinstance(out[key], bool) or not isinstance(out[key], (int, np.integer)) or out[key] < 1:
            raise DataError(f"{owner}: {key} must be a positive integer, got {out[key]!r}")
        out[key] = int(out[key])
    return out


def _infer_from_batches(dm: pl.LightningDataModule, task: str | None) -> dict[str, Any]:
    owner = type(dm).__name__
    dm.setup("fit")  # Lightning calls it again in fit(); a DataModule's setup must allow that
    n, d, y_max, y_min, k, y_int = 0, None, None, None, None, None
    for batch in dm.train_dataloader():
        x, y = unpack_batch(batch)
        if d is not None and x.shape[1] != d:
            raise DataError(f"{owner}: train batches have {d} and {x.shape[1]} features")
        d = x.shape[1]
        n += x.shape[0]
        is_int = not (y.is_floating_point() or y.is_complex())
        y_int = is_int if y_int is None else y_int and is_int
        if y.numel():
            y_max = y.max().item() if y_max is None else max(y_max, y.max().item())
            y_min = y.min().item() if y_min is None else min(y_min, y.min().item())
        k = 1 if y.dim() == 1 else int(np.prod(y.shape[1:]))
    if d is None:
        raise DataError(f"{owner}.train_dataloader() yields no batches; cannot infer the data's dimensions")
    task = task or ("classification" if y_int else "regression")
    out: dict[str, Any] = {"task": task, "input_dim": int(d), "n_train": n}
    if task == "classification":
        if not y_int:
            raise DataError(f"{owner}: task is classification but train y is float; give integer class labels")
        if y_min is not None and y_min < 0:
            raise DataError(f"{owner}: class labels must be >= 0, found {y_min}")
        out["output_dim"] = int(y_max) + 1
    else:
        out["output_dim"] = k
    return out


def transform_inputs(x: torch.Tensor, info: dict[str, Any]) -> torch.Tensor:
    """Apply ``info``'s input standardization (if any) to raw inputs x (N, d_0), as training did."""
    if "x_mean" not in info:
        return x
    mean = torch.as_tensor(info["x_mean"], dtype=x.dtype, device=x.device)
    std = torch.as_tensor(info["x_std"], dtype=x.dtype, device=x.device)
    return (x - mean) / std


DATAMODULES = {"sine": SineDataModule, "mnist": MNISTDataModule, "digits": DigitsDataModule,
               "csv": CSVDataModule, "npz": NPZDataModule}


def build_datamodule(data_cfg, schedule: Schedule | None = None, seed: int = 0) -> pl.LightningDataModule:
    """The DataModule that ``data_cfg`` describes.

    Args:
        data_cfg: the ``data`` section of the config.
        schedule: the training schedule (the built-in and file DataModules follow its batch sizes).
        seed: the job's seed (file splits; passed to your DataModule as ``seed`` if it takes one).

    Returns:
        A built-in :class:`TensorDataModule`, or an instance of ``data.module`` (with
        ``data.kwargs``) when ``data.name`` is ``module``. Call ``setup()`` and then
        :func:`describe_data` for its task and dimensions.

    Raises:
        ConfigError: an unknown ``data.name`` or a malformed ``data.module``.
        DataError: ``data.module`` cannot be imported or built.
    """
    name = data_cfg.name
    if getattr(data_cfg, "module", "") and name in ("module", "sine"):
        return _instantiate(data_cfg, seed)
    if name not in DATAMODULES:
        extra = " (data.name=module needs data.module=package.module:ClassName)" if name == "module" else ""
        raise ConfigError(f"data.name='{name}' is not one of: {', '.join(DATASETS)}{extra}")
    return DATAMODULES[name](data_cfg, schedule=schedule, seed=seed)

"""In-memory batching: TensorBatchLoader, splits' device placement, the TensorDataModule base, DataError."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch

from ..errors import LightningStacksError
from ..schedule import Schedule

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
            fitted on the training split: the network's input layer applies it to the raw rows
            the splits hold), ``source`` (the file read) and its ``sha256``, and ``fallback`` (a
            split that reuses another, e.g. ``{"val": "test"}``).
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


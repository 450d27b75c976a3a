"""What the reduction reads from a Lightning fit: whole, unsharded splits as batch sources.

A *source* (see :mod:`lightning_stacks.batches`) is a pair of tensors ``(x, y)`` or any
re-iterable of ``(x, y, ...)`` batches. The reduction needs every training input once per pass
(step 1 is exact only on the inputs it checks), so under DDP it must not read the rank's shard:
a ``DataLoader`` whose sampler is distributed or shuffling is rebuilt over the same dataset with
a plain sequential sampler (same batch size, collate function and workers). The built-in
in-memory data sets hand over their tensors directly.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import BatchSampler, DataLoader, IterableDataset, SequentialSampler

from .data import TensorBatchLoader

SPLITS = ("train", "val", "test")


def unsharded(loader: Any, batch_size: int = 4096) -> Any:
    """A source over every sample ``loader`` draws from, in order, on any rank."""
    if isinstance(loader, TensorBatchLoader):
        return (loader.x, loader.y)
    if isinstance(loader, (list, tuple)) and len(loader) == 1:  # Lightning's list of val loaders
        return unsharded(loader[0], batch_size)
    if isinstance(loader, DataLoader):
        ds = loader.dataset
        if isinstance(ds, IterableDataset) or isinstance(loader.sampler, SequentialSampler):
            return loader  # an iterable data set cannot be re-sampled; a sequential one is already whole
        if loader.batch_size is None:  # batches come from the sampler itself (e.g. a BatchSampler indexing a whole batch)
            inner = getattr(loader.sampler, "batch_size", None)
            if not isinstance(loader.sampler, BatchSampler) or inner is None:
                return loader  # an unknown batch sampler: its own batches, in its own order
            return DataLoader(ds, batch_size=None, sampler=BatchSampler(SequentialSampler(ds), inner, drop_last=False),
                              num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory)
        return DataLoader(ds, batch_size=loader.batch_size, shuffle=False, num_workers=loader.num_workers,
                          collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=False)
    return loader


def has_loader(dm: Any, split: str) -> bool:
    """Whether the DataModule implements ``<split>_dataloader`` (the base class's raises)."""
    import pytorch_lightning as pl
    from pytorch_lightning.utilities.model_helpers import is_overridden

    if dm is None:
        return False
    if isinstance(dm, pl.LightningDataModule):
        return is_overridden(f"{split}_dataloader", dm, pl.LightningDataModule)
    return callable(getattr(dm, f"{split}_dataloader", None))


def _datamodule_loader(dm: Any, split: str) -> Any:
    """``dm.<split>_dataloader()`` when the DataModule implements it, else None."""
    return getattr(dm, f"{split}_dataloader")() if has_loader(dm, split) else None


def split_sources(trainer: Any = None, splits: tuple[str, ...] = SPLITS, dm: Any = None) -> dict[str, Any]:
    """The data per split as unsharded sources: a fit's own loaders where the Trainer has them
    (train, val), else the DataModule's (``dm``, default the Trainer's); splits without data are
    left out."""
    dm = dm if dm is not None else getattr(trainer, "datamodule", None)
    out = {}
    for split in splits:
        loader = None
        if trainer is not None and split == "train":
            loader = trainer.train_dataloader
        elif trainer is not None and split == "val":
            loader = trainer.val_dataloaders
        if loader is None or (isinstance(loader, (list, tuple)) and not loader):
            loader = _datamodule_loader(dm, split)
        if loader is not None and not (isinstance(loader, (list, tuple)) and not loader):
            out[split] = unsharded(loader)
    return out

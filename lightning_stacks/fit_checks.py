"""What ``ReductionCallback`` settles from a fit's data before any training: the task (given, the
module's own, or read from the first batch's labels only where they are unambiguous) and the
split its budget is measured on (the validation data when the fit has some)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from .capture import Forward, Targets, evaluating, model_batches, to_device
from .evaluation import infer_task, is_probability_rows
from .reduction.settings import ReductionError

TASKS = ("classification", "regression")


def first_train_batch(trainer: pl.Trainer) -> Any | None:
    """The first batch of the fit's training data, before the fit loop has built its loaders
    (None when the data cannot be reached yet)."""
    source = getattr(getattr(trainer, "fit_loop", None), "_data_source", None)
    loader = None
    try:
        if source is not None and source.is_defined():
            loader = source.dataloader()
        elif getattr(trainer, "datamodule", None) is not None:
            loader = trainer.datamodule.train_dataloader()
    except Exception:  # noqa: BLE001 - a loader that cannot be built here is built (and reported) by the fit
        return None
    if isinstance(loader, (list, tuple)):
        loader = loader[0] if loader else None
    if isinstance(loader, dict):
        loader = next(iter(loader.values()), None)
    return next(iter(model_batches(loader)), None) if loader is not None else None


def decide_task(given: str | None, pl_module: pl.LightningModule, trainer: pl.Trainer, forward: Forward,
                targets: Targets, width_hint: int) -> tuple[str, str]:
    """The task and how it was decided. ``given`` is checked against the first training batch's
    labels; without it, the module's ``task`` attribute, else the labels when they say it
    unambiguously; one-hot or probability rows, float class labels and other shapes are refused
    naming ``task=``. ``width_hint``: the output width when the module has no ``forward``."""
    own = getattr(pl_module, "task", None)
    if given is None and own in TASKS:
        return own, f"the module's task attribute ({own})"
    batch = first_train_batch(trainer)
    if batch is None:
        if given is not None:
            return given, "given"
        raise ReductionError("the fit's training data yielded no batch to read the task from; give task='classification' or "
                             "task='regression'")
    y = targets(batch)
    if not isinstance(y, torch.Tensor):
        raise ReductionError(f"the training labels are a {type(y).__name__}, not a tensor: give targets=lambda batch: ... "
                             "that returns them")
    try:
        with evaluating(pl_module):
            out = forward(pl_module, to_device(batch, next(pl_module.parameters()).device))
        width = out.shape[1] if out.dim() == 2 else 1
    except NotImplementedError:  # no forward of its own: the block's outputs are the outputs
        width = width_hint
    if given == "classification":
        ok = (not y.is_floating_point() and y.dim() == 1) or is_probability_rows(y, width)
        if not ok:
            raise ReductionError(f"task='classification' but the training labels are {y.dtype} of shape {tuple(y.shape)}: give "
                                 f"integer class indices (batch,) or one-hot / probability rows (batch, {width})")
        return given, "given" + (" (probability rows count by their argmax)" if y.is_floating_point() else "")
    if given == "regression":
        if not ((y.dim() == 2 and y.shape[1] == width) or (y.dim() == 1 and width == 1)):
            raise ReductionError(f"task='regression' but the targets have shape {tuple(y.shape)} for outputs of width {width}")
        return given, "given"
    task, why = infer_task(y, width)
    if task is None:
        raise ReductionError(f"ReductionCallback cannot tell the task from the training labels ({why}): give "
                             "task='classification' (e.g. for one-hot targets with a cross-entropy loss) or task='regression'")
    return task, f"inferred from {why}"


def budget_split(reference: str | None, sources: dict) -> tuple[str, str | None]:
    """The split ``max_drop`` is measured on: ``reference`` as set, else the validation data when
    the fit has some (else the training data); the second item says why when it was chosen here."""
    if reference is not None:
        return reference, None
    if "val" in sources:
        return "val", "the budget is measured on the fit's validation data (reference='train' measures it on the training data)"
    return "train", "the fit has no validation data: the budget is measured on the training data"

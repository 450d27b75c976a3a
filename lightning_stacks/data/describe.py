"""Facts about any LightningDataModule: batch unpacking, task/dimension inference, summary, standardization."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from .tensors import TASKS, DataError, TensorDataModule


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
    """Apply ``info``'s input standardization (if any) to raw inputs x (N, d_0), as the network's
    input layer does (a module's own: ``StackModule.network_inputs``)."""
    from ..preprocess import input_layer

    return input_layer(info)(x)

"""Your data from a file: seeded splits, the standardization's statistics and the CSV and NPZ readers."""

from __future__ import annotations

import csv
import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from ..schedule import Schedule
from .tensors import DataError, TensorDataModule


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


def file_sha256(path: Path) -> str:
    """SHA-256 of the file's bytes (what ``data_info`` records as the data's identity)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FileDataModule(TensorDataModule):
    """Your data from a file: subclasses :meth:`read` arrays; this class splits them (seeded by
    the job's seed), fits the standardization's statistics on the training split and converts
    to tensors. The splits hold the file's raw rows: the statistics (``info()``'s ``x_mean`` and
    ``x_std``) become the network's input layer (:mod:`lightning_stacks.preprocess`), so a
    checkpoint takes raw rows too.

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
        self.sha256: str | None = None
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
        self.sha256 = file_sha256(self.path())
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
        if self.sha256 is not None:
            out["sha256"] = self.sha256
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


"""Data sources that may not fit in memory: one interface over tensors and batch iterables.

A *source* is one of:

- a tensor ``x`` (N, d), or a **tuple** ``(x, y)`` of two tensors with the same first dimension
  (the in-memory case);
- any re-iterable of batches (a ``torch.utils.data.DataLoader``, a **list** of batches, ...),
  iterated once per pass. A batch is a tensor ``x`` (B, d), a tuple/list whose first two items
  are ``x`` (B, d) and ``y`` (B,) or (B, d_out) (more items are ignored), or a dict with keys
  ``"x"`` and ``"y"``.

The functions below move one chunk at a time to the device, so the memory a pass needs is one
chunk, independent of N. Pure torch (no Lightning).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from .errors import LightningStacksError

Source = Any  # torch.Tensor | tuple[torch.Tensor, torch.Tensor] | Iterable of batches


class BatchError(LightningStacksError):
    """A batch of a data source is malformed or holds non-finite values."""


def all_finite(x: torch.Tensor) -> bool:
    """Whether every entry of x is finite. A NaN or an infinity makes the sum non-finite, so a
    finite sum (one read of x, ~30x faster than isfinite's N x d bool tensor) settles it; a
    non-finite sum (a bad entry, or finite values that overflow) is checked entry by entry."""
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def _is_pair(source: Any) -> bool:
    return (isinstance(source, tuple) and len(source) == 2 and all(isinstance(t, torch.Tensor) for t in source)
            and source[0].dim() >= 1 and source[1].dim() >= 1 and source[0].shape[0] == source[1].shape[0])


def is_streamed(source: Source) -> bool:
    """True for an iterable of batches, False for a tensor or an ``(x, y)`` tuple of tensors."""
    return not (isinstance(source, torch.Tensor) or _is_pair(source))


def _split(batch: Any, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, y or None) of batch number i (0-based), or a ValueError naming what is wrong."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, dict):
        if "x" not in batch:
            raise BatchError(f"batch {i} is a dict without key 'x' (keys: {sorted(map(str, batch))}); "
                             "a dict batch needs 'x' and, for labels, 'y'")
        x, y = batch["x"], batch.get("y")
    elif isinstance(batch, tuple | list) and len(batch) >= 1:
        x, y = batch[0], (batch[1] if len(batch) >= 2 else None)
    else:
        raise BatchError(f"batch {i} is a {type(batch).__name__}; a batch must be a tensor x, a tuple/list "
                         "(x, y, ...) or a dict with keys 'x' and 'y'")
    if not isinstance(x, torch.Tensor) or (y is not None and not isinstance(y, torch.Tensor)):
        raise BatchError(f"batch {i} holds {type(x).__name__} inputs and {type(y).__name__} labels; both must be tensors")
    return x, y


def _check(x: torch.Tensor, y: torch.Tensor | None, i: int, width: int | None) -> None:
    if x.dim() != 2 or (width is not None and x.shape[1] != width):
        expect = f"(batch, {width})" if width is not None else "(batch, d)"
        raise BatchError(f"batch {i} has inputs of shape {tuple(x.shape)}; the network expects {expect}")
    if y is not None and (y.dim() == 0 or y.shape[0] != x.shape[0]):
        raise BatchError(f"batch {i} has {x.shape[0]} inputs but labels of shape {tuple(y.shape)}")
    # one reduction per batch, on data that is being read anyway: NaN/Inf never pass silently
    if x.is_floating_point() and not all_finite(x):
        raise BatchError(f"batch {i} holds NaN or infinite inputs; remove or fix those rows")
    if y is not None and y.is_floating_point() and not all_finite(y):
        raise BatchError(f"batch {i} holds NaN or infinite labels; remove or fix those rows")


def _batches(source: Source, width: int | None) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """(x, y or None) per batch as stored (a tensor source is one batch), validated."""
    if isinstance(source, torch.Tensor):
        items: Iterable = [source]
    elif _is_pair(source):
        items = [source]
    elif isinstance(source, Iterable):
        items = source
    else:
        raise BatchError(f"a data source must be a tensor, an (x, y) tuple of tensors or an iterable of batches, "
                         f"got {type(source).__name__}")
    for i, batch in enumerate(items):
        x, y = _split(batch, i)
        _check(x, y, i, width)
        yield x, y


def iter_inputs(source: Source, chunk: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                width: int | None = None) -> Iterator[torch.Tensor]:
    """The inputs of ``source`` in order, at most ``chunk`` rows at a time, on ``device``.

    Args:
        source: a tensor (N, d), an ``(x, y)`` tuple, or an iterable of batches (see module doc).
        chunk: largest number of rows yielded at once; a larger batch is split.
        device, dtype: where and as what each chunk is yielded (None = as stored).
        width: expected d; a batch of another width raises ``ValueError``.

    Yields:
        x chunks (B, d) with 1 <= B <= chunk (an empty tensor source yields nothing).
    """
    for x, _ in iter_pairs(source, chunk, device, dtype, width, need_labels=False):
        yield x


def iter_pairs(source: Source, chunk: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
               width: int | None = None, need_labels: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(x, y)`` chunks of ``source`` in order, at most ``chunk`` rows each, on ``device``.

    Args:
        source: a tensor pair ``(x, y)`` or an iterable of batches with labels.
        chunk: largest number of rows yielded at once.
        device: where both parts go; dtype: what x is cast to (labels keep theirs).
        width: expected input width d.
        need_labels: raise ``ValueError`` for a batch without labels (else y is None there).

    Yields:
        (x (B, d), y (B, ...)) with 1 <= B <= chunk.
    """
    if chunk < 1:
        raise BatchError(f"chunk must be >= 1, got {chunk}")
    for i, (x, y) in enumerate(_batches(source, width)):
        if y is None and need_labels:
            raise BatchError(f"batch {i} has no labels; this needs (x, y) batches")
        # one batch on the device at a time; slices of it are views, so splitting costs nothing
        x = x.to(device=device, dtype=dtype)
        y = y.to(device) if y is not None else None
        for s in range(0, x.shape[0], chunk):
            yield x[s : s + chunk], (y[s : s + chunk] if y is not None else None)


def count_rows(source: Source) -> int:
    """Number of input rows in ``source`` (one pass over a streamed source, no device copies)."""
    return sum(x.shape[0] for x, _ in _batches(source, None))


_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _row_keys(start: int, count: int, seed: int) -> np.ndarray:
    """A pseudo-random 64-bit key per global row index (splitmix64 of index and seed): a row's key
    depends only on its position in the data, not on how the data is batched."""
    with np.errstate(over="ignore"):
        z = np.arange(start, start + count, dtype=np.uint64) + np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
        z = z * np.uint64(0xBF58476D1CE4E5B9) + np.uint64(0x632BE59BD9B97F4A)
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z & _MASK64


def reservoir_sample(source: Source, k: int, seed: int = 0, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A uniform random subset of k rows of ``source``, from one pass in O(k + batch) memory.

    Every row gets a key that depends only on (seed, its index in the data); the k rows with the
    smallest keys form the sample (a uniform k-subset), returned in data order. So the sample is
    the same for a tensor and for the same rows streamed in any batching.

    Args:
        source: any source (see module doc).
        k: sample size; 0 or >= N returns every row.
        seed: selects the subset.
        width: expected input width d (a batch of another width raises ``ValueError``).

    Returns:
        (x (k, d), y (k, ...) or None when the batches carry no labels), on the batches' device.
    """
    if k < 0:
        raise BatchError(f"sample size k must be >= 0, got {k}")
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    keys = np.empty(0, dtype=np.uint64)
    rows = np.empty(0, dtype=np.int64)
    start = 0
    has_labels = None
    for i, (x, y) in enumerate(_batches(source, width)):
        if has_labels is None:
            has_labels = y is not None
        elif has_labels != (y is not None):
            raise BatchError(f"batch {i} {'has' if y is not None else 'lacks'} labels, unlike batch 0")
        if k == 0:  # everything
            xs.append(x)
            if y is not None:
                ys.append(y)
            continue
        b = x.shape[0]
        bkeys = _row_keys(start, b, seed)
        all_keys = np.concatenate([keys, bkeys])
        all_rows = np.concatenate([rows, np.arange(start, start + b, dtype=np.int64)])
        pool_x = torch.cat([*xs, x]) if xs else x
        pool_y = (torch.cat([*ys, y]) if ys else y) if y is not None else None
        start += b
        if all_keys.size > k:
            keep = np.sort(np.argsort(all_keys, kind="stable")[:k])  # the k smallest keys, in data order
            keep_t = torch.from_numpy(keep).to(pool_x.device)
            pool_x = pool_x.index_select(0, keep_t)
            pool_y = pool_y.index_select(0, keep_t.to(pool_y.device)) if pool_y is not None else None
            all_keys, all_rows = all_keys[keep], all_rows[keep]
        keys, rows = all_keys, all_rows
        xs = [pool_x]
        ys = [pool_y] if pool_y is not None else []
    if not xs:
        return torch.empty(0, 0), None
    x_out = torch.cat(xs) if len(xs) > 1 else xs[0]
    y_out = (torch.cat(ys) if len(ys) > 1 else ys[0]) if ys else None
    return x_out, y_out

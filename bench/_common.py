"""Helpers shared by the benchmarks (not part of the package)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_MNIST = ROOT.parent / "shared" / "data" / "mnist"


def mnist_root() -> str:
    """``$LIGHTNING_STACKS_DATA`` if set, else the shared offline copy beside the repo."""
    return os.environ.get("LIGHTNING_STACKS_DATA") or str(DEFAULT_MNIST)


def timed(fn, *args, **kwargs):
    """(result, seconds) of one call."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0

"""Memory and time of step 1 on MNIST 60k and 600k inputs: streamed DataLoader vs one tensor.

    OMP_NUM_THREADS=2 python bench/stream_memory.py [--data-root DIR] [--ckpt net.pt] [--train-steps 300]
                                                  [--tiles 10] [--batch 4096] [--json out.json]

A 3 x 1024 Deep Stack Network (784 -> 16 -> 16 -> 10, affine skips) is trained briefly
(``--train-steps`` seeded Adam steps at batch 256 on the 60k training images, so step 1 has
neurons to fold) or loaded from ``--ckpt`` (a state_dict of that architecture). Then
``reduce_network(net, source, ReduceSettings())`` (step 1 on every input plus the report's
output-change pass) runs on four sources, each in a fresh subprocess so its peak RSS is its own:

- ``memory``: the inputs materialised as one float32 tensor (N, 784) before the call;
- ``streamed``: a DataLoader (batch ``--batch``) over a Dataset that serves the 60k uint8 images
  tiled by index modulo, converting one batch at a time (no (N, 784) float array exists).

N is 60k (tiles 1) and 60k x ``--tiles``. Reported per run: peak RSS during the call minus RSS
just before it (``VmHWM``, reset before the call where Linux allows), peak RSS of the process, the bytes of the materialised float data, wall seconds
of the call, and the widths (asserted identical between streamed and in-memory). Last lines: the
streamed / in-memory ratios of memory and time at the largest N.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import ROOT, mnist_root

from lightning_stacks.data import read_idx
from lightning_stacks.model import DeepStackNetwork
from lightning_stacks.reduction import ReduceSettings, reduce_network

WIDTH, DIMS = 1024, [16, 16]


def load_mnist(root: str) -> tuple[np.ndarray, np.ndarray]:
    """Training images (60000, 784) uint8 and labels (60000,) uint8."""
    root = Path(root)

    def find(stem: str) -> Path:
        for name in (stem + ".gz", stem):
            if (root / name).exists():
                return root / name
        raise SystemExit(f"{stem}(.gz) not found under {root}; pass --data-root or set LIGHTNING_STACKS_DATA")

    images = read_idx(find("train-images-idx3-ubyte")).reshape(-1, 784)
    labels = read_idx(find("train-labels-idx1-ubyte"))
    return images, labels


def to_float(u8: torch.Tensor) -> torch.Tensor:
    """(B, 784) uint8 -> float32 in [0, 1]; the one conversion both sources use, so they hold equal values."""
    return u8.to(torch.float32).div_(255.0)


class TiledImages(torch.utils.data.Dataset):
    """``tiles`` copies of the uint8 images, row i being image i mod 60000, served a slice of rows
    at a time (used with a sampler of slices and ``batch_size=None``)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, tiles: int):
        self.images, self.labels = torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))
        self.n = len(images) * tiles

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, rows: slice):
        m = self.images.shape[0]
        start, stop = rows.start % m, rows.start % m + (rows.stop - rows.start)
        if stop <= m:  # within one tile: a view, no gather
            return to_float(self.images[start:stop]), self.labels[start:stop]
        idx = torch.arange(start, stop) % m
        return to_float(self.images[idx]), self.labels[idx]

    def batches(self, size: int) -> list[slice]:
        return [slice(i, min(i + size, self.n)) for i in range(0, self.n, size)]


def build_net() -> DeepStackNetwork:
    return DeepStackNetwork.from_variant(784, [WIDTH] * 3, DIMS, 10, "stack")


def train(images: np.ndarray, labels: np.ndarray, steps: int) -> DeepStackNetwork:
    torch.manual_seed(0)
    net = build_net()
    x, y = to_float(torch.from_numpy(images.copy())), torch.from_numpy(labels.astype(np.int64))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (256,), generator=g)
        loss = F.cross_entropy(net(x[idx]), y[idx]) + 5e-4 * sum(p.pow(2).sum() for p in net.parameters())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def status_kib(key: str) -> int:
    """A ``/proc/self/status`` field in KiB (VmRSS: resident now; VmHWM: peak resident)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/self/status")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker(args) -> None:
    """One configuration in this (fresh) process; prints one JSON line."""
    images, labels = load_mnist(args.data_root)
    net = build_net()
    net.load_state_dict(torch.load(args.net, weights_only=True))
    net.eval()
    tiles = args.tiles if args.size == "large" else 1
    n = images.shape[0] * tiles
    data_bytes = 0
    if args.mode == "memory":
        u8 = torch.from_numpy(images.copy())
        source = torch.empty(n, 784)  # filled in place: no transient second copy raises the peak
        for t in range(tiles):
            source[t * len(u8) : (t + 1) * len(u8)] = to_float(u8)
        data_bytes = source.numel() * source.element_size()
    else:
        ds = TiledImages(images, labels, tiles)
        source = torch.utils.data.DataLoader(ds, sampler=ds.batches(args.batch), batch_size=None)
    # the first call in a process pays one-time costs (thread pools, allocator growth): not step 1's
    warm = source[:256] if args.mode == "memory" else [next(iter(source))[0][:256]]
    reduce_network(net, warm, ReduceSettings(), task="classification")
    # VmHWM is this process's own peak (a fresh mm after exec; ru_maxrss would carry the parent's
    # peak across fork + exec); reset it so the peak during the call is measured alone
    peak_before = status_kib("VmHWM")
    rss0 = status_kib("VmRSS")
    exact = reset_peak()
    t0 = time.perf_counter()
    reduced, report = reduce_network(net, source, ReduceSettings(), task="classification")
    seconds = time.perf_counter() - t0
    peak_call = status_kib("VmHWM")
    print(json.dumps({
        "mode": args.mode, "n": n, "widths": reduced.widths, "seconds": seconds, "step1_seconds": report.reduce_seconds,
        "max_output_change": report.steps[-1].max_output_change, "data_bytes": data_bytes,
        "rss_before_kib": rss0, "peak_kib": max(peak_before, peak_call), "step_peak_delta_kib": peak_call - rss0,
        # without the reset, a call that stays under the earlier peak only bounds its own from above
        "delta_is_upper_bound": not exact and peak_call == peak_before,
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }))


def run_config(args, net_path: str, size: str, mode: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--size", size, "--mode", mode, "--net", net_path,
           "--data-root", args.data_root, "--tiles", str(args.tiles), "--batch", str(args.batch)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=os.environ.copy())
    if out.returncode:
        raise SystemExit(f"worker {size}/{mode} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=mnist_root(), help="folder with train-images-idx3-ubyte(.gz) etc.")
    p.add_argument("--ckpt", help="a state_dict of the 3 x 1024 network (default: train one here)")
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--tiles", type=int, default=10)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--size", choices=["small", "large"], help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=["memory", "streamed"], help=argparse.SUPPRESS)
    p.add_argument("--net", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        net_path = args.ckpt
        t0 = time.perf_counter()
        if net_path is None:
            images, labels = load_mnist(args.data_root)
            net_path = str(Path(tmp) / "net.pt")
            torch.save(train(images, labels, args.train_steps).state_dict(), net_path)
            print(f"trained {args.train_steps} Adam steps in {time.perf_counter() - t0:.1f}s")
        rows = [run_config(args, net_path, size, mode) for size in ("small", "large") for mode in ("memory", "streamed")]
    by = {(r["n"], r["mode"]): r for r in rows}
    for n in sorted({r["n"] for r in rows}):
        assert by[n, "memory"]["widths"] == by[n, "streamed"]["widths"], (by[n, "memory"]["widths"], by[n, "streamed"]["widths"])

    def mib(kib: float) -> float:
        return kib / 1024

    head = f"{'N':>8} {'source':>9} {'step-1 peak - before MiB':>25} {'peak RSS MiB':>13} {'data MiB':>9} {'call s':>7} {'step1 s':>8}  widths"
    print(head)
    print("-" * len(head))
    for r in rows:
        bound = "<=" if r["delta_is_upper_bound"] else "  "
        print(f"{r['n']:>8} {r['mode']:>9} {bound}{mib(r['step_peak_delta_kib']):>23.1f} {mib(r['peak_kib']):>13.1f} "
              f"{r['data_bytes'] / 2**20:>9.1f} {r['seconds']:>7.2f} {r['step1_seconds']:>8.2f}  {r['widths']}")
    big = max(r["n"] for r in rows)
    m, s = by[big, "memory"], by[big, "streamed"]
    print(f"N={big}: streamed / in-memory: peak RSS x{s['peak_kib'] / m['peak_kib']:.3f}, "
          f"step-1 peak - before x{s['step_peak_delta_kib'] / max(m['step_peak_delta_kib'], 1):.3f}, time x{s['seconds'] / m['seconds']:.2f}")
    small = min(r["n"] for r in rows)
    print(f"60k -> {big // 1000}k peak RSS: in-memory x{m['peak_kib'] / by[small, 'memory']['peak_kib']:.2f}, "
          f"streamed x{s['peak_kib'] / by[small, 'streamed']['peak_kib']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "train_steps": args.train_steps, "batch": args.batch, "tiles": args.tiles,
                       "threads": torch.get_num_threads()}, f, indent=2)


if __name__ == "__main__":
    main()

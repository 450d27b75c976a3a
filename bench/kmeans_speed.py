"""Weighted k-means of step 3: torch (on the reduction's device) vs scikit-learn (CPU), same data.

    OMP_NUM_THREADS=2 python bench/kmeans_speed.py [--device cpu|cuda] [--k 100 300] [--seeds 3]

Data: kink representations (``kink_representation``) of two random 1024-neuron stacks built to
look trained: MNIST's first stack (d_in 784 -> p = 1568; neurons drawn around 200 prototype
directions, log-normal outgoing norms) and a 1-D sine-like stack (d_in 1 -> p = 2; kinks spread
over [-1, 1]). Both sides get float64 data and weights, ``n_init=3``, the same seed; sklearn's
time includes its copy of the data to the host (numpy), as a CPU round trip would.
Each case runs once per seed (``--seeds``, alternating torch and sklearn so that load on the
machine hits both), after one untimed warm-up call of each. Columns: median seconds over seeds,
``ratio = torch / sklearn`` (< 1: torch faster), mean inertia over seeds (one seed alone is noisy)
and the ratio of those means (> 1: torch's clustering is worse).
"""

from __future__ import annotations

import argparse
import statistics
import time

import _common  # noqa: F401  (puts the repo on sys.path)
import torch

from lightning_stacks.reduction import StackWeights, kink_representation
from lightning_stacks.reduction.kmeans import weighted_kmeans_torch


def trained_like_stack(n: int, d_in: int, d_out: int, seed: int = 0) -> StackWeights:
    """Random stack whose neurons cluster in direction and kink, as after training with l2."""
    g = torch.Generator().manual_seed(seed)
    if d_in == 1:
        V = torch.randn(n, 1, generator=g, dtype=torch.float64)
        kinks = torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1  # in [-1, 1]
        b = -kinks * V[:, 0]
    else:
        protos = torch.randn(200, d_in, generator=g, dtype=torch.float64)
        which = torch.randint(0, 200, (n,), generator=g)
        V = protos[which] + 0.3 * torch.randn(n, d_in, generator=g, dtype=torch.float64)
        V = V * torch.exp(0.5 * torch.randn(n, 1, generator=g, dtype=torch.float64)) / d_in**0.5
        b = 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    W = torch.randn(d_out, n, generator=g, dtype=torch.float64) * torch.exp(torch.randn(n, generator=g, dtype=torch.float64))
    return StackWeights(V=V, b=b, W=W, c=torch.zeros(d_out, dtype=torch.float64), skip="none")


def sklearn_kmeans(R: torch.Tensor, w: torch.Tensor, k: int, seed: int) -> float:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=3, random_state=seed)
    km.fit(R.detach().cpu().numpy(), sample_weight=w.detach().cpu().numpy())
    return float(km.inertia_)


def torch_kmeans(R: torch.Tensor, w: torch.Tensor, k: int, seed: int) -> float:
    _, _, inertia = weighted_kmeans_torch(R, w, k, seed=seed, n_init=3)  # a host float: synced
    return inertia


def timed_sync(fn, device: str, *args) -> tuple[float, float]:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn(*args)
    if device == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--k", type=int, nargs="+", default=[100, 300])
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")

    cases = {"mnist-stack1 p=1568": trained_like_stack(args.n, 784, 16), "sine p=2": trained_like_stack(args.n, 1, 1)}
    print(f"device={args.device} threads={torch.get_num_threads()} n={args.n} n_init=3 seeds={args.seeds}")
    print(f"{'case':<22}{'k':>5}{'torch s':>10}{'sklearn s':>11}{'ratio':>8}{'torch inertia':>16}{'sklearn inertia':>17}{'in. ratio':>10}")
    for name, st in cases.items():
        R, w = kink_representation(st)
        R, w = R.to(args.device), w.to(args.device)
        for k in args.k:
            torch_kmeans(R, w, k, 0)  # warm-up: allocator, kernels, sklearn import
            sklearn_kmeans(R, w, k, 0)
            tt, ts, it, is_ = [], [], [], []
            for seed in range(args.seeds):
                inertia, t = timed_sync(torch_kmeans, args.device, R, w, k, seed)
                tt.append(t)
                it.append(inertia)
                inertia, t = timed_sync(sklearn_kmeans, args.device, R, w, k, seed)
                ts.append(t)
                is_.append(inertia)
            mt, ms = statistics.median(tt), statistics.median(ts)
            it, is_ = statistics.mean(it), statistics.mean(is_)
            print(f"{name:<22}{k:>5}{mt:>10.3f}{ms:>11.3f}{mt / ms:>8.2f}{it:>16.6g}{is_:>17.6g}{it / is_:>10.4f}")


if __name__ == "__main__":
    main()

"""Weighted k-means of step 3: torch (on the reduction's device) with each of its seedings vs
scikit-learn (CPU), same data.

    OMP_NUM_THREADS=2 python bench/kmeans_speed.py [--device cpu|cuda] [--k 10 50 100 300] [--seeds 3] [--n 1024]

Data: kink representations (``kink_representation``) of two random ``--n``-neuron stacks built to
look trained: MNIST's first stack (d_in 784 -> p = 1568; neurons drawn around 200 prototype
directions, log-normal outgoing norms) and a 1-D sine-like stack (d_in 1 -> p = 2; kinks spread
over [-1, 1]). Every side gets float64 data and weights, ``n_init=3``, the same seed; sklearn's
time includes its copy of the data to the host (numpy), as a CPU round trip would.
Torch seedings (``init``, see lightning_stacks/reduction/kmeans.py): ``old`` = ``"k-means++"``
(the replica kept from before), ``new`` = ``"greedy-batched"`` (the default: the same picks, fewer
and batched kernels per step), ``k||`` = ``"k-means||"`` (Bahmani et al.'s rounds, then the same
greedy steps over the weighted candidates; without rounds, so the same as ``new``, when
n <= 1 + 10 k).
Each case runs once per seed (``--seeds``, interleaving the sides so that load on the machine hits
all), after one untimed warm-up call of each. Columns, as medians over seeds:

- ``seeding s``: the seeding for all 3 restarts, timed inside the full fit (any Gram matrix that
  the fit builds for Lloyd and shares with the seeding is not counted; one the seeding alone asks
  for is); sklearn: its ``kmeans_plusplus`` called 3 times;
- ``total s``: the whole fit (seeding, Lloyd, best of 3), ``KMeans(n_clusters=k, n_init=3,
  random_state=seed).fit(X, sample_weight=w)`` for sklearn;
- ``inertia / sklearn``: the mean inertia over seeds divided by sklearn's mean (> 1: worse
  clustering; one seed alone is noisy, a few percent either way).
"""

from __future__ import annotations

import argparse
import statistics
import time

import _common  # noqa: F401  (puts the repo on sys.path)
import torch

import lightning_stacks.reduction.kmeans as kmeans
from lightning_stacks.reduction import StackWeights, kink_representation
from lightning_stacks.reduction.kmeans import weighted_kmeans_torch

INITS = {"old": "k-means++", "new": "greedy-batched", "k||": "k-means||"}
SIDES = (*INITS, "sklearn")


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


def sklearn_seeding(R: torch.Tensor, w: torch.Tensor, k: int, seed: int) -> None:
    """sklearn's greedy k-means++ for 3 restarts (what ``KMeans(n_init=3)`` seeds with)."""
    import numpy as np
    from sklearn.cluster import kmeans_plusplus

    X, sw = R.detach().cpu().numpy(), w.detach().cpu().numpy()
    rng = np.random.RandomState(seed)
    for _ in range(3):
        kmeans_plusplus(X, k, sample_weight=sw, random_state=rng)


def torch_kmeans(R: torch.Tensor, w: torch.Tensor, k: int, seed: int, init: str) -> tuple[float, float]:
    """(inertia, seconds spent in the seeding) of one fit."""
    _, _, inertia = weighted_kmeans_torch(R, w, k, seed=seed, n_init=3, init=init)  # a host float: synced
    return inertia, SEEDING_SECONDS.pop()


SEEDING_SECONDS: list[float] = []
_seed = kmeans._seed


def _timed_seed(X, *args, **kwargs):
    """kmeans._seed, timed (the device synchronized around it)."""
    out, t = timed_sync(_seed, X.device.type, X, *args, **kwargs)
    SEEDING_SECONDS.append(t)
    return out


kmeans._seed = _timed_seed


def timed_sync(fn, device: str, *args, **kwargs):
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    if device == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--k", type=int, nargs="+", default=[10, 50, 100, 300])
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")

    cases = {"mnist-stack1 p=1568": trained_like_stack(args.n, 784, 16), "sine p=2": trained_like_stack(args.n, 1, 1)}
    print(f"device={args.device} threads={torch.get_num_threads()} n={args.n} n_init=3 seeds={args.seeds}")
    print(f"{'':<26}|{'seeding s (3 restarts)':^32}|{'total s':^32}|{'inertia / sklearn':^24}")
    sides = "".join(f"{s:>8}" for s in SIDES)
    print(f"{'case':<21}{'k':>5}|{sides}|{sides}|" + "".join(f"{s:>8}" for s in INITS))
    for name, st in cases.items():
        R, w = kink_representation(st)
        R, w = R.to(args.device), w.to(args.device)
        for k in args.k:
            for init in INITS.values():  # warm-up: allocator, kernels, sklearn import
                torch_kmeans(R, w, k, 0, init)
            sklearn_seeding(R, w, k, 0)
            sklearn_kmeans(R, w, k, 0)
            seed_t, total_t, inertia = ({side: [] for side in SIDES} for _ in range(3))
            for seed in range(args.seeds):
                for side, init in INITS.items():
                    (out, ts), t = timed_sync(torch_kmeans, args.device, R, w, k, seed, init)
                    seed_t[side].append(ts)
                    total_t[side].append(t)
                    inertia[side].append(out)
                seed_t["sklearn"].append(timed_sync(sklearn_seeding, args.device, R, w, k, seed)[1])
                out, t = timed_sync(sklearn_kmeans, args.device, R, w, k, seed)
                total_t["sklearn"].append(t)
                inertia["sklearn"].append(out)
            ref = statistics.mean(inertia["sklearn"])
            row = f"{name:<21}{k:>5}|"
            row += "".join(f"{statistics.median(seed_t[s]):>8.4f}" for s in SIDES) + "|"
            row += "".join(f"{statistics.median(total_t[s]):>8.3f}" for s in SIDES) + "|"
            row += "".join(f"{statistics.mean(inertia[s]) / ref:>8.4f}" for s in INITS)
            print(row, flush=True)


if __name__ == "__main__":
    main()

"""Speed of the full Reduction Algorithm vs one plain forward pass, on MNIST 3 x n (d=16).

    python bench/reduce_speed.py [--widths 1024 2048 4096] [--train-steps 300] [--device cpu|cuda] [--runs 5]

Each network is trained briefly (``--train-steps`` Adam steps at batch 256 with l2, so that the
steps have work to do), then: one forward pass over all 60k training inputs (timed two ways, the
module's ``predict`` and the reduction's own fused pass over the same weights; the faster is the
reference the ratios divide by), and the
reduction (step 1 on all 60k inputs, step 2 at tolerance ``--tol``, step 3 to ``--clusters``
per stack) with and without the per-step evaluation (train/test accuracy, output change).
First lines, for the first width: ``ratio=<reduction/forward>`` (evaluation excluded), then
``ratio_with_eval`` (the whole call with the per-step report: train and test metric and output
change after every step) and ``ratio_final_eval`` (``report="final"``: the full and the final
network measured); each time is the median of ``--runs`` runs, alternating.
With ``--device cuda`` the network and all inputs live on the GPU (the reduction runs there) and
every timing ends with a synchronize. Both sides are warmed up first (a forward pass; one reduction of a tiny network, which pays the
one-time ~1.4 s import of scikit-learn's KMeans); that one-time cost is printed too.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from _common import mnist_root, timed

from lightning_stacks.config import load_config
from lightning_stacks.data import MNISTDataModule
from lightning_stacks.evaluation import predict
from lightning_stacks.model import DeepStackNetwork
from lightning_stacks.reduction import ReduceSettings, reduce_network
from lightning_stacks.reduction.stacks import run_stacks, stack_weights


def synced(fn, device: torch.device):
    """``fn`` whose return waits for the device's queued work (honest wall times on CUDA)."""
    def run(*args, **kwargs):
        out = fn(*args, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out
    return run


def brief_training(net: DeepStackNetwork, x, y, steps: int, l2: float = 5e-4) -> None:
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (256,), generator=g).to(x.device)
        loss = F.cross_entropy(net(x[idx]), y[idx]) + l2 * sum(p.pow(2).sum() for p in net.parameters())
        opt.zero_grad()
        loss.backward()
        opt.step()


def measure(n: int, x, y, xt, yt, args) -> dict:
    torch.manual_seed(0)
    dev = x.device
    net = DeepStackNetwork.from_variant(784, [n] * 3, [16, 16], 10, "stack").to(dev)
    brief_training(net, x, y, args.train_steps)
    net.eval()
    synced(predict, dev)(net, x[:4096])  # warm-up
    settings = ReduceSettings(tolerances=[args.tol] * 3, clusters=[args.clusters] * 3, seed=0)
    final = ReduceSettings(tolerances=[args.tol] * 3, clusters=[args.clusters] * 3, seed=0, report="final")
    splits = {"train": (x, y), "test": (xt, yt)}
    fwd, fused, red, with_eval, final_eval = [], [], [], [], []
    stacks = stack_weights(net)
    for _ in range(args.runs):
        with torch.no_grad():
            fwd.append(timed(synced(predict, dev), net, x)[1])
            fused.append(timed(synced(run_stacks, dev), stacks, x)[1])
        (_, report), _ = timed(synced(reduce_network, dev), net, x, settings, "classification")
        red.append(report.reduce_seconds)
        (_, report_eval), t = timed(synced(reduce_network, dev), net, x, settings, "classification", evaluate=splits)
        with_eval.append(t)
        final_eval.append(timed(synced(reduce_network, dev), net, x, final, "classification", evaluate=splits)[1])
    med = statistics.median
    return {"n": n, "forward": min(med(fwd), med(fused)), "module_forward": med(fwd), "fused_forward": med(fused), "reduce": med(red), "with_eval": med(with_eval), "final_eval": med(final_eval),
            "widths": [s.widths for s in report.steps], "steps": report.steps,
            "acc": report_eval.steps[-1].metrics, "acc_full": report_eval.steps[0].metrics}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", type=int, nargs="+", default=[1024, 2048, 4096])
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--tol", type=float, default=0.5)
    p.add_argument("--clusters", type=int, default=100)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<i>: where the network, the data and the reduction live")
    p.add_argument("--runs", type=int, default=5, help="timings are medians over this many runs")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device} but CUDA is not available")
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else f'cpu, threads={torch.get_num_threads()}'}")
    tiny = DeepStackNetwork(784, [8, 8, 8], [4, 4, 10]).to(device)
    _, t_first = timed(synced(reduce_network, device), tiny, torch.rand(64, 784, device=device),
                       ReduceSettings(tolerances=[0.0] * 3, clusters=[4] * 3))
    dm = MNISTDataModule(load_config(None, ["data.name=mnist", f"data.root={mnist_root()}"]).data)
    x, y = (t.to(device) for t in dm.split("train"))
    xt, yt = (t.to(device) for t in dm.split("test"))
    rows = [measure(n, x, y, xt, yt, args) for n in args.widths]
    first = rows[0]
    print(f"ratio={first['reduce'] / first['forward']:.3f}")
    print(f"ratio_with_eval={first['with_eval'] / first['forward']:.3f}")
    print(f"ratio_final_eval={first['final_eval'] / first['forward']:.3f}")
    print(f"one-time warm-up (imports) before timing: {t_first:.2f}s")
    for r in rows:
        step_times = " ".join(f"{s.step}={s.seconds:.2f}s" for s in r["steps"][1:])
        print(f"n={r['n']}: forward {r['forward']:.3f}s (the faster of the module's {r['module_forward']:.3f}s and "
              f"the fused stacks' {r['fused_forward']:.3f}s), reduction {r['reduce']:.3f}s ({step_times}), "
              f"ratio {r['reduce'] / r['forward']:.2f}, with the report {r['with_eval']:.2f}s (final only {r['final_eval']:.2f}s); "
              f"widths {' -> '.join('/'.join(map(str, w)) for w in r['widths'])}; "
              f"test acc {r['acc_full']['test']:.4f} -> {r['acc']['test']:.4f}")
    base = rows[0]
    for r in rows[1:]:
        print(f"scaling n {base['n']} -> {r['n']} ({r['n'] / base['n']:.0f}x): reduction time x{r['reduce'] / base['reduce']:.2f}, "
              f"forward x{r['forward'] / base['forward']:.2f}")


if __name__ == "__main__":
    main()

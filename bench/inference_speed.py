"""Inference latency/throughput of a reduced vs the full network on CPU, measured in one run,
plus a TorchScript (traced) export of the reduced model checked to give the same outputs.

    python bench/inference_speed.py FULL.ckpt REDUCED.ckpt [--repeats 200]

Batch 1: median latency over ``--repeats`` calls; batch 1024: median time per batch. Last line:
``ratio=<full/reduced time at batch 1024>`` (the experiments issue's target: >= 5). Both networks
are timed after ``DeepStackNetwork.flush_tiny_()`` (weights below 1e-20 set to 0, the output change
printed): l2-trained weights near the subnormal range make CPU matmuls up to ~20x slower, which
would time the CPU's subnormal arithmetic instead of the networks (``--keep-tiny`` times them as
saved).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import torch
from _common import ROOT  # noqa: F401  (puts the repo on sys.path)

from lightning_stacks.module import load_module


def median_time(net, x, repeats: int) -> float:
    with torch.inference_mode():
        for _ in range(5):
            net(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("full")
    p.add_argument("reduced")
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--keep-tiny", action="store_true", help="time the networks as saved, without flushing weights below 1e-20")
    args = p.parse_args()
    full, red = load_module(args.full).net.eval(), load_module(args.reduced).net.eval()
    d = full.input_dim
    torch.manual_seed(0)
    x1, xb = torch.rand(1, d), torch.rand(1024, d)
    if not args.keep_tiny:  # both networks alike: subnormal products would time the CPU's slow path
        for name, net in (("full", full), ("reduced", red)):
            with torch.inference_mode():
                before = net(xb)
            flushed = net.flush_tiny_()
            with torch.inference_mode():
                change = (net(xb) - before).abs().max().item()
            print(f"{name}: {flushed} weights below 1e-20 set to 0 (max output change {change:.2e} on 1024 inputs)")
    res = {}
    for bs, x, reps in ((1, x1, args.repeats), (1024, xb, max(20, args.repeats // 10))):
        tf, tr = median_time(full, x, reps), median_time(red, x, reps)
        res[bs] = (tf, tr)
        print(f"batch {bs:>4}: full {tf * 1e3:8.3f} ms, reduced {tr * 1e3:8.3f} ms, speed-up {tf / tr:6.2f}x"
              f" ({bs / tf:,.0f} vs {bs / tr:,.0f} samples/s)")
    # trace, not script: a network's control flow is fixed by its architecture
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the input-shape check becomes a constant
        scripted = torch.jit.trace(red, xb)
    with tempfile.NamedTemporaryFile(suffix=".pt") as f:
        torch.jit.save(scripted, f.name)
        loaded = torch.jit.load(f.name)
    with torch.inference_mode():
        diff = (loaded(xb) - red(xb)).abs().max().item()
    print(f"TorchScript export of the reduced model: max |difference| {diff:.2e} on 1024 inputs")
    if diff > 1e-5:
        raise SystemExit("TorchScript export does not reproduce the model's outputs")
    print(f"widths full {full.widths} reduced {red.widths}; threads={torch.get_num_threads()}")
    print(f"ratio={res[1024][0] / res[1024][1]:.2f}")


if __name__ == "__main__":
    main()

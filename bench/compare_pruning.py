"""Reduction vs magnitude pruning at equal compression, without retraining (the paper's fig. 8
comparison, for one trained network).

    python bench/compare_pruning.py FULL.ckpt REDUCED.ckpt [--data-root ../shared/data/mnist] [--json out.json]

FULL is the network before reduction (e.g. ``runs/mnist_table2/rounds/round_0/last.ckpt``),
REDUCED the reduced one. Compression factor = nonzero parameters of FULL / of the other model,
for both methods. Magnitude pruning (global and per layer) is applied to FULL at the reduced
model's factor; all are evaluated on train and test. Prints the misclassification counts and
``ratio=<pruned train errors / reduced train errors>`` last (the paper reports ~100).
"""

from __future__ import annotations

import argparse
import json

from _common import mnist_root

from lightning_stacks.config import load_config
from lightning_stacks.data import build_datamodule
from lightning_stacks.evaluation import predict
from lightning_stacks.methods.magnitude_pruning import nonzero_parameters, prune_to_compression
from lightning_stacks.module import load_module


def errors(net, x, y) -> int:
    net.eval()
    return int((predict(net, x).argmax(1) != y).sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("full")
    p.add_argument("reduced")
    p.add_argument("--data-root", default=mnist_root())
    p.add_argument("--json", default="")
    args = p.parse_args()
    full, red = load_module(args.full), load_module(args.reduced)
    if full.task != "classification":
        raise SystemExit("compare_pruning counts misclassifications: it needs a classification checkpoint")
    cfg = load_config(base=dict(full.hparams["config"]), overrides=[f"data.root={args.data_root}"] if full.cfg.data.name == "mnist" else [])
    dm = build_datamodule(cfg.data)
    (x, y), (xt, yt) = dm.split("train"), dm.split("test")
    factor = nonzero_parameters(full.net) / nonzero_parameters(red.net)
    rows = {"full": (full.net, full), "reduced": (red.net, red)}  # each network with the module whose input layer feeds it
    for scope in ("global", "layer"):
        rows[f"pruned_{scope}"] = (prune_to_compression(full.net, factor, scope)[0], full)
    out = {"compression_factor": factor, "widths_reduced": red.net.widths, "methods": {}}
    print(f"compression factor (nonzero params full / reduced) = {factor:.2f}; reduced widths {red.net.widths}")
    for name, (net, owner) in rows.items():
        tr, te = errors(net, owner.network_inputs(x), y), errors(net, owner.network_inputs(xt), yt)
        nz = nonzero_parameters(net)
        out["methods"][name] = {"nonzero_params": nz, "train_errors": tr, "test_errors": te,
                                "train_acc": 1 - tr / len(y), "test_acc": 1 - te / len(yt)}
        print(f"{name:<15} nonzero {nz:>8}  train errors {tr:>6} ({1 - tr / len(y):.4f})  test errors {te:>5} ({1 - te / len(yt):.4f})")
    m = out["methods"]
    ratio = m["pruned_global"]["train_errors"] / max(m["reduced"]["train_errors"], 1)
    out["ratio_pruned_global_over_reduced_train_errors"] = ratio
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    print(f"ratio={ratio:.2f}")


if __name__ == "__main__":
    main()

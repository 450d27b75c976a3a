"""Figures like the paper's figs. 6-7: a sine network before and after reduction.

    python bench/plot_sine.py runs/sine_table1/rounds/round_0/last.ckpt runs/sine_table1/final.ckpt results/

Writes ``<out>/sine_full.png`` and ``<out>/sine_reduced.png`` (per stack: the learned function in
green, the composition so far in red, every neuron as a point at its kink with height w|v|).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import ROOT  # noqa: F401  (puts the repo on sys.path)

from lightning_stacks.data import build_datamodule
from lightning_stacks.module import load_module
from lightning_stacks.plots import plot_stacks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("full")
    p.add_argument("reduced")
    p.add_argument("out", nargs="?", default="results")
    args = p.parse_args()
    for name, path in (("full", args.full), ("reduced", args.reduced)):
        module = load_module(path)
        x, _ = build_datamodule(module.cfg.data, seed=module.cfg.seed).split("train")
        out = plot_stacks(module.net, module.network_inputs(x), Path(args.out) / f"sine_{name}.png",
                          title=f"{name}: neurons per stack {module.net.widths}")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()

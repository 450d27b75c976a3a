"""The WandB dashboard's two line charts, from an offline run, as one matplotlib figure: the
training metric and the neuron count against the logger's step (no account, no network).

    python bench/plot_dashboard.py runs/default results/dashboard.png

The first argument is a job's out_dir (its newest ``wandb/offline-run-*``) or a ``run-*.wandb`` file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from _common import ROOT  # noqa: E402, F401  (puts the repo on sys.path)

from lightning_stacks.wandb_offline import history, run_file  # noqa: E402


def curves(rows: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """key -> (steps, values) for the training metric, the neuron count and the reduction rows."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for r in rows:
        step = r.get("trainer/global_step")
        if step is None:
            continue
        for key in ("train/mse", "train/acc", "neurons/total", "val/mse", "val/acc"):
            if key in r:
                xs, ys = out.setdefault(key, ([], []))
                xs.append(step)
                ys.append(r[key])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("out", type=Path)
    args = p.parse_args()
    c = curves(history(run_file(args.run)))
    metric = next((k for k in ("train/mse", "train/acc") if k in c), None)
    if metric is None or "neurons/total" not in c:
        raise SystemExit(f"{args.run}: the run has no train/* or neurons/total history")
    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    a.plot(*c[metric], lw=0.8, label=f"{metric} (batch)")
    val = metric.replace("train", "val")
    if val in c:
        a.plot(*c[val], "o-", ms=2, lw=1, label=val)
    if metric.endswith("mse"):
        a.set_yscale("log")
    a.set_ylabel(metric.split("/")[1])
    a.legend()
    b.step(*c["neurons/total"], where="post", color="C3")
    b.set_yscale("log" if min(c["neurons/total"][1]) > 0 else "linear")
    b.set_ylabel("ReLU neurons (total)")
    b.set_xlabel("step")
    fig.suptitle(f"{run_file(args.run).parent.name}: {metric.split('/')[1]} and neurons per logged step")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

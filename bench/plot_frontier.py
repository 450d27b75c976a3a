"""Test accuracy against model size for every MNIST row of ``compare_mnist.py`` summaries: one
point per seed, the mean with its standard error as a bar, parameters on a log axis.

    python bench/plot_frontier.py results/mnist_frontier.png results/mnist_lean/compare_mnist_full.json \
        results/mnist_shrink/compare_mnist_full.json results/mnist_retrain/compare_mnist_full.json

Rows taken from each summary: the recipe's reduced networks (labelled with the recipe's file name),
its control (the full network, every reduction off) and its baselines part. Prints one line per row
(label, seeds, mean parameters, mean test accuracy +- standard error).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABELS = {
    "control_equal_budget": "control: full network, same epochs, no reduction",
    "torch_pruning_finetune": "Torch-Pruning to our widths + fine-tuning",
    "small_from_scratch": "our widths trained from scratch",
    "magnitude_global_retrain": "global magnitude pruning + retraining (sparse)",
}


def rows_of(summary: dict) -> dict[str, list[dict]]:
    """label -> per-seed rows (each with ``nonzero_params`` and ``test_acc``)."""
    recipe = Path(summary.get("recipe", "recipe")).stem
    out: dict[str, list[dict]] = {}
    if summary.get("seeds_runs"):
        out[f"{recipe}: reduced"] = [r["reduced"] for r in summary["seeds_runs"]]
    if summary.get("control"):
        out[f"{recipe} {LABELS['control_equal_budget']}"] = [c["control"] for c in summary["control"] if "control" in c]
    for row in summary.get("baselines", []):
        if row["method"] != "reduction":
            out.setdefault(f"{recipe} {LABELS.get(row['method'], row['method'])}", []).append(row)
    return {k: v for k, v in out.items() if v}


def mean_se(values: list[float]) -> tuple[float, float]:
    m = statistics.fmean(values)
    return m, (statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="PNG to write")
    p.add_argument("summaries", nargs="+", help="compare_mnist JSON summaries")
    args = p.parse_args()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    markers = iter("osD^v<>ph*Xd" * 3)
    for path in args.summaries:
        for label, rows in rows_of(json.loads(Path(path).read_text())).items():
            x = [r["nonzero_params"] for r in rows]
            y = [r["test_acc"] for r in rows]
            (mx, _), (my, se) = mean_se(x), mean_se(y)
            marker = next(markers)
            dots = ax.scatter(x, y, s=14, alpha=0.35, marker=marker)
            ax.errorbar([mx], [my], yerr=[se], fmt=marker, ms=8, capsize=4, color=dots.get_facecolor()[0][:3],
                        label=f"{label} ({len(rows)} seeds)")
            print(f"{label:<80} seeds {len(rows):>2}  params {mx:>9.0f}  test {my:.4f} +- {se:.4f}")
    ax.set_xscale("log")
    ax.set_xlabel("nonzero parameters (log)")
    ax.set_ylabel("MNIST test accuracy")
    ax.set_title("accuracy against size: one dot per seed, mean +- standard error")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""The dashboard's two line charts as one matplotlib figure, from a logged run (no account, no
network): a training metric and the neuron count against the logger's step.

    python bench/plot_dashboard.py runs/default results/dashboard.png
    python bench/plot_dashboard.py lightning_logs/version_0 dashboard.png --metric train_loss

The first argument is an offline WandB run (a job's out_dir with ``wandb/offline-run-*``, or a
``run-*.wandb`` file) or a CSV-logged run (a folder holding ``metrics.csv`` at any depth, the
newest one is read, or the file itself). ``--metric`` picks the curve (default: the first of
train/mse, train/acc, train/loss, then any logged key with "loss" or "acc"); the neuron count is
``neurons/total``, which ``ReductionCallback`` logs for any LightningModule.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from _common import ROOT  # noqa: E402, F401  (puts the repo on sys.path)

from lightning_stacks.wandb_offline import history, run_file  # noqa: E402

PREFERRED = ("train/mse", "train/acc", "train/loss")


def csv_file(path: Path) -> Path | None:
    """The CSV logger's ``metrics.csv`` for ``path`` (the newest under a folder), else None."""
    if path.is_file():
        return path if path.suffix == ".csv" else None
    found = sorted(path.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def rows_of(path: Path) -> list[dict]:
    """History rows ``key -> value`` with the step under ``step``, from a CSV or a WandB run."""
    table = csv_file(path)
    if table is not None:
        with open(table, newline="") as f:
            rows = [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]
        return [r for r in rows if "step" in r]
    try:
        rows = history(run_file(path))
    except FileNotFoundError:
        raise SystemExit(f"{path}: neither a CSV-logged run (metrics.csv) nor an offline WandB run") from None
    return [{**r, "step": r["trainer/global_step"]} for r in rows if "trainer/global_step" in r]


def curves(rows: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """key -> (steps, values) for every numeric key."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for r in rows:
        for key, value in r.items():
            if key != "step" and isinstance(value, (int, float)):
                xs, ys = out.setdefault(key, ([], []))
                xs.append(r["step"])
                ys.append(value)
    return out


def pick_metric(c: dict, wanted: str | None) -> str:
    if wanted:
        if wanted not in c:
            raise SystemExit(f"--metric {wanted} was not logged; logged: {', '.join(sorted(c))}")
        return wanted
    for key in PREFERRED:
        if key in c:
            return key
    for key in sorted(c):
        if key.startswith("train") and ("loss" in key or "acc" in key):
            return key
    raise SystemExit(f"no training metric found (give --metric); logged: {', '.join(sorted(c))}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--metric", default=None, help="the curve of the first chart (default: a train/* metric)")
    args = p.parse_args()
    c = curves(rows_of(args.run))
    if "neurons/total" not in c:
        raise SystemExit(f"{args.run}: the run has no neurons/total history (was ReductionCallback in the Trainer?)")
    metric = pick_metric(c, args.metric)
    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    a.plot(*c[metric], lw=0.8, label=f"{metric} (batch)")
    val = metric.replace("train", "val")
    if val != metric and val in c:
        a.plot(*c[val], "o-", ms=2, lw=1, label=val)
    if metric.endswith("mse") or "loss" in metric:
        a.set_yscale("log" if min(c[metric][1]) > 0 else "linear")
    a.set_ylabel(metric.split("/")[-1])
    a.legend()
    b.step(*c["neurons/total"], where="post", color="C3")
    b.set_yscale("log" if min(c["neurons/total"][1]) > 0 else "linear")
    b.set_ylabel("ReLU neurons (total)")
    b.set_xlabel("step")
    fig.suptitle(f"{args.run.name}: {metric} and neurons per logged step")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

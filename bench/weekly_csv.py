"""Three weeks of a table for the retrain-reduce loop on new data, and a broken fourth file.

    python bench/weekly_csv.py weekly        # writes weekly/week1.csv ... week3.csv, week4_missing.csv

A regression table: 10 named feature columns and the target ``demand`` (a smooth function of
the features plus noise), 1500 rows a week, each week its own seeded draw. In week 2 the
``pressure`` sensor was replaced: its raw readings carry an offset of +1000 (the target still
depends on the true pressure), and it stays so in week 3. ``week4_missing.csv`` lacks the
``humidity`` column: a continued fit on it must be refused before any training. Used by the
README's loop (docs/RETRAIN.md) and by tests/test_retrain.py.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

FEATURES = ["temp", "humidity", "wind", "pressure", "load", "hour_sin", "hour_cos", "price", "occupancy", "solar"]
TARGET = "demand"
ROWS = 1500
PRESSURE_OFFSET = 1000.0  # week 2 on: the new sensor's raw offset
MISSING = "humidity"  # the column week 4's file lacks


def week(k: int, rows: int = ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Week ``k``'s raw features (rows, 10) and target (rows,)."""
    rng = np.random.default_rng(100 + k)
    hour = rng.uniform(0, 2 * np.pi, rows)
    true = np.column_stack([
        rng.normal(15, 8, rows),            # temp (C)
        rng.uniform(20, 90, rows),          # humidity (%)
        rng.gamma(2.0, 2.5, rows),          # wind (m/s)
        rng.normal(101.3, 1.2, rows),       # pressure (kPa), true value
        rng.uniform(0, 1, rows),            # load
        np.sin(hour), np.cos(hour),         # hour of the day
        rng.normal(50, 10, rows),           # price
        rng.integers(0, 200, rows),         # occupancy
        np.clip(rng.normal(300, 150, rows), 0, None),  # solar (W/m2)
    ])
    t, h, w, p, load, hs, hc, price, occ, solar = true.T
    y = (0.08 * (t - 18) ** 2 / 8 + 0.6 * np.sin(2 * hs + hc) + 1.5 * load + 0.8 * np.tanh((p - 101.3) / 1.2)
         + 0.004 * occ + 0.3 * (h / 50) * (t > 20) - 0.0015 * solar - 0.01 * (price - 50) + 0.05 * w)
    y = y + rng.normal(0, 0.1, rows)
    raw = true.copy()
    if k >= 2:
        raw[:, FEATURES.index("pressure")] += PRESSURE_OFFSET
    return raw, y


def write(path: Path, x: np.ndarray, y: np.ndarray, columns: list[str] = FEATURES) -> Path:
    keep = [FEATURES.index(c) for c in columns]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*columns, TARGET])
        for row, target in zip(x[:, keep], y, strict=True):
            w.writerow([f"{v:.6g}" for v in row] + [f"{target:.6g}"])
    return path


def write_weeks(folder: str | Path, rows: int = ROWS) -> list[Path]:
    """Write week1.csv, week2.csv, week3.csv and week4_missing.csv into ``folder``; their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [write(folder / f"week{k}.csv", *week(k, rows)) for k in (1, 2, 3)]
    paths.append(write(folder / "week4_missing.csv", *week(4, rows), columns=[c for c in FEATURES if c != MISSING]))
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", nargs="?", default="weekly")
    p.add_argument("--rows", type=int, default=ROWS)
    args = p.parse_args()
    for path in write_weeks(args.folder, args.rows):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Users' own data through the CLIs: CSV, NPZ and a DataModule given by its dotted path; reload
and reduce in fresh processes without touching the package."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

TESTS = Path(__file__).parent
SMALL = ["model.widths=[48,32]", "model.bottleneck=[4]", "schedule.warmup_epochs=2", "schedule.l2_start=1e-5",
         "schedule.l2_end=1e-4", "schedule.batch_start=32", "schedule.batch_end=64", "logger.kind=none",
         "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]
TWO_ROUNDS = "rounds=[{epochs: 8, reduction: {max_drop: 0.02}}, {epochs: 4, reduction: {max_drop: 0.02, refit: true}}]"


@pytest.fixture(scope="module")
def cancer_csv(tmp_path_factory) -> Path:
    """scikit-learn's breast-cancer table as a user's CSV: 30 named features, text labels."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    path = tmp_path_factory.mktemp("csv") / "cancer.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*d.feature_names, "diagnosis"])
        for x, y in zip(d.data, d.target, strict=True):
            w.writerow([*map(float, x), d.target_names[y]])
    return path


def python(code: str, *args: str):
    """Run a short Python program in a fresh process (nothing imported from this one)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WANDB_MODE": "offline"})


def test_csv_two_rounds_then_reload_and_reduce_in_fresh_processes(tmp_path, cancer_csv):
    out = tmp_path / "run"
    proc = run_cli("train.py", "data.name=csv", f"data.path={cancer_csv}", "data.target=diagnosis", f"out_dir={out}",
                   *SMALL, TWO_ROUNDS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[data] csv" in proc.stdout and "30 inputs -> classification, 2 classes (benign, malignant)" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith("val_acc=")
    report = json.loads((out / "reduction_report.json").read_text())
    assert report["summary"]["reductions"] == 2 and report["summary"]["neurons_before"] == 80
    assert (out / "reduction_report.txt").read_text().count("train acc") == 2
    # the data file is gone: the checkpoint alone rebuilds the module (widths, task, classes)
    moved = cancer_csv.with_name("moved.csv")
    cancer_csv.rename(moved)
    try:
        code = ("import sys; from lightning_stacks import StackModule; m = StackModule.load_from_checkpoint(sys.argv[1]); "
                "print(m.task, m.net.input_dim, m.net.output_dim, m.net.widths, m.data_info['classes'])")
        loaded = python(code, str(out / "final.ckpt"))
        assert loaded.returncode == 0, loaded.stderr[-2000:]
        assert loaded.stdout.startswith("classification 30 2 ") and "['benign', 'malignant']" in loaded.stdout
        # reduce.py needs the data to check inputs on: it says which file, and takes it from data.path
        missing = run_cli("reduce.py", str(out / "final.ckpt"), "reduce.max_drop=0")
        assert missing.returncode == 2 and str(cancer_csv) in missing.stderr and "Traceback" not in missing.stderr
        again = run_cli("reduce.py", str(out / "final.ckpt"), "reduce.max_drop=0", f"data.path={moved}",
                        f"reduce.output={tmp_path / 'again.ckpt'}")
        assert again.returncode == 0, again.stderr[-2000:]
        assert (tmp_path / "again.json").is_file() and "reduced checkpoint:" in again.stdout
    finally:
        moved.rename(cancer_csv)


def test_npz_regression_single_fit_reduced_after_training(tmp_path):
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    path = tmp_path / "diabetes.npz"
    np.savez(path, x=d.data.astype(np.float64), y=(d.target / 100.0).astype(np.float64))  # float targets: regression
    out = tmp_path / "run"
    proc = run_cli("train.py", "data.name=npz", f"data.path={path}", f"out_dir={out}", *SMALL, "rounds=[]", "trainer.max_epochs=12",
                   "reduce.after_training=true", "reduce.max_drop=0.05")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "10 inputs -> regression, 1 output" in proc.stdout
    rep = json.loads((out / "final_reduced.json").read_text())
    full, last = rep["steps"][0], rep["steps"][-1]
    assert rep["task"] == "regression" and sum(last["widths"]) <= sum(full["widths"])
    assert last["metrics"]["train"] <= full["metrics"]["train"] * 1.05 + 1e-9
    assert (out / "reduction_report.json").is_file()


def test_user_datamodule_by_dotted_path_with_rounds(tmp_path):
    out = tmp_path / "run"
    env = {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = run_cli("train.py", "data.module=user_datamodule:BlobsDataModule", "data.kwargs={n: 300, features: 4, classes: 3}",
                   f"out_dir={out}", *SMALL, TWO_ROUNDS, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 inputs -> classification, 3 classes" in proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("train_acc="), last  # the DataModule has no validation split
    assert json.loads((out / "reduction_report.json").read_text())["summary"]["reductions"] == 2


@pytest.mark.slow
def test_ddp_two_processes_on_a_csv_identical_models(tmp_path, cancer_csv):
    proc = run_cli("train.py", "data.name=csv", f"data.path={cancer_csv}", "data.target=diagnosis", f"out_dir={tmp_path}",
                   *SMALL, TWO_ROUNDS, "trainer.devices=2", "trainer.strategy=ddp")
    assert proc.returncode == 0, proc.stderr[-4000:]
    for i in (0, 1):
        sums = [(tmp_path / "rounds" / f"round_{i}.rank{r}.sha256").read_text() for r in (0, 1)]
        assert sums[0] == sums[1], f"ranks differ after round {i}: {sums}"
    assert proc.stdout.count("[data] csv") == 1  # printed once, by rank 0

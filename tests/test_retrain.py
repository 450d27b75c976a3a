"""Retrain-reduce loops on new data: the input layer saved with the network (a checkpoint takes
raw rows), new data checked against the network before any work, ``continue=<job>``, the
lineage, appending a round from the command line."""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli

from lightning_stacks.config import ConfigError, load_config, to_container
from lightning_stacks.data import (
    DataMismatch,
    build_datamodule,
    check_against,
    describe_data,
    split_indices,
)
from lightning_stacks.module import StackModule, load_module
from lightning_stacks.preprocess import Standardize

WEEK1 = ["trainer.max_epochs=15", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", "logger.kind=none"]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_csv(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(feature names, raw x (N, d) float32, y (N,)) read without the package's reader."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    cells = np.array(rows[1:], dtype=np.float64)
    return rows[0][:-1], cells[:, :-1].astype(np.float32), cells[:, -1]


def raw_val_mse(module: StackModule, path: Path, seed: int = 0) -> float:
    """The module's MSE on the raw rows of the file's validation split (the job's seeded split)."""
    _, x, y = read_csv(path)
    val = split_indices(len(x), 0.15, 0.15, seed)["val"]
    with torch.no_grad():
        out = module.eval()(torch.from_numpy(x[val]))
    return float(((out[:, 0].double() - torch.from_numpy(y[val])) ** 2).mean())


# --------------------------------------------------------------------------- the input layer
def csv_module(tmp_path, rows=200, **over) -> tuple[StackModule, object]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 3)) * [1.0, 50.0, 0.01] + [5.0, 1000.0, -2.0]
    path = tmp_path / "t.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "c", "y"])
        w.writerows([[*r, r[0] + r[1] / 100] for r in x])
    cfg = load_config(None, ["data.name=csv", f"data.path={path}", "model.widths=[8,8]", "model.bottleneck=[2]",
                             *[f"{k}={v}" for k, v in over.items()]])
    dm = build_datamodule(cfg.data)
    return StackModule.for_data(cfg, dm), dm


def test_the_input_layer_is_part_of_the_module_and_its_checkpoint(tmp_path):
    module, dm = csv_module(tmp_path)
    x, _ = dm.split("val")  # raw rows: column b is around 1000
    assert x[:, 1].mean() > 900 and isinstance(module.inputs, Standardize)
    info = dm.info()
    z = (x - torch.tensor(info["x_mean"], dtype=torch.float32)) / torch.tensor(info["x_std"], dtype=torch.float32)
    torch.testing.assert_close(module.network_inputs(x), z)
    torch.testing.assert_close(module(x), module.net(z))
    assert {"inputs.mean", "inputs.std"} <= set(module.state_dict())
    from lightning_stacks.checkpoint import save_module

    save_module(module, tmp_path / "m.ckpt")
    loaded = StackModule.load_from_checkpoint(tmp_path / "m.ckpt")
    torch.testing.assert_close(loaded(x), module(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 3\), got \(4, 2\)"):
        loaded(x[:4, :2])


def test_the_reduction_and_evaluations_get_the_networks_inputs(tmp_path):
    from lightning_stacks.reduction.job import module_sources, network_source

    module, dm = csv_module(tmp_path)
    x, y = dm.split("train")
    sources = module_sources(module, module.cfg, dm)
    torch.testing.assert_close(sources["train"][0], module.network_inputs(x))
    assert sources["train"][1] is y and sources["train"][0].mean(0).abs().max() < 1e-4  # standardized
    streamed = network_source(module, [(x[:50], y[:50]), {"x": x[50:], "y": y[50:]}])  # a DataLoader's batches
    got = [b[0] if isinstance(b, tuple) else b["x"] for b in streamed]
    assert len(streamed) == 2
    torch.testing.assert_close(torch.cat(got), module.network_inputs(x))
    sine = StackModule(to_container(load_config(None, ["model.widths=[4,4,4]"])))
    pair = (torch.rand(3, 1), torch.rand(3, 7))
    assert network_source(sine, pair) is pair  # no input layer: the data as it is


def test_an_older_checkpoint_without_the_layers_buffers_still_takes_raw_rows(tmp_path):
    module, dm = csv_module(tmp_path)
    from lightning_stacks.checkpoint import save_module

    save_module(module, tmp_path / "m.ckpt")
    ckpt = torch.load(tmp_path / "m.ckpt", weights_only=True)
    for key in ("inputs.mean", "inputs.std"):
        del ckpt["state_dict"][key]  # as saved before the module held its input layer
    torch.save(ckpt, tmp_path / "old.ckpt")
    x = dm.split("test")[0]
    torch.testing.assert_close(load_module(tmp_path / "old.ckpt")(x), module(x), rtol=0, atol=0)


def test_unstandardized_data_has_the_identity_and_unchanged_state(tmp_path):
    sine = StackModule(to_container(load_config(None, ["model.widths=[4,4,4]"])))
    assert isinstance(sine.inputs, torch.nn.Identity) and not any(k.startswith("inputs.") for k in sine.state_dict())
    x = torch.rand(5, 1)
    assert sine.network_inputs(x) is x
    raw, _ = csv_module(tmp_path, **{"data.standardize": "false"})
    assert isinstance(raw.inputs, torch.nn.Identity) and "x_mean" not in raw.data_info


def test_class_names_come_with_the_module(tmp_path):
    from sklearn.datasets import load_iris

    d = load_iris()
    path = tmp_path / "iris.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sl", "sw", "pl", "pw", "species"])
        w.writerows([[*r, d.target_names[t]] for r, t in zip(d.data, d.target, strict=True)])
    cfg = load_config(None, ["data.name=csv", f"data.path={path}", "model.widths=[8,8]", "model.bottleneck=[2]"])
    module = StackModule.for_data(cfg, build_datamodule(cfg.data))
    assert module.classes == ["setosa", "versicolor", "virginica"]
    assert set(module.predict_classes(torch.tensor(d.data[:7], dtype=torch.float32))) <= set(module.classes)


def test_a_teacher_module_feeds_its_network_through_its_own_input_layer(tmp_path):
    module, dm = csv_module(tmp_path)
    x = dm.split("train")[0][:32]
    with torch.no_grad():
        module.set_teacher(copy.deepcopy(module))
        assert float(module.teacher_loss(module(x), x)) < 1e-10
        module.set_teacher(copy.deepcopy(module.net))  # a bare network is fed this module's network inputs
        assert float(module.teacher_loss(module(x), x)) < 1e-10


# --------------------------------------------------------------------------- data checked against the network
BASE = {"task": "classification", "input_dim": 3, "output_dim": 3, "feature_names": ["a", "b", "c"], "target": "y",
        "classes": ["x", "y", "z"]}


@pytest.mark.parametrize("change,pattern", [
    ({"feature_names": ["a", "c"], "input_dim": 2}, r"new.csv lacks column 'b'; the network takes the columns a, b, c"),
    ({"feature_names": ["a", "b", "c", "d"], "input_dim": 4}, r"has column 'd' the network was not trained on"),
    ({"feature_names": ["a", "B", "c"]}, r"lacks column 'b' and has column 'B' the network was not trained on"),
    ({"feature_names": ["b", "a", "c"]}, r"columns in another order \(first out of place: 'b'\); write them in the order a, b, c"),
    ({"feature_names": None, "input_dim": 4}, r"has 4 features, the network takes 3"),
    ({"output_dim": 2, "classes": ["x", "y"]}, r"has 2 classes \(x, y\), the network 3 \(x, y, z\)"),
    ({"classes": ["x", "y", "w"]}, r"other class names \(x, y, w\) than the network \(x, y, z\)"),
    ({"target": "label"}, r"the target is 'label', the network predicts 'y'; set data.target=y"),
    ({"task": "regression", "output_dim": 1}, r"is a regression data set, the network was trained for classification"),
])
def test_data_that_differs_from_the_networks_is_refused(change, pattern):
    found = {**BASE, **change}
    with pytest.raises(DataMismatch, match=pattern):
        check_against(BASE, {k: v for k, v in found.items() if v is not None}, "data.path=new.csv")
    check_against(BASE, dict(BASE), "data.path=new.csv")  # the same data passes


def test_regression_outputs_are_checked():
    rec = {"task": "regression", "input_dim": 2, "output_dim": 2}
    with pytest.raises(DataMismatch, match="has 1 target column, the network predicts 2"):
        check_against(rec, {**rec, "output_dim": 1}, "data.path=r.npz")


# --------------------------------------------------------------------------- config: appending a round, wandb_mode
def test_a_round_is_appended_without_restating_the_list():
    cfg = load_config(None, ["rounds+=[{epochs: 10, reduction: {max_drop: 0.01}}]"])
    assert len(cfg.rounds) == 3 and cfg.rounds[2].epochs == 10 and cfg.rounds[2].reduction == {"max_drop": 0.01}
    assert cfg.rounds[1].epochs == 60  # the defaults stay as they were
    assert len(load_config(None, ["rounds=[]", "rounds+=[{epochs: 3}, {epochs: 4}]"]).rounds) == 2


@pytest.mark.parametrize("item,pattern", [
    ("rounds+={epochs: 3}", r"\+= appends a list of items, got '\{epochs: 3\}'; write the items in brackets, e\.g\. rounds\+=\[\{epochs: 10\}\]"),
    ("rounds+=[{epoch: 3}]", r"appended item 0 has the unknown key 'epoch'; valid keys of a rounds entry: augment, distill, epochs"),
    ("rounds+=[3]", r"appended item 0 is not a mapping"),
    ("rounds+=[{epochs: 3}", r"the value is not valid YAML"),
    ("seed+=[1]", r"'seed' holds a value, not a list; \+= appends to lists only"),
    ("round+=[{epochs: 3}]", r"unknown config key 'round' in override"),
    ("+=[1]", r"is not of the form key\+=\[item, \.\.\.\]"),
    ("rounds+=[{within: abc}]", r"bad value for config key 'within'"),
])
def test_malformed_appends_are_refused(item, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [item])


@pytest.mark.parametrize("value,meant", [("off", "disabled"), ("false", "disabled"), ("no", "disabled"), ("on", "online")])
def test_wandb_mode_off_says_what_yaml_read(value, meant):
    with pytest.raises(ConfigError, match=rf"logger.wandb_mode is the boolean .*YAML reads off/no/false .*; write logger.wandb_mode={meant}"):
        load_config(None, [f"logger.wandb_mode={value}"])


def test_wandb_mode_off_through_the_cli(tmp_path):
    proc = run_cli("train.py", "configs/debug.yaml", f"out_dir={tmp_path}", "logger.kind=wandb", "logger.wandb_mode=off")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: logger.wandb_mode is the boolean false")
    assert "write logger.wandb_mode=disabled" in proc.stderr


# --------------------------------------------------------------------------- three weeks through the CLI
@pytest.fixture(scope="module")
def weeks(tmp_path_factory):
    """bench/weekly_csv.py's files, then week 1 and two continued generations, as a user runs them."""
    root = tmp_path_factory.mktemp("weekly")
    gen = subprocess.run([sys.executable, str(ROOT / "bench" / "weekly_csv.py"), str(root / "weekly"), "--rows", "800"],
                         capture_output=True, text=True, timeout=120)
    assert gen.returncode == 0, gen.stderr
    runs = {}
    steps = [("w1", ["configs/weekly.yaml", f"data.path={root / 'weekly' / 'week1.csv'}", *WEEK1]),
             ("w2", [f"continue={root / 'w1'}", f"data.path={root / 'weekly' / 'week2.csv'}", "data.scaling=refit"]),
             ("w3", [f"continue={root / 'w2'}", f"data.path={root / 'weekly' / 'week3.csv'}"])]
    for name, args in steps:
        proc = run_cli("train.py", *args, f"out_dir={root / name}", "--quiet")
        assert proc.returncode == 0, f"{name}: {proc.stderr[-3000:]}"
        runs[name] = proc.stdout
    return root, runs


@pytest.mark.slow
def test_each_generation_is_right_on_raw_rows_of_its_own_week(weeks):
    root, _ = weeks
    mse = {}
    for k, name in enumerate(("w1", "w2", "w3"), start=1):
        module = StackModule.load_from_checkpoint(root / name / "final.ckpt")
        report = json.loads((root / name / "reduction_report.json").read_text())
        mse[name] = raw_val_mse(module, root / "weekly" / f"week{k}.csv")
        assert mse[name] == pytest.approx(report["summary"]["metrics_after"]["val"], rel=1e-4), name
        assert mse[name] < 0.5, mse  # the table's target varies by ~1.5 (std): the networks learned it
    # scaled with week 1's statistics, week 2's network is far off: the input layer it carries matters
    w1, w2 = (StackModule.load_from_checkpoint(root / n / "final.ckpt") for n in ("w1", "w2"))
    w2.inputs.load_state_dict(w1.inputs.state_dict())
    assert raw_val_mse(w2, root / "weekly" / "week2.csv") > 100 * mse["w2"]


@pytest.mark.slow
def test_continue_compares_on_the_new_data_and_records_the_lineage(weeks):
    root, runs = weeks
    out2 = runs["w2"]
    assert "[data] input scaling: refitted on the training split of data.path=" in out2
    assert "reduction history restarted (new data)" in out2
    line = next(line for line in out2.splitlines() if line.startswith("previous -> new network on week2.csv"))
    before, after = (float(v) for v in re.search(r"val mse ([\d.e+-]+) -> ([\d.e+-]+)", line).groups())
    assert before > 100 * after  # week 1's network on week 2's moved pressure readings, then week 2's own
    assert re.search(r"test mse [\d.e+-]+ -> [\d.e+-]+; neurons \d+ -> \d+", line)
    assert "[data] input scaling: kept from" in runs["w3"]
    report = json.loads((root / "w3" / "reduction_report.json").read_text())
    lineage = report["lineage"]
    ckpt = load_module(root / "w3" / "final.ckpt")
    assert ckpt.data_info["lineage"] == lineage and [g["generation"] for g in lineage] == [0, 1, 2]
    for g, parent, week in ((lineage[1], "w1", 2), (lineage[2], "w2", 3)):
        assert g["parent"] == str((root / parent / "final.ckpt").resolve())
        assert g["parent_sha256"] == sha256(root / parent / "final.ckpt")
        assert g["data"] == str((root / "weekly" / f"week{week}.csv").resolve())
        assert g["data_sha256"] == sha256(root / "weekly" / f"week{week}.csv") and g["rows"] == {"train": 560, "val": 120, "test": 120}
    assert lineage[1]["scaling"] == "refitted" and lineage[2]["scaling"] == "kept"
    assert lineage[0]["parent"] is None and lineage[0]["data_sha256"] == sha256(root / "weekly" / "week1.csv")
    # data_info is this generation's data; the history holds this generation's reductions only
    assert ckpt.data_info["sha256"] == sha256(root / "weekly" / "week3.csv") and ckpt.data_info["n_train"] == 560
    assert report["summary"]["reductions"] == 1 == len(ckpt.history)
    w2 = load_module(root / "w2" / "final.ckpt")
    torch.testing.assert_close(ckpt.inputs.mean, w2.inputs.mean, rtol=0, atol=0)  # kept by default


@pytest.mark.slow
def test_keep_names_a_moved_feature_and_refit_fits_the_new_split(weeks, capsys):
    from lightning_stacks.lineage import continue_config, start_generation

    root, _ = weeks
    week2 = root / "weekly" / "week2.csv"
    for scaling in ("keep", "refit"):
        cfg = continue_config(str(root / "w1"), None, [f"data.path={week2}", f"out_dir={root / 'x'}", f"data.scaling={scaling}"])
        dm = build_datamodule(cfg.data, seed=cfg.seed)
        module = start_generation(cfg, dm, describe_data(dm))
        parent = load_module(root / "w1" / "final.ckpt")
        if scaling == "keep":
            assert "kept from" in capsys.readouterr().out
            torch.testing.assert_close(module.inputs.mean, parent.inputs.mean, rtol=0, atol=0)
        else:
            torch.testing.assert_close(module.inputs.mean, dm.split("train")[0].mean(0), rtol=1e-5, atol=1e-3)
    keep_out = run_cli("train.py", f"continue={root / 'w1'}", f"data.path={week2}", f"out_dir={root / 'keep'}",
                       "rounds=[{epochs: 0, reduce: false}]", "--quiet")
    assert keep_out.returncode == 0, keep_out.stderr[-2000:]
    assert re.search(r"kept from .*'pressure' moved by [\d.]+ stored stds \(data.scaling=refit fits the scaling to it\)", keep_out.stdout)


@pytest.mark.slow
def test_a_file_with_a_column_missing_is_refused_before_training(weeks):
    root, _ = weeks
    missing = root / "weekly" / "week4_missing.csv"
    proc = run_cli("train.py", f"continue={root / 'w3'}", f"data.path={missing}", f"out_dir={root / 'w4'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: data.path={missing} lacks column 'humidity'; the network takes the columns temp, humidity, wind, pressure, "
        "load, hour_sin, hour_cos, price, occupancy, solar")
    assert not (root / "w4" / "rounds").exists() and not (root / "w4" / "final.ckpt").exists()
    red = run_cli("reduce.py", str(root / "w3" / "final.ckpt"), f"data.path={missing}", "reduce.max_drop=0.01")
    assert red.returncode == 2 and "lacks column 'humidity'" in red.stderr


@pytest.mark.slow
def test_reduce_py_reduces_on_the_networks_inputs(weeks, tmp_path):
    root, _ = weeks
    out = tmp_path / "r.ckpt"
    proc = run_cli("reduce.py", str(root / "w3" / "final.ckpt"), "reduce.max_drop=0.02", f"reduce.output={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.with_suffix(".json").read_text())
    full, last = report["steps"][0]["metrics"], report["steps"][-1]["metrics"]
    assert full["val"] < 0.5  # measured on standardized inputs: the network's own
    reduced = StackModule.load_from_checkpoint(out)
    assert raw_val_mse(reduced, root / "weekly" / "week3.csv") == pytest.approx(last["val"], rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("args,pattern", [
    (["continue=nowhere"], r"continue=nowhere: no finished job there"),
    (["continue=W1"], r"writes a new job: give out_dir=<a new folder>"),
    (["continue=W1", "init_from=x.ckpt", "out_dir=elsewhere"], r"sets where the fit starts; drop 'init_from=x.ckpt'"),
    (["continue=W1", "continue=W1", "out_dir=elsewhere"], r"continue= is given 2 times"),
])
def test_continue_refusals(weeks, args, pattern, tmp_path):
    root, _ = weeks
    args = [a.replace("W1", str(root / "w1")) for a in args]
    if not any(a.startswith("out_dir=") for a in args) and "nowhere" not in args[0]:
        args.append(f"out_dir={root / 'w1'}")
    proc = run_cli("train.py", *args, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert re.search(pattern, proc.stderr.strip().splitlines()[-1]), proc.stderr[-2000:]

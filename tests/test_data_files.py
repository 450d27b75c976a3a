"""Users' own data: CSV and NPZ files, and their own LightningDataModule by dotted path."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes, load_iris, load_wine, make_regression

from lightning_stacks.config import ConfigError, load_config
from lightning_stacks.data import (
    DataError,
    DigitsDataModule,
    SineDataModule,
    TensorDataModule,
    build_datamodule,
    describe_data,
    split_indices,
    transform_inputs,
    unpack_batch,
)


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header is not None:
            w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def iris_csv(tmp_path):
    d = load_iris()
    rows = [[*map(float, x), d.target_names[t]] for x, t in zip(d.data, d.target, strict=True)]
    return write_csv(tmp_path / "iris.csv", ["sl", "sw", "pl", "pw", "species"], rows)


@pytest.fixture
def wine_csv(tmp_path):
    d = load_wine()  # integer labels 0..2, put first
    rows = [[int(t), *map(float, x)] for x, t in zip(d.data, d.target, strict=True)]
    return write_csv(tmp_path / "wine.csv", ["class", *d.feature_names], rows)


@pytest.fixture
def regression_csv(tmp_path):
    x, y = make_regression(n_samples=200, n_features=6, noise=0.1, random_state=0)
    rows = [[*xi, yi] for xi, yi in zip(x, y, strict=True)]
    return write_csv(tmp_path / "reg.csv", [f"f{i}" for i in range(6)] + ["y"], rows), x, y


def dm_for(path, *over, seed=0, name=None):
    name = name or path.suffix[1:]
    cfg = load_config(None, [f"data.name={name}", f"data.path={path}", *over]).data
    dm = build_datamodule(cfg, seed=seed)
    dm.setup("fit")
    return dm


# --------------------------------------------------------------------------- CSV
def test_csv_text_labels_are_sorted_classes(iris_csv):
    dm = dm_for(iris_csv)
    assert (dm.task, dm.input_dim, dm.output_dim) == ("classification", 4, 3)
    info = dm.info()
    assert info["classes"] == ["setosa", "versicolor", "virginica"] and info["target"] == "species"
    assert info["feature_names"] == ["sl", "sw", "pl", "pw"] and info["source"].endswith("iris.csv")
    assert (info["n_train"], info["n_val"], info["n_test"]) == (106, 22, 22)
    json.dumps(info)  # a checkpoint can carry it
    x, y = dm.split("train")
    assert x.dtype == torch.float32 and x.shape == (106, 4) and y.dtype == torch.int64 and y.shape == (106,)
    assert set(torch.cat([dm.split(s)[1] for s in ("train", "val", "test")]).tolist()) == {0, 1, 2}


def test_csv_integer_labels_by_name_or_index(wine_csv):
    for target in ("class", "0"):
        dm = dm_for(wine_csv, f"data.target={target}")
        assert (dm.task, dm.input_dim, dm.output_dim) == ("classification", 13, 3)
        assert dm.info()["classes"] == ["0", "1", "2"] and dm.info()["target"] == "class"
        assert "class" not in dm.info()["feature_names"]


def test_csv_float_labels_are_a_regression_left_unscaled(regression_csv):
    path, _, y_raw = regression_csv
    dm = dm_for(path)
    assert (dm.task, dm.input_dim, dm.output_dim) == ("regression", 6, 1)
    _, y = dm.split("train")
    assert y.shape == (140, 1) and y.dtype == torch.float32
    # targets are the file's values (not standardized): each is one of the raw labels
    assert np.isin(np.round(y[:, 0].numpy(), 2), np.round(y_raw.astype(np.float32), 2)).all()
    assert y.std() > 10


def test_csv_without_header_and_multi_output_target(tmp_path, regression_csv):
    _, x, y = regression_csv
    rows = [[*xi, yi, 2 * yi] for xi, yi in zip(x, y, strict=True)]
    path = write_csv(tmp_path / "nohead.csv", None, rows)
    dm = dm_for(path)
    assert dm.info()["feature_names"] == [str(i) for i in range(7)] and dm.info()["target"] == "7"
    assert dm.info()["n_train"] == 140  # the first row is data, not a header
    dm = dm_for(path, "data.target=[6,7]")
    assert (dm.task, dm.input_dim, dm.output_dim) == ("regression", 6, 2)
    assert dm.split("val")[1].shape == (30, 2)
    with pytest.raises(DataError, match="classification takes one label column"):
        dm_for(path, "data.target=[6,7]", "data.task=classification")


def test_task_override(tmp_path, regression_csv):
    d = load_diabetes()  # integer-valued float targets: auto says classification
    path = write_csv(tmp_path / "diab.csv", [*d.feature_names, "y"], [[*xi, yi] for xi, yi in zip(d.data, d.target, strict=True)])
    assert dm_for(path).task == "classification"
    dm = dm_for(path, "data.task=regression")
    assert (dm.task, dm.output_dim) == ("regression", 1) and dm.split("train")[1].dtype == torch.float32
    with pytest.raises(DataError, match=r"classification needs integer or text labels, line \d+ holds"):
        dm_for(regression_csv[0], "data.task=classification")


def test_split_is_seeded(iris_csv):
    a, b, c = dm_for(iris_csv, seed=3), dm_for(iris_csv, seed=3), dm_for(iris_csv, seed=4)
    torch.testing.assert_close(a.split("val")[0], b.split("val")[0])
    assert not torch.equal(a.split("val")[0], c.split("val")[0])
    idx = split_indices(150, 0.15, 0.15, seed=3)
    assert sorted(np.concatenate(list(idx.values())).tolist()) == list(range(150))


def test_splits_hold_raw_rows_and_info_the_training_splits_statistics(regression_csv):
    path, x_raw, _ = regression_csv
    dm = dm_for(path)
    x, _ = dm.split("train")
    assert np.isin(np.round(x[:, 0].numpy(), 3), np.round(x_raw[:, 0].astype(np.float32), 3)).all()  # the file's values
    info = dm.info()
    torch.testing.assert_close(torch.tensor(info["x_mean"], dtype=torch.float32), x.mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.tensor(info["x_std"], dtype=torch.float32), x.std(0, unbiased=False), atol=1e-5, rtol=1e-5)
    z = transform_inputs(x, info)  # what the network's input layer gives it
    torch.testing.assert_close(z.mean(0), torch.zeros(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(6), atol=1e-5, rtol=0)
    assert transform_inputs(dm.split("val")[0], info).mean(0).abs().max() > 1e-3  # val is scaled by train's statistics
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    raw = dm_for(path, "data.standardize=false")
    assert "x_mean" not in raw.info() and torch.equal(raw.split("val")[0], dm.split("val")[0])


def test_constant_feature_keeps_std_one(tmp_path):
    rows = [[i, 5.0, i % 2] for i in range(40)]
    dm = dm_for(write_csv(tmp_path / "c.csv", ["a", "const", "y"], rows))
    x = dm.split("train")[0]
    assert dm.info()["x_std"][1] == 1.0 and torch.all(x[:, 1] == 5) and torch.all(transform_inputs(x, dm.info())[:, 1] == 0)


@pytest.mark.parametrize("over,val,test", [
    (["data.val_fraction=0"], "test", "test"),
    (["data.test_fraction=0"], "val", "val"),
    (["data.val_fraction=0", "data.test_fraction=0"], "train", "train"),
])
def test_zero_fraction_falls_back(iris_csv, over, val, test):
    dm = dm_for(iris_csv, *over)
    assert dm.split("val")[0] is dm.split(val)[0] and dm.split("test")[0] is dm.split(test)[0]
    assert dm.info()["fallback"] == {k: v for k, v in (("val", val), ("test", test)) if k != v}


@pytest.mark.parametrize("rows,pattern", [
    ([["1", "2", "a"], ["x", "3", "b"]], r"line 3, column 'f0' holds 'x', not a number"),
    ([["1", "2", "a"], ["1", "", "b"]], r"line 3, column 'f1' is empty"),
    ([["1", "nan", "a"], ["1", "2", "b"]], r"line 2, column 'f1' is nan \(NaN/Inf refused\)"),
    ([["1", "2", "a"], ["inf", "2", "b"]], r"line 3, column 'f0' is inf"),
    ([["1", "2", "a"], ["1", "2", ""]], r"label column 'y'.*line 3 is empty"),
    ([["1", "2", "3"], ["1", "2", "-1"]], r"class labels must be >= 0, line 3 holds -1"),
    ([["1", "2", "3"], ["1", "2"]], r"line 3 has 2 cells, the first row 3"),
    ([["1", "2", "a"], ["1", "2", "a"]], r"at least 2 classes"),
])
def test_csv_refusals(tmp_path, rows, pattern):
    with pytest.raises(DataError, match=pattern):
        dm_for(write_csv(tmp_path / "bad.csv", ["f0", "f1", "y"], rows))


def test_csv_refusals_of_target_and_file(tmp_path, iris_csv):
    with pytest.raises(DataError, match=r"data.target='kind' is not a column; columns: sl, sw, pl, pw, species"):
        dm_for(iris_csv, "data.target=kind")
    with pytest.raises(DataError, match=r"data.target=9 is out of range for 5 columns"):
        dm_for(iris_csv, "data.target=9")
    with pytest.raises(DataError, match=r"data.task=regression needs numbers, found 'setosa'"):
        dm_for(iris_csv, "data.task=regression")
    with pytest.raises(DataError, match=r"data.path=.*nope.csv is not a file"):
        dm_for(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="header names columns \\['a'\\] more than once"):
        dm_for(write_csv(tmp_path / "dup.csv", ["a", "a", "y"], [[1, 2, 0], [2, 3, 1]]))


# --------------------------------------------------------------------------- NPZ
def test_npz_integer_labels_classify_and_float_labels_regress(tmp_path):
    d = load_wine()
    np.savez(tmp_path / "cls.npz", x=d.data, y=d.target, classes=np.array(["a", "b", "c"]))
    dm = dm_for(tmp_path / "cls.npz")
    assert (dm.task, dm.input_dim, dm.output_dim) == ("classification", 13, 3) and dm.info()["classes"] == ["a", "b", "c"]
    assert dm.split("train")[1].shape == (len(d.data) - 27 - 27,)
    x, y = make_regression(n_samples=100, n_features=4, n_targets=1, random_state=1)
    np.savez(tmp_path / "reg1.npz", x=x, y=y)  # y (N,) -> (N, 1)
    dm = dm_for(tmp_path / "reg1.npz")
    assert (dm.task, dm.output_dim) == ("regression", 1) and dm.split("test")[1].shape == (15, 1)
    x, y = make_regression(n_samples=100, n_features=4, n_targets=3, random_state=1)
    np.savez(tmp_path / "reg3.npz", x=x, y=y.astype(np.float32))
    dm = dm_for(tmp_path / "reg3.npz")
    assert (dm.task, dm.output_dim) == ("regression", 3) and dm.split("train")[1].dtype == torch.float32
    assert dm_for(tmp_path / "cls.npz", "data.task=regression").split("val")[1].shape == (27, 1)


def test_npz_pre_split(tmp_path):
    rng = np.random.default_rng(0)
    x_tr, x_te = rng.normal(size=(50, 3)), rng.normal(size=(20, 3)) + 5
    y_tr, y_te = rng.integers(0, 4, 50), rng.integers(0, 4, 20)
    np.savez(tmp_path / "s.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    dm = dm_for(tmp_path / "s.npz")
    info = dm.info()
    assert (info["n_train"], info["n_val"], info["n_test"]) == (50, 20, 20) and info["fallback"] == {"val": "test"}
    assert dm.output_dim == 4 and torch.equal(dm.split("test")[1], torch.as_tensor(y_te))
    assert dm.split("test")[0].mean() > 3  # scaled by the training split's statistics, not its own
    np.savez(tmp_path / "v.npz", x_train=x_tr, y_train=y_tr, x_val=x_te, y_val=y_te, x_test=x_te[:5], y_test=y_te[:5])
    assert dm_for(tmp_path / "v.npz").info()["n_test"] == 5


def test_npz_refusals(tmp_path):
    x, y = np.ones((10, 3)), np.arange(10) % 2

    def refused(pattern, **arrays):
        np.savez(tmp_path / "bad.npz", **arrays)
        with pytest.raises(DataError, match=pattern):
            dm_for(tmp_path / "bad.npz")

    refused("cannot load without pickle", x=np.array([{"a": 1}] * 10, dtype=object), y=y)
    refused(r"x has 10 rows but y has 9", x=x, y=y[:9])
    refused(r"x must be 2-D \(samples, features\), got shape \(10, 3, 1\)", x=x[..., None], y=y)
    refused(r"x: row 3, column '0' is nan \(NaN/Inf refused\)", x=np.where(np.eye(10, 3, -3) > 0, np.nan, x), y=y)
    refused(r"y: row 0, column '0' is inf", x=x, y=np.full(10, np.inf))
    refused(r"unknown arrays \['X'\]", X=x, y=y)
    refused(r"holds both x/y and pre-split arrays", x=x, y=y, x_train=x, y_train=y)
    refused(r"has 'x_val' but not 'y_val'", x_train=x, y_train=y, x_val=x)
    refused(r"class labels must be >= 0", x=x, y=y - 1)
    refused(r"different feature counts", x_train=x, y_train=y, x_test=x[:, :2], y_test=y)
    np.savez(tmp_path / "f.npz", x=x, y=y + 0.5)
    with pytest.raises(DataError, match=r"classification needs integer labels, row 0 holds 0.5"):
        dm_for(tmp_path / "f.npz", "data.task=classification")


# --------------------------------------------------------------------------- your DataModule
def module_dm(*over, seed=0):
    cfg = load_config(None, ["data.module=user_datamodule:BlobsDataModule", *over])
    dm = build_datamodule(cfg.data, seed=seed)
    dm.setup("fit")
    return cfg, dm


def test_user_datamodule_by_dotted_path_with_kwargs():
    cfg, dm = module_dm("data.kwargs={n: 60, features: 7, classes: 4}", seed=5)
    assert cfg.data.name == "module" and type(dm).__name__ == "BlobsDataModule"
    assert (dm.n, dm.features, dm.seed) == (60, 7, 5)  # the job's seed goes to a `seed` parameter
    info = describe_data(dm)  # no attributes of its own: one pass over the train loader
    assert info == {"task": "classification", "input_dim": 7, "output_dim": 4, "n_train": 60,
                    "source": "user_datamodule:BlobsDataModule"}
    _, dm = module_dm("data.kwargs={features: 7, outputs: 1}")
    assert describe_data(dm)["task"] == "regression" and describe_data(dm)["output_dim"] == 1
    _, dm = module_dm("data.kwargs={features: 7, outputs: 3, seed: 9}", seed=5)
    assert dm.seed == 9 and describe_data(dm)["output_dim"] == 3


def test_describe_data_prefers_the_modules_own_attributes(monkeypatch):
    _, dm = module_dm("data.kwargs={describe: true, classes: 6}")
    dm.train_dataloader = None  # not needed: the attributes say it all
    assert describe_data(dm) == {"task": "classification", "input_dim": 5, "output_dim": 6,
                                 "source": "user_datamodule:BlobsDataModule"}
    _, dm = module_dm()
    dm.num_classes = 9  # num_classes counts, the rest is inferred
    assert describe_data(dm)["output_dim"] == 9 and describe_data(dm)["input_dim"] == 5


def test_describe_data_on_built_ins_uses_info():
    dm = DigitsDataModule(load_config(None, ["data.name=digits"]).data)
    dm.setup()
    info = describe_data(dm)
    assert (dm.task, dm.input_dim, dm.output_dim) == ("classification", 64, 10) and "task" in vars(dm)
    assert info["classes"] == [str(i) for i in range(10)] and info["n_train"] + info["n_val"] + info["n_test"] == 1797
    sine = SineDataModule(load_config(None, ["data.n_train=10", "data.n_val=10", "data.n_test=10"]).data)
    sine.setup()
    assert describe_data(sine)["output_dim"] == 7 and sine.split("train")[1].shape == (10, 7)


def test_describe_data_batch_formats():
    from user_datamodule import DictBatches

    assert describe_data(DictBatches())["input_dim"] == 6
    with pytest.raises(DataError, match="yields no batches"):
        describe_data(DictBatches("empty"))
    with pytest.raises(DataError, match=r"batch x must be 2-D \(batch, features\), got shape \(10, 2, 3\)"):
        describe_data(DictBatches("image"))
    with pytest.raises(DataError, match=r"unsupported batch format \(dict with keys \['inputs', 'labels'\]\)"):
        describe_data(DictBatches("keys"))


def test_unpack_batch_gives_the_loss_shapes():
    x, y = unpack_batch((torch.ones(4, 2, dtype=torch.float64), torch.arange(4.0)), "regression")
    assert x.dtype == torch.float32 and y.shape == (4, 1) and y.dtype == torch.float32
    _, y = unpack_batch({"x": torch.ones(4, 2), "y": torch.arange(4)[:, None]}, "classification")
    assert y.shape == (4,) and y.dtype == torch.int64


def test_tensor_datamodule_refuses_misshapen_targets():
    class Flat(TensorDataModule):
        task, input_dim, output_dim = "regression", 2, 1

        def load(self):
            return {s: (torch.ones(3, 2), torch.ones(3)) for s in ("train", "val", "test")}

    with pytest.raises(DataError, match=r"Flat: train y must be torch.float32 of shape \(3, 1\) for regression"):
        Flat(load_config().data).setup()


@pytest.mark.parametrize("over,error,pattern", [
    (["data.module=user_datamodule.BlobsDataModule"], ConfigError, "must have the form package.module:ClassName"),
    (["data.module=no_such_pkg.mod:Cls"], DataError, r"cannot import module 'no_such_pkg.mod'.*PYTHONPATH"),
    (["data.module=user_datamodule:Blobs"], DataError, r"has no 'Blobs' \(its LightningDataModules: BlobsDataModule, DictBatches\)"),
    (["data.module=user_datamodule:NotADataModule"], DataError, "is not a pytorch_lightning.LightningDataModule subclass"),
    (["data.module=user_datamodule:BlobsDataModule", "data.kwargs={n: 0}"], DataError,
     r"failed to build with data.kwargs=\{'n': 0, 'seed': 0\}: ValueError: n must be >= 1"),
    (["data.module=user_datamodule:BlobsDataModule", "data.kwargs={size: 3}"], DataError,
     r"failed to build with data.kwargs=\{'size': 3.*unexpected keyword argument 'size'"),
])
def test_user_datamodule_refusals(over, error, pattern):
    with pytest.raises(error, match=pattern):
        cfg = load_config(None, over)
        build_datamodule(cfg.data)

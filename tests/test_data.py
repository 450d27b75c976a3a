import gzip
import math
import struct

import numpy as np
import pytest
import torch

from lightning_stacks.config import load_config
from lightning_stacks.data import (
    DataError,
    MNISTDataModule,
    SineDataModule,
    TensorBatchLoader,
    composite_sine,
    read_idx,
)


def test_composite_sine_components():
    x = torch.tensor([[1 / 6], [-1 / 6]])  # sin(3 pi x) = +1, -1
    y = composite_sine(x)
    torch.testing.assert_close(y[0], torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, math.sin(math.pi), math.e]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y[1, :5], torch.tensor([0.0, 1.0, 1.0, -1.0, -1.0]), atol=1e-5, rtol=1e-5)


def test_sine_splits_are_seeded_and_noisy():
    cfg = load_config(None, ["data.n_train=300", "data.n_val=100", "data.n_test=200"]).data
    a, b = SineDataModule(cfg, seed=1), SineDataModule(cfg, seed=1)
    xa, ya = a.split("train")
    assert xa.shape == (300, 1) and ya.shape == (300, 7) and a.split("test")[0].shape == (200, 1)
    torch.testing.assert_close(xa, b.split("train")[0])
    noise = ya - composite_sine(xa)
    assert 0.04 < noise.std().item() < 0.06
    assert not torch.equal(SineDataModule(cfg, seed=2).split("train")[0], xa)


def test_sine_input_range_is_configurable():
    cfg = load_config(None, ["data.x_min=0", "data.x_max=1", "data.n_train=500"]).data
    x, _ = SineDataModule(cfg).split("train")
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9


def test_loader_shards_disjointly_with_equal_lengths():
    x = torch.arange(103).float()[:, None]
    y = torch.arange(103)
    shards = [TensorBatchLoader(x, y, 10, shuffle=True, seed=3, epoch=1, rank=r, world_size=2) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 6
    got = [torch.cat([b[1] for b in s]) for s in shards]
    assert got[0].numel() == got[1].numel() == 51
    assert not set(got[0].tolist()) & set(got[1].tolist())
    # a different epoch reshuffles
    other = TensorBatchLoader(x, y, 10, shuffle=True, seed=3, epoch=2, rank=0, world_size=2)
    assert not torch.equal(torch.cat([b[1] for b in other]), got[0])


def write_idx(path, array, compress):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    # Closed explicitly: since Python 3.12 a GzipFile buffers writes, and one left to the garbage
    # collector may never flush them, leaving an empty archive.
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(payload)


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx(tmp_path, compress, suffix):
    """Gzip or not, whatever the file is called."""
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / ("a.idx" + suffix)
    write_idx(p, arr, compress)
    assert (p.read_bytes()[:2] == b"\x1f\x8b") == compress
    np.testing.assert_array_equal(read_idx(p), arr)


def test_read_idx_names_an_empty_archive(tmp_path):
    p = tmp_path / "a.idx.gz"
    with gzip.open(p, "wb"):
        pass
    with pytest.raises(DataError, match="empty once decompressed"):
        read_idx(p)


def test_read_idx_rejects_garbage(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(b"\x01\x02\x03\x04hello")
    with pytest.raises(DataError, match="bad magic number"):
        read_idx(p)


def test_mnist_missing_root_offline_fails_clearly(tmp_path, monkeypatch):
    cfg = load_config(None, [f"data.root={tmp_path / 'nowhere'}", "data.name=mnist", "data.download=false"]).data
    with pytest.raises(DataError, match=r"MNIST files .* not found under .*nowhere.*data.download=false.*LIGHTNING_STACKS_DATA"):
        MNISTDataModule(cfg).setup()


def test_mnist_download_failure_offline_fails_clearly(tmp_path, monkeypatch):
    import sys
    import urllib.request

    def refuse(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setitem(sys.modules, "torchvision", None)  # as on machines where it cannot import
    cfg = load_config(None, [f"data.root={tmp_path / 'empty'}", "data.name=mnist"]).data
    with pytest.raises(DataError, match=r"MNIST not found under .*empty and the download failed \(offline\?\).*network is unreachable"):
        MNISTDataModule(cfg).setup()


def test_mnist_reads_shared_copy(mnist_root):
    cfg = load_config(None, [f"data.root={mnist_root}", "data.name=mnist"]).data
    dm = MNISTDataModule(cfg)
    x, y = dm.split("train")
    assert x.shape == (60000, 784) and y.shape == (60000,) and dm.split("test")[0].shape == (10000, 784)
    assert 0.0 <= x.min() and x.max() <= 1.0 and set(y.unique().tolist()) == set(range(10))


def test_mnist_root_from_environment(mnist_root, monkeypatch):
    monkeypatch.setenv("LIGHTNING_STACKS_DATA", str(mnist_root))
    dm = MNISTDataModule(load_config(None, ["data.name=mnist", "data.val_size=1000"]).data)
    assert dm.split("val")[0].shape == (1000, 784) and dm.split("train")[0].shape == (59000, 784)

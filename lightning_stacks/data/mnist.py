"""Image data sets: MNIST from IDX files (found, gzip-detected or downloaded) and sklearn's 8x8 digits."""

from __future__ import annotations

import gzip
import os
import urllib.request
from pathlib import Path

import numpy as np
import torch

from .tensors import DataError, TensorDataModule

DATA_ENV = "LIGHTNING_STACKS_DATA"
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)



def default_data_root(root: str = "") -> Path:
    """``root`` if given, else ``$LIGHTNING_STACKS_DATA``, else ``./data``."""
    return Path(root or os.environ.get(DATA_ENV, "") or "data").expanduser()


def _find_idx(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "MNIST" / "raw", root / "mnist"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip or not) into a numpy array of its declared shape.

    Compression is recognised by the gzip magic bytes, not the name, so a ``.gz`` name on a
    plain file (or a gzip file without the suffix) reads the same.
    """
    try:
        with open(path, "rb") as f:
            compressed = f.read(2) == b"\x1f\x8b"
        with (gzip.open if compressed else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from None
    if not data:
        raise DataError(f"{path} is empty" + (" once decompressed (an unfinished gzip write?)" if compressed else ""))
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path}: header says shape {shape} but holds {body.size} bytes")
    return body.reshape(shape)


def _download_mnist(root: Path) -> None:
    """Online users: torchvision if it imports, else plain HTTP from the usual mirrors."""
    try:
        from torchvision.datasets import MNIST  # lazy: torchvision is optional

        MNIST(str(root), download=True)
        return
    except Exception:  # noqa: BLE001 - fall back to plain HTTP on any torchvision failure
        pass
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    errors = []
    for stem in MNIST_FILES.values():
        for mirror in MNIST_MIRRORS:
            try:
                with urllib.request.urlopen(mirror + stem + ".gz", timeout=20) as r:
                    payload = r.read()
                tmp = raw / (stem + ".gz.part")
                tmp.write_bytes(payload)
                tmp.replace(raw / (stem + ".gz"))
                break
            except OSError as err:
                errors.append(f"{mirror}{stem}.gz: {err}")
        else:
            raise DataError("MNIST download failed: " + "; ".join(errors))


class MNISTDataModule(TensorDataModule):
    """MNIST, pixels scaled to [0, 1] and flattened to 784; 10 classes."""

    task = "classification"
    input_dim = 784
    output_dim = 10
    classes = [str(i) for i in range(10)]
    image_shape = (28, 28)

    def load(self):
        root = default_data_root(self.cfg.root)
        paths = {k: _find_idx(root, stem) for k, stem in MNIST_FILES.items()}
        if any(p is None for p in paths.values()):
            if not self.cfg.download:
                missing = [MNIST_FILES[k] for k, p in paths.items() if p is None]
                raise DataError(
                    f"MNIST files {missing} not found under {root} (looked in it, MNIST/raw and mnist; "
                    f"gzip or not) and data.download=false; set data.root or ${DATA_ENV}"
                )
            try:
                _download_mnist(root)
            except DataError as err:
                raise DataError(
                    f"MNIST not found under {root} and the download failed (offline?): {err}. "
                    f"Point data.root or ${DATA_ENV} at a folder with the IDX files."
                ) from None
            paths = {k: _find_idx(root, stem) for k, stem in MNIST_FILES.items()}
        arrays = {k: read_idx(p) for k, p in paths.items()}
        x_train = torch.from_numpy(arrays["train_images"].reshape(-1, 784).astype(np.float32) / 255.0)
        y_train = torch.from_numpy(arrays["train_labels"].astype(np.int64))
        x_test = torch.from_numpy(arrays["test_images"].reshape(-1, 784).astype(np.float32) / 255.0)
        y_test = torch.from_numpy(arrays["test_labels"].astype(np.int64))
        if len(x_train) != len(y_train) or len(x_test) != len(y_test):
            raise DataError(f"MNIST under {root}: image and label counts differ")
        out = {"train": (x_train, y_train), "test": (x_test, y_test)}
        if self.cfg.val_size > 0:
            g = torch.Generator().manual_seed(self.seed)
            perm = torch.randperm(len(x_train), generator=g)
            val, tr = perm[: self.cfg.val_size], perm[self.cfg.val_size :]
            out["train"], out["val"] = (x_train[tr], y_train[tr]), (x_train[val], y_train[val])
        else:
            out["val"] = out["test"]
        return out


# --------------------------------------------------------------------------- digits
class DigitsDataModule(TensorDataModule):
    """scikit-learn's bundled 8x8 digits (1797 images, no download): 64 features in [0, 1]."""

    task = "classification"
    input_dim = 64
    output_dim = 10
    classes = [str(i) for i in range(10)]
    image_shape = (8, 8)

    def load(self):
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.data, dtype=torch.float32) / 16.0
        y = torch.tensor(d.target, dtype=torch.int64)
        g = torch.Generator().manual_seed(self.seed)
        perm = torch.randperm(len(x), generator=g)
        n_test = n_val = 300
        te, va, tr = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
        return {"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": (x[te], y[te])}


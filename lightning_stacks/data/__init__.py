"""The data package: built-in, file and user data sets as in-memory tensor DataModules.

Data: the synthetic composite sine (the embedded default), MNIST from IDX files,
scikit-learn's bundled 8x8 digits (a tiny real image set for fast tests), your own CSV or NPZ
file, or your own LightningDataModule.

All data sets live in memory as tensors; batches are sliced by index tensors (no per-sample
collate), which keeps the Lightning loop within a few percent of a plain PyTorch loop. On a GPU
the splits are also copied to it once when they fit (``data.device``), and batches are drawn
there: no host-to-device copy per step. The train
loader's batch size follows the :class:`~lightning_stacks.schedule.Schedule`, and the Trainer
reloads it every epoch. Under DDP the loader shards itself by rank, with the same number of
batches on every rank.

Every DataModule built here exposes, after ``setup()``, the attributes ``task``
(``classification`` or ``regression``), ``input_dim`` and ``output_dim`` (the number of classes
for classification) and an ``info()`` dict of JSON-able facts (classes, feature names,
standardization's statistics, split sizes, the file's hash) that a checkpoint can carry;
:func:`check_against` refuses data that differs from what a network was trained on. :func:`describe_data` gives the same
dict for any LightningDataModule. Batches are ``(x, y)`` with x (B, d_0) float32 and y (B,)
int64 class indices or (B, k) float32 regression targets.
"""

from .checks import DataMismatch, check_against
from .describe import data_summary, describe_data, transform_inputs, unpack_batch
from .files import (
    NPZ_KEYS,
    NPZ_SPLIT_KEYS,
    CSVDataModule,
    FileDataModule,
    NPZDataModule,
    split_indices,
)
from .mnist import (
    DATA_ENV,
    MNIST_FILES,
    MNIST_MIRRORS,
    DigitsDataModule,
    MNISTDataModule,
    default_data_root,
    read_idx,
)
from .registry import DATAMODULES, build_datamodule, load_datamodule_class
from .sine import SineDataModule, composite_sine
from .tensors import (
    TASKS,
    DataError,
    TensorBatchLoader,
    TensorDataModule,
    data_device,
    splits_nbytes,
)

__all__ = [
    "DATAMODULES", "DATA_ENV", "MNIST_FILES", "MNIST_MIRRORS", "NPZ_KEYS", "NPZ_SPLIT_KEYS", "TASKS",
    "CSVDataModule", "DataError", "DataMismatch", "DigitsDataModule", "FileDataModule", "MNISTDataModule", "NPZDataModule",
    "SineDataModule", "TensorBatchLoader", "TensorDataModule", "build_datamodule", "check_against", "composite_sine",
    "data_device", "data_summary", "default_data_root", "describe_data", "load_datamodule_class",
    "read_idx", "split_indices", "splits_nbytes", "transform_inputs", "unpack_batch",
]

"""The dataclasses of the core config sections: model, data, optim, schedule, trainer, logger."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelConfig:
    """Architecture of the Deep Stack Network (SPEC section 1).

    ``widths`` are the ReLU widths n_j (one per stack, 0 allowed); ``bottleneck`` are the
    hidden bottleneck widths d_1..d_{J-1} (the last stack's output width is the data's output
    dimension). ``variant``: ``stack`` (affine path A2 A1 of width min(d_in, d_out)),
    ``simplified`` (direct skip matrix S) or ``plain`` (no skip path).
    """

    variant: str = "stack"
    widths: list[int] = field(default_factory=lambda: [1024, 1024, 1024])
    bottleneck: list[int] = field(default_factory=lambda: [1, 1])


@dataclass
class DataConfig:
    """Data set and loading.

    ``name``: ``sine`` (the composite sine), ``mnist``, ``digits`` (scikit-learn's 8x8 digits),
    ``csv`` or ``npz`` (your file at ``path``), or ``module`` (your own LightningDataModule).

    ``root`` for MNIST only: a folder holding the IDX files (gzip or not), directly or under
    ``MNIST/raw``; empty means ``$LIGHTNING_STACKS_DATA`` or ``./data``. ``val_size``: points held
    out of the training set for validation (MNIST: 0 means validate on the test set, as the paper
    reports test accuracy). ``x_min``/``x_max``: the composite sine's input range (the paper
    does not state it).

    Files (``csv``/``npz``): ``path`` is the file. A CSV has a header row of column names, or no
    header when every cell of its first row is a number (columns are then named ``0``, ``1``, ...).
    ``target`` (CSV only): the label column, by name or 0-based index (empty = the last column);
    a list of columns gives a multi-output regression. ``task``: ``auto`` infers it from the
    labels (text or integer-valued numbers: classification; other numbers: regression), or force
    ``classification``/``regression``. ``val_fraction``/``test_fraction``: each in [0, 1), sum
    < 1; the split is seeded by the job's seed. A fraction of 0 means no such split: validation
    then uses the test split, testing the validation split, and with both 0, both use the
    training split. An npz file with ``x_train``/``y_train`` (and optionally ``x_val``/``y_val``,
    ``x_test``/``y_test``) is used as split (fractions unused, the same fallbacks for a missing
    split). ``standardize``: scale every input feature by the training split's mean and std
    (regression targets are left as they are); the scaling is the network's input layer, saved
    with it, so a checkpoint takes the file's raw rows. ``scaling``, for a fit that starts from a
    checkpoint (``init_from``, ``continue=``): ``keep`` the checkpoint's input scaling (the
    network was trained on it; the default) or ``refit`` it on this data's training split (for
    a feature whose raw values moved, e.g. a sensor recalibrated: the network then sees the moved
    feature as it saw the old one). Either way the data's columns, target and classes must be
    the checkpoint's.

    ``device`` (built-in and file data sets): ``auto`` keeps a copy of the splits on the
    training device when they take under half of its free memory (batches are then drawn there:
    no per-step host-to-device copy); ``cpu`` keeps them on the host.

    Your own LightningDataModule: ``module`` is ``package.module:ClassName``, built with
    ``kwargs`` (and ``seed=<the job's seed>`` when its constructor takes a ``seed`` the kwargs
    do not set). Setting ``module`` sets ``name`` to ``module``; a different explicit
    ``name`` than the default ``sine`` is refused.
    """

    name: str = "sine"
    root: str = ""
    download: bool = True
    n_train: int = 2000
    n_val: int = 2000
    n_test: int = 2000
    noise: float = 0.05
    x_min: float = -1.0
    x_max: float = 1.0
    val_size: int = 0
    eval_batch_size: int = 4096
    path: str = ""
    target: Any = ""
    task: str = "auto"
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    standardize: bool = True
    scaling: str = "keep"
    module: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"


@dataclass
class OptimConfig:
    """Adam with two param groups: non-linear (V, b, W, c) and affine (A1, A2 or S)."""

    lr: float = 2e-3
    affine_lr_mult: float = 10.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class ScheduleConfig:
    """The paper's schedule: an unregularized warm-up, then per epoch l2 rising geometrically,
    LR falling geometrically and batch size growing geometrically until the last epoch.

    ``l2_*`` is the coefficient per squared weight added to the mean loss for the non-linear
    weights (V, b, W); the affine weights get ``affine_l2_mult`` times it; the bottleneck biases c
    get none. Defaults: the composite-sine recipe measured here (val MSE ~0.03 in ~100 s on 2
    CPU cores, see docs/RESULTS.md); MNIST overrides them in ``configs/mnist.yaml``.
    """

    warmup_epochs: int = 100
    l2_start: float = 3e-6
    l2_end: float = 3e-5
    affine_l2_mult: float = 1.0
    lr_end_mult: float = 0.1
    batch_start: int = 16
    batch_end: int = 128


@dataclass
class TrainerConfig:
    """Passed to ``pl.Trainer``. ``devices``: "auto", a count such as "2", or a list "0,1".
    ``progress_bar``: ``epochs`` (one bar per fit over its epochs, with the live neuron count and
    metrics), ``tqdm`` or ``rich`` (Lightning's per-batch bars). ``log_every_n_steps`` is capped
    at the shortest epoch's number of batches, so short epochs still log.
    ``compile``: ``none``, or a ``torch.compile`` mode (``default``, ``reduce-overhead``) for the
    network, re-applied after a reduction replaces it; where compiling fails the fit runs eagerly
    and says why.
    ``cuda_graphs``: train with the whole step (forward, loss, backward, a fused capturable Adam
    step) captured once per batch size as one CUDA graph and replayed; the same result as the eager
    step, less launch overhead for small networks. Needs one CUDA device, ``precision`` 32-true,
    ``gradient_clip_val`` 0, ``compile`` none and no pruning; anything else is refused before training."""

    max_epochs: int = 300
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    log_every_n_steps: int = 50
    enable_progress_bar: bool = True
    progress_bar: str = "epochs"
    gradient_clip_val: float = 0.0
    deterministic: bool = False
    check_val_every_n_epoch: int = 1
    compile: str = "none"
    cuda_graphs: bool = False


@dataclass
class LoggerConfig:
    """``kind``: wandb (offline unless an account is configured, see ``wandb_mode``), csv, none.
    ``wandb_mode``: ``auto``, ``offline``, ``online`` or ``disabled`` (write ``disabled``, not
    ``off``: YAML reads ``off``/``no`` as false).
    ``quiet`` (``train.py --quiet``): no progress bar and no per-round / per-step lines; the
    final table and summary are still printed."""

    kind: str = "wandb"
    project: str = "lightning_stacks"
    name: str = ""
    wandb_mode: str = "auto"
    quiet: bool = False

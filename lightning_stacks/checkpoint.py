"""Checkpoint files of ours: validation on load, atomic writes.

A checkpoint is Lightning's format (``state_dict`` + ``hyper_parameters``) whose hyper-parameters
hold ``config`` (the job's config), ``architecture`` (all widths and skip kinds) and ``history``
(the reduction reports so far), so :meth:`StackModule.load_from_checkpoint` alone rebuilds it.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn

from .atomic import atomic_save
from .errors import LightningStacksError

REQUIRED_HPARAMS = ("config", "architecture")


class CheckpointError(LightningStacksError):
    """The file is missing, unreadable or not a lightning_stacks checkpoint."""


def _load_failure(err: Exception) -> str:
    """torch.load's reason in one line: the refused global of an unsafe pickle, else the first line."""
    text = str(err)
    m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if m:
        return f"refused: it would load the Python object {m.group(1)}; only tensors and plain data are loaded, so nothing ran"
    if "central directory" in text or "PytorchStreamReader" in text or isinstance(err, EOFError):
        return "the file is truncated or damaged; copy or write it again"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(err).__name__}: {first[:200]}"


def read_raw_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint's dict (on CPU), unpickled with ``weights_only=True``: tensors and
    plain containers only, so a file whose pickle would run code is refused without running it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint of tensors and plain data "
                              f"({_load_failure(err)})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    return ckpt


def read_checkpoint(path: str | Path) -> dict:
    """Load and validate a lightning_stacks checkpoint's dict (on CPU, see :func:`read_raw_checkpoint`)."""
    ckpt = read_raw_checkpoint(path)
    hp = ckpt.get("hyper_parameters")
    if not isinstance(hp, dict) or any(k not in hp for k in REQUIRED_HPARAMS):
        raise CheckpointError(
            f"{path} is not a lightning_stacks checkpoint: its hyper_parameters lack {list(REQUIRED_HPARAMS)}"
        )
    return ckpt


def check_finite_weights(state_dict: dict, path: str | Path) -> None:
    """Refuse (CheckpointError naming the parameter) weights holding NaN or infinite values."""
    for name, value in state_dict.items():
        if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: parameter '{name}' holds NaN or infinite values (the network had diverged "
                                  "when it was saved); use an earlier checkpoint of that run")


def read_resume_checkpoint(path: str | Path) -> dict:
    """A checkpoint to resume a fit from (``ckpt_path``), checked before Lightning reads it:
    readable with ``weights_only=True``, ours, with finite weights."""
    ckpt = read_checkpoint(path)
    check_finite_weights(ckpt["state_dict"], path)
    return ckpt


def save_module(module, path: str | Path, extra: dict | None = None) -> None:
    """Write ``module`` as a checkpoint that ``StackModule.load_from_checkpoint`` accepts;
    ``extra`` entries (e.g. the round number) go to the checkpoint's top level."""
    ckpt = {
        "state_dict": module.state_dict(),
        "hyper_parameters": {"config": module.hparams["config"], "architecture": module.net.architecture(),
                             "history": module.history, "data_info": module.data_info},
        "pytorch-lightning_version": pl.__version__,
        "epoch": 0,
        "global_step": 0,
        **(extra or {}),
    }
    atomic_save(ckpt, path)


class AtomicLastCheckpoint(pl.Callback):
    """Write ``dirpath/last.ckpt`` at the end of every training epoch, atomically.

    Lightning's ``ModelCheckpoint(save_top_k=0, save_last=True)`` writes ``last.ckpt`` only when
    training ends, and overwrites in place; this writes a temporary file (all ranks take part in
    ``trainer.save_checkpoint``; rank 0 writes) and renames it, so a kill mid-write never leaves
    the only copy corrupt and a killed job can resume from its last finished epoch.
    """

    FILENAME = "last.ckpt"

    def __init__(self, dirpath: str | Path):
        self.dirpath = Path(dirpath)

    @property
    def path(self) -> Path:
        return self.dirpath / self.FILENAME

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        check = getattr(pl_module, "check_finite", None)
        if callable(check):  # never replace the last good checkpoint by a diverged one
            check()
        tmp = self.dirpath / f".{self.FILENAME}.tmp{os.getpid()}"  # rank 0 writes it; unique per job
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
        trainer.strategy.barrier("last_ckpt_dir")
        trainer.save_checkpoint(tmp, weights_only=False)  # the whole training state; collective, ends with a barrier
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        trainer.strategy.barrier("last_ckpt_renamed")


def network_checksum(net: torch.nn.Module) -> str:
    """SHA-256 over every parameter's name, shape and bytes (identical models <=> equal sums)."""
    h = hashlib.sha256()
    for name, p in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


CHECKPOINT_KEY = "lightning_stacks_architecture"  # block path -> its architecture, in checkpoints of reduced modules


def restore_shapes(pl_module: nn.Module, checkpoint: dict) -> list[str]:
    """Give ``pl_module``'s reduced blocks the shapes a checkpoint recorded (before its weights are
    loaded): every block whose architecture differs is rebuilt (a Sequential keeps its class and
    layers where they match). Call it from your module's ``on_load_checkpoint`` to make
    ``MyModule.load_from_checkpoint(path)`` work on reduced checkpoints. Returns the paths rebuilt."""
    from .blocks import architecture, build, set_child

    rebuilt = []
    for path, arch in (checkpoint.get(CHECKPOINT_KEY) or {}).items():
        try:
            current = pl_module.get_submodule(path)
        except AttributeError:
            raise CheckpointError(f"the checkpoint holds a reduced block '{path}' that {type(pl_module).__name__} does not have") from None
        if architecture(current) == {"kind": "deep_stack_network", **arch}:  # older checkpoints: no kind
            continue
        p = next(current.parameters(), None)
        new = build(arch, like=current)
        if p is not None:
            new = new.to(device=p.device, dtype=p.dtype)
        set_child(pl_module, path, new)
        rebuilt.append(path)
    return rebuilt


def watch_checkpoint_loading(pl_module: pl.LightningModule) -> None:
    """Resuming a fit whose blocks a reduction shrank: the checkpoint's weights have the reduced
    shapes, so the blocks are rebuilt to them (:func:`restore_shapes`) before Lightning loads the
    weights (the module's ``on_load_checkpoint`` runs just before; callbacks' hooks run after)."""
    if getattr(pl_module, "_reduction_watch", False):
        return
    original = pl_module.on_load_checkpoint

    def on_load_checkpoint(checkpoint: dict) -> None:
        restore_shapes(pl_module, checkpoint)
        original(checkpoint)

    pl_module.on_load_checkpoint = on_load_checkpoint
    pl_module._reduction_watch = True


def load_reduced_checkpoint(module, path: str | Path) -> pl.LightningModule:
    """Load a checkpoint written after :class:`~lightning_stacks.callbacks.ReductionCallback`
    shrank blocks of a module, in a fresh process: ``module`` is an instance of your
    LightningModule (as built for training) or its class (then built from the checkpoint's
    hyper-parameters, as ``load_from_checkpoint`` would); its reduced blocks are rebuilt to the
    checkpoint's shapes, then every weight is loaded (strictly)."""
    ckpt = read_raw_checkpoint(path)
    if isinstance(module, type):
        try:
            module = module(**(ckpt.get("hyper_parameters") or {}))
        except TypeError as err:
            raise CheckpointError(f"{path}: cannot build {module.__name__} from the checkpoint's hyper-parameters ({err}); "
                                  "pass an instance instead: load_reduced_checkpoint(MyModule(...), path)") from None
    restore_shapes(module, ckpt)
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit {type(module).__name__} ({str(err).splitlines()[0]})") from None
    return module

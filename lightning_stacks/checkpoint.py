"""Checkpoint files of ours: validation on load, atomic writes.

A checkpoint is Lightning's format (``state_dict`` + ``hyper_parameters``) whose hyper-parameters
hold ``config`` (the job's config), ``architecture`` (all widths and skip kinds) and ``history``
(the reduction reports so far), so :meth:`StackModule.load_from_checkpoint` alone rebuilds it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl
import torch

REQUIRED_HPARAMS = ("config", "architecture")


class CheckpointError(ValueError):
    """The file is missing, unreadable or not a lightning_stacks checkpoint."""


def read_checkpoint(path: str | Path) -> dict:
    """Load and validate the raw checkpoint dict (on CPU)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    hp = ckpt.get("hyper_parameters")
    if not isinstance(hp, dict) or any(k not in hp for k in REQUIRED_HPARAMS):
        raise CheckpointError(
            f"{path} is not a lightning_stacks checkpoint: its hyper_parameters lack {list(REQUIRED_HPARAMS)}"
        )
    return ckpt


def load_module(path: str | Path, config: dict | None = None):
    """A :class:`StackModule` from ``path``; ``config`` (a plain dict) replaces the stored config
    (e.g. to point ``data.root`` elsewhere) while the architecture stays the checkpoint's."""
    from .module import StackModule

    ckpt = read_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    try:
        module = StackModule(config if config is not None else hp["config"], architecture=hp["architecture"], history=hp.get("history"))
        module.load_state_dict(ckpt["state_dict"], strict=True)
    except (RuntimeError, KeyError) as err:
        raise CheckpointError(f"{path}: weights do not match the stored architecture ({err})") from None
    except ValueError as err:  # e.g. the data set named in the config does not fit the network
        raise CheckpointError(f"{path}: {err}") from None
    return module


def atomic_save(obj, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: a kill mid-write never
    leaves a truncated file under ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_module(module, path: str | Path, extra: dict | None = None) -> None:
    """Write ``module`` as a checkpoint that ``StackModule.load_from_checkpoint`` accepts;
    ``extra`` entries (e.g. the round number) go to the checkpoint's top level."""
    ckpt = {
        "state_dict": module.state_dict(),
        "hyper_parameters": {"config": module.hparams["config"], "architecture": module.net.architecture(), "history": module.history},
        "pytorch-lightning_version": pl.__version__,
        "epoch": 0,
        "global_step": 0,
        **(extra or {}),
    }
    atomic_save(ckpt, path)

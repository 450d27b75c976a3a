"""Checkpoint files of ours: validation on load, atomic writes.

A checkpoint is Lightning's format (``state_dict`` + ``hyper_parameters``) whose hyper-parameters
hold ``config`` (the job's config), ``architecture`` (all widths and skip kinds) and ``history``
(the reduction reports so far), so :meth:`StackModule.load_from_checkpoint` alone rebuilds it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytorch_lightning as pl
import torch

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


def load_module(path: str | Path, config: dict | None = None):
    """A :class:`StackModule` from ``path``; ``config`` (a plain dict) replaces the stored config
    (e.g. to point ``data.root`` elsewhere) while the architecture stays the checkpoint's."""
    from .module import StackModule, builtin_data_info

    ckpt = read_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    if not isinstance(ckpt["state_dict"], dict):
        raise CheckpointError(f"{path} is not a lightning_stacks checkpoint: its state_dict is not a mapping")
    check_finite_weights(ckpt["state_dict"], path)
    try:
        info = hp.get("data_info")
        if config is not None and config.get("data", {}).get("name") != hp["config"].get("data", {}).get("name"):
            info = builtin_data_info(config["data"]["name"]) or info  # another built-in data set: check its widths
        module = StackModule(config if config is not None else hp["config"], architecture=hp["architecture"],
                             history=hp.get("history"), data_info=info)
        module.load_state_dict(ckpt["state_dict"], strict=True)
    except (RuntimeError, KeyError, TypeError, AttributeError) as err:  # a damaged or hand-made checkpoint
        raise CheckpointError(f"{path}: weights do not match the stored architecture ({err})") from None
    except ValueError as err:  # e.g. the data set named in the config does not fit the network, or memory
        raise CheckpointError(f"{path}: {err}") from None
    return module


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file through a per-process temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


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
        "hyper_parameters": {"config": module.hparams["config"], "architecture": module.net.architecture(),
                             "history": module.history, "data_info": module.data_info},
        "pytorch-lightning_version": pl.__version__,
        "epoch": 0,
        "global_step": 0,
        **(extra or {}),
    }
    atomic_save(ckpt, path)

"""Memory a network needs versus memory available: refuse before allocating what cannot fit."""

from __future__ import annotations

import torch

from .config import ConfigError

BYTES_PER_ELEMENT = {"64": 8, "64-true": 8, "16-true": 2, "bf16-true": 2}  # everything else keeps float32 weights


def available_bytes(device: str = "cpu") -> int | None:
    """Free memory on ``device`` (``cpu``: MemAvailable from /proc/meminfo; ``cuda``: the free
    memory of the current GPU); None when unknown."""
    if device == "cuda":
        if not torch.cuda.is_available():
            return None
        try:
            return int(torch.cuda.mem_get_info()[0])
        except RuntimeError:
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def check_bytes(need: int, what: str, fix: str) -> None:
    """Refuse (ConfigError with the byte count) ``need`` bytes of CPU memory when fewer are available."""
    free = available_bytes("cpu")
    if free is not None and need > free:
        raise ConfigError(f"{what} needs about {need} bytes ({_gb(need)}), more than the {free} bytes ({_gb(free)}) "
                          f"of CPU memory available; {fix}")


def check_fits(n_params: int, precision: str, copies: int, what: str, accelerator: str = "cpu") -> None:
    """Refuse (ConfigError with the byte count) a network of ``n_params`` parameters whose
    ``copies`` copies at ``precision`` exceed the memory available on the CPU (where it is built)
    or, for a CUDA accelerator, on the GPU. Unknown available memory: no check.

    ``copies``: 4 for training (weights, gradients, Adam's two moments), 2 for loading a checkpoint.
    """
    need = int(n_params) * BYTES_PER_ELEMENT.get(str(precision), 4) * copies
    devices = ["cpu"] + (["cuda"] if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else [])
    for device in devices:
        free = available_bytes(device)
        if free is not None and need > free:
            raise ConfigError(f"{what} has {n_params} parameters and needs about {need} bytes ({_gb(need)}: "
                              f"{copies} copies at trainer.precision={precision}), more than the {free} bytes "
                              f"({_gb(free)}) of {device.upper()} memory available; use smaller model.widths")

"""Shared fixtures: the real config shrunk to tiny sizes, and the shared MNIST copy."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"


def run_cli(script: str, *args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Run ``python <script> args`` as a user would; returns the CompletedProcess."""
    import subprocess

    full_env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def tiny_overrides(tmp_path):
    """Overrides that shrink any config to a CPU job of seconds, writing under tmp_path."""
    return [f"out_dir={tmp_path / 'run'}", "logger.kind=none", "trainer.enable_progress_bar=false",
            "trainer.accelerator=cpu", "trainer.devices=1"]


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"shared MNIST copy not found at {SHARED_MNIST}")
    return SHARED_MNIST


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory):
    """A small Deep Stack Network trained briefly on sklearn digits (module, datamodule)."""
    import pytorch_lightning as pl

    from lightning_stacks.config import load_config, to_container
    from lightning_stacks.data import build_datamodule
    from lightning_stacks.module import StackModule
    from lightning_stacks.training import build_trainer

    out = tmp_path_factory.mktemp("digits")
    cfg = load_config(None, [
        "data.name=digits", "model.widths=[64,48,32]", "model.bottleneck=[8,8]", f"out_dir={out}",
        "trainer.max_epochs=25", "schedule.warmup_epochs=5", "schedule.l2_start=1e-4", "schedule.l2_end=1e-3",
        "schedule.batch_start=64", "schedule.batch_end=256", "optim.lr=3e-3", "logger.kind=none",
        "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", "trainer.devices=1",
    ])
    pl.seed_everything(0)
    module = StackModule(to_container(cfg))
    dm = build_datamodule(cfg.data, schedule=module.schedule, seed=0)
    build_trainer(cfg, logger=False).fit(module, datamodule=dm)
    module.eval()
    return module, dm, cfg


@pytest.fixture
def device():
    """CUDA when this machine has it, else the CPU: the tests that take it run the same checks on
    the GPU path of a GPU machine and unchanged on CPU-only CI."""
    import torch

    # with its index: tensors report cuda:0, and torch.device("cuda") != torch.device("cuda:0")
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")

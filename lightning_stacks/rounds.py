"""Retrain-reduce rounds (the paper's table 2: train long -> reduce -> fine-tune -> reduce).

Each round is one ``trainer.fit`` with the round's schedule, ended by :class:`ReductionCallback`.
After round i, ``out_dir/rounds/round_i.ckpt`` is written atomically (architecture, weights,
history, round number, logger step offset). Restarting the same command resumes: finished rounds
are skipped, an interrupted round continues from its ``last.ckpt``; adding rounds to a finished
job's config continues it from its last round checkpoint (a scheduled fine-tune-and-reduce).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig

from .callbacks import ReductionCallback, network_checksum
from .checkpoint import load_module, read_checkpoint, save_module
from .config import ConfigError, round_config, to_container
from .data import build_datamodule
from .module import StackModule
from .reduction.job import settings_from_config
from .reduction.pipeline import ReductionError
from .training import (
    build_logger,
    build_trainer,
    final_metrics,
    initial_module,
    method_callbacks,
    with_step_offset,
)

ROUND_RE = re.compile(r"round_(\d+)\.ckpt$")


def finished_rounds(rounds_dir: Path) -> int:
    """Index of the last finished round in ``rounds_dir`` (-1 if none)."""
    found = [int(m.group(1)) for p in rounds_dir.glob("round_*.ckpt") if (m := ROUND_RE.search(p.name))]
    return max(found, default=-1)


def run_rounds(cfg: DictConfig) -> tuple[StackModule, dict[str, float], pl.Trainer]:
    """Run (or resume) every round of ``cfg.rounds``; returns the final module, rank-0 metrics
    and the last Trainer. The final model is also saved as ``out_dir/final.ckpt``."""
    if not cfg.rounds:
        raise ConfigError("run_rounds needs a non-empty 'rounds' list")
    if cfg.ckpt_path:
        raise ConfigError("a job with rounds resumes by itself (rerun the same command); ckpt_path is for single fits")
    pl.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.out_dir)
    rounds_dir = out / "rounds"
    done = finished_rounds(rounds_dir)
    if done >= len(cfg.rounds):
        raise ConfigError(f"{rounds_dir} already holds round {done}, but the config has only {len(cfg.rounds)} rounds")
    step_offset = 0
    if done >= 0:
        path = rounds_dir / f"round_{done}.ckpt"
        module = load_module(path, to_container(cfg))
        step_offset = int(read_checkpoint(path).get("step_offset", 0))
        print(f"[rounds] resuming after round {done} from {path}: widths {module.net.widths}", flush=True)
    else:
        module = initial_module(cfg)
    dm = build_datamodule(cfg.data, schedule=module.schedule, seed=cfg.seed)
    logger = with_step_offset(build_logger(cfg))
    trainer = None
    if done == len(cfg.rounds) - 1:
        print(f"[rounds] all {len(cfg.rounds)} rounds had already finished: nothing to train", flush=True)
    for i in range(done + 1, len(cfg.rounds)):
        spec = cfg.rounds[i]
        rcfg = round_config(cfg, i)
        module.set_round_config(rcfg)
        dm.schedule = module.schedule
        if logger:
            logger.step_offset = step_offset
        if spec.reduce:  # fail before training, not after it (e.g. K > the current width)
            try:
                settings_from_config(rcfg.reduce).validate(module.net.widths)
            except ReductionError as err:
                raise ReductionError(f"rounds[{i}] (widths now {module.net.widths}): {err}") from None
        callback = ReductionCallback(rcfg, i, dm, enabled=spec.reduce)
        round_dir = rounds_dir / f"round_{i}"
        extra = {} if spec.epochs > 0 else {"limit_train_batches": 0, "limit_val_batches": 0, "num_sanity_val_steps": 0}
        trainer = build_trainer(rcfg, callbacks=[*method_callbacks(rcfg), callback], logger=logger, ckpt_dir=round_dir, **extra)
        last = round_dir / "last.ckpt"
        resume = str(last) if last.is_file() and spec.epochs > 0 else None
        if trainer.is_global_zero:
            print(f"[rounds] round {i}: {spec.epochs} epochs on widths {module.net.widths}"
                  f"{' (resuming ' + str(last) + ')' if resume else ''}", flush=True)
        trainer.fit(module, datamodule=dm, ckpt_path=resume)
        callback.run(trainer, module)  # no-op if on_train_end already reduced
        step_offset += trainer.global_step
        _write_checksum(rounds_dir, i, trainer, module)
        if trainer.is_global_zero:
            save_module(module, rounds_dir / f"round_{i}.ckpt", extra={"round": i, "step_offset": step_offset})
        trainer.strategy.barrier("round_saved")
    final = out / "final.ckpt"
    is_zero = trainer.is_global_zero if trainer is not None else True
    if is_zero:
        save_module(module, final, extra={"round": len(cfg.rounds) - 1, "step_offset": step_offset})
    metrics = final_metrics(module, dm) if is_zero else {}
    if logger and is_zero:
        logger.log_metrics({f"final/{k}": v for k, v in metrics.items()}, step=trainer.global_step if trainer else 0)
        logger.finalize("success")
    return module, metrics, trainer


def _write_checksum(rounds_dir: Path, i: int, trainer: pl.Trainer, module: StackModule) -> None:
    """Every rank writes the checksum of its model after round i (DDP consistency evidence)."""
    rounds_dir.mkdir(parents=True, exist_ok=True)
    path = rounds_dir / f"round_{i}.rank{trainer.global_rank}.sha256"
    path.write_text(f"{network_checksum(module.net)} {' '.join(map(str, module.net.widths))}\n")


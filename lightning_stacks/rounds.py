"""Retrain-reduce rounds (the paper's table 2: train long -> reduce -> fine-tune -> reduce).

Each round is one ``trainer.fit`` with the round's schedule, ended by :class:`ReductionCallback`.
After round i, ``out_dir/rounds/round_i.ckpt`` is written atomically (architecture, weights,
history, round number, logger step offset). Restarting the same command resumes: finished rounds
are skipped, an interrupted round continues from its ``last.ckpt``; adding rounds to a finished
job's config continues it from its last round checkpoint (a scheduled fine-tune-and-reduce).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig

from .callbacks import ReductionCallback
from .checkpoint import network_checksum, read_checkpoint, save_module
from .config import ConfigError, round_config, round_epochs, to_container
from .data import build_datamodule
from .evaluation import evaluate_source, metric_drop
from .loggers import build_logger, log_summary, with_step_offset
from .module import StackModule, load_module
from .reduction.job import (
    check_data,
    full_network_metric,
    module_sources,
    settings_from_config,
    write_job_report,
)
from .reduction.settings import ReductionError
from .rundir import check_out_dir, is_launch_rank_zero
from .training import (
    TEACHER_PREVIOUS,
    build_trainer,
    final_metrics,
    fit,
    follow_schedule,
    initial_module,
    load_teacher,
    loader_options,
    method_callbacks,
)

ROUND_RE = re.compile(r"round_(\d+)\.ckpt$")
REPORT_NAME = "reduction_report.json"


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
    if is_launch_rank_zero():
        check_out_dir(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.out_dir)
    rounds_dir = out / "rounds"
    full_network = _check_rounds(cfg, rounds_dir)
    done = finished_rounds(rounds_dir)
    if done >= len(cfg.rounds):
        raise ConfigError(f"{rounds_dir} already holds round {done}, but the config has only {len(cfg.rounds)} rounds")
    step_offset = 0
    dm = build_datamodule(cfg.data, seed=cfg.seed)
    if done >= 0:
        path = rounds_dir / f"round_{done}.ckpt"
        module = load_module(path, to_container(cfg))
        check_data(module, dm, cfg)  # a rerun on another file: its columns, target and classes must fit
        step_offset = int(read_checkpoint(path).get("step_offset", 0))
        print(f"[rounds] resuming after round {done} from {path}: widths {module.net.widths}", flush=True)
    else:
        module = initial_module(cfg, dm)
    for i in range(done + 1, len(cfg.rounds)):  # before any training: a round that moves images has images
        rcfg = round_config(cfg, i)
        if rcfg.augment.shift > 0:
            try:
                module.image_layout(rcfg)
            except ConfigError as err:
                raise ConfigError(f"rounds[{i}]: {err}") from None
    logger = with_step_offset(build_logger(cfg))
    trainer = None
    teacher_path = None
    if done == len(cfg.rounds) - 1:
        print(f"[rounds] all {len(cfg.rounds)} rounds had already finished: nothing to train", flush=True)
    for i in range(done + 1, len(cfg.rounds)):
        spec = cfg.rounds[i]
        rcfg = round_config(cfg, i)
        module.set_round_config(rcfg)
        wanted = teacher_of_round(rcfg, i, rounds_dir, full_network) if rcfg.distill.weight > 0 else None
        if wanted is not None and wanted != teacher_path:  # loaded once, kept across rounds
            module.set_teacher(load_teacher(rcfg, wanted))
            teacher_path = wanted
        follow_schedule(dm, module)
        if logger:
            logger.step_offset = step_offset
        if spec.reduce:  # fail before training, not after it (e.g. K > the current width)
            try:
                settings_from_config(rcfg.reduce).validate(module.net.widths)
            except ReductionError as err:
                raise ReductionError(f"rounds[{i}] (widths now {module.net.widths}): {err}") from None
        callback = ReductionCallback.from_config(rcfg.reduce, round_index=i, report_path=out / REPORT_NAME,
                                                 verbose=not cfg.logger.quiet)
        callback.enabled = bool(spec.reduce)
        round_dir = rounds_dir / f"round_{i}"
        epochs = round_epochs(cfg, i)
        extra = {} if epochs > 0 else {"limit_train_batches": 0, "limit_val_batches": 0, "num_sanity_val_steps": 0}
        trainer = build_trainer(rcfg, callbacks=[*method_callbacks(rcfg), callback], logger=logger, ckpt_dir=round_dir,
                                desc=f"round {i}/{len(cfg.rounds) - 1}", **loader_options(dm, rcfg), **extra)
        last = round_dir / "last.ckpt"
        resume = str(last) if last.is_file() and epochs > 0 else None
        if trainer.is_global_zero and not cfg.logger.quiet:
            print(f"[rounds] round {i}: {epochs} epochs on widths {module.net.widths}"
                  f"{' (resuming ' + str(last) + ')' if resume else ''}"
                  f"{f', distilling (weight {rcfg.distill.weight})' if rcfg.distill.weight > 0 else ''}", flush=True)
        fit(trainer, module, dm, resume)
        callback.run(trainer, module)  # no-op if on_train_end already reduced
        step_offset += trainer.global_step + callback.logged_steps
        _write_checksum(rounds_dir, i, trainer, module)
        if trainer.is_global_zero:
            save_module(module, rounds_dir / f"round_{i}.ckpt", extra={"round": i, "step_offset": step_offset})
        trainer.strategy.barrier("round_saved")
        if spec.within >= 0:
            kept = _enforce_within(cfg, module, i, spec.within, dm, trainer, step_offset)
            if kept is not module:
                module, teacher_path = kept, None  # a loaded module: its teacher is set again when needed
                _write_checksum(rounds_dir, i, trainer, module)
    final = out / "final.ckpt"
    is_zero = trainer.is_global_zero if trainer is not None else True
    if is_zero:
        save_module(module, final, extra={"round": len(cfg.rounds) - 1, "step_offset": step_offset})
    metrics = final_metrics(module, dm) if is_zero else {}
    if is_zero and module.history:
        write_job_report(out / REPORT_NAME, module)
    if logger and is_zero:
        log_summary(logger, module, metrics, step=(trainer.global_step + 1) if trainer else 0)
        logger.finalize("success")
    return module, metrics, trainer


def _enforce_within(cfg: DictConfig, module: StackModule, i: int, within: float, dm, trainer: pl.Trainer,
                    step_offset: int) -> StackModule:
    """``rounds[i].within``: ``module`` if it is within ``within`` of the full network's metric
    on ``reduce.reference``, else the latest earlier round's network that is (rank 0 decides and
    rewrites ``round_i.ckpt`` to it, keeping the rejected one as ``round_i.rejected.ckpt``; every
    rank then loads it). If no earlier round qualifies, ``module`` is kept, with a warning."""
    if not module.history:  # never reduced: it is the full network
        return module
    ref = cfg.reduce.reference
    baseline = full_network_metric(module.history, ref, f"rounds[{i}].within")
    rounds_dir = Path(cfg.out_dir) / "rounds"

    def drop(m: StackModule) -> float:
        return metric_drop(m.task, baseline, evaluate_source(m.net, module_sources(m, cfg, dm)[ref], m.task))

    decision = None
    if trainer.is_global_zero:
        d = drop(module)
        if d <= within + 1e-12:
            print(f"[rounds] round {i} ends within {within:g} of the full network ({ref} drop {d:.4g})", flush=True)
            decision = ("keep",)
        else:
            for j in range(i - 1, -1, -1):
                earlier = load_module(rounds_dir / f"round_{j}.ckpt", to_container(cfg))
                dj = drop(earlier)
                if dj <= within + 1e-12:
                    print(f"[rounds] round {i} ends {d:.4g} below the full network ({ref}), more than within={within:g}: "
                          f"going on from round {j}'s network (drop {dj:.4g}); rejected network kept as "
                          f"round_{i}.rejected.ckpt", flush=True)
                    path = rounds_dir / f"round_{i}.ckpt"
                    os.replace(path, rounds_dir / f"round_{i}.rejected.ckpt")
                    save_module(earlier, path, extra={"round": i, "step_offset": step_offset, "reverted_to": j})
                    decision = ("revert", j)
                    break
            else:
                print(f"[rounds] WARNING: round {i} ends {d:.4g} below the full network ({ref}), more than within={within:g}, "
                      "and no earlier round is within it: keeping this network", flush=True)
                decision = ("keep",)
    decision = trainer.strategy.broadcast(decision, src=0)
    trainer.strategy.barrier("within_checked")
    if decision[0] == "keep":
        return module
    return load_module(rounds_dir / f"round_{i}.ckpt", to_container(cfg))


def _check_rounds(cfg: DictConfig, rounds_dir: Path) -> Path | None:
    """Before any training: every round's config resolves (``round_config`` validates its
    overrides, e.g. ``within``), and a round that distills has a teacher. Returns the default
    teacher, the full network (round 0's ``last.ckpt``: saved after its last epoch, before the
    reduction; ``init_from`` when round 0 does not train)."""
    default = rounds_dir / "round_0" / "last.ckpt" if round_epochs(cfg, 0) > 0 else (Path(cfg.init_from) if cfg.init_from else None)
    for i in range(len(cfg.rounds)):
        d = round_config(cfg, i).distill
        if d.weight <= 0:
            continue
        if d.teacher == TEACHER_PREVIOUS:
            if i == 0:
                raise ConfigError("rounds[0]: distill.teacher=previous distills from the previous round's network, "
                                  "but rounds[0] is the first round")
            if round_epochs(cfg, i - 1) <= 0:
                raise ConfigError(f"rounds[{i}]: distill.teacher=previous distills from the network rounds[{i - 1}] trains, "
                                  f"but rounds[{i - 1}] trains 0 epochs")
        elif d.teacher:
            if not Path(d.teacher).is_file():
                raise ConfigError(f"rounds[{i}]: distill teacher checkpoint '{d.teacher}' does not exist")
        elif i == 0 and round_epochs(cfg, 0) > 0:
            raise ConfigError("rounds[0] trains the full network, so it cannot distill from it: turn distill on in a later "
                              "round or give distill.teacher=<checkpoint>")
        elif default is None:
            raise ConfigError(f"rounds[{i}] distills from the full network, but round 0 does not train it and there is no "
                              "init_from: give distill.teacher=<checkpoint>")
    return default


def teacher_of_round(rcfg: DictConfig, i: int, rounds_dir: Path, full_network: Path | None) -> str:
    """The checkpoint round ``i`` (config ``rcfg = round_config(cfg, i)``) distills from:
    ``distill.teacher``; ``previous`` = the network round ``i - 1`` trained (its ``last.ckpt``:
    saved after its last epoch, before its reduction); empty = the full network."""
    teacher = rcfg.distill.teacher
    if teacher == TEACHER_PREVIOUS:
        return str(rounds_dir / f"round_{i - 1}" / "last.ckpt")
    return str(teacher or full_network)


def _write_checksum(rounds_dir: Path, i: int, trainer: pl.Trainer, module: StackModule) -> None:
    """Every rank writes the checksum of its model after round i (DDP consistency evidence)."""
    rounds_dir.mkdir(parents=True, exist_ok=True)
    path = rounds_dir / f"round_{i}.rank{trainer.global_rank}.sha256"
    path.write_text(f"{network_checksum(module.net)} {' '.join(map(str, module.net.widths))}\n")


"""Train a Deep Stack Network.

    python train.py                                   # composite sine, the embedded default
    python train.py configs/sine.yaml                 # the paper's sine setup, spelled out
    python train.py configs/mnist.yaml data.root=../shared/data/mnist
    python train.py configs/debug.yaml logger.kind=csv trainer.max_epochs=2
    python train.py configs/mnist.yaml trainer.accelerator=cpu trainer.devices=2 trainer.strategy=ddp
    python train.py configs/sine_table1.yaml          # train, then reduce (the paper's table 1)
    python train.py continue=runs/w1 data.path=week2.csv out_dir=runs/w2   # fine-tune + reduce on new data

Arguments: an optional YAML file, then ``key=value`` overrides of any config key
(see ``docs/CONFIG.md``; ``key+=[...]`` appends to a list, e.g. ``'rounds+=[{epochs: 10}]'``);
``continue=<job folder or checkpoint>`` (after the YAML file, if any) starts from that job's final
network and config (its last round; see ``docs/RETRAIN.md``); ``--quiet``: no progress bar or per-step lines. The job ends with the
table of every reduction and a summary line; the last line printed is ``val_mse=<x>`` or
``val_acc=<x>`` (``train_...`` when the data has no validation split).
"""

from __future__ import annotations

import sys
import time

from lightning_stacks.cli import split_args
from lightning_stacks.config import ConfigError, load_config
from lightning_stacks.errors import LightningStacksError, one_line


def main(argv: list[str]) -> int:
    started = time.perf_counter()
    quiet = "--quiet" in argv
    argv = [a for a in argv if a != "--quiet"] + (["logger.quiet=true"] if quiet else [])
    try:
        path, overrides = split_args(argv)
        previous = [o.partition("=")[2] for o in overrides if o.startswith("continue=")]
        if len(previous) > 1:
            raise ConfigError(f"continue= is given {len(previous)} times; give the one job to continue")
        if previous:
            quiet_lightning()  # reading the previous job's checkpoint imports Lightning
            from lightning_stacks.lineage import continue_config

            cfg = continue_config(previous[-1], path, [o for o in overrides if not o.startswith("continue=")])
        else:
            cfg = load_config(path, overrides)
        quiet_lightning()  # after the argument checks: it imports Lightning
        from lightning_stacks.rundir import check_out_dir, is_launch_rank_zero, out_dir_lock

        if is_launch_rank_zero():
            check_out_dir(cfg)
        with out_dir_lock(cfg.out_dir):  # held by rank 0 for the whole job: a second job here is refused
            run(cfg, started)
    except LightningStacksError as err:  # a bad input: one line naming it and the fix; anything else is a bug
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    return 0


def run(cfg, started: float) -> None:
    """Train (or run the rounds); with ``reduce.after_training``, reduce; then on rank 0 print
    every reduction's table, the summary line and the metrics (``started``: the job's start)."""
    if cfg.reduce.after_training and not cfg.rounds:
        from lightning_stacks.reduction.job import after_training_output

        after_training_output(cfg)  # refuse a reduced output that would replace a file, before training
    if cfg.rounds:
        from lightning_stacks.rounds import run_rounds  # heavy imports after arg checks

        module, metrics, trainer = run_rounds(cfg)
    else:
        from lightning_stacks.training import run_training

        module, metrics, trainer = run_training(cfg)
    if trainer is None or trainer.is_global_zero:  # None: every round had already finished
        if cfg.reduce.after_training and not cfg.rounds:
            from lightning_stacks.reduction.job import reduce_after_training
            from lightning_stacks.training import metric_keys

            module, out = reduce_after_training(module, cfg)
            # the reduction evaluated its result on every split: no second pass over the data
            metrics = metric_keys(module.history[-1]["steps"][-1]["metrics"], module.task)
            print(f"reduced checkpoint: {out}")
        from lightning_stacks.summary import job_summary

        print("\n".join(job_summary(module, metrics, cfg.out_dir, time.perf_counter() - started)))
        val_key = next((k for k in metrics if k.startswith("val_")), list(metrics)[-1])
        print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != val_key))
        print(f"{val_key}={metrics[val_key]:.4f}")


def quiet_lightning() -> None:
    """Lightning's start-up chatter (accelerator availability, tips, seed) is info-level logging:
    keep its warnings and errors only; this CLI prints what the job did itself."""
    import logging

    import pytorch_lightning  # noqa: F401  (its import sets its loggers to INFO: set them after it)

    for name in ("pytorch_lightning", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""What a reduction inside a fit leaves behind: its rows on the run's logger (one per step, with
the paper's table and, for 1-D bottlenecks, the figure) and its report files."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from torch import nn

from . import names
from .loggers import with_step_offset
from .model import DeepStackNetwork
from .reduction.report import write_reduction_report


def step_metrics(rec: dict, round_index: int, step_index: int, widths: dict[str, list[int]] | None = None,
                 block: str = "net") -> dict[str, float]:
    """Logger payload for one reduction step (a ``StepRecord`` as a dict) of ``block``;
    ``widths``: every reduced block's widths at that moment (for ``neurons/total``)."""
    widths = {**(widths or {}), block: rec["widths"]}
    out = {names.reduce_neurons(j + 1): float(n) for j, n in enumerate(rec["widths"])} if block == "net" else {}
    out.update(names.block_neuron_metrics(widths))
    out.update({
        names.REDUCE_NEURONS_TOTAL: out[names.NEURONS_TOTAL],
        names.REDUCE_PARAMS: float(rec["params"]),
        names.REDUCE_MAX_CHANGE: float(rec["max_output_change"]),
        names.REDUCE_ROUND: float(round_index),
        names.REDUCE_STEP: float(step_index),
    })
    for split, value in rec["metrics"].items():
        out[f"reduce/{split}_metric"] = float(value)
    return out


def report_table_rows(report: dict) -> tuple[list[str], list[list]]:
    """The paper-style table (one row per step) as columns and rows."""
    J = len(report["steps"][0]["widths"])
    columns = ["step"] + [f"n{j + 1}" for j in range(J)] + ["params", "train", "test", "max_output_change", "seconds"]
    rows = [[s["step"], *s["widths"], s["params"], s["metrics"].get("train"), s["metrics"].get("test"),
             s["max_output_change"], s["seconds"]] for s in report["steps"]]
    return columns, rows


def log_reduction(trainer: pl.Trainer, reports: list[dict], blocks: dict[str, nn.Module]) -> int:
    """One logger row per reduction step of every reduced block (``reports``, in the order they
    ran), each at its own step after the current one; the logger's later steps are shifted past
    them, so the step axis only grows (the logger's class gets a step offset, see
    :func:`~lightning_stacks.loggers.with_step_offset`). ``blocks``: every target block as it is
    now (their widths make ``neurons/total``; a 1-D Deep Stack Network also gets its figure).
    Returns the logger steps added (0 without a logger)."""
    logger = with_step_offset(trainer.logger)
    if not logger:
        return 0
    widths = {p: r["steps"][0]["widths"] for p, r in ((r.get("target", "net"), r) for r in reports)}
    for p, b in blocks.items():
        widths.setdefault(p, _widths(b))
    k = 0
    start = trainer.global_step + 1
    for report in reports:
        block = report.get("target", "net")
        for rec in report["steps"]:
            logger.log_metrics(step_metrics(rec, report["round"], k, widths, block), step=start + k)
            k += 1
        widths[block] = report["steps"][-1]["widths"]
        log_table = getattr(logger, "log_table", None)  # WandbLogger: the paper's table
        if log_table is not None:
            columns, rows = report_table_rows(report)
            suffix = "" if block == "net" else f"_{block}"
            log_table(key=f"reduce/table_round_{report['round']}{suffix}", columns=columns, data=rows)
        if isinstance(blocks.get(block), DeepStackNetwork):
            log_figure(trainer, blocks[block], report["round"])
    shift = k + 1
    logger.step_offset += shift
    logger.save()
    return shift


def _widths(block: nn.Module) -> list[int]:
    if isinstance(block, DeepStackNetwork):
        return block.widths
    from .blocks import block_for

    return block_for(block, "").network().widths


def log_figure(trainer: pl.Trainer, net, index: int) -> None:
    """WandB: the figs. 6-7 style plot of the reduced network (1-D bottlenecks only)."""
    log_image = getattr(trainer.logger, "log_image", None)
    if log_image is None or any(s.d_in != 1 for s in net.stacks):
        return
    from .batches import reservoir_sample
    from .loaders import split_sources
    from .plots import plot_stacks

    x, _ = reservoir_sample(split_sources(trainer, ("train",))["train"], 4096, 0)
    path = Path(trainer.default_root_dir) / "figures" / f"round_{index}.png"
    plot_stacks(net, x, path, title=f"round {index}: neurons per stack {net.widths}")
    log_image(key=f"reduce/figure_round_{index}", images=[str(path)])


def write_report(trainer: pl.Trainer, report_path, reports: list[dict]) -> None:
    """The job's reduction report (JSON + tables): ``report_path``, or for ``"auto"``
    ``<trainer.log_dir or default_root_dir>/reduction_report.json``; None writes nothing."""
    if report_path is None:
        return
    path = Path(trainer.log_dir or trainer.default_root_dir) / "reduction_report.json" if report_path == "auto" \
        else Path(report_path)
    write_reduction_report(path, reports)

"""What a finished job prints: each reduction's table and one summary line."""

from __future__ import annotations

from pathlib import Path


def job_summary(module, metrics: dict[str, float], out_dir: str | Path, seconds: float) -> list[str]:
    """Lines for the end of ``train.py``: the paper-style table of every reduction in the
    module's history, then neurons and the validation metric before -> after, the wall time and
    where the checkpoint and report are. ``metrics`` are the final network's (``val_mse`` ...).
    A fit that started from a checkpoint compares instead the previous network and the new one
    on this job's data (:func:`~lightning_stacks.lineage.comparison`): one data set per line."""
    from .lineage import comparison
    from .reduction.report import report_table

    out = Path(out_dir)
    lines = []
    for i, rep in enumerate(module.history):
        lines += ["", f"reduction {i + 1} of {len(module.history)} (round {rep.get('round', i)}):", report_table(rep)]
    widths = module.net.widths
    after = sum(widths)
    val_key = next((k for k in metrics if k.startswith("val_")), None)
    generation = comparison(module, metrics)
    if generation is not None:
        text = generation
    elif module.history:
        full = module.history[0]["steps"][0]
        before = sum(full["widths"])
        shrink = f"{before / after:.1f}x fewer" if after else "all removed: the network is affine"
        text = f"neurons {before} -> {after} ({shrink}; per stack {'/'.join(map(str, widths))})"
        name = val_key[4:] if val_key else None
        if name and "val" in full["metrics"]:
            v0, v1 = full["metrics"]["val"], metrics[val_key]
            ratio = f", {v1 / v0:.3g}x" if name == "mse" and v0 > 0 else f", {100 * (v1 - v0):+.2f} points"
            text += f"; val {name} {v0:.4g} -> {v1:.4g}{ratio}"
    else:
        text = f"neurons per stack: {'/'.join(map(str, widths))} (total {after}); not reduced"
    lines += ["", f"{text}; {_duration(seconds)}"]
    lines.append(f"checkpoint: {out / 'final.ckpt'}" + (f"; report: {out / 'reduction_report.json'}"
                                                        if (out / "reduction_report.json").is_file() else ""))
    return lines


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"

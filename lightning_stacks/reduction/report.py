"""The reduction's report: one :class:`StepRecord` per row of the paper's table, gathered in a
:class:`ReductionReport` (printed as table 1/2, saved as JSON)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import atomic_write_text


@dataclass
class StepRecord:
    """One row of the paper's table."""

    step: str  # full | zeroed | layers | domain | outside | weak | cluster | bottleneck
    widths: list[int]
    dims: list[int] = field(default_factory=list)  # bottleneck widths d_1..d_J
    params: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    max_output_change: float = 0.0
    seconds: float = 0.0  # the reduction itself, evaluation excluded
    details: list[dict] = field(default_factory=list)  # per stack


@dataclass
class ReductionReport:
    task: str | None
    steps: list[StepRecord] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    evaluations: int = 0  # metric evaluations spent by the automatic search
    kept_ids: list[list[int]] = field(default_factory=list)  # per stack: original index of each neuron, -1 = new
    reduce_seconds: float = 0.0
    eval_seconds: float = 0.0
    flushed_tiny: int = 0  # weight entries below 1e-20 set to 0 in the returned network (DeepStackNetwork.flush_tiny_)
    reference_metric: float | None = None  # automatic mode: the metric the drop is measured from

    def table(self) -> str:
        """The paper's table 1/2 layout, with a metric column per split that was evaluated
        (train, val, test order; none when ``reduce_network`` had no ``evaluate``)."""
        metric = {"classification": "acc", "regression": "MSE"}.get(self.task, "metric")
        J = len(self.steps[0].widths) if self.steps else 0
        seen = {k for s in self.steps for k in s.metrics}
        splits = [k for k in ("train", "val", "test") if k in seen] + sorted(seen - {"train", "val", "test"})
        head = f"{'step':<10}" + "".join(f"{'n' + str(j + 1):>7}" for j in range(J)) + f"{'params':>9}"
        head += "".join(f"{name + ' ' + metric:>12}" for name in splits) + f"{'max|dout|':>11}{'time s':>9}"
        lines = [head, "-" * len(head)]
        for s in self.steps:
            row = f"{s.step:<10}"[:10] + "".join(f"{n:>7}" for n in s.widths) + f"{s.params:>9}"
            row += "".join(f"{s.metrics.get(name, float('nan')):>12.4f}" for name in splits)
            row += f"{s.max_output_change:>11.2e}{s.seconds:>9.2f}"
            lines.append(row)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)



def report_table(report: dict) -> str:
    """The paper-style table of one report given as a dict (as saved in histories)."""
    steps = [StepRecord(**s) for s in report["steps"]]
    return ReductionReport(task=report["task"], steps=steps).table()


def write_reduction_report(path, reports: list[dict]) -> None:
    """``path`` (JSON: every reduction's report, and a summary) and the tables as text beside it.
    Reports of several blocks (their ``target``) are summarized per block under ``blocks`` too."""
    path = Path(path)
    by_block: dict[str, list[dict]] = {}
    for r in reports:
        by_block.setdefault(r.get("target", "net"), []).append(r)
    blocks = {}
    for name, rs in by_block.items():
        first, last = rs[0]["steps"][0], rs[-1]["steps"][-1]
        blocks[name] = {"reductions": len(rs), "neurons_before": sum(first["widths"]), "neurons_after": sum(last["widths"]),
                        "widths_before": first["widths"], "widths_after": last["widths"],
                        "params_before": first["params"], "params_after": last["params"],
                        "metrics_before": first["metrics"], "metrics_after": last["metrics"]}
    summary = {"reductions": len(reports), "task": reports[-1]["task"],
               **{k: sum(b[k] for b in blocks.values()) for k in ("neurons_before", "neurons_after", "params_before", "params_after")}}
    if len(blocks) == 1:
        only = next(iter(blocks.values()))
        summary.update({k: only[k] for k in ("widths_before", "widths_after", "metrics_before", "metrics_after")})
    else:
        summary["blocks"] = blocks
    atomic_write_text(path, json.dumps({"summary": summary, "reports": reports}, indent=2))
    tables = [f"reduction {i} (round {r.get('round', i)}{', ' + r['target'] if r.get('target', 'net') != 'net' else ''}):\n"
              f"{report_table(r)}" for i, r in enumerate(reports)]
    atomic_write_text(path.with_suffix(".txt"), "\n\n".join(tables) + "\n")

"""``reduce.py``'s job: checkpoint in, reduced checkpoint + report out."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch
from omegaconf import DictConfig

from ..checkpoint import load_module, save_module
from ..config import to_container
from ..data import build_datamodule
from ..evaluation import evaluate
from ..module import StackModule
from .pipeline import ReduceSettings, ReductionError, ReductionReport, StepRecord, reduce_network


def full_network_metric(history: list, reference: str, what: str) -> float:
    """The full network's metric on ``reference``: the first row of the first reduction report.
    ``what`` names the setting that needs it (for the error when that report lacks it)."""
    first = history[0]["steps"][0]["metrics"]
    if reference not in first:
        raise ReductionError(f"{what} needs the '{reference}' metric in the first report; it has {sorted(first)}")
    return float(first[reference])


def settings_from_config(r, history: list | None = None) -> ReduceSettings:
    """``ReduceConfig`` (+ the module's reduction history, for ``baseline=first``) -> settings."""
    baseline = None
    if r.baseline == "first" and history:
        baseline = full_network_metric(history, r.reference, "reduce.baseline=first")
    shared = {f.name for f in fields(ReduceSettings)} - {"baseline", "domain"}
    values = {name: r[name] for name in shared}  # same names and meanings as ReduceConfig
    values["tolerances"] = [float(t) for t in values["tolerances"]]
    values["clusters"] = [int(k) for k in values["clusters"]]
    domain = (float(r.domain[0]), float(r.domain[1])) if r.domain else None
    return ReduceSettings(baseline=baseline, domain=domain, **values)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ReductionError(f"reduce.device='{name}' is not a device (use auto, cpu, cuda, cuda:0)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ReductionError(f"reduce.device='{name}' but CUDA is not available")
    return dev


def print_step(rec: StepRecord) -> None:
    widths = "/".join(str(n) for n in rec.widths)
    metrics = " ".join(f"{k}={v:.4f}" for k, v in rec.metrics.items())
    print(f"[reduce] {rec.step:<8} neurons {widths:<16} {metrics} max|dout|={rec.max_output_change:.2e} ({rec.seconds:.2f}s)", flush=True)


def reduce_module(module: StackModule, cfg: DictConfig, dm=None, log=print_step) -> tuple[StackModule, ReductionReport]:
    """Reduce a module's network on its training data; returns a new module and the report.

    The new module carries the same config, the reduced architecture and the history extended
    by this report.
    """
    dm = dm or build_datamodule(cfg.data, seed=cfg.seed)
    splits = {"train": dm.split("train"), "test": dm.split("test")}
    if cfg.reduce.reference == "val":
        splits["val"] = dm.split("val")
    x_train = splits["train"][0]
    net = module.net
    if x_train.dim() != 2 or x_train.shape[1] != net.input_dim:
        raise ReductionError(f"data '{cfg.data.name}' has inputs of shape {tuple(x_train.shape[1:])}, the model expects ({net.input_dim},)")
    device = resolve_device(cfg.reduce.device)
    net = net.to(device)
    x_ref, y_ref = splits[cfg.reduce.reference]

    def evaluator(candidate):
        return {name: evaluate(candidate, x, y, module.task) for name, (x, y) in splits.items()}

    reduced, report = reduce_network(
        net, x_train, settings_from_config(cfg.reduce, module.history), task=module.task, x_ref=x_ref, y_ref=y_ref,
        evaluate=evaluator, log=log,
    )
    new = StackModule(to_container(cfg), architecture=reduced.architecture(), history=module.history + [report.to_dict()])
    new.net.load_state_dict(reduced.cpu().state_dict())
    return new, report


def _reduce_and_save(module: StackModule, cfg: DictConfig, default_out: Path) -> tuple[StackModule, ReductionReport, Path]:
    """Reduce, then write ``reduce.output`` (or ``default_out``) and the report beside it as JSON."""
    new, report = reduce_module(module, cfg)
    out = Path(cfg.reduce.output) if cfg.reduce.output else default_out
    save_module(new, out)
    report.save(out.with_suffix(".json"))
    return new, report, out


def run_reduce(ckpt_path: str, cfg: DictConfig) -> tuple[StackModule, ReductionReport, Path]:
    """Load, reduce, save ``<ckpt>_reduced.ckpt`` and ``.json``; returns the module, report, path."""
    module = load_module(ckpt_path, to_container(cfg))
    return _reduce_and_save(module, cfg, Path(ckpt_path).with_name(Path(ckpt_path).stem + "_reduced.ckpt"))


def reduce_after_training(module: StackModule, cfg: DictConfig) -> tuple[ReductionReport, Path]:
    """``train.py`` with ``reduce.after_training``: reduce the trained module, save beside final.ckpt."""
    _, report, out = _reduce_and_save(module, cfg, Path(cfg.out_dir) / "final_reduced.ckpt")
    return report, out

"""The run's logger: WandB (offline unless an account is configured), CSV or none; the flat run
config, the end-of-run summary, and the step offset that keeps one growing step axis across fits."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from omegaconf import DictConfig

from .config import to_container


def wandb_is_configured() -> bool:
    """True when the user has a WandB account set up (API key in env or ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    """``auto`` -> ``$WANDB_MODE`` if set, else online with an account, else offline."""
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled"):
        return env
    return "online" if wandb_is_configured() else "offline"


def build_logger(cfg: DictConfig):
    """The Lightning logger named by ``logger.kind`` (``False`` for none)."""
    kind, out = cfg.logger.kind, Path(cfg.out_dir)
    if kind == "none":
        return False
    if kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir=str(out), name="csv")
    from pytorch_lightning.loggers import WandbLogger

    mode = resolve_wandb_mode(cfg.logger.wandb_mode)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    logger = WandbLogger(
        project=cfg.logger.project, name=cfg.logger.name or None, save_dir=str(out),
        offline=(mode == "offline"), mode=mode, config=flat_config(to_container(cfg)),
    )
    # Lightning passes anonymous=None to wandb.init, and wandb >= 0.2x warns that the (removed)
    # setting "has no effect" whenever it is given at all: leave it out, it means nothing.
    getattr(logger, "_wandb_init", {}).pop("anonymous", None)
    return logger


def flat_config(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values): the run's config, one level."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flat_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def log_summary(logger, module, metrics: dict[str, float], step: int) -> None:
    """The run's summary: final neurons, parameters, compression and metrics, and the final
    network's architecture (WandB: the run summary; other loggers: a last ``final/*`` row)."""
    if not logger:
        return
    net = module.net
    final = {"final/neurons": float(sum(net.widths)), "final/params": float(net.num_parameters()),
             **{f"final/{k}": float(v) for k, v in metrics.items()}}
    if module.history:
        first = module.history[0]["steps"][0]
        final["final/neurons_before"] = float(sum(first["widths"]))
        final["final/compression"] = float(sum(first["widths"])) / max(1.0, final["final/neurons"])
        final["final/params_before"] = float(first["params"])
    logger.log_metrics(final, step=step)
    experiment = getattr(logger, "experiment", None)
    summary = getattr(experiment, "summary", None)
    if summary is not None and hasattr(summary, "update"):
        summary.update({**final, "final/architecture": net.architecture(), "final/reductions": len(module.history)})


def with_step_offset(logger):
    """Make ``logger`` add ``logger.step_offset`` to every step it logs (a new Trainer per round
    restarts ``global_step``; dashboards need one step that only grows). The class is swapped
    for a subclass, so ``isinstance`` checks against the logger's class still hold."""
    if not logger or hasattr(logger, "step_offset"):
        return logger
    base = type(logger)

    class OffsetStep(base):
        def log_metrics(self, metrics, step=None):
            return super().log_metrics(metrics, None if step is None else step + self.step_offset)

    OffsetStep.__name__ = OffsetStep.__qualname__ = base.__name__
    logger.__class__ = OffsetStep
    logger.step_offset = 0
    return logger

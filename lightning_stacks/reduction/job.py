"""``reduce.py``'s job: checkpoint in, reduced checkpoint + report out."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch
from omegaconf import DictConfig

from ..checkpoint import save_module
from ..config import to_container
from ..data import build_datamodule
from ..module import StackModule, load_module
from .pipeline import reduce_network
from .report import ReductionReport, StepRecord, write_reduction_report
from .settings import ReduceSettings, ReductionError


def full_network_metric(history: list, reference: str, what: str) -> float:
    """The full network's metric on ``reference``: the first row of the first reduction report.
    ``what`` names the setting that needs it (for the error when that report lacks it)."""
    first = history[0]["steps"][0]["metrics"]
    if reference not in first:
        raise ReductionError(f"{what} needs the '{reference}' metric in the first report; it has {sorted(first)}")
    return float(first[reference])


def settings_from_config(r, history: list | None = None, reference: str | None = None) -> ReduceSettings:
    """``ReduceConfig`` (+ the module's reduction history, for ``baseline=first``) -> settings;
    ``reference``: the split the budget is measured on, when not ``r.reference``."""
    baseline = None
    if r.baseline == "first" and history:
        baseline = full_network_metric(history, reference or r.reference, "reduce.baseline=first")
    shared = {f.name for f in fields(ReduceSettings)} - {"baseline", "domain"}
    values = {name: r[name] for name in shared}  # same names and meanings as ReduceConfig
    values["tolerances"] = [float(t) for t in values["tolerances"]]
    values["clusters"] = [int(k) for k in values["clusters"]]
    domain = (float(r.domain[0]), float(r.domain[1])) if r.domain else None
    return ReduceSettings(baseline=baseline, domain=domain, **values)


def resolve_device(name: str) -> torch.device:
    """``reduce.device`` as a device; a CUDA device always with its index (``cuda`` -> ``cuda:0``),
    so that it compares equal to the device tensors report."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ReductionError(f"reduce.device='{name}' is not a device (use auto, cpu, cuda, cuda:0)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ReductionError(f"reduce.device='{name}' but CUDA is not available")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def print_step(rec: StepRecord, block: str | None = None) -> None:
    """One line per finished step; ``block`` names the reduced block (omitted for a StackModule's net)."""
    widths = "/".join(str(n) for n in rec.widths)
    metrics = " ".join(f"{k}={v:.4f}" for k, v in rec.metrics.items())
    where = f"{block} " if block not in (None, "net") else ""
    print(f"[reduce] {where}{rec.step:<8} neurons {widths:<16} {metrics} max|dout|={rec.max_output_change:.2e} "
          f"({rec.seconds:.2f}s)", flush=True)


def reduce_on_sources(net, task: str, settings: ReduceSettings, sources: dict, reference: str = "train",
                      reference_size: int = 0, device: torch.device | None = None, log=print_step, form=None) -> tuple:
    """Reduce ``net`` on data given per split; the caller's network is not modified.

    Args:
        net: the trained network.
        task: ``classification`` or ``regression``.
        settings: manual or automatic settings.
        sources: split name -> ``(x, y)`` tensors or a re-iterable of ``(x, y)`` batches (e.g. a
            DataLoader, streamed: never gathered into one tensor unless a step needs it in
            memory, see :func:`~.pipeline.reduce_network`). ``train`` is required: step 1 checks
            its inputs. After every step the network is evaluated on every split given.
        reference: the split automatic mode measures its drop on.
        reference_size: automatic mode's reference set is a seeded subsample of this many
            points (0 = the whole split; a streamed split is then gathered into memory once).
        device: where to reduce (default: the network's device); the reduced network is
            returned on the caller's network's device either way.
        log: called with each finished step (None = quiet).
        form: how the result is deployed (:class:`~.settings.Form`; default a Deep Stack Network).

    Returns:
        (reduced network, :class:`ReductionReport`).
    """
    import copy

    from ..batches import is_streamed, reservoir_sample

    if task not in ("classification", "regression"):
        raise ReductionError(f"task={task!r} is not one of: classification, regression")
    if "train" not in sources:
        raise ReductionError(f"the data has no 'train' split to reduce on (it has {sorted(sources)})")
    if reference not in sources:
        raise ReductionError(f"reduce.reference='{reference}' but the data has no '{reference}' split (it has {sorted(sources)})")
    home = next(net.parameters()).device
    device = torch.device(device) if device is not None else home
    if home != device:
        net = copy.deepcopy(net).to(device)
    train = sources["train"]
    x_check = train if is_streamed(train) else train[0]
    x_ref = y_ref = None
    if settings.automatic:
        ref = sources[reference]
        if reference_size or is_streamed(ref):
            x_ref, y_ref = reservoir_sample(ref, reference_size, settings.seed, width=net.input_dim)
        else:
            x_ref, y_ref = ref
        if y_ref is None:
            raise ReductionError(f"automatic mode needs labels, but the '{reference}' batches hold inputs only")
    shown = ["train", "val", "test", reference]
    evaluated = {name: sources[name] for name in dict.fromkeys(shown) if name in sources}  # measured by the driver:
    # the training split shares the output change's forward pass
    reduced, report = reduce_network(net, x_check, settings, task=task, x_ref=x_ref, y_ref=y_ref, evaluate=evaluated, log=log,
                                     form=form)
    return reduced.to(home), report


class NetworkInputBatches:
    """A streamed source whose batches' inputs go through ``fn`` (re-iterable like the source)."""

    def __init__(self, source, fn):
        self.source, self.fn = source, fn

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self):
        for batch in self.source:
            if isinstance(batch, torch.Tensor):
                yield self.fn(batch)
            elif isinstance(batch, dict) and "x" in batch:
                yield {**batch, "x": self.fn(batch["x"])}
            elif isinstance(batch, (tuple, list)) and batch:
                yield (self.fn(batch[0]), *batch[1:])
            else:
                yield batch  # malformed: the batch checks name it


def network_source(module, source):
    """``source`` (raw rows, see :mod:`~lightning_stacks.batches`) as ``module.net`` takes it: the
    module's input layer (``network_inputs``) applied to x; the source itself when there is none."""
    from ..batches import is_streamed
    from ..preprocess import has_statistics

    if not has_statistics(getattr(module, "inputs", None)):
        return source
    fn = torch.no_grad()(module.network_inputs)
    if not is_streamed(source):
        return (fn(source[0]), source[1]) if isinstance(source, tuple) else fn(source)
    return NetworkInputBatches(source, fn)


def module_sources(module: StackModule, cfg: DictConfig, dm=None) -> dict:
    """The splits of a job's data as the module's network takes them (its input layer applied:
    evaluate and reduce ``module.net`` on them): in-memory tensors for the built-in and file
    data sets, unsharded dataloaders for a user's DataModule."""
    dm = dm or build_datamodule(cfg.data, seed=cfg.seed)
    dm.setup("fit")
    if hasattr(dm, "split"):
        raw = {name: dm.split(name) for name in ("train", "val", "test")}
    else:
        from ..loaders import split_sources

        raw = split_sources(dm=dm)
    return {name: network_source(module, source) for name, source in raw.items()}


def reduce_module(module: StackModule, cfg: DictConfig, dm=None, log=print_step) -> tuple[StackModule, ReductionReport]:
    """Reduce a module's network on its job's data; returns a new module and the report.

    The new module carries the same config, the reduced architecture and the history extended
    by this report.
    """
    sources = module_sources(module, cfg, dm)
    x = sources["train"][0] if isinstance(sources["train"], tuple) else None
    net = module.net
    if x is not None and (x.dim() != 2 or x.shape[1] != net.input_dim):
        raise ReductionError(f"data '{cfg.data.name}' has inputs of shape {tuple(x.shape[1:])}, the model expects ({net.input_dim},)")
    r = cfg.reduce
    reduced, report = reduce_on_sources(net, module.task, settings_from_config(r, module.history), sources, r.reference,
                                        r.reference_size, resolve_device(r.device), log=log)
    new = StackModule(to_container(cfg), architecture=reduced.architecture(), history=module.history + [report.to_dict()],
                      data_info=module.data_info)
    new.net.load_state_dict(reduced.state_dict())  # copies onto the new module's (CPU) tensors
    new.inputs.load_state_dict(module.inputs.state_dict())  # the same input layer: it takes the same raw rows
    return new.to(module.device), report


def _reduce_and_save(module: StackModule, cfg: DictConfig, out: Path) -> tuple[StackModule, ReductionReport, Path]:
    """Reduce, then write ``out`` and the report beside it as JSON (``out`` checked by
    :func:`reduced_output`)."""
    new, report = reduce_module(module, cfg)
    save_module(new, out)
    report.save(out.with_suffix(".json"))
    return new, report, out


def reduced_output(cfg: DictConfig, default_out: Path, protected: list, overwrite: bool | None = None) -> Path:
    """``reduce.output`` (or ``default_out``), refused before any work if it or its ``.json``
    report would replace one of ``protected`` (the input) or, unless ``overwrite`` (default: the
    config's ``overwrite``), an existing file."""
    from ..rundir import check_output

    out = Path(cfg.reduce.output) if cfg.reduce.output else default_out
    return check_output(out, protected, cfg.overwrite if overwrite is None else overwrite)


def run_reduce(ckpt_path: str, cfg: DictConfig) -> tuple[StackModule, ReductionReport, Path]:
    """Load, reduce, save ``<ckpt>_reduced.ckpt`` and ``.json``; returns the module, report, path."""
    out = reduced_output(cfg, Path(ckpt_path).with_name(Path(ckpt_path).stem + "_reduced.ckpt"), [ckpt_path])
    module = load_module(ckpt_path, to_container(cfg))
    dm = build_datamodule(cfg.data, seed=cfg.seed)
    check_data(module, dm, cfg)  # e.g. another data.path: its columns, target and classes are the network's
    new, report = reduce_module(module, cfg, dm)
    save_module(new, out)
    report.save(out.with_suffix(".json"))
    return new, report, out


def check_data(module: StackModule, dm, cfg: DictConfig) -> dict:
    """Refuse data that differs from what ``module`` was trained on (:func:`~lightning_stacks.data.check_against`);
    returns the data's ``describe_data`` dict."""
    from ..data import check_against, describe_data

    found = describe_data(dm)
    check_against(module.data_info, found, data_label(cfg))
    return found


def data_label(cfg: DictConfig) -> str:
    """How messages name the job's data: ``data.path=<file>`` or ``data '<name>'``."""
    return f"data.path={cfg.data.path}" if cfg.data.path else f"data '{cfg.data.name}'"


def after_training_output(cfg: DictConfig) -> Path:
    """Where ``reduce.after_training`` writes (checked before training): ``reduce.output`` or
    ``out_dir/final_reduced.ckpt``; a resumed fit (``ckpt_path``) may replace its own default output."""
    protected = [Path(cfg.out_dir) / "final.ckpt"] + ([cfg.init_from] if cfg.init_from else [])
    overwrite = cfg.overwrite or bool(cfg.ckpt_path and not cfg.reduce.output)
    return reduced_output(cfg, Path(cfg.out_dir) / "final_reduced.ckpt", protected, overwrite)


def reduce_after_training(module: StackModule, cfg: DictConfig) -> tuple[StackModule, Path]:
    """``train.py`` with ``reduce.after_training``: reduce the trained module, save it (see
    :func:`after_training_output`), and write the job's ``reduction_report.json`` (every
    reduction in its history). Returns the reduced module and its checkpoint's path."""
    new, _, out = _reduce_and_save(module, cfg, after_training_output(cfg))
    write_job_report(Path(cfg.out_dir) / "reduction_report.json", new)
    return new, out


def write_job_report(path: Path, module: StackModule) -> None:
    """A job's ``reduction_report.json`` (and ``.txt``): every reduction in the module's history
    and, where the data_info has one, the lineage (the generations this network went through:
    parent checkpoints and data files with their SHA-256, rows)."""
    import json

    from ..atomic import atomic_write_text

    write_reduction_report(path, module.history)
    lineage = module.data_info.get("lineage")
    if lineage:
        report = json.loads(Path(path).read_text())
        report["lineage"] = lineage
        atomic_write_text(path, json.dumps(report, indent=2))

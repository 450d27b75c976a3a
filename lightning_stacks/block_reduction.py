"""Reducing the blocks of a model on a fit's data: each target block in turn, in its Deep Stack
Network form, within one budget measured on the model's output, and written back in the block's
own form. Pure PyTorch over the model and its batches (the callback brings the Lightning part).

A block that is the whole model (it receives the model's input tensor and returns its output
tensor) takes the data directly, as before. A block inside a bigger model gets its inputs from a
forward hook while the batches run through the model (streamed), and automatic mode measures the
drop on the model's outputs with the block's output replaced by each candidate's.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from .batches import reservoir_sample
from .blocks import architecture, block_for, set_child
from .blocks import build as build_block
from .capture import (
    BlockInputs,
    Forward,
    ModelReference,
    Targets,
    default_forward,
    default_targets,
    evaluating,
    model_batches,
    probe,
    replaced_output,
    to_device,
)
from .costs import model_costs
from .evaluation import MetricSum
from .reduction import reduce_network
from .reduction.job import reduce_on_sources
from .reduction.report import ReductionReport
from .reduction.settings import Form, ReduceSettings, ReductionError


def evaluate_with(model: nn.Module, path: str, candidate: nn.Module, source, task: str, forward: Forward = default_forward,
                  targets: Targets = default_targets) -> float:
    """The model's metric on ``source`` with the block at ``path`` computing ``candidate`` instead."""
    device = next(candidate.parameters()).device
    total = MetricSum(task)
    with replaced_output(model, path, lambda z: candidate(z.to(device))), evaluating(model):
        model_device = next(model.parameters()).device
        for batch in model_batches(source):
            total.add(forward(model, to_device(batch, model_device)), targets(batch))
    return total.value()


def has_own_forward(model: nn.Module) -> bool:
    """Whether the model defines ``forward`` (a LightningModule may call its blocks from
    ``training_step`` only)."""
    return type(model).forward.__qualname__ not in ("Module._forward_unimplemented", "LightningModule.forward")


def is_whole_model(model: nn.Module, path: str, sources: dict, forward: Forward = default_forward) -> bool:
    """Whether the block at ``path`` is the model's whole function on this data: probed on one
    batch; a model without a ``forward`` of its own feeds its data to the block directly."""
    if path == "net" and getattr(model, "reduces_whole_network", False):
        return True
    if forward is default_forward and not has_own_forward(model):
        return True
    batch = next(iter(model_batches(sources["train"])), None)
    if batch is None:
        raise ReductionError("the training data yielded no batch")
    same_in, same_out = probe(model, path, batch, forward)
    return same_in and same_out


def reduce_block(module: nn.Module, x, settings: ReduceSettings, task: str, y_ref: torch.Tensor | None = None,
                 x_ref: torch.Tensor | None = None, evaluate=None, log=None) -> tuple[nn.Module, ReductionReport]:
    """Reduce one block given on its own (a plain ReLU MLP ``nn.Sequential`` or a
    ``DeepStackNetwork``) on its inputs ``x`` (a tensor (N, d_0) or a DataLoader), outside any
    Trainer; returns the reduced block in its own form and the report, whose parameter counts are
    those of the returned module. The arguments are :func:`~.reduction.reduce_network`'s; the
    block itself is not modified."""
    block = block_for(module, type(module).__name__)
    form = Form(allow_skip=block.allow_skip, count=block.count, full_params=int(sum(p.numel() for p in module.parameters())))
    reduced, report = reduce_network(block.network(), x, settings, task=task, y_ref=y_ref, x_ref=x_ref, evaluate=evaluate,
                                     log=log, form=form)
    return block.write_back(reduced), report


def reduce_one(model: nn.Module, path: str, sources: dict, settings: ReduceSettings, task: str, *, reference: str = "train",
               reference_size: int = 0, device: torch.device | None = None, forward: Forward = default_forward,
               targets: Targets = default_targets, log=None) -> tuple[nn.Module, dict]:
    """Reduce the block at ``path`` (the model is not modified); returns the new block, in its own
    form and on its device, and the report as a dict (with ``target``, ``kind`` and ``notes``)."""
    block = block_for(model.get_submodule(path), path)
    net = block.network()
    form = Form(allow_skip=block.allow_skip, count=block.count,
                full_params=int(sum(p.numel() for p in block.module.parameters())))
    if is_whole_model(model, path, sources, forward):
        if callable(getattr(model, "network_inputs", None)):  # a module whose input layer feeds the network (raw rows)
            from .reduction.job import network_source

            sources = {k: network_source(model, v) for k, v in sources.items()}
        reduced, report = reduce_on_sources(net, task, settings, sources, reference, reference_size, device, log=log, form=form)
    else:
        reduced, report = _reduce_inside(model, path, net, sources, settings, task, reference, reference_size, forward, targets,
                                         log, form)
    new = block.write_back(reduced)
    out = report.to_dict()
    out.update(target=path, kind=block.kind, notes=list(block.notes))
    if out["steps"] and out["steps"][-1]["params"] != int(sum(p.numel() for p in new.parameters())):
        raise ReductionError(f"{path}: the report counts {out['steps'][-1]['params']} parameters but the written-back block "
                             f"has {sum(p.numel() for p in new.parameters())}")  # an accounting bug must not pass silently
    return new, out


def _reduce_inside(model, path, net, sources, settings, task, reference, reference_size, forward, targets, log, form):
    x_check = BlockInputs(model, path, sources["train"], forward, targets)
    if settings.sample:  # one pass: the sample is held in memory, like a tensor's
        z, _ = reservoir_sample(x_check, settings.sample, settings.seed, width=net.input_dim)
        x_check, settings = z, replace(settings, sample=0)
    x_ref = y_ref = head = None
    if settings.automatic:
        if reference not in sources:
            raise ReductionError(f"reference='{reference}' but the fit has no '{reference}' data (it has {sorted(sources)})")
        ref = ModelReference(model, path, sources[reference], forward, targets, max_rows=reference_size)
        x_ref, y_ref, head = ref.x, ref.y, ref.outputs
    shown = [s for s in dict.fromkeys(["train", "val", "test", reference]) if s in sources]

    def evaluate(candidate):
        return {s: evaluate_with(model, path, candidate, sources[s], task, forward, targets) for s in shown}

    return reduce_network(net, x_check, settings, task=task, y_ref=y_ref, x_ref=x_ref, evaluate=evaluate, log=log, head=head,
                          form=form)


def reduce_blocks(model: nn.Module, paths: list[str], sources: dict, settings: ReduceSettings, task: str, *,
                  reference: str = "train", reference_size: int = 0, device: torch.device | None = None,
                  forward: Forward = default_forward, targets: Targets = default_targets, log=None,
                  costs: bool = True) -> list[dict[str, Any]]:
    """Reduce every block in ``paths``, one after another, sharing one budget: automatic mode keeps
    the whole model within ``max_drop`` of its metric before the first block was reduced (unless
    ``settings.baseline`` already names one). Each reduced block is put into ``model`` before the
    next one is reduced; if any fails, the model gets its original blocks back.

    Returns one dict per block: ``path``, ``architecture`` and ``state_dict`` (CPU) of the new block,
    and its ``report`` (with the model's ``costs`` before/after when ``costs``).
    """
    originals = {p: model.get_submodule(p) for p in paths}
    whole = len(paths) == 1 and is_whole_model(model, paths[0], sources, forward)
    # a model without a forward of its own has no output to share a budget on: each block keeps its own
    shared = forward is not default_forward or has_own_forward(model)

    def measure():  # the block alone when it is the whole model (a compiled forward may hold the old one)
        if whole:
            return model_costs(model.get_submodule(paths[0]), sources["train"])
        return model_costs(model, sources["train"], forward) if shared else None

    before = measure() if costs else None
    out, baseline = [], settings.baseline
    try:
        for i, path in enumerate(paths):
            s = replace(settings, baseline=baseline)
            new, report = reduce_one(model, path, sources, s, task, reference=reference, reference_size=reference_size,
                                     device=device, forward=forward, targets=targets,
                                     log=(lambda rec, p=path: log(rec, p)) if log is not None else None)
            if i == 0 and baseline is None and shared:
                baseline = report.get("reference_metric")
            set_child(model, path, new)
            out.append({"path": path, "block": new, "report": report})
    except BaseException:
        for p, block in originals.items():
            set_child(model, p, block)
        raise
    if costs:
        after = measure()
        for item in out:
            item["report"]["costs"] = {"before": before, "after": after}
    for item in out:
        block = item.pop("block")
        item["architecture"] = architecture(block)
        item["state_dict"] = {k: v.detach().cpu() for k, v in block.state_dict().items()}
    for p, block in originals.items():  # the caller installs the broadcast result on every rank
        set_child(model, p, block)
    return out


def rebuild(model: nn.Module, path: str, architecture: dict, state_dict: dict) -> nn.Module:
    """The block ``architecture`` describes (a copy of the current one, reshaped where its kind
    allows) with ``state_dict`` loaded, on the current block's device and dtype (not installed)."""
    old = model.get_submodule(path)
    p = next(old.parameters())
    new = build_block(architecture, like=copy.deepcopy(old))
    new.load_state_dict(state_dict)
    return new.to(device=p.device, dtype=p.dtype)

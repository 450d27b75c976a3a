"""The Reduction Algorithm on a whole :class:`DeepStackNetwork` (SPEC section 2).

Order (as in the paper's tables): step 1 on every stack in order (each stack's inputs are the
earlier stacks' outputs, which step 1 leaves unchanged on the checked inputs, so one pass
through the unreduced network finds every stack's neurons), then step 2 on every stack, then
step 3 on every stack. Each step yields a
:class:`StepRecord`; together they form a :class:`ReductionReport` (printed like table 1/2 and
saved as JSON).

Manual mode takes per-stack tolerances and cluster counts. Automatic mode (``max_drop``) picks
them by binary search so that the metric on a reference set drops by at most ``max_drop``
(accuracy points for classification, relative MSE increase for regression). The budget is a
cumulative ramp over the 2J lossy stages: the weak steps of stacks 1..J share ``weak_share`` of
it, the clustering steps the rest (clustering removes far more neurons per unit of budget).

The checked inputs may be a tensor or a streamed source (a DataLoader, a list of batches; see
:mod:`lightning_stacks.batches`): step 1 and the per-step output change then take one pass over
the batches, a chunk at a time on the network's device, so their memory does not grow with N.

The driver runs :data:`STEPS` in order (each step lives in :mod:`.steps` and decides from the
settings whether it applies) and does the timing and the recording once, here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict

import torch

from ..batches import Source, is_streamed
from ..evaluation import infer_task
from ..model import DeepStackNetwork
from . import steps
from .inputs import as_tensors, check_inputs, check_labels
from .measure import Evaluator, StepMeter
from .report import ReductionReport, StepRecord
from .run import ReductionRun
from .settings import Form, ReduceSettings, ReductionError
from .stacks import build_network, count_parameters, stack_weights
from .steps import Step

# The steps in the order they run; each decides from the settings whether it applies.
STEPS: list[Step] = [steps.zeroed, steps.refit_targets, steps.layers, steps.domain, steps.outside, steps.automatic,
                     steps.polish, steps.weak, steps.cluster, steps.bottleneck]

def inferred_task(y: torch.Tensor, width: int) -> str:
    """The task ``y`` says unambiguously (printed), else a ReductionError naming the fix."""
    task, why = infer_task(y, width)
    if task is None:
        raise ReductionError(f"the labels do not say the task ({why}): give task='classification' or task='regression'")
    print(f"[reduce] task: {task} (from {why}; give task= to set it)", flush=True)
    return task


def reduce_network(
    net: DeepStackNetwork,
    x_check: Source,
    settings: ReduceSettings,
    task: str | None = None,
    y_ref: torch.Tensor | None = None,
    x_ref: torch.Tensor | None = None,
    evaluate: Evaluator | dict | None = None,
    log: Callable[[StepRecord], None] | None = None,
    head: Callable[[torch.Tensor], torch.Tensor] | None = None,
    form: Form | None = None,
) -> tuple[DeepStackNetwork, ReductionReport]:
    """Reduce ``net`` (not modified) and return the reduced copy and the report.

    The reduction runs on the network's device and the reduced network is returned there. The
    caller's data stay where they are: blocks of them are copied to that device as needed.

    Args:
        net: the trained network (any device; the reduction runs there).
        x_check: step-1 inputs, normally all training inputs: a tensor (N, d_0), or a streamed
            source (a DataLoader or any re-iterable of batches x or (x, y, ...); see
            :mod:`lightning_stacks.batches`). Streamed, step 1 and the per-step output change
            make passes over the batches in bounded memory. The steps that need the inputs in
            memory (``refit``'s fit set, ``bottleneck_tol``'s SVD, automatic mode's default
            reference set) use ``reservoir_sample(x_check, settings.sample, settings.seed)``
            when ``settings.sample > 0`` (then step 1 checks that sample too, as for a tensor),
            else all batches gathered on the device: set ``sample`` to bound their memory. A
            tensor's sample is a ``randperm`` subset instead, so for ``sample > 0`` a tensor and
            its streamed copy check different subsets.
        settings: manual or automatic settings.
        task: ``classification`` or ``regression`` (automatic mode's metric; the report's labels).
            None: read from ``y_ref`` when that is unambiguous (integer labels: classification; float
            targets of the output width: regression), with one printed line saying so; one-hot or
            probability rows are refused without it (with ``task="classification"`` they count by
            their argmax). Manual mode without labels needs no task.
        x_ref, y_ref: reference set for automatic mode (default: the in-memory checked inputs
            with y_ref; for a streamed x_check whose batches carry labels, y_ref defaults to them).
        evaluate: optional ``net -> {"train": m, "test": m}`` called after every step, or
            ``{split: (x, y) or a batch source}`` measured here (a split whose inputs are ``x_check``
            shares the output change's forward pass; a step that changed nothing is not measured
            again). Its time is reported separately (``eval_seconds``), excluded from
            ``reduce_seconds``; ``settings.report="final"`` measures only the full and the final
            network (a last row ``final``).
        log: optional callback called with each finished :class:`StepRecord`.
        head: automatic mode, for a network inside a bigger model: maps the network's outputs on
            ``x_ref`` (N_ref, d_J) to the model's outputs there, which the metric against ``y_ref``
            reads (None: the network's own outputs).
        form: how the result is deployed (:class:`~.settings.Form`): whether a step may add a skip
            path, and the parameter count the report shows (that of the deployed module).
    """
    if not isinstance(net, DeepStackNetwork):
        raise ReductionError(f"net is a {type(net).__name__}; reduce_network takes a DeepStackNetwork (a StackModule's .net, "
                             "or DeepStackNetwork.from_sequential(your nn.Sequential))")
    if task not in ("classification", "regression", None):
        raise ReductionError(f"task={task!r} is not one of: classification, regression (or None = read from y_ref)")
    settings = ReduceSettings.coerce(settings)
    settings.validate(net.widths)
    form = form or Form()
    if settings.merge_identity_layers and not form.allow_skip:
        raise ReductionError("merge_identity_layers folds a ReLU layer into a skip path, which this block's form (a plain "
                             "ReLU MLP) does not have; turn it off")
    for name, p in net.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise ReductionError(f"the network's parameter '{name}' holds NaN or infinite values; reduce a network with finite weights")
    x_check = as_tensors(x_check, "x_check")
    streamed = is_streamed(x_check)
    if not streamed:
        if isinstance(x_check, tuple):  # an (x, y) pair: the labels are not needed here
            x_check = x_check[0]
        check_inputs(x_check, net.input_dim, "inputs")
    if x_ref is not None:
        x_ref = as_tensors(x_ref, "x_ref")
        check_inputs(x_ref, net.input_dim, "x_ref")
    labels_for = None if head is not None else net.output_dim  # a head maps to a bigger model's outputs
    if y_ref is not None:
        y_ref = as_tensors(y_ref, "y_ref")
        task = task or inferred_task(y_ref, labels_for or net.output_dim)
        y_ref = check_labels(y_ref, task, labels_for)
    p = next(net.parameters())
    run = ReductionRun(settings, task, stack_weights(net), x_check, p.device, p.dtype, net.input_dim, streamed, form=form,
                       head=head)
    if settings.automatic:
        run.resolve_reference(x_ref, y_ref)
        if task is None:  # a streamed source's own labels
            run.task = task = inferred_task(run.y_ref, labels_for or net.output_dim)
            run.y_ref = check_labels(run.y_ref, task, labels_for)
    report = ReductionReport(task=task, settings=asdict(settings))
    # original outputs per block are kept for inputs already in memory (as big as the inputs'
    # outputs); a streamed source recomputes them per batch instead
    meter = StepMeter(run.stacks, run.checked, streamed and run.checked is x_check, evaluate, task, settings.report == "steps",
                      prescan=settings.outside)

    def record(step: str, current, seconds: float, details: list[dict]) -> None:
        t0 = time.perf_counter()
        params = form.full_params if step == "full" and form.full_params is not None else (form.count or count_parameters)(current)
        rec = StepRecord(step=step, widths=[s.n for s in current], dims=[s.d_out for s in current],
                         params=params, seconds=seconds, details=details)
        rec.max_output_change, rec.metrics = meter.final(current) if step == "final" else meter.measure(step, current)
        report.eval_seconds += time.perf_counter() - t0
        report.steps.append(rec)
        if log is not None:
            log(rec)

    record("full", run.stacks, 0.0, [])
    if meter.scan is not None:  # the full row's pass made step 1's scan: step 1 takes it (and its time)
        run.scan = (run.stacks, *meter.scan, meter.scan_seconds)
    for step in STEPS:
        t0 = time.perf_counter()
        rows = step(run)
        borrowed, run.borrowed = run.borrowed, 0.0  # the report's pass that did this step's scan
        report.eval_seconds -= borrowed
        if rows is None:
            continue
        dt = time.perf_counter() - t0 + borrowed
        report.reduce_seconds += dt
        for name, stacks, details in rows:
            record(name, stacks, dt / len(rows), details)
            run.stacks = stacks
    if settings.report == "final" and len(report.steps) > 1:
        record("final", run.stacks, 0.0, [])
    report.settings.update(run.chosen)
    report.evaluations = run.budget.evaluations if run.budget is not None else 0
    report.reference_metric = run.budget.ref_metric if run.budget is not None else None
    report.kept_ids = [st.ids.tolist() if st.ids is not None else [-1] * st.n for st in run.stacks]
    reduced = build_network(run.stacks)
    # Weights that strong l2 left below 1e-20 change no float32 output but make CPU inference
    # slow (subnormal products): the reduced network is the one users deploy, so it leaves clean.
    report.flushed_tiny = reduced.flush_tiny_()
    return reduced, report

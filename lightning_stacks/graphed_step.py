"""The training step replayed as one CUDA graph (``trainer.cuda_graphs``): forward, loss, backward
and a fused ``capturable`` Adam step, captured once per batch shape and replayed.

Functional core: the refusal of a fit a graph cannot replay (:func:`trainer_refusal`), Adam made
capturable in place (:func:`make_capturable`, :func:`set_lr`), the snapshot that undoes a capture's
warm-up (:func:`snapshot`, :func:`restore`), what a graph is bound to (:class:`Binding`) and
Lightning's step count under manual optimization (:func:`carry_step_count`). Shell:
:class:`GraphedStep`, which a LightningModule under manual optimization asks for each step.

A graph reads and writes fixed addresses. It is captured again when the batch shape changes or
when a tensor it reaches through the optimizer (the parameters, their Adam state, the learning-rate
tensors) was replaced or moved: a reduction, a new optimizer, a loaded checkpoint, a device move.
What else it reads (the module's buffers, a teacher, the l2 coefficients' tensors) its owner keeps
in place, or calls :meth:`GraphedStep.reset`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from .config import ConfigError, cuda_graphs_refusal

# What Lightning calls around an eager backward and optimizer step; a replayed graph calls none of them.
GRAPH_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad")
Outputs = dict[str, torch.Tensor]


# ---------------------------------------------------------------------------- refusals
def trainer_refusal(trainer, compile_mode: str) -> str | None:
    """Why ``trainer`` cannot replay a StackModule's step as a CUDA graph (one line naming the
    fix), or None: its device, strategy, precision, clipping, ``compile_mode``, gradient
    accumulation, and any callback (or the module) with a hook the replayed step would skip."""
    import pytorch_lightning as pl
    from pytorch_lightning.strategies import SingleDeviceStrategy
    from pytorch_lightning.utilities.model_helpers import is_overridden

    strategy = trainer.strategy
    spread = None if isinstance(strategy, SingleDeviceStrategy) else f"{type(strategy).__name__} on {trainer.num_devices * trainer.num_nodes} device(s)"
    why = cuda_graphs_refusal(strategy.root_device.type, spread, str(trainer.precision), float(trainer.gradient_clip_val or 0), compile_mode)
    if why:
        return why
    if trainer.accumulate_grad_batches != 1:
        return (f"trainer.cuda_graphs=true steps the optimizer on every batch: drop Trainer(accumulate_grad_batches="
                f"{trainer.accumulate_grad_batches}) or set trainer.cuda_graphs=false")
    owners = [(cb, pl.Callback) for cb in trainer.callbacks] + [(trainer.lightning_module, pl.LightningModule)]
    hooked = [f"{type(o).__name__}.{h}" for o, parent in owners if o is not None for h in GRAPH_HOOKS if is_overridden(h, o, parent)]
    if hooked:
        return (f"trainer.cuda_graphs=true replays backward and the optimizer step as one graph, which never calls "
                f"{hooked[0]}: drop it or set trainer.cuda_graphs=false")
    return None


def check_trainer(trainer, compile_mode: str) -> None:
    """Raise :class:`ConfigError` with :func:`trainer_refusal`'s line, if any (before training)."""
    why = trainer_refusal(trainer, compile_mode)
    if why:
        raise ConfigError(why)


# ---------------------------------------------------------------------------- the optimizer
def make_capturable(optimizer: torch.optim.Optimizer, capturable: bool = True) -> None:
    """Adam as a captured step needs it, in place, values kept: each group's learning rate a 0-dim
    float32 tensor on its parameters' device (the schedule fills it: :func:`set_lr`) and, with
    ``capturable``, the group fused and capturable with every ``step`` a float32 tensor there."""
    for group in optimizer.param_groups:
        if not group["params"]:
            continue
        device = group["params"][0].device
        lr = group["lr"]
        if not (torch.is_tensor(lr) and lr.device == device and lr.dtype == torch.float32 and lr.dim() == 0):
            group["lr"] = torch.as_tensor(lr, dtype=torch.float32).to(device).reshape(()).clone()
        if not capturable:
            continue
        for key, value in (("capturable", True), ("fused", True), ("foreach", None)):
            if key in group:
                group[key] = value
        for p in group["params"]:
            state = optimizer.state.get(p)
            step = state.get("step") if state else None
            if step is not None and not (torch.is_tensor(step) and step.device == p.device and step.dtype == torch.float32):
                state["step"] = torch.as_tensor(step, dtype=torch.float32).to(p.device)


def set_lr(group: dict, value) -> None:
    """Set a param group's learning rate: in place when it is a tensor (a captured step reads that
    tensor, not a number baked in at capture), else replaced."""
    if torch.is_tensor(group["lr"]):
        group["lr"].fill_(value)
    else:
        group["lr"] = value


@dataclass
class Snapshot:
    """Copies of an optimizer's parameters and of the state it had, per parameter."""

    params: list[tuple[torch.Tensor, torch.Tensor]]
    state: dict[torch.Tensor, dict[str, Any]]


@torch.no_grad()
def snapshot(optimizer: torch.optim.Optimizer) -> Snapshot:
    """What a capture's warm-up steps change: every parameter and its optimizer state, copied."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    state = {p: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in optimizer.state[p].items()}
             for p in params if optimizer.state.get(p)}
    return Snapshot([(p, p.detach().clone()) for p in params], state)


@torch.no_grad()
def restore(saved: Snapshot, optimizer: torch.optim.Optimizer) -> None:
    """Copy ``saved`` back into the same tensors (a graph captured afterwards reads them). State
    the warm-up created (Adam's first step) is zeroed, which is how Adam starts it."""
    for p, copy in saved.params:
        p.copy_(copy)
        state = optimizer.state.get(p)
        if not state:
            continue
        before = saved.state.get(p, {})
        for key in list(state):
            value = state[key]
            if key in before:
                if torch.is_tensor(value):
                    value.copy_(before[key])
                else:
                    state[key] = before[key]
            elif torch.is_tensor(value):
                value.zero_()
            else:
                del state[key]


def bound_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """What a captured step reaches through ``optimizer``: each group's learning-rate tensor, its
    parameters and their state tensors, in a fixed order."""
    out = []
    for group in optimizer.param_groups:
        if torch.is_tensor(group["lr"]):
            out.append(group["lr"])
        for p in group["params"]:
            out.append(p)
            state = optimizer.state.get(p)
            if state:
                out.extend(v for v in state.values() if torch.is_tensor(v))
    return out


def batch_signature(x: torch.Tensor, y: torch.Tensor) -> tuple:
    """Shapes, dtypes and devices of a batch: a graph replays batches of one signature only."""
    return tuple(x.shape), x.dtype, x.device, tuple(y.shape), y.dtype, y.device


@dataclass
class Binding:
    """The optimizer, tensors (held: their addresses cannot be reused while the graph lives) and
    batch signature a graph was captured for."""

    optimizer: torch.optim.Optimizer
    signature: tuple
    tensors: list[torch.Tensor]
    addresses: list[int]

    @classmethod
    def of(cls, optimizer: torch.optim.Optimizer, signature: tuple) -> Binding:
        tensors = bound_tensors(optimizer)
        return cls(optimizer, signature, tensors, [t.data_ptr() for t in tensors])

    def holds(self, optimizer: torch.optim.Optimizer) -> bool:
        """Whether ``optimizer`` still reaches exactly these tensors, at the same addresses."""
        if optimizer is not self.optimizer:
            return False
        now = bound_tensors(optimizer)
        return len(now) == len(self.tensors) and all(
            a is b and a.data_ptr() == addr for a, b, addr in zip(now, self.tensors, self.addresses, strict=True))


def carry_step_count(trainer, manual: bool) -> None:
    """Lightning 2.x keeps one optimizer-step count per optimization mode (``trainer.global_step``
    reads the module's): automatic ``fit_loop.epoch_loop.automatic_optimization.optim_progress
    .optimizer.step``, manual ``...manual_optimization.optim_step_progress`` (which
    ``LightningOptimizer.step`` advances). A fit resumed from a checkpoint written under the other
    mode starts this mode's count where that one stopped, so the step axis goes on."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    if loop is None:
        return
    automatic = loop.automatic_optimization.optim_progress.optimizer.step.total
    own, other = (loop.manual_optimization.optim_step_progress.total, automatic) if manual else \
        (automatic, loop.manual_optimization.optim_step_progress.total)
    if own.completed < other.completed:
        own.ready = own.completed = other.completed


# ---------------------------------------------------------------------------- the shell
class CudaGraphs:
    """How :class:`GraphedStep` warms up, captures and replays: CUDA graphs (``torch.cuda.graph``)."""

    optimizer_options = {"fused": True, "capturable": True}
    capturable = True

    @contextmanager
    def side_stream(self, device: torch.device) -> Iterator[None]:
        """Warm-up steps run on a side stream, as torch's whole-network capture recipe does."""
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            yield
        torch.cuda.current_stream(device).wait_stream(stream)

    def capture(self, step: Callable[[], Outputs], device: torch.device) -> tuple[Any, Outputs]:
        graph = torch.cuda.CUDAGraph()
        # thread_local: another thread's CUDA calls (a DataLoader's pin-memory thread) do not break the capture
        with torch.cuda.device(device), torch.cuda.graph(graph, capture_error_mode="thread_local"):
            outputs = step()
        return graph, outputs

    def replay(self, graph) -> None:
        graph.replay()


@contextmanager
def uncaptured() -> Iterator[None]:
    """A capturable optimizer stepping outside a capture (warm-up, an eager batch): torch warns
    once per optimizer that this is slower, which is expected here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*capturable=True.*", category=UserWarning)
        yield


@dataclass
class _Graph:
    handle: Any
    x: torch.Tensor
    y: torch.Tensor
    outputs: Outputs
    binding: Binding


class GraphedStep:
    """A training step ``compute(x, y) -> {"loss": ..., <more tensors>}`` (forward and loss) with its
    backward and optimizer step, captured as one graph per batch signature and replayed. The
    batch is copied into the graph's static inputs; the graph's outputs are static tensors, valid
    until the next step. One graph is kept: a new signature or a changed binding captures anew
    (and frees the old one).

    Each capture first runs ``warmup`` eager steps (as torch's capture recipe needs: lazy state,
    library handles), then copies the parameters and optimizer state back to what they were (the
    graphed fit equals the eager fit), then captures; the graph's first replay is the batch's step.

    Args:
        warmup: eager steps before a capture (their effect undone).
        backend: how to capture and replay (default :class:`CudaGraphs`).
    """

    def __init__(self, warmup: int = 3, backend=None):
        self.warmup = int(warmup)
        self.backend = backend if backend is not None else CudaGraphs()
        self.captures = 0  # graphs captured so far (each costs the warm-up and a capture)
        self._graph: _Graph | None = None

    def __getstate__(self) -> dict:  # a copied module captures its own graph
        return {**self.__dict__, "_graph": None}

    def reset(self) -> None:
        """Drop the graph (its memory too): the next step captures one."""
        self._graph = None

    @property
    def bound_parameters(self) -> list[torch.Tensor]:
        """The parameters the current graph updates (empty without one)."""
        g = self._graph
        return [] if g is None else [p for group in g.binding.optimizer.param_groups for p in group["params"]]

    def optimizer_options(self) -> dict:
        """Keyword arguments for the Adam this step replays (fused, capturable)."""
        return dict(self.backend.optimizer_options)

    def prepare(self, optimizer: torch.optim.Optimizer) -> None:
        """Make ``optimizer`` what a capture needs (:func:`make_capturable`) and drop the graph."""
        make_capturable(optimizer, self.backend.capturable)
        self.reset()

    def step(self, lightning_optimizer, compute: Callable[[torch.Tensor, torch.Tensor], Outputs],
             x: torch.Tensor, y: torch.Tensor, first: bool) -> Outputs | None:
        """The step on batch (x, y) as a replay, counted by Lightning as one optimizer step; None
        when the batch should run eagerly (:meth:`eager_step`): a batch of another signature than
        the graph's that is not the first of its epoch (the last, smaller batch of an epoch)."""
        optimizer = lightning_optimizer.optimizer
        signature = batch_signature(x, y)
        g = self._graph
        if g is not None and g.binding.signature == signature and g.binding.holds(optimizer):
            g.x.copy_(x)
            g.y.copy_(y)
        elif not first and g is not None and g.binding.signature != signature:
            return None
        else:
            g = self._capture(optimizer, compute, x, y, signature)
        # LightningOptimizer.step's own bookkeeping (Lightning 2.x: the manual loop's step count and
        # profiler), around the replay instead of an eager optimizer.step()
        lightning_optimizer._on_before_step()
        self.backend.replay(g.handle)
        lightning_optimizer._on_after_step()
        return g.outputs

    @staticmethod
    def eager_step(lightning_optimizer, loss: torch.Tensor, backward: Callable[[torch.Tensor], None]) -> None:
        """A step outside the graph on the same optimizer (its gradients zeroed in place: they are
        the graph's), through Lightning (``backward``: the module's ``manual_backward``)."""
        lightning_optimizer.optimizer.zero_grad(set_to_none=False)
        backward(loss)
        with uncaptured():
            lightning_optimizer.step()

    def _capture(self, optimizer, compute, x, y, signature) -> _Graph:
        self._graph = None  # the old graph's memory goes before the new one is taken
        make_capturable(optimizer, self.backend.capturable)
        static_x, static_y = x.clone(), y.clone()

        def whole_step() -> Outputs:
            optimizer.zero_grad(set_to_none=False)  # nothing while capturing (no gradients yet): the captured backward writes them
            out = compute(static_x, static_y)
            out["loss"].backward()
            optimizer.step()
            return {k: v.detach() for k, v in out.items()}

        saved = snapshot(optimizer)
        with self.backend.side_stream(x.device) if self.warmup else nullcontext(), uncaptured():
            for _ in range(self.warmup):
                whole_step()
        restore(saved, optimizer)
        del saved
        optimizer.zero_grad(set_to_none=True)  # the captured backward allocates the gradients in the graph's memory
        handle, outputs = self.backend.capture(whole_step, x.device)
        self._graph = _Graph(handle, static_x, static_y, outputs, Binding.of(optimizer, signature))
        self.captures += 1
        return self._graph

"""A plain ``nn.Sequential`` ReLU MLP as a reducible block, written back as a plain
``nn.Sequential`` of the same layers with fewer units.

Accepted layers (nested Sequentials too): ``Linear``, ``ReLU``, ``BatchNorm1d`` (with running
statistics: folded into the Linear before it, or after a ReLU into the Linear after it; replaced
by ``nn.Identity`` so the layer indices stay), dropout layers (kept: identity at evaluation) and
``Identity``. Between two ReLUs sit one Linear, or two (a linear bottleneck, kept as two).

The Deep Stack Network form has one stack per ReLU layer, skip ``none``. Where one Linear joins
ReLU layer j to ReLU layer j + 1, stack j's outgoing map is ``diag(g)`` with ``g`` the column
norms of that Linear, and stack j + 1 reads the Linear with its columns divided by ``g``: the
same function, and every neuron's outgoing weight ``|w_k|`` is its real outgoing strength, so
the weak-neuron scores and the k-means weights mean what they mean in a Deep Stack Network. The
write-back multiplies the two back into one Linear.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.dropout import _DropoutNd

from ..model import DeepStackNetwork
from ..reduction.core import StackWeights
from ..reduction.stacks import build_network, stack_weights
from .base import Block, BlockError, bare_linear, set_child

Affine = tuple[torch.Tensor, torch.Tensor]  # (weight (out, in), bias (out,)), float64


def leaves(seq: nn.Sequential, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """(dotted path, layer) of every layer, nested Sequentials flattened (paths as
    ``named_modules`` gives them)."""
    out = []
    for name, child in seq.named_children():
        path = f"{prefix}{name}"
        if isinstance(child, nn.Sequential):
            _check_plain(child, path)
            out.extend(leaves(child, f"{path}."))
        else:
            out.append((path, child))
    return out


def _check_plain(seq: nn.Module, where: str) -> None:
    if type(seq).forward is not nn.Sequential.forward:
        raise BlockError(f"{where} ({type(seq).__name__}) overrides nn.Sequential's forward, so its layers do not simply "
                         "run in order; reduce an nn.Sequential whose forward is the standard one")


def _bn_affine(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm1d as ``a * h + c`` (float64)."""
    a = 1.0 / torch.sqrt(bn.running_var.double() + bn.eps)
    c = -bn.running_mean.double() * a
    if bn.affine:
        a, c = a * bn.weight.detach().double(), c * bn.weight.detach().double() + bn.bias.detach().double()
    return a, c


@dataclass
class _Linear:
    path: str
    weight: torch.Tensor  # (out, in) float64, BatchNorms folded in
    bias: torch.Tensor  # (out,) float64
    had_bias: bool
    folded: list[str] = field(default_factory=list)  # BatchNorm paths folded into it


def _parse(seq: nn.Sequential, name: str) -> tuple[list[list[_Linear]], list[str]]:
    """Runs of Linears between the ReLUs (BatchNorms folded) and the BatchNorm paths."""
    ops: list[_Linear | str] = []  # a _Linear or "relu"
    pending: tuple[torch.Tensor, torch.Tensor, list[str]] | None = None  # a BatchNorm waiting for the next Linear
    bns = []
    for path, layer in leaves(seq):
        where = f"{name}.{path}" if name else path
        if isinstance(layer, nn.Linear):
            if isinstance(layer.weight, nn.parameter.UninitializedParameter):
                raise BlockError(f"layer {where} (Linear) is not initialized: run one forward pass first")
            W = layer.weight.detach().double()
            b = layer.bias.detach().double() if layer.bias is not None else W.new_zeros(W.shape[0])
            lin = _Linear(path, W, b, layer.bias is not None)
            if pending is not None:  # h -> a h + c, then this Linear
                a, c, paths = pending
                lin.weight, lin.bias, lin.folded = W * a[None, :], W @ c + b, paths
                pending = None
            ops.append(lin)
        elif isinstance(layer, nn.ReLU):
            if pending is not None:
                raise BlockError(f"layer {where} (ReLU) follows BatchNorm1d {pending[2][-1]} with no Linear between: "
                                 "move the BatchNorm1d next to a Linear")
            if not ops or ops[-1] != "relu":  # two ReLUs in a row act as one
                ops.append("relu")
        elif isinstance(layer, nn.BatchNorm1d):
            if layer.running_mean is None or layer.running_var is None:
                raise BlockError(f"layer {where} (BatchNorm1d) keeps no running statistics (track_running_stats=False), so "
                                 "it is not a fixed affine map at evaluation and cannot be folded")
            a, c = _bn_affine(layer)
            bns.append(path)
            if ops and isinstance(ops[-1], _Linear) and pending is None:  # Linear -> BatchNorm: fold into it
                lin = ops[-1]
                lin.weight, lin.bias = lin.weight * a[:, None], lin.bias * a + c
                lin.folded.append(path)
            elif pending is not None:  # BatchNorm -> BatchNorm
                a0, c0, paths = pending
                pending = (a0 * a, c0 * a + c, paths + [path])
            else:  # at the start or after a ReLU: into the next Linear
                pending = (a, c, [path])
        elif isinstance(layer, (_DropoutNd, nn.Identity)):
            continue
        else:
            raise BlockError(f"layer {where} ({type(layer).__name__}) is not supported in a reducible nn.Sequential: it takes "
                             "Linear, ReLU, BatchNorm1d, Dropout and Identity layers; reduce a part of the model that is a "
                             "ReLU MLP (name it with modules=[...])")
    if pending is not None:
        raise BlockError(f"{name or 'the Sequential'} ends with BatchNorm1d {pending[2][-1]}: end with a Linear output layer")
    if not ops or ops[0] == "relu":
        raise BlockError(f"{name or 'the Sequential'} does not start with a Linear layer")
    if ops[-1] == "relu":
        raise BlockError(f"{name or 'the Sequential'} ends with a ReLU: end with a Linear output layer")
    runs: list[list[_Linear]] = [[]]
    for op in ops:
        if op == "relu":
            runs.append([])
        else:
            runs[-1].append(op)
    if len(runs) < 2:
        raise BlockError(f"{name or 'the Sequential'} has no ReLU, so it is one affine map: nothing to reduce")
    for i, run in enumerate(runs):
        limit = 2 if 0 < i < len(runs) - 1 else 1
        if len(run) > limit:
            paths = ", ".join(lin.path for lin in run)
            where = "before the first ReLU" if i == 0 else "after the last ReLU" if i == len(runs) - 1 else "between two ReLUs"
            raise BlockError(f"{name or 'the Sequential'}: layers {paths} are {len(run)} Linear layers in a row {where}; a "
                             f"reducible MLP has {'one or two' if limit == 2 else 'one'} there: compose them into one")
    for a, b in zip([lin for run in runs for lin in run], [lin for run in runs for lin in run][1:], strict=False):
        if a.weight.shape[0] != b.weight.shape[1]:
            raise BlockError(f"layer {a.path} has {a.weight.shape[0]} outputs but layer {b.path} takes {b.weight.shape[1]} inputs")
    return runs, bns


class SequentialBlock(Block):
    """A plain ReLU MLP ``nn.Sequential``; the reduction keeps it plain (no skip path added)."""

    kind = "sequential"
    allow_skip = False

    def __init__(self, module: nn.Module, name: str):
        if not isinstance(module, nn.Sequential):
            raise BlockError(f"{name} is a {type(module).__name__}, not an nn.Sequential")
        _check_plain(module, name or "the Sequential")
        super().__init__(module, name)
        self.runs, self.bns = _parse(module, name)
        ref = next(p for p in module.parameters())
        self.dtype, self.device = ref.dtype, ref.device
        for run in self.runs:
            for lin in run:
                if lin.folded:
                    self.notes.append(f"BatchNorm1d {', '.join(lin.folded)} folded into Linear {lin.path} (now nn.Identity)")

    # ------------------------------------------------------------------ to the Deep Stack Network form
    def network(self) -> DeepStackNetwork:
        runs = self.runs
        J = len(runs) - 1
        Vs: list[tuple[torch.Tensor, torch.Tensor]] = [(runs[0][0].weight, runs[0][0].bias)]
        Ws: list[tuple[torch.Tensor, torch.Tensor]] = []
        for j in range(1, J):
            run = runs[j]
            if len(run) == 2:
                Ws.append((run[0].weight, run[0].bias))
                Vs.append((run[1].weight, run[1].bias))
            else:  # one Linear: diag(g) out of layer j, the Linear's columns / g into layer j + 1
                L = run[0]
                g = L.weight.norm(dim=0)
                safe = torch.where(g > 0, g, torch.ones_like(g))
                Ws.append((torch.diag(g), torch.zeros_like(g)))
                Vs.append((L.weight / safe[None, :], L.bias))
        Ws.append((runs[J][0].weight, runs[J][0].bias))
        stacks = [StackWeights(V.to(self.device, self.dtype), b.to(self.device, self.dtype), W.to(self.device, self.dtype),
                               c.to(self.device, self.dtype), skip="none") for (V, b), (W, c) in zip(Vs, Ws, strict=True)]
        return build_network(stacks)

    # ------------------------------------------------------------------ back to the user's form
    def linears(self, stacks: list[StackWeights]) -> list[tuple[_Linear, torch.Tensor, torch.Tensor]]:
        """(original Linear, new weight, new bias) for every Linear of the block, from ``stacks``."""
        bad = [j + 1 for j, st in enumerate(stacks) if st.skip != "none"]
        if bad:
            raise BlockError(f"stacks {bad} have a skip path, which a plain nn.Sequential cannot hold")
        s = [st.to(torch.float64) for st in stacks]
        runs, J = self.runs, len(self.runs) - 1
        out = [(runs[0][0], s[0].V, s[0].b)]
        for j in range(1, J):
            run = runs[j]
            if len(run) == 2:
                out += [(run[0], s[j - 1].W, s[j - 1].c), (run[1], s[j].V, s[j].b)]
            else:
                out.append((run[0], s[j].V @ s[j - 1].W, s[j].V @ s[j - 1].c + s[j].b))
        out.append((runs[J][0], s[J - 1].W, s[J - 1].c))
        return out

    @staticmethod
    def _keeps_bias(lin: _Linear, bias: torch.Tensor) -> bool:
        return lin.had_bias or bool((bias != 0).any())

    def count(self, stacks: list[StackWeights]) -> int:
        return sum(w.numel() + (b.numel() if self._keeps_bias(lin, b) else 0) for lin, w, b in self.linears(stacks))

    def write_back(self, net: DeepStackNetwork) -> nn.Module:
        new = copy.deepcopy(self.module)
        for lin, w, b in self.linears(stack_weights(net)):
            layer = bare_linear(w.to(self.device, self.dtype).contiguous(),
                                b.to(self.device, self.dtype).contiguous() if self._keeps_bias(lin, b) else None)
            set_child(new, lin.path, layer)
        for path in self.bns:
            set_child(new, path, nn.Identity())
        return new

    def unit_maps(self, kept_ids: list[list[int]]) -> dict[str, list[tuple[int, list[int]]]]:
        runs, J = self.runs, len(self.runs) - 1
        rows: dict[str, int] = {runs[0][0].path: 0}  # Linear path -> 0-based hidden layer of its outputs
        cols: dict[str, int] = {runs[J][0].path: J - 1}  # Linear path -> hidden layer of its inputs
        for j in range(1, J):
            rows[runs[j][-1].path] = j
            cols[runs[j][0].path] = j - 1
        out: dict[str, list[tuple[int, list[int]]]] = {}
        for path in {*rows, *cols}:
            maps = ([(0, kept_ids[rows[path]])] if path in rows else []) + ([(1, kept_ids[cols[path]])] if path in cols else [])
            out[f"{path}.weight"] = maps
            if path in rows:
                out[f"{path}.bias"] = [(0, kept_ids[rows[path]])]
        return out

    # ------------------------------------------------------------------ checkpoints
    @staticmethod
    def architecture(module: nn.Module) -> dict:
        return {"kind": SequentialBlock.kind, "layers": _spec(module)}

    @staticmethod
    def build(arch: dict, like: nn.Module | None = None) -> nn.Module:
        """A module of ``arch``'s shapes: ``like`` (the user's own Sequential) with its layers
        replaced where they differ, so its class and attributes stay; else a new Sequential."""
        spec = arch["layers"]
        if isinstance(like, nn.Sequential) and [n for n, _ in like.named_children()] == [n for n, _ in spec["children"]]:
            _reshape(like, spec)
            return like
        return _make(spec)


def _spec(module: nn.Module) -> dict:
    if isinstance(module, nn.Sequential):
        return {"type": "Sequential", "children": [[name, _spec(child)] for name, child in module.named_children()]}
    if isinstance(module, nn.Linear):
        return {"type": "Linear", "in": module.in_features, "out": module.out_features, "bias": module.bias is not None}
    if isinstance(module, nn.ReLU):
        return {"type": "ReLU", "inplace": bool(module.inplace)}
    if isinstance(module, _DropoutNd):
        return {"type": type(module).__name__, "p": float(module.p), "inplace": bool(module.inplace)}
    if isinstance(module, nn.BatchNorm1d):
        return {"type": "BatchNorm1d", "num_features": module.num_features, "eps": module.eps, "momentum": module.momentum,
                "affine": module.affine, "track_running_stats": module.track_running_stats}
    if isinstance(module, nn.Identity):
        return {"type": "Identity"}
    raise BlockError(f"cannot record a {type(module).__name__} layer in a checkpoint's architecture")


DROPOUTS = {cls.__name__: cls for cls in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)}


def _make(spec: dict) -> nn.Module:
    kind = spec.get("type")
    if kind == "Sequential":
        seq = nn.Sequential()
        for name, child in spec["children"]:
            seq.add_module(name, _make(child))
        return seq
    if kind == "Linear":  # no random init: the weights are loaded next (and a width of 0 has none to draw)
        d_in, d_out = int(spec["in"]), int(spec["out"])
        return bare_linear(torch.zeros(d_out, d_in), torch.zeros(d_out) if spec["bias"] else None)
    if kind == "ReLU":
        return nn.ReLU(inplace=bool(spec["inplace"]))
    if kind in DROPOUTS:
        return DROPOUTS[kind](p=float(spec["p"]), inplace=bool(spec["inplace"]))
    if kind == "BatchNorm1d":
        return nn.BatchNorm1d(int(spec["num_features"]), eps=spec["eps"], momentum=spec["momentum"], affine=spec["affine"],
                              track_running_stats=spec["track_running_stats"])
    if kind == "Identity":
        return nn.Identity()
    raise BlockError(f"unknown layer type {kind!r} in a checkpoint's architecture")


def _reshape(seq: nn.Sequential, spec: dict) -> None:
    """Make ``seq``'s layers match ``spec`` in place (a layer whose spec differs is rebuilt)."""
    for (name, child), (_, sub) in zip(seq.named_children(), spec["children"], strict=True):
        if sub["type"] == "Sequential" and isinstance(child, nn.Sequential) and \
                [n for n, _ in child.named_children()] == [n for n, _ in sub["children"]]:
            _reshape(child, sub)
        elif sub["type"] == "Sequential" or _spec(child) != sub:
            seq.add_module(name, _make(sub))  # replaces the child of that name in place

"""The Deep Stack Network (SPEC section 1) as a plain ``nn.Module``.

Stack j maps z_{j-1} (dim d_{j-1}) to z_j (dim d_j):

    z_j = W_j relu(V_j z_{j-1} + b_j) + c_j + skip_j(z_{j-1})

with ``skip_j`` one of: ``affine`` (A2_j A1_j, inner width m_j = min(d_{j-1}, d_j), no bias),
``direct`` (one matrix S_j) or ``none`` (a plain ReLU network with linear bottlenecks).
Parameter names follow the SPEC: ``V`` (weight V, bias b), ``W`` (weight W, bias c), ``A1``,
``A2`` or ``S``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

SKIPS = ("affine", "direct", "none")
VARIANT_SKIP = {"stack": "affine", "simplified": "direct", "plain": "none"}


class Stack(nn.Module):
    """One stack: wide ReLU layer -> linear bottleneck, plus an optional skip path.

    Args:
        d_in: input width d_{j-1}.
        n: ReLU width n_j (0 allowed: the stack is then purely affine).
        d_out: bottleneck (output) width d_j.
        skip: ``affine``, ``direct`` or ``none``.
    """

    def __init__(self, d_in: int, n: int, d_out: int, skip: str = "affine"):
        super().__init__()
        if skip not in SKIPS:
            raise ValueError(f"skip='{skip}' is not one of: {', '.join(SKIPS)}")
        if d_in < 1 or d_out < 1 or n < 0:
            raise ValueError(f"need d_in >= 1, d_out >= 1, n >= 0; got d_in={d_in}, n={n}, d_out={d_out}")
        self.d_in, self.n, self.d_out, self.skip = d_in, n, d_out, skip
        self.V = nn.Linear(d_in, n)  # weight (n, d_in), bias b (n,)
        self.W = nn.Linear(n, d_out)  # weight (d_out, n), bias c (d_out,)
        if skip == "affine":
            m = min(d_in, d_out)
            self.A1 = nn.Linear(d_in, m, bias=False)  # (m, d_in)
            self.A2 = nn.Linear(m, d_out, bias=False)  # (d_out, m)
        elif skip == "direct":
            self.S = nn.Linear(d_in, d_out, bias=False)  # (d_out, d_in)

    def preactivation(self, z: torch.Tensor) -> torch.Tensor:
        """h = V z + b for a batch z of shape (B, d_in); returns (B, n)."""
        return self.V(z)

    def affine(self, z: torch.Tensor) -> torch.Tensor:
        """The skip path alone, (B, d_in) -> (B, d_out); zeros for ``none``."""
        if self.skip == "affine":
            return self.A2(self.A1(z))
        if self.skip == "direct":
            return self.S(z)
        return z.new_zeros(z.shape[0], self.d_out)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, d_in) -> (B, d_out)
        out = self.W(torch.relu(self.V(z)))
        if self.skip != "none":
            out = out + self.affine(z)
        return out

    def nonlinear_parameters(self) -> list[nn.Parameter]:
        """V, b, W: the weights under the non-linear l2 coefficient."""
        return [self.V.weight, self.V.bias, self.W.weight]

    def affine_parameters(self) -> list[nn.Parameter]:
        """A1, A2 or S: the weights under the affine l2 coefficient and LR multiplier."""
        if self.skip == "affine":
            return [self.A1.weight, self.A2.weight]
        if self.skip == "direct":
            return [self.S.weight]
        return []

    def bias_parameters(self) -> list[nn.Parameter]:
        """The bottleneck bias c: never regularized."""
        return [self.W.bias]


class DeepStackNetwork(nn.Module):
    """A sequence of stacks, ``input_dim -> dims[0] -> ... -> dims[-1]``.

    Args:
        input_dim: d_0.
        widths: ReLU widths n_1..n_J.
        dims: bottleneck widths d_1..d_J (d_J is the output dimension).
        skips: per stack ``affine``/``direct``/``none``, or one of them for all stacks.
    """

    def __init__(self, input_dim: int, widths: Sequence[int], dims: Sequence[int], skips: str | Sequence[str] = "affine"):
        super().__init__()
        widths, dims = [int(n) for n in widths], [int(d) for d in dims]
        if len(widths) != len(dims) or not widths:
            raise ValueError(f"need one bottleneck width per stack: widths={widths}, dims={dims}")
        if isinstance(skips, str):
            skips = [skips] * len(widths)
        if len(skips) != len(widths):
            raise ValueError(f"need one skip kind per stack: got {list(skips)} for {len(widths)} stacks")
        ins = [int(input_dim)] + dims[:-1]
        self.stacks = nn.ModuleList(Stack(i, n, o, s) for i, n, o, s in zip(ins, widths, dims, skips, strict=True))

    @classmethod
    def from_variant(cls, input_dim: int, widths: Sequence[int], hidden_dims: Sequence[int], output_dim: int, variant: str = "stack") -> DeepStackNetwork:
        """Build from a config-style description (``variant``: stack / simplified / plain)."""
        if variant not in VARIANT_SKIP:
            raise ValueError(f"variant='{variant}' is not one of: {', '.join(VARIANT_SKIP)}")
        return cls(input_dim, widths, list(hidden_dims) + [output_dim], VARIANT_SKIP[variant])

    @classmethod
    def from_architecture(cls, arch: dict) -> DeepStackNetwork:
        """Inverse of :meth:`architecture`."""
        missing = {"input_dim", "widths", "dims", "skips"} - set(arch)
        if missing:
            raise ValueError(f"architecture is missing keys: {sorted(missing)}")
        return cls(arch["input_dim"], arch["widths"], arch["dims"], arch["skips"])

    def architecture(self) -> dict:
        """All shapes needed to rebuild the network (saved in checkpoints)."""
        return {
            "input_dim": self.stacks[0].d_in,
            "widths": [s.n for s in self.stacks],
            "dims": [s.d_out for s in self.stacks],
            "skips": [s.skip for s in self.stacks],
        }

    @property
    def input_dim(self) -> int:
        return self.stacks[0].d_in

    @property
    def output_dim(self) -> int:
        return self.stacks[-1].d_out

    @property
    def widths(self) -> list[int]:
        return [s.n for s in self.stacks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, d_0) -> (B, d_J)
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"expected input of shape (batch, {self.input_dim}), got {tuple(x.shape)}")
        for stack in self.stacks:
            x = stack(x)
        return x

    def forward_from(self, z: torch.Tensor, start: int) -> torch.Tensor:
        """Run stacks ``start..J-1`` (0-based) on z_{start}; ``start=0`` is :meth:`forward`."""
        for stack in self.stacks[start:]:
            z = stack(z)
        return z

    def num_parameters(self, nonzero: bool = False) -> int:
        """Parameter count; with ``nonzero`` only the entries != 0 (the compression accounting)."""
        if nonzero:
            return int(sum((p != 0).sum().item() for p in self.parameters()))
        return int(sum(p.numel() for p in self.parameters()))

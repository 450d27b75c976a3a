"""Layer sparsity (Hebiri & Lederer; SPEC section 4) for the stacks' ReLU layers.

A ReLU layer whose weights and bias are all >= 0 and whose input is >= 0 acts as the identity:
``relu(V z + b) = V z + b``, so the stack is affine and folds into its skip path exactly (its
neurons all become always active; :func:`merge_identity_layers` uses the same exact fold as the
Reduction Algorithm's step 1, leaving a stack of width 0). The regularizer pushes layers there:

    h_L = sum_j r_j |min([V_j, b_j], 0)|_F

with prox (step size t): keep the positive part, shrink the negative part N by
``(1 - t r_j / |N|_F)_+``. After merging, "refit": retrain the shallower network without the
penalty (a second round with ``layer_sparsity.penalties`` off, or ``init_from``).
"""

from __future__ import annotations

import torch

from ..reduction.core import StackWeights, fold_always_active
from .prox import StackProxCallback


def negative_part_prox(theta: torch.Tensor, t: float, r: float) -> torch.Tensor:
    """Prox of ``t r |min(theta, 0)|_F``: positive entries kept, the negative part shrunk as a group."""
    if t < 0 or r < 0:
        raise ValueError(f"need t >= 0 and r >= 0, got t={t}, r={r}")
    neg = theta.clamp_max(0)
    norm = neg.norm()
    if norm == 0:
        return theta.clone()
    return theta.clamp_min(0) + torch.clamp(1 - t * r / norm, min=0) * neg


def is_identity_layer(st: StackWeights, inputs_nonnegative: bool) -> bool:
    """``relu(V z + b) == V z + b`` for every admissible input: V >= 0, b >= 0 and z >= 0."""
    return inputs_nonnegative and bool((st.V >= 0).all()) and bool((st.b >= 0).all())


def merge_identity_layers(stacks: list[StackWeights], input_nonnegative: bool) -> tuple[list[StackWeights], list[bool]]:
    """Fold every identity-acting ReLU layer into its stack's affine path (exact on inputs >= 0).

    Only stack 1 can see non-negative inputs by construction (``input_nonnegative``, e.g. pixels
    in [0, 1]); later stacks read linear bottlenecks, whose sign is not guaranteed (use the
    stable-units method to certify those on a domain).
    """
    out, merged = [], []
    for j, st in enumerate(stacks):
        ident = is_identity_layer(st, input_nonnegative and j == 0) and st.n > 0
        out.append(fold_always_active(st, torch.ones(st.n, dtype=torch.bool, device=st.V.device)) if ident else st)
        merged.append(ident)
    return out, merged


class LayerSparsityCallback(StackProxCallback):
    """Apply the negative-part prox to each stack's [V, b] after every optimizer step.

    Args:
        penalties: r_j per stack (one value = all stacks; 0 = leave that stack alone).
        start_epoch: no prox before this epoch.
    """

    def __init__(self, penalties, start_epoch: int = 0):
        super().__init__(penalties, start_epoch, name="layer sparsity")

    def prox_stack(self, stack, t: float, coef: float) -> None:
        theta = torch.cat([stack.V.weight, stack.V.bias[:, None]], 1)
        new = negative_part_prox(theta, t, coef)
        stack.V.weight.copy_(new[:, :-1])
        stack.V.bias.copy_(new[:, -1])

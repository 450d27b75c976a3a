"""Group sparsity (Alvarez & Salzmann; SPEC section 4) for the stacks' ReLU layers.

Groups are each ReLU neuron's incoming parameters ``theta_k = [v_k, b_k]`` (P = d_in + 1; or
``v_k`` alone, P = d_in, with ``include_bias=False``). The sparse group lasso of layer l is

    r_l(theta) = (1 - a) lam_l sqrt(P) sum_k |theta_k|_2 + a lam_l |theta|_1

and is applied by its proximal operator after every optimizer step with step size t::

    theta_k <- (1 - t (1 - a) lam_l sqrt(P) / |S(theta_k, t a lam_l)|)_+ S(theta_k, t a lam_l)

with the soft threshold ``S(z, tau)_i = sign(z_i) max(|z_i| - tau, 0)``. A group whose
soft-thresholded norm is <= ``t (1 - a) lam_l sqrt(P)`` becomes exactly zero: that neuron outputs
relu(0) = 0 (or the constant relu(b_k) when the bias is outside the group) and is removed exactly
by :func:`remove_zeroed_neurons`.
"""

from __future__ import annotations

import math

import torch

from ..reduction.core import StackWeights, fold_constant_neurons
from .prox import StackProxCallback


def soft_threshold(z: torch.Tensor, tau: float) -> torch.Tensor:
    """``sign(z) * max(|z| - tau, 0)`` elementwise."""
    return torch.sign(z) * torch.clamp(z.abs() - tau, min=0)


def sparse_group_lasso_prox(theta: torch.Tensor, t: float, lam: float, alpha: float) -> torch.Tensor:
    """Prox of ``t * r`` for groups = rows of ``theta`` (n, P); returns the new (n, P)."""
    if lam < 0 or t < 0 or not 0 <= alpha <= 1:
        raise ValueError(f"need lam >= 0, t >= 0 and alpha in [0, 1]; got lam={lam}, t={t}, alpha={alpha}")
    s = soft_threshold(theta, t * alpha * lam)
    norm = s.norm(dim=1, keepdim=True)
    shrink = t * (1 - alpha) * lam * math.sqrt(theta.shape[1])
    scale = torch.clamp(1 - shrink / norm.clamp_min(1e-30), min=0)
    return torch.where(norm > 0, scale * s, torch.zeros_like(s))


def group_lasso_penalty(theta: torch.Tensor, lam: float, alpha: float) -> torch.Tensor:
    """``r_l(theta)`` for groups = rows of ``theta`` (n, P)."""
    P = theta.shape[1]
    return (1 - alpha) * lam * math.sqrt(P) * theta.norm(dim=1).sum() + alpha * lam * theta.abs().sum()


def remove_zeroed_neurons(st: StackWeights) -> tuple[StackWeights, int]:
    """Delete neurons whose incoming weights are all zero (folding a constant relu(b) w into c):
    exact for every input."""
    return fold_constant_neurons(st)


class GroupSparsityCallback(StackProxCallback):
    """Apply the sparse-group-lasso prox to every stack's ReLU layer after each optimizer step.

    Args:
        lambdas: lam_l per stack (one value = the same for all stacks).
        alpha: the l1 share a in [0, 1] (0 = plain group lasso).
        include_bias: the bias b_k is part of neuron k's group.
        start_epoch: no prox before this epoch (the paper's unregularized warm-up).
    """

    def __init__(self, lambdas, alpha: float = 0.0, include_bias: bool = True, start_epoch: int = 0):
        super().__init__(lambdas, start_epoch, name="group sparsity")
        if not 0 <= alpha <= 1:
            raise ValueError(f"group sparsity needs alpha in [0, 1], got {alpha}")
        self.alpha, self.include_bias = float(alpha), include_bias

    def prox_stack(self, stack, t: float, coef: float) -> None:
        V, b = stack.V.weight, stack.V.bias
        theta = torch.cat([V, b[:, None]], 1) if self.include_bias else V
        new = sparse_group_lasso_prox(theta, t, coef, self.alpha)
        V.copy_(new[:, : V.shape[1]])
        if self.include_bias:
            b.copy_(new[:, -1])

    def zero_groups(self, pl_module) -> list[int]:
        """Neurons per stack whose group is exactly zero now."""
        return [int((s.V.weight.abs().sum(1) == 0).sum()) for s in pl_module.net.stacks]

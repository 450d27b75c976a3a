"""The synthetic composite sine (the embedded default data set)."""

from __future__ import annotations

import math

import torch

from .tensors import TensorDataModule


def composite_sine(x: torch.Tensor) -> torch.Tensor:
    """The paper's f: R -> R^7, ``f(x) = (f_i(sin 3 pi x))_i`` (SPEC section 3).

    f_i: one-kink ReLU, |.|, square, sign, cube, sine, exp. ``x`` (N, 1) -> (N, 7).
    """
    t = torch.sin(3 * math.pi * x)
    return torch.cat([torch.relu(t), t.abs(), t**2, torch.sign(t), t**3, torch.sin(math.pi * t), torch.exp(t)], dim=1)


class SineDataModule(TensorDataModule):
    """Composite sine with N(0, noise^2) label noise on x ~ U[x_min, x_max]; seeded splits."""

    task = "regression"
    input_dim = 1
    output_dim = 7

    def load(self):
        from ..resources import check_bytes

        c = self.cfg
        rows = c.n_train + c.n_val + c.n_test
        check_bytes(rows * (self.input_dim + self.output_dim) * 4 * 3, f"data.n_train/n_val/n_test={c.n_train}/{c.n_val}/{c.n_test}",
                    "use fewer points")  # x, y and the temporaries that build them, float32
        g = torch.Generator().manual_seed(12345 + self.seed)
        out = {}
        for name, n in (("train", self.cfg.n_train), ("val", self.cfg.n_val), ("test", self.cfg.n_test)):
            x = self.cfg.x_min + (self.cfg.x_max - self.cfg.x_min) * torch.rand(n, 1, generator=g)
            y = composite_sine(x) + self.cfg.noise * torch.randn(n, 7, generator=g)
            out[name] = (x, y)
        return out


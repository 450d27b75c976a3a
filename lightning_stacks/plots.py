"""Figures like the paper's figs. 6-7 for networks with 1-D bottlenecks (the composite sine).

For each stack j: the function the stack learned, z_j against its own input z_{j-1} (green), the
composition so far, z_j against x (red), and every ReLU neuron as a point at its kink position
``xi_k = -b_k / v_k`` with height ``w_k |v_k|`` (its contribution: the change of slope it adds).
The last stack has one panel per output. matplotlib is imported lazily, with the Agg backend.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from .model import DeepStackNetwork

OUTPUT_NAMES = ("one kink", "|.|", "square", "sign", "cube", "sine", "exp")


@torch.no_grad()
def plot_stacks(net: DeepStackNetwork, x: torch.Tensor, path: str | Path, title: str = "") -> Path:
    """Draw ``net``'s stacks over the inputs ``x`` (N, 1) and save a PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if net.input_dim != 1 or any(s.d_in != 1 for s in net.stacks):
        raise ValueError(f"plots need 1-D stack inputs (every bottleneck of width 1), got dims {net.architecture()['dims']}")
    net = copy.deepcopy(net).cpu().double().eval()  # never touch the caller's module
    xs = torch.sort(x.double().flatten()).values[:, None]
    J, outs = len(net.stacks), net.stacks[-1].d_out
    cols = max(outs, 2 * (J - 1), 1)
    fig = plt.figure(figsize=(2.6 * cols, 8.5))
    grid = fig.add_gridspec(3, cols)

    def local_panel(ax, stack, grid_in, o, label):
        V, b, W = stack.V.weight[:, 0], stack.V.bias, stack.W.weight
        keep = V.abs() > 0
        xi, contrib = -b[keep] / V[keep], (W[:, keep] * V[keep].abs())[o]
        inside = (xi >= grid_in.min()) & (xi <= grid_in.max())
        ax.plot(grid_in[:, 0], stack(grid_in)[:, o], color="green", lw=1.5)
        ax2 = ax.twinx()
        ax2.scatter(xi[inside], contrib[inside], s=10, color="goldenrod")
        ax2.axhline(0, color="grey", lw=0.5)
        ax2.tick_params(labelsize=6, colors="goldenrod")
        ax.set_title(f"{label} ({int(inside.sum())} kinks in range)", fontsize=7)
        ax.tick_params(labelsize=6)

    z = xs
    for j, stack in enumerate(net.stacks):
        zin, z = z, stack(z)
        grid_in = torch.linspace(float(zin.min()), float(zin.max()), 400, dtype=torch.float64)[:, None]
        if j < J - 1:  # hidden stack: its own function and kinks, then the composition so far
            local_panel(fig.add_subplot(grid[0, j]), stack, grid_in, 0, f"stack {j + 1}: z{j + 1}(z{j}), n={stack.n}")
            ax = fig.add_subplot(grid[0, J - 1 + j])
            ax.plot(xs[:, 0], z[:, 0], color="red", lw=1.2)
            ax.set_title(f"composition z{j + 1}(x)", fontsize=7)
            ax.tick_params(labelsize=6)
        else:
            for o in range(outs):
                name = OUTPUT_NAMES[o] if outs == len(OUTPUT_NAMES) else f"output {o + 1}"
                local_panel(fig.add_subplot(grid[1, o]), stack, grid_in, o, f"stack {J}: {name}, n={stack.n}")
                ax = fig.add_subplot(grid[2, o])
                ax.plot(xs[:, 0], z[:, o], color="red", lw=1.2, label="network")
                if outs == len(OUTPUT_NAMES):
                    from .data import composite_sine

                    ax.plot(xs[:, 0], composite_sine(xs)[:, o], color="black", lw=0.6, label="f")
                ax.set_title(f"{name}(sin 3 pi x)", fontsize=7)
                ax.tick_params(labelsize=6)
    fig.suptitle(title or f"widths {net.widths}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

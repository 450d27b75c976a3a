"""Random translations of flattened images (``augment.*``): training-time input augmentation.

Beyond the paper. A small network reduced from a wide one fits its training set exactly after
fine-tuning; moving each training image by a pixel or two gives it inputs it has not seen, which
is the usual cure for that on image data (Simard et al. 2003 for MLPs on MNIST).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import ConfigError


def image_layout(shape, input_dim: int) -> tuple[int, int, int]:
    """(C, H, W) of ``shape`` ([H, W] or [C, H, W]); ConfigError unless C*H*W == ``input_dim``."""
    shape = [int(n) for n in shape]
    if len(shape) not in (2, 3) or any(n < 1 for n in shape):
        raise ConfigError(f"augment.image_shape must be [H, W] or [C, H, W] of positive sizes, got {shape}")
    c, h, w = ([1] + shape) if len(shape) == 2 else shape
    if c * h * w != input_dim:
        raise ConfigError(f"augment.image_shape {shape} holds {c * h * w} values but the network takes {input_dim} inputs")
    return c, h, w


def random_shift(x: torch.Tensor, layout: tuple[int, int, int], shift: int, fill: float = 0.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Each row of ``x`` (N, C*H*W), read as a C x H x W image, moved by its own random whole
    number of pixels in [-shift, shift] down and right (all channels together); pixels moved in
    from outside take ``fill``. Runs on ``x``'s device; ``generator`` (on that device) or the
    global RNG draws the offsets. ``shift`` = 0 returns ``x`` itself."""
    if shift < 0 or not math.isfinite(fill):
        raise ValueError(f"shift must be >= 0 and fill finite, got {shift} and {fill}")
    if shift == 0 or x.shape[0] == 0:
        return x
    n, (c, h, w) = x.shape[0], layout
    padded = F.pad(x.reshape(n, c, h, w), (shift, shift, shift, shift), value=fill)
    offsets = torch.randint(0, 2 * shift + 1, (2, n), device=x.device, generator=generator)
    rows = torch.arange(h, device=x.device)[None, :] + offsets[0][:, None]  # (N, H): padded row read into row i
    cols = torch.arange(w, device=x.device)[None, :] + offsets[1][:, None]
    out = padded[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    return out.reshape(n, c * h * w)

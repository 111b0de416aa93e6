"""A procedurally generated 1-D digit benchmark in the spirit of MNIST-1D.

Greydanus (2020), "Scaling down Deep Learning", arXiv:2011.14439, describes MNIST-1D: ten short
1-D glyphs, one per class, each example a glyph that is padded, translated, scaled, sheared and
blurred with correlated noise, then sampled at 40 points. This module re-implements that
*description*: the glyphs, the ranges of the transformations and the noise levels are our own,
chosen so that the task separates models as the paper's does (a linear model is far from a
small CNN), so its accuracies are not the paper's numbers.

The data set is a pure function of ``seed`` (default: fixed), generated with torch in
milliseconds; nothing is downloaded.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

LENGTH = 40  # samples per example
# Ten glyphs of 12 points (our own shapes, each a distinct profile of bumps and ramps).
GLYPHS = (
    (0.2, 0.8, 1.0, 0.8, 0.3, 0.0, 0.0, 0.3, 0.8, 1.0, 0.8, 0.2),
    (0.0, 0.0, 0.1, 0.5, 1.0, 1.0, 1.0, 1.0, 0.5, 0.1, 0.0, 0.0),
    (0.1, 0.6, 1.0, 0.7, 0.3, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0),
    (1.0, 0.6, 0.2, 0.6, 1.0, 0.6, 0.2, 0.6, 1.0, 0.6, 0.2, 0.0),
    (0.0, 0.3, 0.6, 0.9, 0.6, 0.3, 0.9, 1.0, 1.0, 0.4, 0.0, 0.0),
    (1.0, 1.0, 0.9, 0.2, 0.0, 0.2, 0.6, 0.9, 0.9, 0.6, 0.2, 0.0),
    (0.0, 0.2, 0.5, 0.8, 1.0, 0.9, 0.7, 0.9, 1.0, 0.8, 0.4, 0.1),
    (1.0, 1.0, 1.0, 0.9, 0.7, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, 0.0),
    (0.5, 1.0, 0.5, 0.0, 0.5, 1.0, 0.5, 0.0, 0.5, 1.0, 0.5, 0.0),
    (0.3, 0.9, 1.0, 0.9, 0.6, 0.6, 0.6, 0.5, 0.4, 0.3, 0.1, 0.0),
)
CLASSES = len(GLYPHS)


def _resample(values: Tensor, points: int) -> Tensor:
    """``values`` (n, k) linearly interpolated to ``points`` samples per row."""
    return torch.nn.functional.interpolate(values[:, None], size=points, mode="linear",
                                           align_corners=True)[:, 0]


def _smooth(noise: Tensor, width: float) -> Tensor:
    """Gaussian-blurred noise, rescaled to unit standard deviation."""
    radius = int(3 * width)
    grid = torch.arange(-radius, radius + 1, dtype=noise.dtype)
    kernel = torch.exp(-0.5 * (grid / width) ** 2)
    kernel = (kernel / kernel.sum())[None, None]
    out = torch.nn.functional.conv1d(noise[:, None], kernel, padding=radius)[:, 0]
    return out / out.std(dim=1, keepdim=True).clamp_min(1e-8)


def generate(n: int, seed: int, *, corr_noise: float = 0.1, iid_noise: float = 0.05,
             shear: float = 0.2) -> tuple[Tensor, Tensor]:
    """``n`` examples ``(x, y)``: ``x`` float32 (n, 40), ``y`` int64 labels, balanced."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % CLASSES
    y = y[torch.randperm(n, generator=gen)]
    glyphs = torch.tensor(GLYPHS, dtype=torch.float64)[y]
    out = torch.zeros(n, LENGTH, dtype=torch.float64)
    # Horizontal scale: each glyph is stretched to 12..24 samples, then translated.
    widths = torch.randint(12, 25, (n,), generator=gen)
    amplitude = 0.75 + 0.5 * torch.rand(n, generator=gen, dtype=torch.float64)
    for width in widths.unique().tolist():
        rows = (widths == width).nonzero().flatten()
        shapes = _resample(glyphs[rows], width) * amplitude[rows, None]
        offsets = torch.randint(0, LENGTH - width + 1, (len(rows),), generator=gen)
        for row, shape, offset in zip(rows.tolist(), shapes, offsets.tolist(), strict=True):
            out[row, offset:offset + width] = shape
    t = torch.linspace(-0.5, 0.5, LENGTH, dtype=torch.float64)
    slopes = shear * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    out = out + slopes * t
    out = out + corr_noise * _smooth(torch.randn(n, LENGTH, generator=gen,
                                                 dtype=torch.float64), 2.0)
    out = out + iid_noise * torch.randn(n, LENGTH, generator=gen, dtype=torch.float64)
    return out.float(), y


@functools.lru_cache(maxsize=2)
def dataset(train: int = 4000, val: int = 1000, test: int = 1000, seed: int = 1) -> tuple:
    """The fixed data set: ``(x, y, (train_idx, val_idx, test_idx))``, standardised on train."""
    x, y = generate(train + val + test, seed)
    idx = torch.arange(len(x))
    split = (idx[:train], idx[train:train + val], idx[train + val:])
    mean, std = x[split[0]].mean(), x[split[0]].std()
    return (x - mean) / std, y, split


__all__ = ["CLASSES", "GLYPHS", "LENGTH", "dataset", "generate"]

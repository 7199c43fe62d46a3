"""MS-SSIM among generated images, as the paper and its official `metrics/ms_ssim.py` compute it.

Why our own code and not a library: the paper's variant (itself from TensorFlow's models repo)
differs from the maintained implementations (torchmetrics, pytorch-msssim) in ways that change
the number: the Gaussian window is *shrunk to the image* at coarse levels (size = min(11, H, W),
sigma scaled by size / 11) where the libraries refuse images smaller than the window or pad them;
the convolution is 'valid'; levels are 2x2 box averages; SSIM and CS are averaged over pixels and
channels per image, clipped at 0, combined as prod(cs[:-1] ** w[:-1]) * ssim[-1] ** w[-1] and only
then averaged over pairs. This module reproduces that in PyTorch (float64) so the values are
comparable with the paper's tables (e.g. CelebA 128x128: 0.2838 for row (b) of Table 1).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
FILTER_SIZE = 11
FILTER_SIGMA = 1.5
K1, K2 = 0.01, 0.03
MAX_VAL = 255.0
MIN_RESOLUTION = 16  # five levels of 2x2 averaging need at least 16 -> 1


def gaussian_1d(size: int, sigma: float) -> torch.Tensor:
    """1-D factor of the official _FSpecialGauss (half-pixel offsets when size is even)."""
    radius = size // 2
    offset, start, stop = 0.0, -radius, radius + 1
    if size % 2 == 0:
        offset, stop = 0.5, stop - 1
    x = torch.arange(start, stop, dtype=torch.float64) + offset
    g = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _blur_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)
    y = F.conv2d(y, g.view(1, 1, 1, -1))
    y = F.conv2d(y, g.view(1, 1, -1, 1))
    return y.reshape(n, c, y.shape[-2], y.shape[-1])


def _ssim_cs(img1: torch.Tensor, img2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image SSIM and contrast-structure term at one scale (official _SSIMForMultiScale)."""
    _, _, h, w = img1.shape
    size = min(FILTER_SIZE, h, w)
    sigma = size * FILTER_SIGMA / FILTER_SIZE
    g = gaussian_1d(size, sigma).to(img1.device)
    mu1, mu2 = _blur_valid(img1, g), _blur_valid(img2, g)
    s11 = _blur_valid(img1 * img1, g) - mu1 * mu1
    s22 = _blur_valid(img2 * img2, g) - mu2 * mu2
    s12 = _blur_valid(img1 * img2, g) - mu1 * mu2
    c1, c2 = (K1 * MAX_VAL) ** 2, (K2 * MAX_VAL) ** 2
    v1 = 2.0 * s12 + c2
    v2 = s11 + s22 + c2
    ssim = (((2.0 * mu1 * mu2 + c1) * v1) / ((mu1 * mu1 + mu2 * mu2 + c1) * v2)).mean(dim=(1, 2, 3))
    cs = (v1 / v2).mean(dim=(1, 2, 3))
    return ssim, cs


@torch.no_grad()
def ms_ssim(img1, img2, weights=WEIGHTS) -> torch.Tensor:
    """MS-SSIM of each pair of uint8 (or [0, 255] float) images (N, C, H, W) -> (N,) float64."""
    return ms_ssim_differentiable(img1, img2, weights, floor=0.0)


def ms_ssim_differentiable(img1, img2, weights=WEIGHTS, floor: float = 1e-4) -> torch.Tensor:
    """`ms_ssim` with gradients, for losses (projection): the same formula, but SSIM and CS are
    clipped at `floor` instead of 0, since x ** w has an infinite gradient at 0 for w < 1."""
    a = torch.as_tensor(img1).to(torch.float64)
    b = torch.as_tensor(img2).to(torch.float64)
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"MS-SSIM needs two (N, C, H, W) batches of one shape, got {a.shape} and {b.shape}")
    if min(a.shape[-2:]) < 2 ** (len(weights) - 1):
        raise ValueError(
            f"MS-SSIM with {len(weights)} levels needs images >= {MIN_RESOLUTION}x{MIN_RESOLUTION}"
        )
    w = torch.tensor(weights, dtype=torch.float64, device=a.device)
    mssim, mcs = [], []
    for level in range(len(weights)):
        ssim, cs = _ssim_cs(a, b)
        mssim.append(ssim)
        mcs.append(cs)
        if level + 1 < len(weights):
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    mssim_t = torch.stack(mssim).clamp(min=floor)  # clip to zero, otherwise NaNs
    mcs_t = torch.stack(mcs).clamp(min=floor)
    return torch.prod(mcs_t[:-1] ** w[:-1, None], dim=0) * mssim_t[-1] ** w[-1]


def msssim_of_pairs(batches: Iterable) -> float:
    """Mean MS-SSIM over consecutive pairs (0, 1), (2, 3), ... of a stream of uint8 image batches.

    As the official API: each batch is split into its even and odd images; a batch of odd size
    leaves its last image unpaired (keep batch sizes even).
    """
    total, count = 0.0, 0
    for batch in batches:
        x = torch.as_tensor(np.asarray(batch) if not torch.is_tensor(batch) else batch)
        n = x.shape[0] // 2 * 2
        if n == 0:
            continue
        total += float(ms_ssim(x[0:n:2], x[1:n:2]).sum())
        count += n // 2
    if count == 0:
        raise ValueError("MS-SSIM needs at least two images")
    return total / count

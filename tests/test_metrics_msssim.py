"""MS-SSIM against a direct NumPy/SciPy transcription of the paper's method (ms_ssim.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import signal

from progan.metrics.msssim import ms_ssim, msssim_of_pairs


def ref_gauss(size, sigma):
    radius = size // 2
    offset, start, stop = 0.0, -radius, radius + 1
    if size % 2 == 0:
        offset, stop = 0.5, stop - 1
    x, y = np.mgrid[offset + start : stop, offset + start : stop]
    g = np.exp(-((x**2 + y**2) / (2.0 * sigma**2)))
    return g / g.sum()


def ref_ssim(img1, img2, max_val=255, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03):
    img1, img2 = img1.astype(np.float64), img2.astype(np.float64)
    _, h, w, _ = img1.shape
    size = min(filter_size, h, w)
    sigma = size * filter_sigma / filter_size
    window = ref_gauss(size, sigma).reshape(1, size, size, 1)
    mu1 = signal.fftconvolve(img1, window, mode="valid")
    mu2 = signal.fftconvolve(img2, window, mode="valid")
    s11 = signal.fftconvolve(img1 * img1, window, mode="valid") - mu1 * mu1
    s22 = signal.fftconvolve(img2 * img2, window, mode="valid") - mu2 * mu2
    s12 = signal.fftconvolve(img1 * img2, window, mode="valid") - mu1 * mu2
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    v1, v2 = 2.0 * s12 + c2, s11 + s22 + c2
    ssim = np.mean(((2.0 * mu1 * mu2 + c1) * v1) / ((mu1 * mu1 + mu2 * mu2 + c1) * v2), axis=(1, 2, 3))
    return ssim, np.mean(v1 / v2, axis=(1, 2, 3))


def ref_msssim(img1, img2):  # NHWC
    weights = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
    im1, im2 = img1.astype(np.float64), img2.astype(np.float64)
    mssim, mcs = [], []
    for _ in range(5):
        s, c = ref_ssim(im1, im2)
        mssim.append(s)
        mcs.append(c)
        im1, im2 = [
            (x[:, 0::2, 0::2] + x[:, 1::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 1::2]) * 0.25
            for x in (im1, im2)
        ]
    mssim = np.clip(np.asarray(mssim), 0, np.inf)
    mcs = np.clip(np.asarray(mcs), 0, np.inf)
    return np.prod(mcs[:-1] ** weights[:-1, None], axis=0) * mssim[-1] ** weights[-1]


def images(n, c, r, seed):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, c, r // 4, r // 4, generator=g)
    x = torch.nn.functional.interpolate(base, size=(r, r), mode="bilinear", align_corners=False)
    x = x + 0.1 * torch.randn(n, c, r, r, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


@pytest.mark.parametrize("c,r", [(3, 64), (1, 32), (3, 16)])
def test_matches_reference(c, r):
    a, b = images(4, c, r, 0), images(4, c, r, 1)
    ours = ms_ssim(a, b).numpy()
    ref = ref_msssim(a.transpose(0, 2, 3, 1), b.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-9)


def test_identical_is_one_and_different_is_lower():
    a = images(4, 3, 32, 2)
    np.testing.assert_allclose(ms_ssim(a, a).numpy(), 1.0, atol=1e-9)
    b = images(4, 3, 32, 3)
    assert (ms_ssim(a, b).numpy() < 0.9).all()


def test_pairs_are_consecutive():
    a = images(6, 3, 32, 4)
    batch = np.stack([a[0], a[0], a[1], a[2], a[3], a[3]])  # pairs: identical, different, identical
    expected = (1.0 + float(ms_ssim(a[1:2], a[2:3])[0]) + 1.0) / 3
    assert msssim_of_pairs([batch[:4], batch[4:]]) == pytest.approx(expected)
    # a collapsed generator (all outputs alike) scores higher than a diverse one
    assert msssim_of_pairs([np.repeat(a[:1], 8, axis=0)]) > msssim_of_pairs([images(8, 3, 32, 5)])


def test_rejects_small_images():
    with pytest.raises(ValueError):
        ms_ssim(np.zeros((2, 3, 8, 8), np.uint8), np.zeros((2, 3, 8, 8), np.uint8))

"""benchmarks/irises_by_resolution.py: lower resolutions' samples and portraits brought to the
classifiers' 64x64 the same way."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
ibr = pytest.importorskip("irises_by_resolution")


def test_down_is_the_mean_of_each_block_and_up_is_bilinear():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 3, 64, 64), dtype=np.uint8)
    down = ibr.to_resolution(images, 32)
    blocks = images.astype(np.float64).reshape(2, 3, 32, 2, 32, 2).mean((3, 5))
    assert down.dtype == np.uint8 and down.shape == (2, 3, 32, 32)
    assert np.abs(down.astype(np.float64) - blocks).max() <= 0.5  # rounded, not truncated
    up = ibr.to_resolution(down, 64)
    assert up.shape == (2, 3, 64, 64)
    # Bilinear with half-pixel centres: output pixel 11 lies at input 5.25, a quarter of the way
    # from pixel 5 to pixel 6, in each axis.
    d = down.astype(np.float64)
    rows = 0.75 * d[..., 5, :] + 0.25 * d[..., 6, :]
    expected = 0.75 * rows[..., 5] + 0.25 * rows[..., 6]
    assert np.abs(up[..., 11, 11].astype(np.float64) - expected).max() <= 0.5
    flat = np.full((1, 3, 16, 16), 77, np.uint8)
    assert (ibr.to_resolution(flat, 64) == 77).all()  # a flat image stays flat
    assert ibr.to_resolution(images, 64) is not images and (ibr.to_resolution(images, 64) == images).all()

"""SWD: pyramid, descriptors and distance against a direct NumPy transcription of the paper's method."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch

from progan.metrics import swd as S

# ---- a direct NumPy reference (the official code's structure, written out independently) ----------

GAUSS = (
    np.float32([[1, 4, 6, 4, 1], [4, 16, 24, 16, 4], [6, 24, 36, 24, 6], [4, 16, 24, 16, 4], [1, 4, 6, 4, 1]])
    / 256
)


def ref_pyr_down(x):
    return scipy.ndimage.convolve(x, GAUSS[None, None], mode="mirror")[:, :, ::2, ::2]


def ref_pyr_up(x):
    n, c, h, w = x.shape
    res = np.zeros((n, c, 2 * h, 2 * w), x.dtype)
    res[:, :, ::2, ::2] = x
    return scipy.ndimage.convolve(res, GAUSS[None, None] * 4.0, mode="mirror")


def ref_pyramid(x, levels):
    pyr = [np.float32(x)]
    for _ in range(1, levels):
        pyr.append(ref_pyr_down(pyr[-1]))
        pyr[-2] -= ref_pyr_up(pyr[-1])
    return pyr


def ref_descriptors(level, xs, ys, nhoods=128, nhood_size=7):
    n_img, c, _, w = level.shape
    n = n_img * nhoods
    h = nhood_size // 2
    nhood, chan, x, y = np.ogrid[0:n, 0:c, -h : h + 1, -h : h + 1]
    img = nhood // nhoods
    # official: x indexes columns via the last axis, y rows; the ogrid puts x on axis 2 and y on axis 3
    x = x + xs.reshape(n, 1, 1, 1)
    y = y + ys.reshape(n, 1, 1, 1)
    idx = ((img * c + chan) * w + y) * w + x
    return level.flat[idx]


def ref_swd(a_imgs, b_imgs, seed_a, seed_b, dir_seed):
    r = a_imgs.shape[-1]
    sizes = S.swd_resolutions(r)
    out = []
    descs = []
    for imgs, seed in ((a_imgs, seed_a), (b_imgs, seed_b)):
        per_level = []
        for i, level in enumerate(ref_pyramid(imgs, len(sizes))):
            rx, ry = np.random.default_rng([seed, i, 0]), np.random.default_rng([seed, i, 1])
            size = level.shape[-1]
            xs = rx.integers(3, size - 3, size=len(imgs) * 128)
            ys = ry.integers(3, size - 3, size=len(imgs) * 128)
            d = ref_descriptors(level, xs, ys).astype(np.float64)
            d -= np.mean(d, axis=(0, 2, 3), keepdims=True)
            d /= np.std(d, axis=(0, 2, 3), keepdims=True)
            per_level.append(d.reshape(d.shape[0], -1))
        descs.append(per_level)
    for i in range(len(sizes)):
        rng = np.random.default_rng([dir_seed, i, 2])
        a, b = descs[0][i], descs[1][i]
        res = []
        for _ in range(4):
            dirs = rng.standard_normal((a.shape[1], 128))
            dirs /= np.sqrt(np.sum(np.square(dirs), axis=0, keepdims=True))
            pa = np.sort(a @ dirs, axis=0)
            pb = np.sort(b @ dirs, axis=0)
            res.append(np.mean(np.abs(pa - pb)))
        out.append(np.mean(res) * 1e3)
    return out + [float(np.mean(out))]


# ---- helpers ----------------------------------------------------------------------------------------


def smooth_images(n, c=3, r=32, seed=0):
    """Random smooth uint8 images: bicubically upsampled uniform noise."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, c, r // 4, r // 4, generator=g)
    x = torch.nn.functional.interpolate(base, size=(r, r), mode="bicubic", align_corners=False)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


# ---- tests ------------------------------------------------------------------------------------------


def test_resolutions():
    assert S.swd_resolutions(16) == [16]
    assert S.swd_resolutions(128) == [128, 64, 32, 16]
    assert len(S.swd_resolutions(1024)) == 7
    for bad in (8, 24, 100):
        with pytest.raises(ValueError):
            S.swd_resolutions(bad)


def test_pyramid_matches_scipy_and_reconstructs():
    x = smooth_images(3, c=3, r=64, seed=1)
    ours = S.laplacian_pyramid(torch.from_numpy(x), 3)
    ref = ref_pyramid(x, 3)
    assert [p.shape[-1] for p in ours] == [64, 32, 16]
    for o, r in zip(ours, ref, strict=True):
        np.testing.assert_allclose(o.numpy(), r, atol=1e-3)
    rec = S.reconstruct_laplacian_pyramid(ours)
    np.testing.assert_allclose(rec.numpy(), x.astype(np.float32), atol=1e-3)
    # pyrDown of a constant stays constant (the kernel sums to one, mirror borders)
    const = torch.full((1, 1, 32, 32), 7.0)
    np.testing.assert_allclose(S.pyr_down(const).numpy(), 7.0, atol=1e-5)
    np.testing.assert_allclose(S.pyr_up(S.pyr_down(const)).numpy(), 7.0, atol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_matches_numpy_reference(channels):
    a = smooth_images(6, c=channels, r=32, seed=2)
    b = smooth_images(6, c=channels, r=32, seed=3)
    ds_a = S.collect([a[:4], a[4:]], 32, channels, seed=10)  # batches: batch-size independence too
    ds_b = S.collect([b], 32, channels, seed=11)
    ours = S.sliced_wasserstein_levels(ds_a, ds_b, seed=5)
    ref = ref_swd(a, b, 10, 11, 5)
    np.testing.assert_allclose([ours["swd_32"], ours["swd_16"], ours["swd_avg"]], ref, rtol=2e-4)


def test_spilled_descriptors_equal_in_memory(tmp_path):
    a = smooth_images(4, seed=4)
    b = smooth_images(4, seed=5)
    mem = S.sliced_wasserstein_levels(S.collect([a], 32, 3, seed=1), S.collect([b], 32, 3, seed=2))
    da = S.collect([a[:2], a[2:]], 32, 3, seed=1, spill_dir=tmp_path / "a")
    da.save()
    da = S.DescriptorSet.load(tmp_path / "a")
    db = S.collect([b], 32, 3, seed=2, spill_dir=tmp_path / "b")
    disk = S.sliced_wasserstein_levels(da, db, block_rows=1000, dirs_per_chunk=50)
    for k in mem:
        assert disk[k] == pytest.approx(mem[k], rel=1e-5)


def test_identical_sets_give_zero():
    a = smooth_images(32, seed=6)
    d = S.swd(a, a.copy(), seed=0)
    # the same images but different random patches: only patch-sampling noise remains
    same = S.sliced_wasserstein_levels(S.collect([a], 32, 3, seed=3), S.collect([a], 32, 3, seed=3))
    assert same["swd_avg"] == pytest.approx(0.0, abs=1e-9)
    # ... which is below the distance to an independent draw of the same distribution
    assert d["swd_avg"] < S.swd(a, smooth_images(32, seed=9), seed=0)["swd_avg"]


def test_noise_floor_and_monotone_perturbations():
    n = 48
    a = smooth_images(n, seed=7)
    b = smooth_images(n, seed=8)  # an independent draw of the same distribution
    floor = S.swd(a, b, seed=1)["swd_avg"]

    def blur(x, s):
        return scipy.ndimage.gaussian_filter(x.astype(np.float32), sigma=(0, 0, s, s))

    def to_u8(x):
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)

    rng = np.random.default_rng(0)
    noise = rng.standard_normal(b.shape).astype(np.float32)
    bf = b.astype(np.float32)
    grey = bf.mean(axis=1, keepdims=True)
    # A uniform colour offset is removed by the paper's per-channel normalization (as in the official
    # code), so the colour perturbation is a shift of the colour distribution: desaturation.
    families = {
        "blur": [to_u8(blur(b, s)) for s in (0.5, 1.0, 2.0)],
        "noise": [to_u8(bf + s * noise) for s in (4, 12, 32)],
        "colour": [to_u8((1 - t) * bf + t * grey) for t in (0.3, 0.6, 0.9)],
    }
    for name, sets in families.items():
        values = [S.swd(a, x, seed=1)["swd_avg"] for x in sets]
        assert values[0] > floor * 0.95, (name, floor, values)
        assert values == sorted(values), (name, floor, values)
        assert values[-1] > 1.6 * floor, (name, floor, values)


def test_rejects_mismatched_sets():
    a = S.collect([smooth_images(2)], 32, 3)
    b = S.collect([smooth_images(3)], 32, 3)
    with pytest.raises(ValueError):
        S.sliced_wasserstein_levels(a, b)
    with pytest.raises(ValueError):
        a.add(np.zeros((1, 1, 32, 32), np.uint8))

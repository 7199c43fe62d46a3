"""The one sampling path (progan.sampling) and the named-directions store (progan.directions)."""

import numpy as np
import pytest
import torch

from progan.directions import add_direction, load_directions, move, parse_amounts
from progan.errors import UserError
from progan.networks import Generator, NetworkConfig
from progan.sampling import images_for_seeds, iter_images, latents_for_seeds, slerp


def small_generator() -> Generator:
    torch.manual_seed(0)
    return Generator(NetworkConfig(resolution=8, latent_size=16, fmap_base=32, fmap_max=16)).eval()


def test_a_seed_gives_the_same_image_in_any_batch():
    G = small_generator()
    together = images_for_seeds(G, [3, 1, 4, 1, 5], batch=2)
    alone = torch.cat([images_for_seeds(G, [s], batch=1) for s in [3, 1, 4, 1, 5]])
    assert together.dtype == torch.uint8 and together.shape == (5, 3, 8, 8)
    assert torch.equal(together, alone)
    assert torch.equal(together[1], together[3])
    assert not torch.equal(together[0], together[1])


def test_official_latents_are_numpy_randomstate_per_seed():
    z = latents_for_seeds([0, 1000], 512, method="official")
    for row, seed in zip(z, [0, 1000], strict=True):
        expected = np.random.RandomState(seed).randn(1, 512)[0]
        np.testing.assert_allclose(row.numpy(), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError):
        latents_for_seeds([0], 4, method="nope")


def test_streamed_batches_match_one_tensor():
    G = small_generator()
    z = latents_for_seeds(range(7), 16)
    streamed = torch.cat(list(iter_images(G, (z[i : i + 3] for i in range(0, 7, 3)))))
    assert torch.equal(streamed, torch.cat(list(iter_images(G, z, batch=7))))


def test_slerp_endpoints_and_norm():
    a, b = torch.randn(2, 16).unbind(0)
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)
    mid = slerp(a, b, 0.5)
    # Halfway along the great circle: equal angles to both ends, norm halfway between theirs.
    cos_a = torch.dot(mid, a) / (mid.norm() * a.norm())
    cos_b = torch.dot(mid, b) / (mid.norm() * b.norm())
    torch.testing.assert_close(cos_a, cos_b)
    torch.testing.assert_close(mid.norm(), (a.norm() + b.norm()) / 2)
    torch.testing.assert_close(slerp(a, a, 0.3), a)  # parallel latents stay finite


def test_directions_store_roundtrip_and_move(tmp_path):
    v = torch.zeros(16)
    v[2] = 3.0
    add_direction(tmp_path, "smile", v, 16, source="test")
    add_direction(tmp_path, "age", torch.ones(16), 16)
    dirs = load_directions(tmp_path)
    assert sorted(dirs) == ["age", "smile"]
    torch.testing.assert_close(dirs["smile"][0].norm(), torch.tensor(1.0))
    assert dirs["smile"][1] == {"source": "test"}
    z = torch.zeros(2, 16)
    moved = move(z, dirs, parse_amounts("smile=+2"))
    assert moved[:, 2].tolist() == [2.0, 2.0] and moved.abs().sum() == 4.0
    with pytest.raises(UserError, match="no direction 'pose'"):
        move(z, dirs, {"pose": 1.0})
    with pytest.raises(UserError, match="latent has 16"):
        add_direction(tmp_path, "wide", torch.ones(512), 16)
    with pytest.raises(UserError, match="NAME=AMOUNT"):
        parse_amounts("smile")


def test_the_same_seed_gives_the_same_image_in_every_command(tiny_store, tmp_path):
    # Training grids show seeds 0..grid_size-1, metrics seeds 1,000,000.. (--seed 0), and
    # `progan generate` any seed: all through progan.sampling, so the pictures agree.
    from PIL import Image

    from progan.cli import main
    from progan.metrics.evaluate import fake_batches
    from progan.sampling import METRICS_SEED_OFFSET, metric_seeds
    from progan.training import Trainer, TrainOptions
    from tests.conftest import TINY_NET

    t = Trainer(TrainOptions(data=str(tiny_store.path), outdir=str(tmp_path / "runs"), batch=8, grid_size=6,
                             total_kimg=0.016, tick_kimg=0.016, progress=False, **TINY_NET))  # fmt: skip
    run_dir = t.run()
    grid = t._fakes_uint8()
    metrics = torch.cat(list(fake_batches(t.G_ema, 4, 2, "cpu", seed=0)))
    assert list(metric_seeds(4)) == list(range(METRICS_SEED_OFFSET, METRICS_SEED_OFFSET + 4))

    def generated(seeds: str) -> torch.Tensor:
        out = tmp_path / f"gen-{seeds}"
        with pytest.raises(SystemExit) as e:
            main(["generate", str(run_dir), "--seeds", seeds, "--outdir", str(out), "--batch", "3"])
        assert e.value.code == 0
        files = sorted(out.iterdir())
        return torch.stack([torch.from_numpy(np.array(Image.open(f))).permute(2, 0, 1) for f in files])

    assert torch.equal(generated("0-5"), grid)
    assert torch.equal(generated(f"{METRICS_SEED_OFFSET}-{METRICS_SEED_OFFSET + 3}"), metrics)
    assert not torch.equal(grid[0], grid[1])

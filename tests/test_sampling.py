"""The one sampling path (progan.sampling) and the named-directions store (progan.directions)."""

import copy
import io

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


# The CPU kinds CI runs on, by the /proc/cpuinfo flags that decide `--precision auto`: bf16
# autocast runs on any x86 CPU (emulated without these flags), so every kind is tried here.
CPU_KINDS = {"avx2": ({"avx2"}, "fp32"), "avx512_bf16": ({"avx2", "avx512_bf16"}, "bf16"),
             "amx": ({"avx2", "avx512_bf16", "amx_bf16"}, "bf16")}  # fmt: skip


@pytest.mark.parametrize("cpu", sorted(CPU_KINDS))
def test_the_same_seed_gives_the_same_image_in_every_command(tiny_store, tmp_path, monkeypatch, cpu):
    # Training grids show seeds 0..grid_size-1, metrics seeds 1,000,000.. (--seed 0), and
    # `progan generate` and the studio any seed: all through progan.sampling at --precision auto,
    # so the pictures agree bit for bit, in batches of any size.
    from fastapi.testclient import TestClient
    from helpers import TINY_NET
    from PIL import Image

    import progan.device
    from progan.cli import main
    from progan.metrics.evaluate import fake_batches
    from progan.runspec import TrainOptions, resolve_run
    from progan.sampling import METRICS_SEED_OFFSET, metric_seeds
    from progan.studio.app import Studio, create_app
    from progan.training import Trainer

    flags, precision = CPU_KINDS[cpu]
    monkeypatch.setattr(progan.device, "cpu_flags", lambda: set(flags))
    opts = TrainOptions(data=str(tiny_store.path), outdir=str(tmp_path / "runs"), batch=8, grid_size=6,
                        total_kimg=0.016, tick_kimg=0.016, progress=False, **TINY_NET)  # fmt: skip
    t = Trainer(resolve_run(opts))
    assert t.precision == precision  # the training rule is the sampling rule
    run_dir = t.run()
    _, grid = t.save_fakes(tmp_path / "grid.png")
    metrics = torch.cat(list(fake_batches(t.G_ema, 4, 2, "cpu", seed=0)))
    assert list(metric_seeds(4)) == list(range(METRICS_SEED_OFFSET, METRICS_SEED_OFFSET + 4))

    def generated(seeds: str, *options: str) -> torch.Tensor:
        out = tmp_path / f"gen-{seeds}{''.join(options)}"
        with pytest.raises(SystemExit) as e:
            main(["generate", str(run_dir), "--seeds", seeds, "--outdir", str(out), "--batch", "3", *options])
        assert e.value.code == 0
        files = sorted(out.iterdir())
        return torch.stack([torch.from_numpy(np.array(Image.open(f))).permute(2, 0, 1) for f in files])

    assert torch.equal(generated("0-5"), grid)
    assert torch.equal(generated(f"{METRICS_SEED_OFFSET}-{METRICS_SEED_OFFSET + 3}"), metrics)
    assert not torch.equal(grid[0], grid[1])
    studio = Studio([run_dir], tmp_path / "state")
    try:
        client = TestClient(create_app(studio))
        (m,) = client.get("/api/models").json()
        face = client.get(f"/api/models/{m['id']}/face.png?seed=4")
        assert face.status_code == 200
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(face.content))).transpose(2, 0, 1), grid[4])
    finally:
        studio.close()
    # The other precision gives another image: the test sees which one each command used.
    other = generated("0-5", "--precision", "fp32" if precision == "bf16" else "bf16")
    assert not torch.equal(other, grid)


def test_every_batch_size_and_layout_gives_the_same_float_image():
    # Without SAMPLING_BLOCK and the one sampling copy, fp32 images of the same latents differed by
    # ~1e-6 between batches of 3 and 6 and between channels-last and contiguous weights.
    from progan.sampling import SAMPLING_BLOCK, render_blocks, sampling_block, sampling_network

    torch.manual_seed(0)
    G = Generator(NetworkConfig(resolution=16, latent_size=32, fmap_base=128, fmap_max=32)).eval()
    z = latents_for_seeds(range(13), 32)
    cpu = torch.device("cpu")
    assert sampling_block(G, cpu) == SAMPLING_BLOCK and sampling_block(G, "cuda") is None
    big = Generator(NetworkConfig(resolution=128, latent_size=8, fmap_base=16, fmap_max=4))
    assert sampling_block(big, cpu) == 1  # one 128x128 face costs one image, not a block of 4
    with torch.no_grad():
        S = sampling_network(G, cpu, "fp32")
        want = render_blocks(S, z, None, cpu)
        for n in (1, 2, 3, SAMPLING_BLOCK + 1, 13):
            got = torch.cat([render_blocks(S, z[i : i + n], None, cpu) for i in range(0, 13, n)])
            assert torch.equal(got, want), n
        last = copy.deepcopy(G).to(memory_format=torch.channels_last)
        assert torch.equal(render_blocks(sampling_network(last, cpu, "fp32"), z, None, cpu), want)
    assert last.dense.weight.is_contiguous() and not last.conv4.weight.is_contiguous()  # left as it was
    assert G.conv4.weight.is_contiguous()


def test_iter_images_runs_every_generator_through_its_channels_last_copy(monkeypatch):
    import progan.sampling

    seen = []
    real = progan.sampling.render_blocks

    def spy(g, *args):
        seen.append(
            all(p.is_contiguous(memory_format=torch.channels_last) for p in g.parameters() if p.dim() == 4)
        )
        return real(g, *args)

    monkeypatch.setattr(progan.sampling, "render_blocks", spy)
    for layout in (torch.contiguous_format, torch.channels_last):
        images_for_seeds(small_generator().to(memory_format=layout), range(5), batch=2)
    assert seen == [True] * 6


def test_the_precision_rule_is_one_function(monkeypatch):
    import progan.device as d

    monkeypatch.setattr(d, "cpu_flags", lambda: {"avx2"})
    assert d.sampling_precision("auto", "cpu") == d.choose_precision(torch.device("cpu"))[0] == "fp32"
    monkeypatch.setattr(d, "cpu_flags", lambda: {"avx512_bf16"})
    assert d.sampling_precision("auto", "cpu") == "bf16" and d.sampling_precision("fp32", "cpu") == "fp32"
    assert d.choose_precision(torch.device("cuda"), cuda_bf16=True)[0] == "bf16"
    assert d.choose_precision(torch.device("cuda"), cuda_bf16=False)[0] == "fp32"
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        d.sampling_precision("fp16", "cpu")


def test_bf16_autocast_ends_before_each_batch_is_handed_over():
    # The caller's code between batches (an attribute classifier, a measurement) runs in fp32.
    batches = iter_images(small_generator(), latents_for_seeds(range(6), 16), batch=3, precision="bf16")
    for images in batches:
        assert images.dtype == torch.uint8 and not torch.is_autocast_enabled("cpu")

import numpy as np
import pytest
import torch

from progan.data.store import write_store

# Two cores: one thread per test process keeps timings steady and results reproducible.
torch.set_num_threads(1)

TINY_NET = dict(latent_size=16, fmap_base=64, fmap_max=16)


def make_tiny_store(path):
    """40 random 16x16 RGB images with a smooth structure, as a store at `path`."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:16, 0:16] / 15.0
    images = np.empty((40, 3, 16, 16), dtype=np.uint8)
    for i in range(40):
        a, b, c = rng.random(3)
        images[i] = (255 * np.stack([a * x, b * y, c * (1 - x) * y])).astype(np.uint8)
    return write_store(path, images)


@pytest.fixture
def tiny_store(tmp_path):
    return make_tiny_store(tmp_path / "store")


def tiny_train_args(store, outdir, **extra) -> list[str]:
    args = dict(
        data=store, outdir=outdir, training_kimg=0.08, transition_kimg=0.08, kimg=0.48, batch=8,
        latent_size=TINY_NET["latent_size"], fmap_base=TINY_NET["fmap_base"], fmap_max=TINY_NET["fmap_max"],
        tick_kimg=0.04, snapshot_ticks=2, image_ticks=4, grid_size=8,
        precision="fp32",  # the same numbers on every CPU (auto picks bf16 on some)
    )  # fmt: skip
    args.update(extra)
    out = []
    for k, v in args.items():
        flag = f"--{k.replace('_', '-')}"
        out += [flag] if v is True else [flag, str(v)]
    return out + ["--no-progress"]

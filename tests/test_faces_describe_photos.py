"""The whole describe pipeline on real photos: a generator whose latents pick controlled variants
of a real face (tests/face_variants.py), measured by progan.faces.measure."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("dlib")
from face_variants import astronaut_face, recolour_hair, recolour_iris  # noqa: E402

from progan.faces import describe as d  # noqa: E402
from progan.faces.measure import measure_faces  # noqa: E402
from progan.faces.words import understand  # noqa: E402
from progan.sampling import latents_for_seeds  # noqa: E402

HAIR = ["red", "blond", "black"]
IRIS = ["blue", "brown"]
VARIANTS = [(h, i) for h in HAIR for i in IRIS]


class VariantGenerator(nn.Module):
    """latent -> one of the variant photos in [-1, 1]: the largest of z[0..5] picks the variant.
    The Generator interface (G(z, labels), latent_size, label_size, resolution, config)."""

    def __init__(self, photos: torch.Tensor) -> None:
        super().__init__()
        self.photos = photos.float() / 127.5 - 1  # (V, 3, H, W)
        self.latent_size, self.label_size, self.resolution = 8, 0, photos.shape[-1]
        self.config = SimpleNamespace(latent_size=8, label_size=0, resolution=photos.shape[-1], channels=3)

    @staticmethod
    def variant(z: torch.Tensor) -> torch.Tensor:
        return z[..., : len(VARIANTS)].argmax(-1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.photos[self.variant(z)]


def cached(measure):
    """The real measurer, asked once per distinct picture (the generator repeats its 6 photos)."""
    memo: dict[bytes, object] = {}

    def run(images: torch.Tensor) -> list:
        keys = [hashlib.sha1(img.numpy().tobytes()).digest() for img in images]
        todo = [k for k in dict.fromkeys(keys) if k not in memo]
        if todo:
            first = {k: images[keys.index(k)] for k in todo}
            for k, m in zip(todo, measure(torch.stack(list(first.values()))), strict=True):
                memo[k] = m
        return [memo[k] for k in keys]

    return run


@pytest.fixture(scope="module")
def generator():
    base = astronaut_face(256)
    photos = [recolour_iris(recolour_hair(base, h), i) for h, i in VARIANTS]
    return VariantGenerator(torch.from_numpy(np.stack(photos)).permute(0, 3, 1, 2))


def test_red_hair_blue_eyes_ranks_the_red_haired_blue_eyed_variants_first(generator):
    desc = understand("red hair, blue eyes")
    seeds = list(range(24))
    ranked, _ = d.describe(generator, desc, seeds, top=4, measure=cached(measure_faces), progress=False)
    chosen = VariantGenerator.variant(latents_for_seeds(seeds, 8))
    picked = {s: VARIANTS[int(v)] for s, v in zip(seeds, chosen, strict=True)}
    assert ("red", "blue") in picked.values() and len(set(picked.values())) == len(VARIANTS)
    order = [picked[c.seed] for c in ranked]
    n = order.count(("red", "blue"))
    assert order[:n] == [("red", "blue")] * n, order
    # the runner-up variants each match one of the two words
    assert all(("red" in v) or ("blue" in v) for v in order[n : n + 2]), order
    assert all(c.score is not None for c in ranked)  # dlib finds the face in every variant
    first = ranked[0]
    assert first.traits["hair_colour"]["value"] == "red" and first.traits["eye_colour"]["value"] == "blue"

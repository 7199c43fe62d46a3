"""An official-size CelebA-HQ network for the benchmarks, without a download.

`official_size_snapshot(dir)` writes the official TF G_paper at 1024x1024 (fmap_base 8192, fmap_max
512, latent 512, fused upscale; 23.1 M parameters) with random weights as a pickle in the official
format (tests/pretrained_files.py, the builders the import tests check against the official
code), then imports it with `progan import`'s function, so the benchmarks time what a user of
karras2018iclr-celebahq-1024x1024.pkl runs.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import pretrained_files as pf  # noqa: E402


def official_size_pickle(path: str | Path, seed: int = 0) -> Path:
    """Gs of the official CelebA-HQ G_paper (random weights), pickled as the official code does."""
    import pytest  # MonkeyPatch registers the pickled class's module `tfutil` for the dump only

    kwargs = dict(num_channels=3, resolution=1024, label_size=0)
    variables = pf.tf_g_variables(np.random.default_rng(seed), 1024)
    with pytest.MonkeyPatch.context() as mp:
        Network = pf.network_class(mp, "tfutil")
        with open(path, "wb") as f:
            pickle.dump(pf.network(Network, pf.tf_state("Gs", "G_paper", kwargs, variables)), f, protocol=4)
    return Path(path)


def official_size_snapshot(workdir: str | Path) -> Path:
    """`progan import` of official_size_pickle into workdir/snapshot (made once, then reused)."""
    from progan.pretrained.importer import import_file

    workdir = Path(workdir)
    dest = workdir / "snapshot"
    if not dest.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        src = official_size_pickle(workdir / "karras2018iclr-celebahq-1024x1024-random.pkl")
        import_file(src, dest)
        src.unlink()
    return dest

"""Tiny snapshots for the studio's tests (video, export, serve), written in the real snapshot format."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from progan.checkpoint import STATE_FILE, save_inference_snapshot, snapshot_name, write_json_atomic
from progan.networks import Generator, NetworkConfig


def write_tiny_snapshot(
    run_dir: Path, resolution: int = 8, label_size: int = 0, label_names: list[str] | None = None,
    nimg: int = 1000, seed: int = 0, alpha: float = 1.0, stage_resolution: int | None = None,
) -> Path:  # fmt: skip
    """A run directory with one snapshot of a small random G_ema.

    `stage_resolution` / `alpha` place it mid-training, as a training snapshot records its stage.
    """
    torch.manual_seed(seed)
    config = NetworkConfig(
        resolution=resolution, latent_size=16, fmap_base=64, fmap_max=16, label_size=label_size
    )
    G = Generator(config).eval()  # at its random start, faces already differ clearly between latents
    run_dir.mkdir(parents=True, exist_ok=True)
    snap = save_inference_snapshot(
        run_dir / snapshot_name(nimg), config, G, nimg=nimg, label_names=label_names or []
    )
    if stage_resolution or alpha < 1:
        state = json.loads((snap / STATE_FILE).read_text())
        state["stage"] = {"resolution": stage_resolution or resolution, "alpha": alpha}
        write_json_atomic(snap / STATE_FILE, state)
    return snap

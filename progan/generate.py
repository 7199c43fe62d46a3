"""Sampling from a trained generator: seeds -> latents -> images, PNG files and grids."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from progan.images import save_grid, save_image
from progan.networks import Generator
from progan.sampling import images_for_seeds, labels_for, latents_for_seeds, parse_seeds  # noqa: F401


def generate(
    G: Generator,
    seeds: list[int],
    labels: torch.Tensor | None = None,
    batch: int = 32,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> torch.Tensor:
    """uint8 images (N, C, R, R) for the given seeds (through progan.sampling, the one path)."""
    return images_for_seeds(G, seeds, labels, batch=batch, device=device, precision=precision)


def write_images(images: torch.Tensor, seeds: list[int], outdir: str | os.PathLike) -> list[Path]:
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    arr = images.numpy()
    return [save_image(np.ascontiguousarray(arr[i].transpose(1, 2, 0)), outdir / f"seed{s:04d}.png")
            for i, s in enumerate(seeds)]  # fmt: skip


def write_grid(images: torch.Tensor, path: str | os.PathLike, cols: int | None = None) -> Path:
    return save_grid(images, path, cols=cols, min_cell=64)

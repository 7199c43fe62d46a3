"""Sampling from a trained generator: seeds -> latents -> images, PNG files and grids."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from progan.device import autocast
from progan.errors import UserError
from progan.images import save_grid, save_image, to_uint8
from progan.networks import Generator


def parse_seeds(text: str) -> list[int]:
    """'0-3,10' -> [0, 1, 2, 3, 10]."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise UserError(f"--seeds '{text}' is not a list of seeds; write e.g. 0-63 or 1,5,9")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise UserError(f"--seeds range {part} runs backwards; write {hi}-{lo}")
        seeds.extend(range(lo, hi + 1))
    return seeds


def latents_for_seeds(seeds: list[int], latent_size: int) -> torch.Tensor:
    """One latent per seed, each from its own generator: the image of a seed never depends on the batch."""
    return torch.stack([torch.randn(latent_size, generator=torch.Generator().manual_seed(s)) for s in seeds])


def labels_for(
    G: Generator, seeds: list[int], label: str | None, label_names: list[str]
) -> torch.Tensor | None:
    """Label rows for a conditional G: `label` names classes/attributes ('3', 'smiling,blond'),
    else a class drawn from each seed (one-hot models)."""
    if not G.label_size:
        if label:
            raise UserError("--label given, but this model is not conditional; drop --label")
        return None
    rows = torch.zeros(len(seeds), G.label_size)
    if label is None:
        for i, s in enumerate(seeds):
            rows[
                i, int(torch.randint(G.label_size, (1,), generator=torch.Generator().manual_seed(s + 1)))
            ] = 1
        return rows
    for item in label.split(","):
        item = item.strip()
        if item.isdigit() and int(item) < G.label_size:
            idx = int(item)
        elif item in label_names:
            idx = label_names.index(item)
        else:
            names = ", ".join(label_names) if label_names else f"0-{G.label_size - 1}"
            raise UserError(f"--label '{item}' is not a label of this model; choose from {names}")
        rows[:, idx] = 1
    return rows


@torch.no_grad()
def generate(
    G: Generator,
    seeds: list[int],
    labels: torch.Tensor | None = None,
    batch: int = 32,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> torch.Tensor:
    """uint8 images (N, C, R, R) for the given seeds."""
    device = torch.device(device)
    z = latents_for_seeds(seeds, G.latent_size)
    out = []
    with autocast(device, precision):
        for i in range(0, len(seeds), batch):
            lab = None if labels is None else labels[i : i + batch].to(device)
            out.append(to_uint8(G(z[i : i + batch].to(device), lab)).cpu())
    return torch.cat(out)


def write_images(images: torch.Tensor, seeds: list[int], outdir: str | os.PathLike) -> list[Path]:
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    arr = images.numpy()
    return [save_image(np.ascontiguousarray(arr[i].transpose(1, 2, 0)), outdir / f"seed{s:04d}.png")
            for i, s in enumerate(seeds)]  # fmt: skip


def write_grid(images: torch.Tensor, path: str | os.PathLike, cols: int | None = None) -> Path:
    return save_grid(images, path, cols=cols, min_cell=64)

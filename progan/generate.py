"""Sampling from a trained generator: seeds -> latents -> images, PNG files and grids."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from progan.errors import UserError
from progan.images import grid_shape, save_grid, save_image
from progan.networks import Generator
from progan.sampling import iter_seed_images

# A grid is built in memory as one picture: above this many pixels (768 MiB of RGB) it is refused.
MAX_GRID_PIXELS = 2**28
GRID_MIN_CELL = 64


def write_images(images: torch.Tensor, seeds: Sequence[int], outdir: str | os.PathLike) -> list[Path]:
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    arr = images.numpy()
    return [save_image(np.ascontiguousarray(arr[i].transpose(1, 2, 0)), outdir / f"seed{s:04d}.png")
            for i, s in enumerate(seeds)]  # fmt: skip


def write_grid(images: torch.Tensor, path: str | os.PathLike, cols: int | None = None) -> Path:
    return save_grid(images, path, cols=cols, min_cell=GRID_MIN_CELL)


def check_grid_size(count: int, resolution: int, channels: int = 3) -> None:
    """Refuse a --grid too large to build in memory, before any image is made."""
    cell = max(resolution, GRID_MIN_CELL)
    rows, cols = grid_shape(max(count, 1))
    pixels = rows * cols * cell * cell
    if pixels > MAX_GRID_PIXELS:
        raise UserError(
            f"--grid of {count} images at {resolution}x{resolution} would be {pixels / 1e6:.0f} megapixels, "
            f"above the limit of {MAX_GRID_PIXELS / 1e6:.0f}; put fewer seeds in the grid, or use --outdir "
            f"(one PNG per seed, any number of seeds)"
        )


def write_seed_images(
    G: Generator,
    seeds: Sequence[int],
    label: str | None = None,
    label_names: Sequence[str] = (),
    outdir: str | os.PathLike | None = None,
    grid: str | os.PathLike | None = None,
    batch: int = 32,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    method: str = "progan",
    stream_seed: int = 1000,
    edit: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[int, Path | None]:
    """One PNG per seed into `outdir` and/or one grid PNG, a batch of seeds at a time (memory for
    one batch, plus the grid, whose size `check_grid_size` bounds). Returns (images written, grid)."""
    if grid is not None:
        check_grid_size(len(seeds), G.resolution)
    from concurrent.futures import ThreadPoolExecutor

    cells: list[torch.Tensor] = []
    written = 0
    batches = iter_seed_images(
        G, seeds, label, label_names, batch, device, precision, method, stream_seed, edit
    )
    # PNGs are encoded in a thread while G makes the next batch (zlib and file writes release the
    # GIL); one batch at most waits, so memory stays that of two batches. On a GPU this hides the
    # encoding behind G; on a saturated 2-core CPU it measured neither faster nor slower (2.98
    # against 2.96 s per 1024x1024 image under load, benchmarks/pretrained_speed.py --levers).
    with ThreadPoolExecutor(1) as writer:
        pending = None
        for chunk, images in batches:
            if outdir is not None:
                if pending is not None:
                    written += len(pending.result())
                pending = writer.submit(write_images, images, chunk, outdir)
            if grid is not None:
                cells.append(images)
        if pending is not None:
            written += len(pending.result())
    return written, (write_grid(torch.cat(cells), grid) if grid is not None and cells else None)

"""Pictures in and out: decoding image files (any Pillow mode to L or RGB), and turning model outputs
into pictures (uint8 conversion, grids, strips, PNG files)."""

from __future__ import annotations

import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from progan.errors import UserError, writing

try:  # Intel ISA-L's deflate writes the same zlib streams as zlib, 4.5x faster (see encode_png)
    from isal import isal_zlib as _deflate
except ImportError:  # a platform without its wheel: the standard library's zlib
    _deflate = zlib


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] (N, C, H, W) -> uint8 [0, 255], rounded and clamped.

    One fp32 copy worked on in place: the same arithmetic as ((x + 1) * 127.5).round().clamp(),
    bit for bit, without four fresh image-sized temporaries, which made it 2.7x slower (24.6
    against 9.0 ms per 1024x1024 bf16 image, 1 thread, 2-core Xeon with AMX)."""
    return images.to(torch.float32, copy=True).add_(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


def grid_shape(n: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def make_grid(images: np.ndarray | torch.Tensor, cols: int | None = None, pad: int = 0) -> np.ndarray:
    """uint8 (N, C, H, W) -> one uint8 (rows*H, cols*W, C) array; missing cells stay black."""
    images = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    n, c, h, w = images.shape
    rows, cols = grid_shape(n) if cols is None else (math.ceil(n / cols), cols)
    grid = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + k * (w + pad)
        grid[y : y + h, x : x + w] = images[i].transpose(1, 2, 0)
    return grid


def upscale_nearest(image: np.ndarray, factor: int) -> np.ndarray:
    return image.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else image


# zlib level of every PNG written: a 1024x1024 face took 0.33 s to encode at Pillow's default (6)
# and 0.09 s at 1, for a file 18% larger (1.41 MB against 1.20 MB; 2-core EPYC): at the default,
# encoding cost `generate` more than running G in bf16 did (benchmarks/README.md).
PNG_COMPRESS_LEVEL = 1
_PNG_COLOUR_TYPE = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type: grey, RGB, RGBA (8 bits each)


def encode_png(array: np.ndarray) -> bytes:
    """An (H, W, C) uint8 array (C 1, 3 or 4; or (H, W), grey) as PNG bytes: every row with the
    PNG "Up" filter (each byte minus the byte above, mod 256), deflated at PNG_COMPRESS_LEVEL.

    Pillow picks a filter per row by trying them all, which took as long as deflate itself: a
    1024x1024 photo took 65 ms at level 1 in Pillow, 31 ms here, and 33 ms with Pillow at level
    0 (no compression at all); the file is 5% larger than Pillow's at level 1 (1281 against 1226
    KB; 2-core Xeon with AMX). Deflating with ISA-L (the `isal` package) instead of zlib took 7.0
    against 31.7 ms for the filtered rows of a 1024x1024 photo, and the file came out smaller
    (1363 against 1395 KB; the same machine, side by side). Decoders read it as any PNG
    (tests/test_png.py)."""
    if array.ndim == 2:
        array = array[..., None]
    h, w, c = array.shape
    if array.dtype != np.uint8 or c not in _PNG_COLOUR_TYPE:
        raise ValueError(f"encode_png takes uint8 (H, W, C), C 1, 3 or 4, not {array.dtype} {array.shape}")
    rows = np.ascontiguousarray(array).reshape(h, w * c)
    filtered = np.empty((h, w * c + 1), np.uint8)
    filtered[:, 0] = 2  # the filter byte of each row: Up
    filtered[0, 1:] = rows[0]  # the row above the first is zeros
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8 arithmetic wraps, as PNG's

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, _PNG_COLOUR_TYPE[c], 0, 0, 0)
    idat = _deflate.compress(filtered.data, PNG_COMPRESS_LEVEL)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def save_image(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an (H, W, C) uint8 array as PNG, atomically (temporary name, then rename)."""
    path = Path(path)
    data = encode_png(array)
    tmp = path.with_name(f".{path.name}.tmp")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
            raise
    return path


def save_grid(
    images: np.ndarray | torch.Tensor, path: str | os.PathLike, cols: int | None = None, min_cell: int = 0
) -> Path:
    """Save uint8 NCHW images as one grid PNG; cells smaller than `min_cell` are upscaled (nearest)."""
    grid = make_grid(images, cols)
    h = images.shape[2]
    if min_cell and h < min_cell:
        grid = upscale_nearest(grid, min_cell // h)
    return save_image(grid, path)


def save_strip(grid_paths: list[Path], path: str | os.PathLike, gap: int = 8) -> Path:
    """Lay grid images side by side, each scaled (nearest) to the height of the largest."""
    grids = [np.asarray(Image.open(p)) for p in grid_paths]
    grids = [g[..., None] if g.ndim == 2 else g for g in grids]
    height = max(g.shape[0] for g in grids)
    scaled = [upscale_nearest(g, max(1, height // g.shape[0])) for g in grids]
    c = scaled[0].shape[2]
    width = sum(g.shape[1] for g in scaled) + gap * (len(scaled) - 1)
    strip = np.full((height, width, c), 255, dtype=np.uint8)
    x = 0
    for g in scaled:
        strip[: g.shape[0], x : x + g.shape[1]] = g
        x += g.shape[1] + gap
    return save_image(strip, path)


def normalise_mode(img: Image.Image, channels: int, background: tuple[int, int, int]) -> Image.Image:
    """Any Pillow mode -> "L" (channels 1) or "RGB" (channels 3); alpha composited on background."""
    mode = img.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(img).astype(np.float64)
        if mode == "F":
            a = a * 255.0 if a.size and a.max() <= 1.0 else a
        elif mode != "I" or (a.size and a.max() > 255):
            a = a / 257.0  # 16-bit range -> 8 bits
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    elif mode == "1":
        img = img.convert("L")
    elif mode in ("P", "PA"):
        img = img.convert("RGBA")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        img = img.convert("RGB")
    elif mode in ("L", "RGB") and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        bg = Image.new("RGBA", img.size, (*background, 255))
        img = Image.alpha_composite(bg, img.convert("RGBA")).convert("RGB")
    target = "L" if channels == 1 else "RGB"
    return img if img.mode == target else img.convert(target)


def read_rgb(path: Path) -> np.ndarray:
    """Any image file -> uint8 (H, W, 3) RGB, EXIF rotation applied; unreadable -> UserError."""
    if path.is_dir():
        raise UserError(f"{path} is a folder; pass image files (e.g. {path}/*.jpg)")
    if not path.exists():
        raise UserError(f"{path}: no such file; check the path")
    if not path.is_file():  # /dev/null, a FIFO, a socket: never opened (a FIFO would block)
        raise UserError(f"{path} is not an image (not a regular file); pass a PNG or JPEG file")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return np.asarray(normalise_mode(img, 3, (255, 255, 255)))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"{path} is not an image ({e}); pass a PNG or JPEG file") from e

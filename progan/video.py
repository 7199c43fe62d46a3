"""Videos from a snapshot or a run: interpolation loops, morphs through chosen faces, training time-lapses.

Frames are generated in batches on the device (through `progan.sampling.iter_images`, the one
sampling path) and streamed one by one to the encoder, so a long mp4 costs memory for one batch
of frames, not for the video:

- ``.mp4``: H.264 (libx264, yuv420p, CRF 18) through the ffmpeg binary that the `imageio-ffmpeg`
  wheel ships; frames are piped to it as they come.
- ``.gif`` / ``.webp``: Pillow. Its animated writers keep every frame until the file is closed
  (GIF: one palette byte per pixel; WebP: the encoded frames), so these formats are refused above
  `MAX_ANIMATION_BYTES` of frames, with a pointer to mp4.

Every file is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from progan.errors import UserError
from progan.images import grid_shape, make_grid, upscale_nearest
from progan.sampling import iter_images, labels_for, latents_for_seeds, slerp

FORMATS = (".mp4", ".gif", ".webp")
# GIF/WebP frames stay in Pillow's memory until the file is written: past this, use mp4.
MAX_ANIMATION_BYTES = 1 << 30
# A video of a 32x32 network is unwatchable at its own size: frames are enlarged (nearest) to at
# least this many pixels on their short side unless --zoom says otherwise.
MIN_AUTO_SIDE = 256


# ---------------------------------------------------------------------------------------------
# latents


# The official latents are made whole (RandomState stream, Gaussian smoothing, RMS): up to this
# many values (268 MB in float64, about three copies at the peak): 60 s of a 3x4 grid of 512-d
# latents at 30 fps is 11 M values, 18 minutes of one face at 60 fps 33 M. Longer videos stream.
MAX_WHOLE_LATENT_VALUES = 1 << 25
# Rows of raw latents drawn at once by the streamed path, per seed chunk.
STREAM_CHUNK_ROWS = 1024


def gaussian_taps(sigma: float) -> np.ndarray:
    """scipy.ndimage's Gaussian kernel (truncate 4): radius int(4 sigma + 0.5), summing to 1."""
    if sigma <= 0:
        return np.ones(1)
    radius = int(4.0 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return taps / taps.sum()


def interpolation_latents(
    frames: int, cells: int, latent_size: int, smoothing_frames: float, seed: int
) -> Iterator[np.ndarray]:
    """The interpolation video's latents, in (n, cells, latent_size) float32 chunks, in order.

    Up to MAX_WHOLE_LATENT_VALUES, as the official `generate_interpolation_video`: a Gaussian
    tensor from `RandomState(seed)`, smoothed along time by a Gaussian of sigma `smoothing_frames`
    in wrap mode (so the last frame leads smoothly into the first and the video loops), then
    divided by its RMS so that the latents have unit variance again. Longer videos stream
    (`streamed_interpolation_latents`): memory for a window of frames, whatever the length.
    """
    taps = gaussian_taps(smoothing_frames)
    if frames * cells * latent_size > MAX_WHOLE_LATENT_VALUES or len(taps) > frames:
        if len(taps) * cells * latent_size > MAX_WHOLE_LATENT_VALUES:
            raise UserError(f"--smoothing of {smoothing_frames:g} frames needs a window of {len(taps)} "
                            "frames of latents, too many; lower --smoothing or --fps")  # fmt: skip
        if len(taps) <= frames:
            yield from streamed_interpolation_latents(frames, cells, latent_size, taps, seed)
            return
    from scipy.ndimage import gaussian_filter

    z = np.random.RandomState(seed).randn(frames, cells, latent_size)
    z = gaussian_filter(z, [smoothing_frames, 0, 0], mode="wrap")
    z /= np.sqrt(np.mean(np.square(z)))
    yield z.astype(np.float32)


def _raw_chunk(seed: int, k: int, frames: int, cells: int, latent_size: int) -> np.ndarray:
    """Rows k*STREAM_CHUNK_ROWS.. of the streamed path's white noise: a generator of their own per
    chunk, so that any part of the loop (its end, for the wrap) is drawn without the rest."""
    rows = min(STREAM_CHUNK_ROWS, frames - k * STREAM_CHUNK_ROWS)
    return np.random.default_rng([seed, k]).standard_normal((rows, cells, latent_size))


def streamed_interpolation_latents(
    frames: int, cells: int, latent_size: int, taps: np.ndarray, seed: int
) -> Iterator[np.ndarray]:
    """A loop of `frames` latents smoothed in wrap mode by `taps` (len(taps) <= frames), made a
    chunk at a time: white noise per STREAM_CHUNK_ROWS rows (`_raw_chunk`), so memory holds one
    chunk and the window, never the video. Divided by the RMS the smoothing gives white noise,
    sqrt(sum(taps**2)), not by the measured RMS (which would need the whole video first); over
    the millions of values that make a video stream, the two agree to about 1e-4."""
    radius = len(taps) // 2
    chunks = -(-frames // STREAM_CHUNK_ROWS)
    scale = 1.0 / math.sqrt(float(np.sum(taps**2)))

    def rows(first: int, last: int) -> np.ndarray:
        """Raw rows first..last-1, indices taken modulo `frames` (first may be negative)."""
        parts, i = [], first
        while i < last:
            j = i % frames
            k = j // STREAM_CHUNK_ROWS
            chunk = _raw_chunk(seed, k, frames, cells, latent_size)
            off = j - k * STREAM_CHUNK_ROWS
            take = min(len(chunk) - off, last - i)
            parts.append(chunk[off : off + take])
            i += take
        return np.concatenate(parts)

    window = rows(-radius, radius)  # the 2 * radius raw rows before frame 0's own
    for k in range(chunks):
        start = k * STREAM_CHUNK_ROWS
        stop = min(start + STREAM_CHUNK_ROWS, frames)
        window = np.concatenate([window[len(window) - 2 * radius :], rows(start + radius, stop + radius)])
        out = np.zeros((stop - start, cells, latent_size))
        for t, w in enumerate(taps):
            out += w * window[t : t + stop - start]
        yield (out * scale).astype(np.float32)


def ease(t: np.ndarray) -> np.ndarray:
    """Cosine easing: the morph slows down at each chosen face, so the viewer sees it."""
    return (1 - np.cos(np.pi * t)) / 2


def morph_latents(keys: torch.Tensor, frames: int) -> Iterator[tuple[int, int, float]]:
    """(from, to, t) per frame of a loop through the key latents: `frames` in all, no repeated frame.

    Frame 0 is the first key exactly; the loop returns to it after the last key, so the video
    repeats without a jump.
    """
    n = len(keys)
    for f in range(frames):
        pos = f * n / frames
        i = int(pos)
        yield i, (i + 1) % n, float(ease(np.asarray(pos - i)))


# ---------------------------------------------------------------------------------------------
# frames


def frame_grid(images: torch.Tensor, cols: int, zoom: int) -> np.ndarray:
    """uint8 (cells, C, H, W) -> one RGB (H', W', 3) frame."""
    grid = upscale_nearest(make_grid(images, cols), zoom)
    return np.repeat(grid, 3, axis=2) if grid.shape[2] == 1 else grid


def auto_zoom(height: int, width: int, zoom: int | None) -> int:
    if zoom is not None:
        return zoom
    return max(1, math.ceil(MIN_AUTO_SIDE / min(height, width)))


def model_frames(
    G: torch.nn.Module,
    latent_batches: Iterable[torch.Tensor],
    labels: torch.Tensor | Iterable[torch.Tensor] | None,
    cells: int,
    cols: int,
    zoom: int,
    device: torch.device | str,
    precision: str,
) -> Iterator[np.ndarray]:
    """Frames from batches of latents (each batch a whole number of frames of `cells` faces).
    `labels`: None, one row per cell (the same every frame), or an iterable of one row per face."""
    rows = None if labels is None or isinstance(labels, torch.Tensor) else iter(labels)
    for z in latent_batches:
        if labels is None:
            lab = None
        elif rows is None:
            lab = labels.repeat(len(z) // cells, 1)
        else:
            lab = torch.stack([next(rows) for _ in range(len(z))])
        for images in iter_images(G, z, lab, batch=len(z), device=device, precision=precision):
            for i in range(0, len(images), cells):
                yield frame_grid(images[i : i + cells], cols, zoom)


def _batches(latents: Iterable, per_batch: int) -> Iterator[torch.Tensor]:
    """Stack an iterable of latent rows (arrays or tensors) into batches of `per_batch` rows."""
    batch = []
    for row in latents:
        batch.append(torch.as_tensor(row))
        if len(batch) == per_batch:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


def interpolation_video(
    G: torch.nn.Module,
    seconds: float,
    fps: float,
    grid: tuple[int, int],
    smoothing: float,
    seed: int,
    labels: torch.Tensor | None = None,
    batch: int = 32,
    zoom: int | None = None,
    device: torch.device | str = "cpu",
    precision: str = "auto",
) -> tuple[int, Iterator[np.ndarray]]:
    """(frame count, frames) of the official interpolation video; `labels` (cells, K) when conditional."""
    rows, cols = grid
    cells = rows * cols
    frames = max(1, round(seconds * fps))
    z = interpolation_latents(frames, cells, G.config.latent_size, smoothing * fps, seed)
    per_batch = max(1, batch // cells) * cells
    zoom = auto_zoom(rows * G.resolution, cols * G.resolution, zoom)
    batches = _batches((row for chunk in z for row in chunk.reshape(len(chunk) * cells, -1)), per_batch)
    return frames, model_frames(G, batches, labels, cells, cols, zoom, device, precision)


def morph_video(
    G: torch.nn.Module,
    seeds: Sequence[int],
    seconds: float,
    fps: float,
    labels: torch.Tensor | None = None,
    batch: int = 32,
    zoom: int | None = None,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    method: str = "progan",
) -> tuple[int, Iterator[np.ndarray]]:
    """(frame count, frames) of a loop through the faces of `seeds` (slerp between their latents).

    `labels` has one row per seed; between two seeds the label rows are blended linearly.
    """
    if len(seeds) < 2:
        raise UserError("--kind morph needs at least two seeds, e.g. --seeds 3,17,42")
    keys = latents_for_seeds(seeds, G.config.latent_size, method)
    frames = max(len(seeds), round(seconds * fps))
    steps = morph_latents(keys, frames)  # a generator: latents are made a batch at a time
    z = (slerp(keys[i], keys[j], t) for i, j, t in steps)
    label_rows = None
    if labels is not None:
        label_rows = (torch.lerp(labels[i], labels[j], t) for i, j, t in morph_latents(keys, frames))
    zoom = auto_zoom(G.resolution, G.resolution, zoom)
    return frames, model_frames(G, _batches(z, batch), label_rows, 1, 1, zoom, device, precision)


# ---------------------------------------------------------------------------------------------
# training time-lapse

_FAKES = re.compile(r"fakes(\d{6})(?:\.(\d{3}))?\.png")


def training_grids(run_dir: Path) -> list[tuple[int, Path]]:
    """(images shown, path) of a run's fakes<kimg>.png grids, in order; fakes-final.png last."""
    found = []
    for p in run_dir.iterdir():
        m = _FAKES.fullmatch(p.name)
        if m:
            found.append((int(m.group(1)) * 1000 + int(m.group(2) or 0), p))
    found.sort()
    final = run_dir / "fakes-final.png"
    if final.is_file():
        stats = read_stats(run_dir)
        nimg = round(stats[-1]["kimg"] * 1000) if stats else (found[-1][0] if found else 0)
        if not found or found[-1][0] != nimg:
            found.append((nimg, final))
    return found


def read_stats(run_dir: Path) -> list[dict]:
    import json

    path = run_dir / "stats.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill: skip it, the others still place the grids
        if isinstance(rec, dict) and "kimg" in rec:
            out.append(rec)
    return out


def stage_at(stats: list[dict], nimg: int) -> tuple[int | None, float]:
    """(resolution, alpha) of the last tick at or before `nimg` images."""
    best: tuple[int | None, float] = (None, 1.0)
    for rec in stats:
        if round(float(rec["kimg"]) * 1000) <= nimg:
            best = (rec.get("resolution"), float(rec.get("alpha", 1.0)))
    return best


def caption(nimg: int, resolution: int | None, alpha: float) -> str:
    text = f"{nimg / 1000:g} kimg"
    if resolution:
        text += f"   {resolution}x{resolution}"
        if alpha < 1:
            text += f" (fading in, {alpha:.0%})"
    return text


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def captioned(image: np.ndarray, text: str) -> np.ndarray:
    """The grid with a black band below it carrying `text` in white."""
    h, w = image.shape[:2]
    band = max(14, w // 28)
    out = Image.new("RGB", (w, h + band + 8), (0, 0, 0))
    out.paste(Image.fromarray(image), (0, 0))
    ImageDraw.Draw(out).text((6, h + 4), text, fill=(255, 255, 255), font=_font(band))
    return np.asarray(out)


def training_video(
    run_dir: str | os.PathLike, seconds_per_grid: float, fps: float, zoom: int | None = None
) -> tuple[int, Iterator[np.ndarray]]:
    """(frame count, frames) of a time-lapse of a run's sample grids, kimg and resolution on each."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a run directory; pass runs/<run> (it holds fakes*.png)")
    grids = training_grids(run_dir)
    if not grids:
        raise UserError(f"{run_dir} has no fakes*.png sample grids; train with --image-ticks > 0 first")
    stats = read_stats(run_dir)
    sizes = [Image.open(p).size for _, p in grids]
    width, height = max(s[0] for s in sizes), max(s[1] for s in sizes)
    zoom = auto_zoom(height, width, zoom)
    repeat = max(1, round(seconds_per_grid * fps))

    def frames() -> Iterator[np.ndarray]:
        for nimg, path in grids:
            img = Image.open(path).convert("RGB")
            if img.size != (width, height):  # grids of an early resolution: enlarge to the latest
                img = img.resize((width, height), Image.NEAREST)
            res, alpha = stage_at(stats, nimg)
            frame = captioned(upscale_nearest(np.asarray(img), zoom), caption(nimg, res, alpha))
            for _ in range(repeat):
                yield frame

    return len(grids) * repeat, frames()


# ---------------------------------------------------------------------------------------------
# writing


def check_output(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise UserError(f"--out {path}: unknown video format; end the name with {', '.join(FORMATS)}")
    if not path.parent.exists():
        raise UserError(f"--out {path}: folder {path.parent} does not exist; create it first")
    return path


def _even(frame: np.ndarray) -> np.ndarray:
    """H.264 in yuv420p needs even sides: pad odd ones with one black row/column."""
    h, w = frame.shape[:2]
    if h % 2 or w % 2:
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))
    return np.ascontiguousarray(frame)


def write_video(
    frames: Iterable[np.ndarray], path: str | os.PathLike, fps: float, total: int | None = None,
    progress: bool = True,
) -> Path:  # fmt: skip
    """Stream RGB uint8 frames into an mp4/gif/webp file (atomically); returns the path."""
    from tqdm import tqdm

    path = check_output(path)
    suffix = path.suffix.lower()
    tmp = path.with_name(f".{path.stem}.tmp{suffix}")
    it = iter(tqdm(frames, total=total, unit="frame", disable=not progress, desc=path.name))
    try:
        first = next(it)
    except StopIteration:
        raise UserError("no frames to write; ask for a longer video (--seconds)") from None
    try:
        if suffix == ".mp4":
            _write_mp4(first, it, tmp, fps)
        else:
            h, w = first.shape[:2]
            if total is not None and total * h * w > MAX_ANIMATION_BYTES:
                raise UserError(
                    f"--out {path}: {total} frames of {w}x{h} are too many for {suffix} "
                    f"(Pillow keeps them all in memory); write .mp4, or shorten --seconds or --grid"
                )
            _write_pillow(first, it, tmp, fps, suffix)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _write_mp4(first: np.ndarray, rest: Iterator[np.ndarray], tmp: Path, fps: float) -> None:
    import imageio_ffmpeg

    first = _even(first)
    h, w = first.shape[:2]
    writer = imageio_ffmpeg.write_frames(
        str(tmp), (w, h), fps=fps, codec="libx264", quality=None, macro_block_size=1,
        pix_fmt_out="yuv420p", output_params=["-crf", "18", "-movflags", "+faststart"],
        ffmpeg_log_level="error",
    )  # fmt: skip
    writer.send(None)  # start ffmpeg
    try:
        writer.send(first)
        for frame in rest:
            writer.send(_even(frame))
    finally:
        writer.close()


def _write_pillow(first: np.ndarray, rest: Iterator[np.ndarray], tmp: Path, fps: float, suffix: str) -> None:
    duration = round(1000 / fps)
    images = (Image.fromarray(f) for f in rest)
    kwargs = {"loop": 0, "duration": duration, "save_all": True, "append_images": images}
    if suffix == ".webp":
        kwargs.update(lossless=False, quality=90)
    Image.fromarray(first).save(tmp, format=suffix[1:].upper(), **kwargs)


def parse_grid(text: str) -> tuple[int, int]:
    """'2x3' -> (2 rows, 3 columns); '4' -> a square 2x2 grid of 4 faces."""
    m = re.fullmatch(r"(\d+)(?:x(\d+))?", text.strip())
    if not m or int(m.group(1)) < 1 or (m.group(2) and int(m.group(2)) < 1):
        raise UserError(f"--grid '{text}' is not a grid; write ROWSxCOLS like 2x3, or a count like 4")
    if m.group(2):
        return int(m.group(1)), int(m.group(2))
    return grid_shape(int(m.group(1)))


def cell_labels(label_size: int, cells: int, seed: int, label: str | None, names: Sequence[str]):
    """Labels for the cells of an interpolation video: one class per cell (from seed + cell) or --label."""
    return labels_for(label_size, [seed + i for i in range(cells)], label, names)

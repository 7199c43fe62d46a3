"""The one sampling path: seeds -> latents -> (edited) latents -> uint8 images.

Every command that shows a face goes through here (training grids, `generate`, metrics, videos,
the studio, describe), so the same seed gives the same image everywhere. Latents are drawn per
seed from a generator of their own, so an image never depends on its batch or its position.

Three ways of drawing a seed's latent:

- ``"progan"``: ``torch.randn(latent_size, generator=torch.Generator().manual_seed(seed))``;
- ``"official"``: ``numpy.random.RandomState(seed).randn(1, latent_size)``, as the official
  scripts draw one latent per seed, so imported official networks reproduce their example images;
- ``"official-stream"``: the seed is a row index into one stream
  ``numpy.random.RandomState(stream_seed).randn(N, latent_size)``, as the official
  `import_example.py` (stream 1000, rows 477, 56, 83, 887, 583, 391, 86, 340, 341, 415 are its
  img0..img9) and `util_scripts.generate_fake_images` draw them.

Which seeds each command shows (so that a picture can be found again with `progan generate`):

- training grids (fakes*.png, growth-*.png, fakes-final.png): seeds 0 .. grid_size - 1;
- metrics (`progan evaluate`, `train --metrics`) with --seed S: the `num` seeds from
  ``METRICS_SEED_OFFSET * (S + 1)`` on (1,000,000 .. 1,000,000 + num - 1 for S = 0);
- a conditional model's label for a seed comes from `labels_for` (a class per seed) everywhere.

Bit for bit, not just nearly: every command renders at `--precision auto` by default, one rule
(`device.sampling_precision`), and on a CPU G always runs on blocks of a size fixed by the model
(`sampling_block`) as one layout, its channels-last sampling copy (`sampling_network`). CPU
kernels (MKL's GEMM, oneDNN's convolutions) pick their blocking and reduction order by the batch
size and the weights' layout: in fp32, the same latent rendered in a batch of 3 and in a batch of
6, or by the trainer's channels-last G_ema and a loaded contiguous one, differed by up to 1.8e-6
(2-core EPYC, 1 and 2 threads), enough to move a pixel's uint8 value by one. A row's result did
not depend on its position within a fixed-size block.
"""

from __future__ import annotations

import re
import weakref
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import accumulate

import numpy as np
import torch

from progan.device import PRECISION_DTYPES, autocast, sampling_precision
from progan.errors import UserError
from progan.images import to_uint8

LATENT_METHODS = ("progan", "official", "official-stream")
# Seeds are 32-bit so that every method (NumPy's RandomState included) takes them.
MAX_SEED = 2**32 - 1
# Metrics draw their images from seeds far from the grids' 0..63, a block of a million per --seed.
METRICS_SEED_OFFSET = 1_000_000
# G's batch on a CPU in every sampling path (the last block padded with zero latents): a fixed
# shape makes an image independent of the batch it was asked for in. 4 below 128x128, where one
# image a call wastes the CPU (0.5 ms per 32x32 image in blocks of 4 against 1.9 ms one at a
# time); from 128x128 on one image a call costs about what blocks do (15 ms against 11 ms at
# 128x128, 2-core EPYC), and a single face (the studio, `generate --seeds 7`) is not rendered 4
# times over. On CUDA the caller's batch is kept: cuDNN's autotuner picks kernels per run anyway.
SAMPLING_BLOCK = 4
SINGLE_IMAGE_RESOLUTION = 128


def sampling_block(G: torch.nn.Module, device: torch.device | str) -> int | None:
    """How many latents G runs on at once when sampling on `device` (None: the caller's batch)."""
    if torch.device(device).type != "cpu":
        return None
    return 1 if int(G.resolution) >= SINGLE_IMAGE_RESOLUTION else SAMPLING_BLOCK


def grid_seeds(n: int) -> list[int]:
    """The seeds of a training grid of n samples."""
    return list(range(n))


def metric_seeds(num: int, seed: int = 0) -> range:
    """The seeds of the `num` generated images a metric evaluation with --seed `seed` uses."""
    first = METRICS_SEED_OFFSET * (int(seed) + 1)
    if first + num - 1 > MAX_SEED:
        top = MAX_SEED // METRICS_SEED_OFFSET - 1
        raise UserError(f"--seed {seed} is too large for metric seeds; use a seed below {top}")
    return range(first, first + num)


class Seeds(Sequence[int]):
    """A list of seeds kept as ranges: '0-100000000' takes a few bytes, not gigabytes.

    Indexing, slicing, iteration and len work as on a list of ints (a slice is a list), and it
    compares equal to a list with the same seeds."""

    def __init__(self, ranges: Iterable[range]) -> None:
        self._ranges = [r for r in ranges if len(r)]
        self._starts = list(accumulate((len(r) for r in self._ranges), initial=0))

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("seed index out of range")
        k = bisect_right(self._starts, index) - 1
        return self._ranges[k][index - self._starts[k]]

    def __iter__(self) -> Iterator[int]:
        for r in self._ranges:
            yield from r

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __repr__(self) -> str:
        parts = [f"{r.start}" if len(r) == 1 else f"{r.start}-{r.stop - 1}" for r in self._ranges]
        return f"Seeds('{','.join(parts)}')"


def parse_seeds(text: str) -> Seeds:
    """'0-3,10' -> the seeds 0, 1, 2, 3, 10 (a Seeds sequence: ranges, not a list of ints)."""
    ranges: list[range] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise UserError(f"--seeds '{text}' is not a list of seeds; write e.g. 0-63 or 1,5,9")
        # Beyond 12 digits a seed is out of range anyway; int() of a huge string would be slow.
        lo, hi = (int(g) if len(g) <= 12 else MAX_SEED + 1 for g in (m.group(1), m.group(2) or m.group(1)))
        if max(lo, hi) > MAX_SEED:
            hi = max(lo, hi)
            raise UserError(
                f"--seeds: seed {hi} is above the largest seed, {MAX_SEED} (2**32 - 1); use smaller"
            )
        if hi < lo:
            raise UserError(f"--seeds range {part} runs backwards; write {hi}-{lo}")
        ranges.append(range(lo, hi + 1))
    return Seeds(ranges)


def latent_for_seed(seed: int, latent_size: int, method: str = "progan") -> torch.Tensor:
    """The latent (latent_size,) float32 of one seed."""
    if method == "progan":
        return torch.randn(latent_size, generator=torch.Generator().manual_seed(int(seed)))
    if method == "official":
        return torch.from_numpy(np.random.RandomState(int(seed)).randn(1, latent_size)[0].astype(np.float32))
    raise ValueError(f"latent method must be one of {LATENT_METHODS}, got {method!r}")


def latents_for_seeds(
    seeds: Sequence[int], latent_size: int, method: str = "progan", stream_seed: int = 1000
) -> torch.Tensor:
    """One latent per seed, (N, latent_size): the image of a seed never depends on the batch."""
    if not len(seeds):
        return torch.zeros(0, latent_size)
    if method == "official-stream":
        return stream_latents(seeds, latent_size, stream_seed)
    return torch.stack([latent_for_seed(s, latent_size, method) for s in seeds])


def stream_latents(rows: Sequence[int], latent_size: int, stream_seed: int) -> torch.Tensor:
    """Rows of numpy.random.RandomState(stream_seed).randn(N, latent_size), drawn in chunks (row i
    is the i-th consecutive draw of latent_size normals, whatever N is)."""
    rs = np.random.RandomState(int(stream_seed))
    wanted = sorted(set(int(r) for r in rows))
    found: dict[int, np.ndarray] = {}
    start, chunk = 0, 4096
    while wanted and start <= wanted[-1]:
        block = rs.randn(chunk, latent_size)
        for r in wanted:
            if start <= r < start + chunk:
                found[r] = block[r - start]
        start += chunk
    return torch.from_numpy(np.stack([found[int(r)] for r in rows]).astype(np.float32))


def labels_for(
    label_size: int, seeds: Sequence[int], label: str | None, label_names: Sequence[str] = ()
) -> torch.Tensor | None:
    """Label rows (N, label_size) for a conditional generator, None for an unconditional one.

    `label` names classes or attributes ('3', 'smiling,blond'); without it each seed draws its
    own class (from a generator seeded with seed + 1), so a seed means the same labelled face
    everywhere.
    """
    if not label_size:
        if label:
            raise UserError("--label given, but this model is not conditional; drop --label")
        return None
    rows = torch.zeros(len(seeds), label_size)
    if label is None:
        for i, s in enumerate(seeds):
            g = torch.Generator().manual_seed(int(s) + 1)
            rows[i, int(torch.randint(label_size, (1,), generator=g))] = 1
        return rows
    for item in label.split(","):
        item = item.strip()
        if item.isdigit() and int(item) < label_size:
            idx = int(item)
        elif item in label_names:
            idx = list(label_names).index(item)
        else:
            names = ", ".join(label_names) if label_names else f"0-{label_size - 1}"
            raise UserError(f"--label '{item}' is not a label of this model; choose from {names}")
        rows[:, idx] = 1
    return rows


# G -> (what it was copied from, its sampling copy): one copy per generator, made again when G's
# weights, stage, device or precision change (a training run's G_ema changes every step).
_SAMPLING_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def sampling_network(G: torch.nn.Module, device: torch.device, precision: str) -> torch.nn.Module:
    """The network that turns latents into images: for a Generator its channels-last copy in the
    precision's dtype (networks.sampling_copy, the same function; kept while G is unchanged),
    other modules as they are."""
    from progan.networks import Generator, sampling_copy

    if not isinstance(G, Generator):
        return G
    dtype = PRECISION_DTYPES[precision]
    params = tuple((p.data_ptr(), p._version) for p in G.parameters())
    key = (device, dtype, G.resolution, G.fading, float(G.alpha), params)
    found = _SAMPLING_COPIES.get(G)
    if found is None or found[0] != key:
        found = (key, sampling_copy(G, dtype, device))
        _SAMPLING_COPIES[G] = found
    return found[1]


def render_blocks(
    G: torch.nn.Module, z: torch.Tensor, labels: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    """G's float images for latents z (n, L), run on blocks of exactly `sampling_block` rows (the
    last padded with zeros), so that an image depends on its latent only."""
    block = sampling_block(G, device) or max(len(z), 1)
    out = []
    for i in range(0, len(z), block):
        zb = z[i : i + block].to(device)
        lb = None if labels is None else labels[i : i + block].to(device)
        n = len(zb)
        if n < block:
            zb = torch.cat([zb, zb.new_zeros(block - n, zb.shape[1])])
            lb = None if lb is None else torch.cat([lb, lb.new_zeros(block - n, lb.shape[1])])
        out.append(G(zb, lb)[:n])
    return torch.cat(out)


@torch.no_grad()
def iter_images(
    G: torch.nn.Module,
    latents: torch.Tensor | Iterable[torch.Tensor],
    labels: torch.Tensor | None = None,
    batch: int = 32,
    device: torch.device | str = "cpu",
    precision: str = "auto",
) -> Iterator[torch.Tensor]:
    """Run G over latents on `device`; yield uint8 (n, C, H, W) CPU batches of `batch` images.

    `latents` is an (N, L) tensor or an iterable of (n, L) batches (streamed: nothing is built up
    front, so a long video or a huge seed list uses memory for one batch only). `precision` is
    resolved by `device.sampling_precision` (`auto`: the hardware's rule).
    """
    device = torch.device(device)
    precision = sampling_precision(precision, device)
    G = sampling_network(G, device, precision)
    chunks = (
        (latents[i : i + batch] for i in range(0, len(latents), batch))
        if isinstance(latents, torch.Tensor)
        else latents
    )
    done = 0
    for z in chunks:
        lab = None if labels is None else labels[done : done + len(z)]
        # Autocast only around G: held across the yield, it would run the caller's code (e.g. an
        # attribute classifier, whose bf16 logits numpy refuses) in bf16 too.
        with autocast(device, precision):
            images = render_blocks(G, z, lab, device)
        yield to_uint8(images).cpu()
        done += len(z)


def images_for_latents(
    G: torch.nn.Module,
    latents: torch.Tensor,
    labels: torch.Tensor | None = None,
    batch: int = 32,
    device: torch.device | str = "cpu",
    precision: str = "auto",
) -> torch.Tensor:
    """uint8 images (N, C, H, W) for the given latents."""
    out = list(iter_images(G, latents, labels, batch=batch, device=device, precision=precision))
    if not out:
        return torch.zeros(0, G.config.channels, G.resolution, G.resolution, dtype=torch.uint8)
    return torch.cat(out)


def images_for_seeds(
    G: torch.nn.Module,
    seeds: Sequence[int],
    labels: torch.Tensor | None = None,
    batch: int = 32,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    method: str = "progan",
) -> torch.Tensor:
    """uint8 images (N, C, H, W) for the given seeds: the same seed, the same image, everywhere."""
    z = latents_for_seeds(seeds, G.config.latent_size, method)
    return images_for_latents(G, z, labels, batch=batch, device=device, precision=precision)


def iter_seed_images(
    G: torch.nn.Module,
    seeds: Sequence[int],
    label: str | None = None,
    label_names: Sequence[str] = (),
    batch: int = 32,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    method: str = "progan",
    stream_seed: int = 1000,
    edit: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(seeds, uint8 images) a batch at a time: latents and labels are made per batch, so any
    number of seeds takes memory for one batch only. `edit` changes each batch of latents (e.g.
    `directions.move`) before G sees it."""
    label_size = getattr(G.config, "label_size", 0)
    labels_for(label_size, [], label, label_names)  # a bad --label fails before any work
    for start in range(0, len(seeds), batch):
        chunk = list(seeds[start : start + batch])
        z = latents_for_seeds(chunk, G.config.latent_size, method, stream_seed=stream_seed)
        if edit is not None:
            z = edit(z)
        labels = labels_for(label_size, chunk, label, label_names)
        for images in iter_images(G, z, labels, batch=batch, device=device, precision=precision):
            yield chunk, images


def slerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents a and b (..., L); t=0 gives a, t=1 gives b.

    The paper's latents live on a sphere after normalization, so blending along the great circle
    keeps every intermediate latent at the norm the generator was trained on.
    """
    a_n = a / a.norm(dim=-1, keepdim=True)
    b_n = b / b.norm(dim=-1, keepdim=True)
    t = torch.as_tensor(t, dtype=a.dtype)
    dot = (a_n * b_n).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.arccos(dot)
    so = torch.sin(omega)
    # Nearly parallel latents: the formula divides by ~0, and the straight line is the same path.
    near = so.abs() < 1e-6
    safe = torch.where(near, torch.ones_like(so), so)
    wa = torch.where(near, 1 - t, torch.sin((1 - t) * omega) / safe)
    wb = torch.where(near, t, torch.sin(t * omega) / safe)
    norm = torch.lerp(a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True), t)
    return (wa * a_n + wb * b_n) * norm

"""Sliced Wasserstein distance between Laplacian-pyramid patch descriptors, as in the paper.

Karras et al. 2018, section 5 / appendix D, and the official `metrics/sliced_wasserstein.py`:

* a Laplacian pyramid from the full resolution down to 16x16 (the coarsest level is the Gaussian
  level), made with the 5x5 binomial kernel [1, 4, 6, 4, 1]^2 / 256 and mirror (reflect-101)
  borders, exactly like ``cv2.pyrDown`` / ``cv2.pyrUp``;
* 128 random 7x7 neighbourhoods per image and level (centres drawn uniformly in
  ``[3, size - 4]``, as ``np.random.randint(H, S - H)``), each a C*7*7 descriptor;
* every channel normalized by its mean and standard deviation over all descriptors of that level,
  each set with its own statistics;
* 4 repeats of 128 random directions (N(0, 1), normalized), the projections sorted, the mean
  absolute difference of the sorted projections, averaged over the repeats; x1e3 per level, and
  the average over levels.

Images are uint8 (N, C, R, R), C = 1 or 3, R a power of two >= 16. Descriptors are streamed: a
`DescriptorSet` takes images a batch at a time and keeps only descriptors (in memory, or appended
to files on disk when `spill_dir` is given), and `sliced_wasserstein_levels` reads them back one
level and one block of rows at a time, so neither the images nor all projections are ever held.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

NHOOD_SIZE = 7
NHOODS_PER_IMAGE = 128
DIR_REPEATS = 4
DIRS_PER_REPEAT = 128
MIN_RESOLUTION = 16

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0  # outer(b, b) = [1,4,6,4,1]^2 / 256


def swd_resolutions(resolution: int) -> list[int]:
    """Pyramid level sizes, finest first: [R, R/2, ..., 16]."""
    r = int(resolution)
    if r < MIN_RESOLUTION or r & (r - 1):
        raise ValueError(f"SWD needs a power-of-two resolution >= {MIN_RESOLUTION}, got {resolution}")
    out = []
    while r >= MIN_RESOLUTION:
        out.append(r)
        r //= 2
    return out


def _sep_conv(x: torch.Tensor, k: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """Mirror-padded separable 5x5 filter of (N, C, H, W), each channel on its own.

    Written as five shifted multiply-adds per axis: for one-channel 5-tap filters this is several
    times faster than conv2d on CPU, and `stride` keeps only the samples pyrDown needs.
    """
    n, c, h, w = x.shape
    taps = [float(v) for v in k]
    y = F.pad(x.reshape(n * c, h, w), (2, 2, 2, 2), mode="reflect")  # reflect-101 = cv2 default
    cols = y[:, :, 0:w:stride] * taps[0]
    for i in range(1, 5):
        cols += y[:, :, i : i + w : stride] * taps[i]
    out = cols[:, 0:h:stride] * taps[0]
    for i in range(1, 5):
        out += cols[:, i : i + h : stride] * taps[i]
    return out.reshape(n, c, out.shape[-2], out.shape[-1])


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """Blur with the 5x5 binomial kernel and drop every other row and column (cv2.pyrDown)."""
    return _sep_conv(x, _BINOMIAL, stride=2)


def pyr_up(x: torch.Tensor) -> torch.Tensor:
    """Insert zeros between samples and blur with 4x the kernel (cv2.pyrUp)."""
    n, c, h, w = x.shape
    up = torch.zeros(n, c, 2 * h, 2 * w, dtype=x.dtype, device=x.device)
    up[:, :, ::2, ::2] = x
    return _sep_conv(up, _BINOMIAL * 2.0)


def laplacian_pyramid(images: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """Laplacian levels finest first; the last entry is the coarsest Gaussian level."""
    pyramid = [images.to(torch.float32)]
    for _ in range(1, num_levels):
        pyramid.append(pyr_down(pyramid[-1]))
        pyramid[-2] = pyramid[-2] - pyr_up(pyramid[-1])
    return pyramid


def reconstruct_laplacian_pyramid(pyramid: list[torch.Tensor]) -> torch.Tensor:
    x = pyramid[-1]
    for level in pyramid[-2::-1]:
        x = pyr_up(x) + level
    return x


def _level_rngs(seed: int, level: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent streams for the x and y patch centres of one level (batch-size independent)."""
    return np.random.default_rng([seed, level, 0]), np.random.default_rng([seed, level, 1])


def direction_rng(seed: int, level: int) -> np.random.Generator:
    return np.random.default_rng([seed, level, 2])


def extract_descriptors(level: torch.Tensor, xs: np.ndarray, ys: np.ndarray) -> torch.Tensor:
    """(n, C, S, S) level and n*NHOODS_PER_IMAGE patch centres -> (n*128, C*7*7) float32."""
    n, c, _, _ = level.shape
    h = NHOOD_SIZE // 2
    dev = level.device
    off = torch.arange(-h, h + 1, device=dev)
    img = torch.arange(n, device=dev).repeat_interleave(NHOODS_PER_IMAGE)
    rows = torch.as_tensor(ys, device=dev)[:, None] + off  # (N, 7)
    cols = torch.as_tensor(xs, device=dev)[:, None] + off
    chan = torch.arange(c, device=dev)
    # axis 2 runs along x (columns) and axis 3 along y (rows), the official descriptor layout
    desc = level[
        img[:, None, None, None], chan[None, :, None, None], rows[:, None, None, :], cols[:, None, :, None]
    ]
    return desc.reshape(desc.shape[0], -1)


class DescriptorSet:
    """Patch descriptors of one image set, collected a batch at a time.

    `add(images)` takes uint8 (n, C, R, R) (NumPy or torch); the per-channel sums that normalize
    each level are accumulated on the way, so nothing has to be read twice. With `spill_dir`,
    each level's raw float32 descriptors are appended to `desc-<S>.f32` there instead of kept in
    memory; `save`/`load` turn such a directory into a reusable cache.
    """

    def __init__(
        self,
        resolution: int,
        channels: int,
        seed: int = 0,
        spill_dir: str | os.PathLike | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.resolutions = swd_resolutions(resolution)
        self.channels = int(channels)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.dim = self.channels * NHOOD_SIZE * NHOOD_SIZE
        self.count = 0  # images
        self._rngs = [_level_rngs(self.seed, i) for i in range(len(self.resolutions))]
        self._sum = np.zeros((len(self.resolutions), self.channels), np.float64)
        self._sumsq = np.zeros((len(self.resolutions), self.channels), np.float64)
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        self._mem: list[list[np.ndarray]] = [[] for _ in self.resolutions]
        if self.spill_dir is not None:
            self.spill_dir.mkdir(parents=True, exist_ok=True)
            for s in self.resolutions:
                open(self._file(s), "wb").close()

    def _file(self, size: int) -> Path:
        assert self.spill_dir is not None
        return self.spill_dir / f"desc-{size}.f32"

    @torch.no_grad()
    def add(self, images) -> None:
        x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
        self.append(self.describe(x, self.draw_positions(x.shape[0])))

    def draw_positions(self, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The patch centres of the next `n` images, (xs, ys) per level. Drawn in image order from
        the set's streams, so that ranks which each describe a share of the batches (drawing the
        centres of every batch, in order) describe exactly what one process would."""
        h = NHOOD_SIZE // 2
        out = []
        for i, size in enumerate(self.resolutions):
            rx, ry = self._rngs[i]
            out.append((rx.integers(h, size - h, size=n * NHOODS_PER_IMAGE),
                        ry.integers(h, size - h, size=n * NHOODS_PER_IMAGE)))  # fmt: skip
        return out

    @torch.no_grad()
    def describe(self, images, positions: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """float32 (n*NHOODS_PER_IMAGE, C*7*7) descriptors per level of uint8 (n, C, R, R) images."""
        x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
        if x.ndim != 4 or x.shape[1] != self.channels or x.shape[2] != self.resolutions[0]:
            raise ValueError(
                f"expected images (n, {self.channels}, {self.resolutions[0]}, {self.resolutions[0]}), "
                f"got {tuple(x.shape)}"
            )
        pyramid = laplacian_pyramid(x.to(self.device), len(self.resolutions))
        return [
            extract_descriptors(level, xs, ys).cpu().numpy().astype(np.float32, copy=False)
            for level, (xs, ys) in zip(pyramid, positions, strict=True)
        ]

    def append(self, descriptors: list[np.ndarray]) -> None:
        """Add one batch's descriptors (from `describe`): the normalising sums, and the arrays."""
        for i, arr in enumerate(descriptors):
            d = torch.from_numpy(arr).reshape(arr.shape[0], self.channels, -1).double()
            self._sum[i] += d.sum(dim=(0, 2)).numpy()
            self._sumsq[i] += (d * d).sum(dim=(0, 2)).numpy()
            if self.spill_dir is None:
                self._mem[i].append(arr)
            else:
                with open(self._file(self.resolutions[i]), "ab") as f:
                    arr.tofile(f)
        self.count += descriptors[0].shape[0] // NHOODS_PER_IMAGE

    @property
    def num_descriptors(self) -> int:
        return self.count * NHOODS_PER_IMAGE

    def stats(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and (population) std of level i's descriptors."""
        m = self.num_descriptors * NHOOD_SIZE * NHOOD_SIZE
        mean = self._sum[i] / m
        var = np.maximum(self._sumsq[i] / m - mean * mean, 0.0)
        std = np.sqrt(var)
        std[std == 0] = 1.0  # a constant channel: leave it at zero instead of dividing by zero
        return mean, std

    def raw(self, i: int) -> np.ndarray:
        """Level i's raw descriptors (M, C*49) float32: an in-memory array or a file memory map."""
        if self.spill_dir is None:
            if len(self._mem[i]) != 1:
                self._mem[i] = [np.concatenate(self._mem[i], axis=0)] if self._mem[i] else []
            return self._mem[i][0] if self._mem[i] else np.zeros((0, self.dim), np.float32)
        return np.memmap(
            self._file(self.resolutions[i]), np.float32, "r", shape=(self.num_descriptors, self.dim)
        )

    def normalized(self, i: int, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of level i, each channel normalized by the set's statistics."""
        mean, std = self.stats(i)
        if self.spill_dir is None:
            block = torch.from_numpy(np.array(self.raw(i)[start:stop], dtype=np.float32))
        else:  # read just this block (a memory map would count the whole file as resident)
            f = self._file(self.resolutions[i])
            arr = np.fromfile(f, np.float32, count=(stop - start) * self.dim, offset=start * self.dim * 4)
            block = torch.from_numpy(arr.reshape(stop - start, self.dim))
        block = block.view(block.shape[0], self.channels, -1)
        mean_t = torch.from_numpy(mean.astype(np.float32))[None, :, None]
        std_t = torch.from_numpy(std.astype(np.float32))[None, :, None]
        return ((block - mean_t) / std_t).reshape(block.shape[0], -1)

    # --- cache ---------------------------------------------------------------------------------
    def save(self, meta: dict | None = None) -> None:
        """Write the statistics beside the spilled descriptors so that `load` can reopen them."""
        if self.spill_dir is None:
            raise ValueError("only a spilled DescriptorSet can be saved")
        info = {
            "resolutions": self.resolutions,
            "channels": self.channels,
            "seed": self.seed,
            "count": self.count,
            "sum": self._sum.tolist(),
            "sumsq": self._sumsq.tolist(),
            "meta": meta or {},
        }
        (self.spill_dir / "descriptors.json").write_text(json.dumps(info))

    @classmethod
    def load(cls, path: str | os.PathLike) -> DescriptorSet:
        path = Path(path)
        info = json.loads((path / "descriptors.json").read_text())
        self = cls.__new__(cls)
        self.resolutions = list(info["resolutions"])
        self.channels = int(info["channels"])
        self.seed = int(info["seed"])
        self.device = torch.device("cpu")
        self.dim = self.channels * NHOOD_SIZE * NHOOD_SIZE
        self.count = int(info["count"])
        self._rngs = []
        self._sum = np.asarray(info["sum"], np.float64)
        self._sumsq = np.asarray(info["sumsq"], np.float64)
        self.spill_dir = path
        self._mem = [[] for _ in self.resolutions]
        for s in self.resolutions:
            f = self._file(s)
            if not f.is_file() or f.stat().st_size != self.count * NHOODS_PER_IMAGE * self.dim * 4:
                raise ValueError(f"descriptor cache {path} is incomplete ({f.name})")
        return self


def _sorted_projection_distance(
    a: DescriptorSet, b: DescriptorSet, i: int, dirs: torch.Tensor, block_rows: int, device
) -> float:
    """Mean |sort(A v) - sort(B v)| over rows and the given directions (D, k)."""
    m = a.num_descriptors
    device = torch.device(device)
    projs = []
    for s in (a, b):
        p = torch.empty(dirs.shape[1], m, dtype=torch.float32, device=device)
        for start in range(0, m, block_rows):
            stop = min(start + block_rows, m)
            p[:, start:stop] = (s.normalized(i, start, stop).to(device) @ dirs).T
        if device.type == "cpu":  # NumPy's vectorized sort is far faster than torch's on CPU
            arr = p.numpy()
            arr.sort(axis=1)
            projs.append(p)
        else:
            projs.append(torch.sort(p, dim=1).values)
    diff = projs[0].sub_(projs[1]).abs_()  # in place: no extra copies of the projections
    return float(diff.sum(dtype=torch.float64)) / (m * dirs.shape[1])


def sliced_wasserstein_levels(
    a: DescriptorSet,
    b: DescriptorSet,
    seed: int = 0,
    dir_repeats: int = DIR_REPEATS,
    dirs_per_repeat: int = DIRS_PER_REPEAT,
    memory_bytes: int = 1 << 30,
    block_rows: int = 1 << 18,
    device: torch.device | str = "cpu",
    dirs_per_chunk: int | None = None,
) -> dict[str, float]:
    """SWD x1e3 per level ("swd_<size>") and their mean ("swd_avg") between two descriptor sets.

    The dir_repeats x dirs_per_repeat directions of a level are projected in chunks sized so that
    both sets' projections fit in `memory_bytes` (each chunk is one pass over the descriptors);
    the mean over all projections equals the official mean over repeats of per-repeat means.
    """
    if a.resolutions != b.resolutions or a.channels != b.channels:
        raise ValueError("descriptor sets differ in resolution or channels")
    if a.count != b.count:
        raise ValueError(f"SWD compares sets of equal size, got {a.count} and {b.count} images")
    if a.count < 1:
        raise ValueError("SWD of an empty set")
    m = a.num_descriptors
    total_dirs = dir_repeats * dirs_per_repeat
    chunk = dirs_per_chunk or int(max(8, min(total_dirs, memory_bytes // (2 * 4 * m))))
    out = {}
    for i, size in enumerate(a.resolutions):
        rng = direction_rng(seed, i)
        dirs = []
        for _ in range(dir_repeats):
            d = rng.standard_normal((a.dim, dirs_per_repeat))
            d /= np.sqrt(np.sum(np.square(d), axis=0, keepdims=True))
            dirs.append(d.astype(np.float32))
        dirs_t = torch.from_numpy(np.concatenate(dirs, axis=1)).to(device)
        total = 0.0
        for c0 in range(0, total_dirs, chunk):
            part = dirs_t[:, c0 : c0 + chunk]
            total += _sorted_projection_distance(a, b, i, part, block_rows, device) * part.shape[1]
        out[f"swd_{size}"] = total / total_dirs * 1e3
    out["swd_avg"] = float(np.mean([out[f"swd_{s}"] for s in a.resolutions]))
    return out


def collect(
    batches: Iterable,
    resolution: int,
    channels: int,
    seed: int = 0,
    spill_dir: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
) -> DescriptorSet:
    ds = DescriptorSet(resolution, channels, seed=seed, spill_dir=spill_dir, device=device)
    for batch in batches:
        ds.add(batch)
    return ds


def swd(
    images_a,
    images_b,
    seed: int = 0,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """SWD between two in-memory uint8 (N, C, R, R) sets of equal size (convenience for small sets)."""
    a_np, b_np = np.asarray(images_a), np.asarray(images_b)
    _, c, r, _ = a_np.shape
    a = collect(
        (a_np[i : i + batch_size] for i in range(0, len(a_np), batch_size)), r, c, 2 * seed, None, device
    )
    b = collect(
        (b_np[i : i + batch_size] for i in range(0, len(b_np), batch_size)), r, c, 2 * seed + 1, None, device
    )
    return sliced_wasserstein_levels(a, b, seed=seed, device=device)

"""The dataset store: one memory-mappable uint8 array per resolution plus a JSON manifest.

Layout of a store directory::

    dataset.json          manifest (see Store); "format": "progan-store"
    images-4x4.npy        uint8 (N, C, 4, 4)
    images-8x8.npy        uint8 (N, C, 8, 8)
    ...
    images-RxR.npy        uint8 (N, C, R, R)
    labels.npy            float32 (N, L), one-hot or multi-hot (only when labelled)

NCHW so that a batch goes to the model without a transpose. Lower levels are 2x2 box averages of
the level above, as the official dataset tool makes them, so every training phase reads images
at its own size without resizing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from progan.errors import UserError

FORMAT = "progan-store"
FORMAT_VERSION = 1
MANIFEST = "dataset.json"


def level_file(resolution: int) -> str:
    return f"images-{resolution}x{resolution}.npy"


def levels_up_to(resolution: int) -> list[int]:
    return [2**k for k in range(2, int(resolution).bit_length())]


def box_downsample(images: np.ndarray) -> np.ndarray:
    """2x2 box average of uint8 NCHW images, rounded to nearest."""
    x = images.astype(np.float32)
    x = (x[..., 0::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 0::2] + x[..., 1::2, 1::2]) * 0.25
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


@dataclass
class Store:
    """An opened store. `images(r)` is a read-only memory map of the level at resolution r."""

    path: Path
    manifest: dict = field(repr=False)

    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    @property
    def resolution(self) -> int:
        return int(self.manifest["resolution"])

    @property
    def channels(self) -> int:
        return int(self.manifest["channels"])

    @property
    def levels(self) -> list[int]:
        return levels_up_to(self.resolution)

    @property
    def label_size(self) -> int:
        return int(self.manifest.get("label_size", 0))

    @property
    def label_names(self) -> list[str]:
        return list(self.manifest.get("label_names") or [])

    def images(self, resolution: int) -> np.ndarray:
        if resolution not in self.levels:
            raise UserError(
                f"store {self.path} has levels {self.levels}, not {resolution}x{resolution}; "
                f"prepare it with --resolution {resolution} or train at most at {self.resolution}"
            )
        return np.load(self.path / level_file(resolution), mmap_mode="r")

    @property
    def labels(self) -> np.ndarray | None:
        if not self.label_size:
            return None
        return np.load(self.path / "labels.npy", mmap_mode="r")


def open_store(path: str | os.PathLike) -> Store:
    """Open a store, with a one-line error when `path` is not one."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise UserError(
            f"{path} is not a progan dataset store (no {MANIFEST}); make one with "
            f"'progan prepare SOURCE {path} --resolution R'"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{manifest_path} is not valid JSON ({e}); prepare the store again") from e
    if manifest.get("format") != FORMAT:
        raise UserError(f"{manifest_path} is not a progan store manifest; prepare the store again")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise UserError(
            f"store {path} was written by a newer progan (format {manifest['format_version']}); "
            f"upgrade progan to read it"
        )
    store = Store(path=path, manifest=manifest)
    if store.count < 1:
        raise UserError(f"store {path} holds no images; prepare it again from a folder with images")
    return store


def write_store(
    dest: str | os.PathLike,
    images: np.ndarray,
    labels: np.ndarray | None = None,
    label_names: list[str] | None = None,
    source: str = "",
    overwrite: bool = False,
    extra: dict | None = None,
) -> Store:
    """Write in-memory uint8 NCHW images (square, power-of-two side) as a store, atomically.

    For data that fits in memory (the demo, tests). `progan prepare` streams larger sets.
    """
    from progan import __version__

    dest = Path(dest)
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[2] != images.shape[3]:
        raise ValueError(f"images must be uint8 (N, C, R, R), got {images.dtype} {images.shape}")
    n, c, r, _ = images.shape
    if n == 0:
        raise UserError(f"no images to write to {dest}; check the source")
    if r < 4 or r & (r - 1):
        raise UserError(f"resolution {r} is not a power of two >= 4; pick one such as 32 or 128")
    if dest.exists() and not overwrite:
        raise UserError(f"{dest} already exists; choose another destination or pass --overwrite")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        level = np.ascontiguousarray(images)
        for res in reversed(levels_up_to(r)):
            np.save(tmp / level_file(res), level)
            if res > 4:
                level = box_downsample(level)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tool_version": __version__,
            "count": int(n),
            "resolution": int(r),
            "channels": int(c),
            "label_size": 0,
            "label_names": [],
            "source": source,
        }
        if labels is not None:
            labels = np.asarray(labels, dtype=np.float32)
            if labels.ndim != 2 or labels.shape[0] != n:
                raise ValueError(f"labels must be (N, L) with N={n}, got {labels.shape}")
            np.save(tmp / "labels.npy", labels)
            manifest["label_size"] = int(labels.shape[1])
            manifest["label_names"] = list(label_names or [str(i) for i in range(labels.shape[1])])
        manifest.update(extra or {})
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return open_store(dest)

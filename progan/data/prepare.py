"""`progan prepare`: any folder, archive, MNIST idx pair or CelebA -> a multi-resolution store.

Pipeline: enumerate the source in a fixed (sorted) order; decode, normalise and resize every
image in a pool of worker processes (in order, with a bounded number of images in flight);
stream the results in chunks into memory-mapped levels that `StoreWriter` fills in a temporary
directory; trim, hash and rename at the end. Memory use is bounded by the chunk size and the
number of images in flight, not by the size of the data set.

Image normalisation (in the workers):
  * EXIF orientation is applied; 16-bit images are scaled to 8 bits (v / 257); palette, CMYK,
    YCbCr, LAB and bilevel images are converted; alpha (RGBA, LA, PA, palette or greyscale with a
    transparent colour) is composited on `background` (white by default).
  * The stored channel count is `channels` (1 or 3); by default 1 when the first images are all
    greyscale, else 3.
  * Non-square images are centre-cropped (default), padded (reflect) or stretched to a square,
    then resized to the resolution with Pillow's Lanczos filter, which widens with the reduction
    factor (a proper antialiasing filter). Large JPEGs are first decoded at a reduced DCT scale
    (never below twice the target side).
Files that fail (empty, not an image, truncated, corrupt, no label, no face) are skipped and listed
with the reason in the store's report.json; the run fails only when nothing usable is left.
"""

from __future__ import annotations

import csv
import errno
import gzip
import io
import itertools
import json
import math
import multiprocessing
import os
import shutil
import stat
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor, ImageOps, UnidentifiedImageError

from progan.checks import format_bytes
from progan.data import align
from progan.data.store import MANIFEST, Store, StoreWriter, check_destination, check_resolution, levels_up_to
from progan.errors import UserError
from progan.images import normalise_mode

GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
FASHION_MNIST = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


@dataclass
class Options:
    resolution: int
    channels: int | None = None  # None: inferred
    fit: str = "crop"  # crop | pad | stretch
    background: str = "white"
    labels: str | None = None  # a CSV/JSON file, "from-folders", "none", or None (source default)
    celeba: bool = False
    align_faces: bool = False
    celebahq_deltas: str | None = None
    workers: int = field(default_factory=lambda: min(os.cpu_count() or 1, 8))
    limit: int | None = None
    overwrite: bool = False
    progress: bool = True
    # Hostile-input bounds: an archive member is read into memory, an image decoded whole.
    max_file_mb: float = 256.0  # archive members above this are skipped (--max-file-mb)
    max_megapixels: float = 100.0  # images above this are skipped (--max-megapixels)

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 2**20)


@dataclass
class Item:
    """One unit of work. Exactly one of path / data / array holds the image."""

    name: str
    path: str | None = None
    data: bytes | None = None
    array: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    delta: dict | None = None
    error: str | None = None  # known unreadable before decoding (a damaged archive member)


@dataclass
class Result:
    store: Store
    skipped: list[tuple[str, str]]
    warnings: list[str]
    seconds: float
    kind: str

    @property
    def images_per_second(self) -> float:
        return (self.store.count + len(self.skipped)) / max(self.seconds, 1e-9)


# --------------------------------------------------------------------------------------------
# Sources


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.parts)


def source_kind(source: Path, options: Options) -> str:
    if not source.exists():
        raise UserError(f"source {source} does not exist; give a folder, a .zip/.tar archive or an idx file")
    if options.celeba:
        if not source.is_dir():
            raise UserError(f"--celeba needs the CelebA folder, and {source} is a file")
        return "celebahq" if options.celebahq_deltas else "celeba"
    if options.celebahq_deltas:
        raise UserError("--celebahq-deltas applies to CelebA only; add --celeba and point SOURCE at CelebA")
    if source.is_dir():
        return "folder"
    name = source.name.lower()
    if "idx3" in name:
        return "idx"
    if zipfile.is_zipfile(source):
        return "zip"
    if name.endswith(TAR_SUFFIXES) or tarfile.is_tarfile(source):
        return "tar"
    raise UserError(
        f"{source} is neither a folder, a .zip or .tar archive, nor an MNIST idx images file; "
        f"point SOURCE at one of those"
    )


def _folder_items(source: Path, exclude: list[Path]) -> tuple[list[Item], list[tuple[str, str]]]:
    """The regular files under `source` in sorted order, and (name, reason) for what is skipped:
    FIFOs, sockets and devices (reading a FIFO would block forever), broken and looping symlinks,
    symlinked folders (not followed, so that a link cannot loop or leave SOURCE) and unreadable
    folders."""
    items, skipped = [], []

    def unreadable(e: OSError) -> None:
        rel = Path(e.filename).relative_to(source).as_posix() if e.filename else "?"
        skipped.append((rel + "/", f"folder not readable ({e.strerror}); check its permissions"))

    for root, dirs, files in os.walk(source, onerror=unreadable):
        rootp = Path(root)
        keep = []
        for d in sorted(dirs):
            if d.startswith(".") or (rootp / d).resolve() in exclude:
                continue
            if (rootp / d).is_symlink():
                skipped.append(
                    ((rootp / d).relative_to(source).as_posix() + "/", "symlink to a folder (not followed)")
                )
                continue
            keep.append(d)
        dirs[:] = keep
        for f in sorted(files):
            p = rootp / f
            rel = p.relative_to(source)
            if _is_hidden(rel):
                continue
            reason = _not_a_regular_file(p)
            if reason:
                skipped.append((rel.as_posix(), reason))
            else:
                items.append(Item(name=rel.as_posix(), path=str(p)))
    return items, skipped


def _not_a_regular_file(p: Path) -> str | None:
    try:
        mode = p.stat().st_mode  # follows symlinks
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink loop (it points back at itself)"
        if p.is_symlink():
            return "broken symlink (its target does not exist)"
        return f"cannot read it ({e.strerror})"
    if stat.S_ISREG(mode):
        return None
    kind = "FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"
    kind = kind if not stat.S_ISDIR(mode) else "folder"
    return f"not a regular file ({kind})"


def _strip_common_top(names: list[str]) -> dict[str, str]:
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and all("/" in n for n in names):
        return {n: n.split("/", 1)[1] for n in names}
    return {n: n for n in names}


def _too_big(size: int, limit: int) -> str:
    return (
        f"archive member of {format_bytes(size)} is above the limit of {format_bytes(limit)}; "
        f"raise it with --max-file-mb"
    )


def _zip_items(source: Path, limit: int) -> Iterator[Item]:
    with zipfile.ZipFile(source) as z:
        infos = [i for i in z.infolist() if not i.is_dir() and not _is_hidden(Path(i.filename))]
        short = _strip_common_top([i.filename for i in infos])
        for info in sorted(infos, key=lambda i: i.filename):
            name = short[info.filename]
            if info.file_size > limit:  # refused before reading: a small zip can hold a huge member
                yield Item(name=name, error=_too_big(info.file_size, limit))
                continue
            try:
                with z.open(info) as f:
                    data = f.read(limit + 1)  # bounded even if the header lied
            except Exception as e:  # noqa: BLE001 - a damaged member is reported, not fatal
                yield Item(name=name, error=f"unreadable archive member ({e})")
                continue
            if len(data) > limit:
                yield Item(name=name, error=_too_big(len(data), limit))
                continue
            yield Item(name=name, data=data)


def _tar_members(source: Path) -> list[tarfile.TarInfo]:
    try:
        with tarfile.open(source, "r:*") as t:
            return [m for m in t.getmembers() if m.isfile() and not _is_hidden(Path(m.name))]
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"{source} is not a readable tar archive ({e}); check the file") from e


def _tar_items(source: Path, members: list[tarfile.TarInfo], limit: int) -> Iterator[Item]:
    short = _strip_common_top([m.name for m in members])
    with tarfile.open(source, "r:*") as t:
        for m in members:  # archive order: a compressed tar is read once, front to back
            if m.size > limit:
                yield Item(name=short[m.name], error=_too_big(m.size, limit))
                continue
            try:
                f = t.extractfile(m)
                data = f.read(limit + 1) if f is not None else b""
            except (tarfile.TarError, OSError, EOFError) as e:
                yield Item(name=short[m.name], error=f"unreadable archive member ({e})")
                continue
            yield Item(name=short[m.name], data=data)


def read_idx(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """An idx file (MNIST's format, optionally gzipped) as a NumPy array.

    Only the bytes its header declares are read (a gzip bomb cannot inflate past them), and with
    `max_pixels` an image larger than that is refused before anything is read."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08:
                raise UserError(
                    f"{path} is not an idx file of unsigned bytes (bad magic); give MNIST's idx files"
                )
            raw_dims = f.read(4 * head[3])
            dims = [int.from_bytes(raw_dims[4 * i : 4 * i + 4], "big") for i in range(len(raw_dims) // 4)]
            if len(dims) != head[3]:
                raise UserError(f"{path} is truncated in its header; download it again")
            per_item = math.prod(dims[1:])
            if max_pixels is not None and per_item > max_pixels:
                raise UserError(
                    f"{path}: each image has {per_item} values, above the limit of {max_pixels} "
                    f"(--max-megapixels); check the file"
                )
            size = math.prod(dims)
            raw = f.read(size)
    except (OSError, EOFError) as e:
        raise UserError(f"{path} is not a readable idx file ({e})") from e
    if len(raw) < size:
        raise UserError(f"{path} is truncated ({len(raw)} of {size} bytes); download it again")
    return np.frombuffer(raw, dtype=np.uint8, count=size).reshape(dims)


def _idx_labels_path(images: Path) -> Path | None:
    name = images.name
    cands = [name.replace("images", "labels").replace("idx3", "idx1")]
    cands += [c[:-3] if c.endswith(".gz") else c + ".gz" for c in cands]
    return next((images.parent / c for c in cands if (images.parent / c).is_file()), None)


# --------------------------------------------------------------------------------------------
# Labels


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


# More classes than this is a mistake in the file (a class index of 1e9), not a data set: a one-hot
# label per image takes label_size * 4 bytes, so the bound keeps labels.npy in proportion.
MAX_LABEL_SIZE = 65536


def read_label_file(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """CSV or JSON labels -> (file name -> float32 vector, label names).

    JSON: {"name": class_index | [attributes...]}, or {"labels": that dict or [[name, label], ...],
    "names": [...]} (the latter is StyleGAN2-ADA's dataset.json). CSV: rows `name,class` or
    `name,a1,a2,...`, with an optional header row naming the columns. A single value per file is
    a class index, a whole number from 0 (stored one-hot); several values are attributes, each 0
    or 1 (multi-hot), or each -1 or 1 as CelebA writes them (read as 0/1). Every value is checked
    before anything is allocated; a bad one fails with its file name and value.
    """
    if not path.is_file():
        raise UserError(
            f"label file {path} does not exist; give a CSV or JSON file, or --labels from-folders"
        )
    fix = "see docs/data.md for the format"
    names: object = None
    raw: dict[str, object] = {}
    try:
        if path.suffix.lower() == ".json":
            obj = json.loads(path.read_text())
            if isinstance(obj, dict) and "labels" in obj:
                names = obj.get("names") or obj.get("label_names")
                obj = obj["labels"]
            if isinstance(obj, list):
                if not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in obj):
                    raise UserError(f"{path}: 'labels' must be [[file name, label], ...]; {fix}")
                obj = dict(obj)
            if not isinstance(obj, dict):
                raise UserError(f"{path}: expected an object mapping file names to labels; {fix}")
            raw = {str(k): v for k, v in obj.items()}
        else:
            with open(path, newline="") as f:
                rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
            if rows and not all(_is_number(c) for c in rows[0][1:]):
                names, rows = [c.strip() for c in rows[0][1:]], rows[1:]
            for r in rows:
                if len(r) < 2:
                    raise UserError(f"{path}: row '{','.join(r)}' has no label; write name,label")
                try:
                    vals = [float(c) for c in r[1:]]
                except ValueError:
                    raise UserError(
                        f"{path}: row '{','.join(r)}' holds a value that is not a number; {fix}"
                    ) from None
                raw[r[0].strip()] = vals[0] if len(vals) == 1 else vals
    except (ValueError, TypeError, RecursionError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"cannot read labels from {path} ({e}); {fix}") from e
    if not raw:
        raise UserError(f"{path} holds no labels; {fix}")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise UserError(f"{path}: 'names' must be a list of strings; {fix}")
    if all(_is_scalar(v) for v in raw.values()):
        return _class_labels(path, raw, names)
    return _attribute_labels(path, raw, names)


def _is_scalar(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _class_labels(path: Path, raw: dict, names: list[str] | None) -> tuple[dict[str, np.ndarray], list[str]]:
    for key, v in raw.items():
        if not (math.isfinite(v) and float(v).is_integer() and 0 <= v < MAX_LABEL_SIZE):
            raise UserError(
                f"{path}: {key} has class {v!r}; a class is a whole number from 0 to {MAX_LABEL_SIZE - 1} "
                f"(several values per file are attributes)"
            )
    size = int(max(raw.values())) + 1
    out = {}
    for key, v in raw.items():
        vec = np.zeros(size, dtype=np.float32)
        vec[int(v)] = 1
        out[key] = vec
    class_names = list(names) if names and len(names) == size else [str(i) for i in range(size)]
    return _normalise_keys(out), class_names


def _attribute_labels(
    path: Path, raw: dict, names: list[str] | None
) -> tuple[dict[str, np.ndarray], list[str]]:
    size = None
    values: set[float] = set()
    for key, v in raw.items():
        v = [v] if _is_scalar(v) else v
        if not (isinstance(v, list) and v and all(_is_scalar(x) for x in v)):
            raise UserError(f"{path}: {key} has label {v!r:.60}; give a class index or a list of attributes")
        if size is None:
            size = len(v)
        if len(v) != size:
            raise UserError(
                f"{path}: every file needs the same number of attributes; {key} has {len(v)}, others {size}"
            )
        if size > MAX_LABEL_SIZE:
            raise UserError(f"{path}: {size} attributes per file, more than {MAX_LABEL_SIZE}; check the file")
        values.update(v)
    bad = values - {0, 1, -1}
    if bad:
        raise UserError(
            f"{path}: attribute value {sorted(bad, key=str)[0]!r} is not 0 or 1 (or -1 or 1, CelebA's way); "
            f"write each attribute as 0/1"
        )
    if -1 in values and 0 in values:
        raise UserError(f"{path}: attributes mix -1, 0 and 1; write them all as 0/1 or all as -1/1")
    vecs = {k: (np.asarray([v] if _is_scalar(v) else v, dtype=np.float32) > 0).astype(np.float32)
            for k, v in raw.items()}  # fmt: skip
    attr_names = list(names) if names and len(names) == size else [f"attr{i}" for i in range(size)]
    return _normalise_keys(vecs), attr_names


def _normalise_keys(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in d.items():
        k = k.replace("\\", "/")
        while k.startswith("./"):
            k = k[2:]
        out[k] = v
    return out


def _lookup(labels: dict[str, np.ndarray], name: str) -> np.ndarray | None:
    if name in labels:
        return labels[name]
    return labels.get(name.rsplit("/", 1)[-1])


# --------------------------------------------------------------------------------------------
# Workers


_W: dict = {}


def _init_worker(options: Options, channels: int) -> None:
    _W.clear()
    _W.update(options=options, channels=channels, zips={}, landmarker=None)
    _W["background"] = ImageColor.getrgb(options.background)[:3]
    # progan's own --max-megapixels check (in _open) replaces Pillow's decompression-bomb guard.
    Image.MAX_IMAGE_PIXELS = None


def _describe(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, UnidentifiedImageError):
        return "not an image (unrecognised format)"
    if isinstance(e, Image.DecompressionBombError):
        return f"too many pixels ({msg})"
    if isinstance(e, OSError) and "truncated" in msg.lower():
        return f"truncated image ({msg})"
    if isinstance(e, FileNotFoundError):
        return "file not found"
    if isinstance(e, PermissionError):
        return "permission denied (cannot read the file); check its permissions"
    if isinstance(e, MemoryError):
        return "out of memory decoding it; lower --max-megapixels or --workers"
    return f"corrupt image ({type(e).__name__}: {msg})"


def _open(item: Item, draft_side: int | None) -> Image.Image:
    if item.path is not None:
        if os.path.getsize(item.path) == 0:
            raise _Skip("empty file (0 bytes)")
        img = Image.open(item.path)
    else:
        if not item.data:
            raise _Skip("empty file (0 bytes)")
        img = Image.open(io.BytesIO(item.data))
    w, h = img.size  # known from the header, before any pixel is decoded
    limit = _W["options"].max_megapixels * 1e6
    if w * h > limit:
        raise _Skip(
            f"image of {w}x{h} ({w * h / 1e6:.0f} megapixels) is above the limit of "
            f"{limit / 1e6:g} megapixels; raise it with --max-megapixels"
        )
    if draft_side and img.format == "JPEG" and img.mode in ("RGB", "L"):
        w, h = img.size
        k = draft_side / min(w, h)
        if k < 0.5:  # decode at 1/2, 1/4 or 1/8 scale, never below draft_side on the short side
            img.draft(img.mode, (math.ceil(w * k), math.ceil(h * k)))
    img.load()
    return ImageOps.exif_transpose(img)


class _Skip(Exception):
    pass


def fit_square(img: Image.Image, fit: str) -> Image.Image:
    w, h = img.size
    if w == h or fit == "stretch":
        return img
    if fit == "crop":
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        return img.crop((left, top, left + s, top + s))
    a = np.asarray(img)
    s = max(w, h)
    py, px = s - h, s - w
    pads = [(py // 2, py - py // 2), (px // 2, px - px // 2)] + [(0, 0)] * (a.ndim - 2)
    return Image.fromarray(np.pad(a, pads, mode="reflect" if min(w, h) > 1 else "edge"), img.mode)


def to_chw(img: Image.Image) -> np.ndarray:
    a = np.asarray(img, dtype=np.uint8)
    return a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))


def _process(item: Item) -> tuple[np.ndarray, dict]:
    """One item -> (uint8 CHW image, info). Raises _Skip (or anything) for a bad file: the one
    place that turns exceptions into report lines is `_safe_process`."""
    opts: Options = _W["options"]
    channels: int = _W["channels"]
    r = opts.resolution
    if item.error:
        raise _Skip(item.error)
    if item.array is not None:  # idx: MNIST's 28x28 are padded to 32x32 as the official tool does
        a = item.array
        if a.shape == (28, 28):
            a = np.pad(a, 2)
        img = normalise_mode(Image.fromarray(a, "L"), channels, _W["background"])
        if img.size != (r, r):
            img = fit_square(img, opts.fit).resize((r, r), Image.LANCZOS)
        return to_chw(img), {}
    if item.delta is not None:
        return _process_celebahq(item)
    aligning = item.landmarks is not None or opts.align_faces
    img = _open(item, None if aligning else 2 * r)
    if aligning:
        img = normalise_mode(img, 3, _W["background"])
        lm = item.landmarks
        if lm is None:
            if _W["landmarker"] is None:
                _W["landmarker"] = align.FaceLandmarker()
            lm = _W["landmarker"](np.asarray(img))
            if lm is None:
                raise _Skip("no face detected")
        img = align.align_face(img, lm, size=r)
        return to_chw(normalise_mode(img, channels, _W["background"])), {}
    img = fit_square(normalise_mode(img, channels, _W["background"]), opts.fit)
    if img.size != (r, r):
        img = img.resize((r, r), Image.LANCZOS)
    return to_chw(img), {}


def _process_celebahq(item: Item) -> tuple[np.ndarray, dict]:
    opts: Options = _W["options"]
    d = item.delta
    with open(item.path, "rb") as f:
        orig_bytes = f.read()
    img = Image.open(io.BytesIO(orig_bytes))
    img.load()
    aligned = to_chw(align.align_face(img, item.landmarks, size=1024))
    exact = align.md5(aligned) == d["proc_md5"]
    zips = _W["zips"]
    if d["zip"] not in zips:
        if not os.path.isfile(d["zip"]):
            raise _Skip(f"delta archive {Path(d['zip']).name} is missing")
        zips[d["zip"]] = zipfile.ZipFile(d["zip"])
    try:
        delta_bytes = zips[d["zip"]].read(d["member"])
    except KeyError as e:
        raise _Skip(f"{d['member']} is missing from {Path(d['zip']).name}") from e
    try:
        delta = align.decrypt_delta(delta_bytes, orig_bytes, d["orig_file"])
    except ValueError as e:
        raise _Skip(str(e)) from e
    final = align.apply_delta(aligned, delta, exact)
    info = {"exact": exact, "final_ok": align.md5(final) == d["final_md5"]}
    img = Image.fromarray(final.transpose(1, 2, 0), "RGB")
    if opts.resolution != 1024:
        img = img.resize((opts.resolution, opts.resolution), Image.LANCZOS)
    return to_chw(normalise_mode(img, _W["channels"], _W["background"])), info


def _safe_process(item: Item) -> tuple[np.ndarray | None, str | None, dict]:
    """The one exception-conversion path of the workers: (image, None, info) for a good file,
    (None, reason, {}) for a bad one, and (None, None, {"fatal": message}) for a UserError, which
    stops the whole run (e.g. a missing optional dependency)."""
    try:
        arr, info = _process(item)
        return arr, None, info
    except _Skip as e:
        return None, str(e), {}
    except UserError as e:
        return None, None, {"fatal": str(e)}
    except Exception as e:  # noqa: BLE001 - every bad file becomes a report line
        return None, _describe(e), {}


# --------------------------------------------------------------------------------------------
# Planning: which items, which labels, how many channels


class LabelMode(Enum):
    """Where a store's labels come from."""

    NONE = "none"  # no labels
    BY_NAME = "by-name"  # Plan.labels maps item names to vectors (a label file, idx, CelebA attributes)
    FROM_FOLDERS = "from-folders"  # one class per top-level folder, known once the kept names are


@dataclass
class Plan:
    kind: str
    items: Iterator[Item]
    count: int
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # by item name, with LabelMode.BY_NAME
    label_names: list[str] | None = None
    channels: int | None = None
    peek: list[Item] = field(default_factory=list)
    label_mode: LabelMode = LabelMode.NONE
    skipped: list[tuple[str, str]] = field(default_factory=list)  # found while enumerating
    head: Callable[[], Iterator[Item]] | None = None  # archives: the first members, read again

    def set_labels(self, labels: dict[str, np.ndarray] | None, names: list[str] | None) -> None:
        self.labels, self.label_names = labels or {}, names
        self.label_mode = LabelMode.BY_NAME if labels else LabelMode.NONE


def _plan(source: Path, dest: Path, opts: Options) -> Plan:
    kind = source_kind(source, opts)
    exclude = [dest.resolve()]
    limit = opts.max_file_bytes
    if kind == "folder":
        items, skipped = _folder_items(source, exclude)
        if not items and not skipped:
            raise UserError(f"source folder {source} holds no files; point SOURCE at a folder of images")
        plan = Plan(kind, iter(items), len(items), peek=items[:64], skipped=skipped)
    elif kind == "zip":
        try:
            with zipfile.ZipFile(source) as z:
                n = sum(1 for i in z.infolist() if not i.is_dir() and not _is_hidden(Path(i.filename)))
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise UserError(f"{source} is not a readable zip archive ({e}); check the file") from e
        plan = Plan(kind, _zip_items(source, limit), n, head=lambda: _zip_items(source, limit))
    elif kind == "tar":
        members = _tar_members(source)
        plan = Plan(kind, _tar_items(source, members, limit), len(members))
        plan.head = lambda: _tar_items(source, members[:64], limit)
    elif kind == "idx":
        images = read_idx(source, max_pixels=int(opts.max_megapixels * 1e6))
        if images.ndim != 3:
            raise UserError(f"{source} holds {images.ndim}-D data; an idx images file is (N, H, W)")
        items = [Item(name=f"{i:06d}", array=images[i]) for i in range(len(images))]
        plan = Plan(kind, iter(items), len(items), channels=1)
        lpath = _idx_labels_path(source)
        if lpath is not None and opts.labels != "none":
            lab = read_idx(lpath)
            if lab.shape != (len(images),):
                raise UserError(
                    f"{lpath} holds {lab.shape} labels for {len(images)} images; use the matching pair"
                )
            size = int(lab.max()) + 1
            eye = np.eye(size, dtype=np.float32)
            fashion = "fashion" in str(source.resolve()).lower() and size == 10
            plan.set_labels(
                {it.name: eye[v] for it, v in zip(items, lab, strict=True)},
                FASHION_MNIST if fashion else [str(i) for i in range(size)],
            )
    else:
        plan = _plan_celeba(source, opts, kind)
    if plan.count == 0 and not plan.skipped:
        raise UserError(f"{source} holds no files; point SOURCE at a folder or archive of images")

    # Labels from a file or from folder names.
    if opts.labels and opts.labels not in ("none", "from-folders") and kind != "idx":
        plan.set_labels(*read_label_file(Path(opts.labels)))
    elif opts.labels == "from-folders":
        if kind not in ("folder", "zip", "tar"):
            raise UserError("--labels from-folders needs a folder or archive with one sub-folder per class")
        plan.set_labels(None, None)  # classes are known once the kept names are
        plan.label_mode = LabelMode.FROM_FOLDERS
    elif opts.labels == "none":
        plan.set_labels(None, None)
    return plan


def _plan_celeba(source: Path, opts: Options, kind: str) -> Plan:
    found = align.find_celeba(source)
    names, landmarks = align.read_landmarks(found["landmarks"])
    lm_by_name = dict(zip(names, landmarks, strict=True))
    plan_labels = plan_names = None
    if found["attributes"] is not None and opts.labels in (None, ""):
        anames, attr_names, attrs = align.read_attributes(found["attributes"])
        plan_labels = dict(zip(anames, attrs, strict=True))
        plan_names = attr_names
    if kind == "celebahq":
        if opts.resolution > 1024:
            raise UserError("CelebA-HQ is 1024x1024; use --resolution 1024 or less with --celebahq-deltas")
        if found["aligned"]:
            raise UserError(
                "--celebahq-deltas needs CelebA's in-the-wild images (img_celeba), not img_align_celeba"
            )
        _ = align._need_cryptography()  # noqa: SLF001 - fail early with the install hint
        deltas = Path(opts.celebahq_deltas)
        if not deltas.is_dir():
            raise UserError(f"--celebahq-deltas {deltas} is not a folder; point it at the CelebA-HQ deltas")
        rows = align.read_image_list(deltas)

        def gen() -> Iterator[Item]:
            for row in rows:
                zp, member = align.delta_location(deltas, row["idx"])
                orig = row["orig_file"]
                lm = landmarks[row["orig_idx"]] if row["orig_idx"] < len(landmarks) else lm_by_name.get(orig)
                yield Item(
                    name=f"{row['idx']:05d} ({orig})",
                    path=str(found["images"] / orig),
                    landmarks=lm,
                    delta={
                        "zip": str(zp),
                        "member": member,
                        "orig_file": orig,
                        "proc_md5": row.get("proc_md5", ""),
                        "final_md5": row.get("final_md5", ""),
                    },
                )

        plan = Plan(kind, gen(), len(rows), channels=3)
        if plan_labels is not None:
            by_name = {f"{r['idx']:05d} ({r['orig_file']})": plan_labels.get(r["orig_file"]) for r in rows}
            plan.set_labels({k: v for k, v in by_name.items() if v is not None}, plan_names)
        return plan
    items = [
        Item(name=n, path=str(found["images"] / n), landmarks=lm)
        for n, lm in zip(names, landmarks, strict=True)
    ]
    plan = Plan(kind, iter(items), len(items), channels=3)
    plan.set_labels(plan_labels, plan_names)
    return plan


def _infer_channels(plan: Plan, opts: Options) -> int:
    if opts.channels:
        return opts.channels
    if opts.align_faces:
        return 3
    if plan.channels:
        return plan.channels
    # Archives: a second pass over the first members, one in memory at a time (keeping them for
    # the real pass would hold up to 64 members of --max-file-mb each).
    peek: Iterable[Item] = plan.peek
    if not plan.peek and plan.head is not None:
        peek = itertools.islice(plan.head(), 64)
    modes = []
    for it in peek:
        try:
            src = it.path if it.path is not None else io.BytesIO(it.data or b"")
            with Image.open(src) as im:
                modes.append(im.mode)
        except Exception:  # noqa: BLE001, S112 - unreadable files are reported later
            continue
    return 1 if modes and all(m in GREY_MODES for m in modes) else 3


# --------------------------------------------------------------------------------------------
# The run


def prepare(source: str | os.PathLike, dest: str | os.PathLike, options: Options) -> Result:
    """Prepare a store at `dest` from `source`; see the module docstring."""
    t0 = time.perf_counter()
    source, dest = Path(source), Path(dest)
    opts = options
    _validate(source, dest, opts)
    plan = _plan(source, dest, opts)
    channels = _infer_channels(plan, opts)
    capacity = plan.count if opts.limit is None else min(plan.count, opts.limit)
    _check_space(dest, capacity, channels, opts.resolution)
    with StoreWriter(dest, capacity, opts.resolution, channels, overwrite=opts.overwrite) as writer:
        streamed = _stream(plan, opts, channels, capacity, writer)
        if writer.count == 0:
            raise UserError(_nothing_usable(source, streamed.skipped))
        labels, label_names = _labels(plan, streamed.kept)
        report, how = _report(source, plan, opts, writer.count, streamed)
        store = writer.finish(
            labels,
            label_names,
            source=str(source),
            extra={"prepare": how},
            files={"report.json": (json.dumps(report, indent=2) + "\n").encode()},
        )
    return Result(store, streamed.skipped, report["warnings"], time.perf_counter() - t0, plan.kind)


def _validate(source: Path, dest: Path, opts: Options) -> None:
    """Everything about the options and destination that can be checked before reading the source."""
    check_resolution(opts.resolution)
    if opts.channels not in (None, 1, 3):
        raise UserError(f"--channels must be 1 or 3, not {opts.channels}")
    if opts.fit not in ("crop", "pad", "stretch"):
        raise ValueError(f"fit must be crop, pad or stretch, not {opts.fit}")
    try:
        ImageColor.getrgb(opts.background)
    except ValueError as e:
        raise UserError(f"--background {opts.background!r} is not a colour; use a name or #rrggbb") from e
    if opts.max_file_mb <= 0 or opts.max_megapixels <= 0:
        raise UserError("--max-file-mb and --max-megapixels must be positive")
    if opts.workers < 0:
        raise UserError(f"--workers must be 0 or more, not {opts.workers} (0: decode in this process)")
    check_destination(dest, opts.overwrite)
    _check_inputs_outside(dest, source, opts)
    if opts.align_faces:
        align.FaceLandmarker()  # fail fast with the install hint


@dataclass
class Streamed:
    """What streaming the source into the store gave: kept names in store order, skipped files."""

    kept: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    deltas: int = 0  # CelebA-HQ images made with a delta
    inexact: int = 0  # ... of which the aligned image differed from the official one
    final_mismatch: int = 0  # ... of which the final image differs from CelebA-HQ's


def _stream(plan: Plan, opts: Options, channels: int, capacity: int, writer: StoreWriter) -> Streamed:
    """Decode the plan's items in a worker pool (in order, a bounded number in flight) and append
    them to `writer` in chunks of about 16 MiB."""
    out = Streamed(skipped=list(plan.skipped))
    chunk = max(1, (1 << 24) // (channels * opts.resolution**2))
    workers = max(0, int(opts.workers))
    in_flight = _InFlight(max(16, 8 * max(workers, 1)), IN_FLIGHT_BYTES)  # bounds memory in flight
    stop = threading.Event()
    pending: list[tuple[str, int]] = []

    def feed() -> Iterator[Item]:
        sent = 0
        for it in plan.items:
            if sent >= capacity:
                return
            if plan.label_mode is LabelMode.BY_NAME and _lookup(plan.labels, it.name) is None:
                out.skipped.append((it.name, f"no label for it in {opts.labels or 'the attribute file'}"))
                continue
            if plan.label_mode is LabelMode.FROM_FOLDERS and "/" not in it.name:
                out.skipped.append((it.name, "not inside a class folder (--labels from-folders)"))
                continue
            size = len(it.data or b"")
            in_flight.acquire(size)
            if stop.is_set():
                return
            pending.append((it.name, size))
            sent += 1
            yield it

    from tqdm import tqdm

    bar = tqdm(total=capacity, unit="img", desc="prepare", disable=not opts.progress, file=sys.stderr)
    buffer: list[np.ndarray] = []
    fatal = None
    pool = None
    try:
        if workers >= 2 and plan.kind != "idx":
            pool = multiprocessing.get_context().Pool(workers, _init_worker, (opts, channels))
            results = pool.imap(_safe_process, feed(), chunksize=4 if opts.resolution <= 256 else 1)
        else:
            _init_worker(opts, channels)
            results = map(_safe_process, feed())
        for i, (arr, reason, info) in enumerate(results):
            name, size = pending[i]
            in_flight.release(size)
            bar.update(1)
            if info.get("fatal"):
                fatal = info["fatal"]
                break
            if arr is None:
                out.skipped.append((name, reason))
                continue
            if "exact" in info:
                out.deltas += 1
                out.inexact += not info["exact"]
                out.final_mismatch += not info["final_ok"]
            buffer.append(arr)
            out.kept.append(name)
            if len(buffer) >= chunk:
                writer.add(np.stack(buffer))
                buffer.clear()
        if buffer:
            writer.add(np.stack(buffer))
    finally:
        bar.close()
        stop.set()
        in_flight.close()  # unblock the feeder so that the pool can shut down
        if pool is not None:
            pool.terminate()
            pool.join()
    if fatal:
        raise UserError(fatal)
    return out


def _labels(plan: Plan, kept: list[str]) -> tuple[np.ndarray | None, list[str] | None]:
    """The store's label rows (in store order) and names."""
    if plan.label_mode is LabelMode.FROM_FOLDERS:
        classes = sorted({n.split("/", 1)[0] for n in kept})
        index = {c: i for i, c in enumerate(classes)}
        return np.eye(len(classes), dtype=np.float32)[[index[n.split("/", 1)[0]] for n in kept]], classes
    if plan.label_mode is LabelMode.BY_NAME:
        return np.stack([_lookup(plan.labels, n) for n in kept]).astype(np.float32), plan.label_names
    return None, None


def _report(source: Path, plan: Plan, opts: Options, kept: int, streamed: Streamed) -> tuple[dict, dict]:
    """(report.json: kept, skipped files with reasons, warnings; the manifest's 'prepare' entry)."""
    warnings = []
    if streamed.inexact:
        warnings.append(
            f"{streamed.inexact} of {streamed.deltas} aligned images differ from the official CelebA-HQ "
            f"before the delta (this Pillow {Image.__version__} and its libjpeg decode and resample "
            f"differently from Pillow 3.1.1 + libjpeg 8d); the deltas were applied as signed "
            f"differences, so these images are within a few levels of CelebA-HQ but not bit-exact. "
            f"For bit-exact CelebA-HQ run in an environment with pillow==3.1.1 and libjpeg 8d"
        )
    report = {
        "kept": kept,
        "skipped": [{"file": n, "reason": r} for n, r in streamed.skipped],
        "warnings": warnings,
    }
    how = {
        "source_kind": plan.kind,
        "source": str(source.resolve()),
        "options": {k: v for k, v in asdict(opts).items() if k not in ("progress", "overwrite", "workers")},
        "channels_inferred": opts.channels is None,
        "skipped": len(streamed.skipped),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "resampling": "Pillow LANCZOS; lower levels 2x2 box average of the level above",
        "pillow": Image.__version__,
    }
    if streamed.deltas:
        how["celebahq_bit_exact"] = streamed.final_mismatch == 0
    return report, how


# Archive bytes handed to the workers and not yet done with, at most (one member always passes).
IN_FLIGHT_BYTES = 512 * 2**20


class _InFlight:
    """Bounds what the feeder has handed to the workers and the writer has not yet taken: a number
    of items and, for archive members (read into memory), a number of bytes."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self._cond = threading.Condition()
        self.max_items, self.max_bytes = max_items, max_bytes
        self.items = self.bytes = 0
        self.closed = False

    def _room(self, size: int) -> bool:
        fits = self.items == 0 or self.bytes + size <= self.max_bytes
        return self.closed or (self.items < self.max_items and fits)

    def acquire(self, size: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._room(size))
            self.items += 1
            self.bytes += size

    def release(self, size: int) -> None:
        with self._cond:
            self.items -= 1
            self.bytes -= size
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


def _nothing_usable(source: Path, skipped: list[tuple[str, str]]) -> str:
    if not skipped:
        return f"no usable images in {source}; point SOURCE at a folder or archive of images"
    eg = "; ".join(f"{n}: {r}" for n, r in skipped[:3])
    return f"no usable images in {source}: all {len(skipped)} file(s) skipped (e.g. {eg}); check the source"


def _check_inputs_outside(dest: Path, source: Path, opts: Options) -> None:
    """Refuse a SOURCE (or labels file, or deltas folder) inside DEST: --overwrite replaces DEST
    as a whole and would delete it."""
    inputs = [("SOURCE", source), ("--labels", opts.labels), ("--celebahq-deltas", opts.celebahq_deltas)]
    d = dest.resolve()
    for what, path in inputs:
        if path is None or path in ("none", "from-folders") or not Path(path).exists():
            continue
        p = Path(path).resolve()
        if p == d or d in p.parents:
            raise UserError(
                f"{what} {path} lies inside DEST {dest}, which writing the store replaces; "
                f"choose a DEST outside it"
            )


def _check_space(dest: Path, count: int, channels: int, resolution: int) -> None:
    need = store_bytes(count, channels, resolution)
    parent = dest.resolve().parent
    while not parent.exists():
        parent = parent.parent
    free = shutil.disk_usage(parent).free
    if need > free:
        raise UserError(
            f"the store needs about {format_bytes(need)} and {parent} has {format_bytes(free)} free; "
            f"free space or choose another DEST"
        )


def store_bytes(count: int, channels: int, resolution: int) -> int:
    """Disk size of a store's image levels (4x4 up to resolution), headers left out."""
    return count * channels * sum(r * r for r in levels_up_to(resolution))


__all__ = ["MANIFEST", "Options", "Result", "prepare", "read_idx", "read_label_file", "store_bytes"]

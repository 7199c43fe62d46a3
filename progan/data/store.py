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

The manifest records a SHA-256 of every array's data bytes ("hashes"), one "content_hash" over
them, and how the store was made ("prepare": source kind, options, skipped files), so that
`verify_store` (`progan prepare --verify DEST`) can check a store end to end.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from progan.checks import Field, check_fields, resolution_error
from progan.errors import UserError, user_error_from_os

FORMAT = "progan-store"
FORMAT_VERSION = 1
MANIFEST = "dataset.json"
# The manifest fields that reading a store relies on, checked when it is opened.
MANIFEST_FIELDS = {
    "format_version": Field("int", 0, optional=True), "count": Field("int", 0, 2**40),
    "resolution": Field("int", 4, 2**16), "channels": Field("int", 1, 4),
    "label_size": Field("int", 0, 2**20, optional=True), "label_names": Field("list", optional=True),
    "hashes": Field("dict", optional=True),
}  # fmt: skip


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
        return self._array(
            level_file(resolution), np.uint8, (self.count, self.channels, resolution, resolution)
        )

    @property
    def labels(self) -> np.ndarray | None:
        if not self.label_size:
            return None
        return self._array("labels.npy", np.float32, (self.count, self.label_size))

    def _array(self, name: str, dtype: type, shape: tuple) -> np.ndarray:
        """A memory map of one of the store's arrays, checked against the manifest (header only)."""
        path = self.path / name
        fix = (
            f"the store is damaged; check it with 'progan prepare --verify {self.path}' and prepare it again"
        )
        try:
            arr = np.load(path, mmap_mode="r")  # never unpickles: object arrays are refused
        except FileNotFoundError:
            raise UserError(f"{path} is missing; {fix}") from None
        except (ValueError, OSError, EOFError) as e:
            raise UserError(f"{path} is not a readable .npy file ({e}); {fix}") from e
        if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.shape != shape:
            found = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
            raise UserError(f"{path} is {found}, expected {np.dtype(dtype)} {shape}; {fix}")
        return arr

    def check(self) -> None:
        """Every level and the labels exist with the manifest's shape and dtype (headers only, fast):
        a damaged store fails here, at the start of a run, not when its resolution comes up."""
        for res in self.levels:
            self.images(res)
        _ = self.labels


def open_store(path: str | os.PathLike) -> Store:
    """Open a store, with a one-line error when `path` is not one."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if path.is_file():
        hint = f"pass its folder, {path.parent}" if path.name == MANIFEST else "pass a store's folder"
        raise UserError(f"{path} is a file, not a progan dataset store; {hint}")
    if not manifest_path.is_file():
        raise UserError(
            f"{path} is not a progan dataset store (no {MANIFEST}); make one with "
            f"'progan prepare SOURCE {path} --resolution R'"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise UserError(f"{manifest_path} is not valid JSON ({e}); prepare the store again") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{manifest_path} is not a progan store manifest; prepare the store again")
    fix = "the manifest is damaged; prepare the store again"
    check_fields(manifest, {"count": MANIFEST_FIELDS["count"]}, str(manifest_path), fix)
    if manifest["count"] < 1:
        raise UserError(f"store {path} holds no images; prepare it again from a folder with images")
    check_fields(manifest, MANIFEST_FIELDS, str(manifest_path), fix)
    if manifest["resolution"] & (manifest["resolution"] - 1):
        res = manifest["resolution"]
        raise UserError(f"{manifest_path}: resolution {res} is not a power of two; prepare the store again")
    if manifest.get("label_names") and len(manifest["label_names"]) != manifest.get("label_size", 0):
        raise UserError(f"{manifest_path}: label_names do not match label_size; prepare the store again")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(
            f"store {path} was written by a newer progan (format {manifest['format_version']}); "
            f"upgrade progan to read it"
        )
    store = Store(path=path, manifest=manifest)
    if store.count < 1:
        raise UserError(f"store {path} holds no images; prepare it again from a folder with images")
    return store


# --------------------------------------------------------------------------------------------
# Writing: a streaming writer that fills memory-mapped levels chunk by chunk in a temporary
# directory beside DEST and renames it into place at the end.


def _npy_data_offset(path: Path) -> tuple[int, tuple, np.dtype]:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read(f)
        if fortran:
            raise ValueError(f"{path} is Fortran-ordered; stores are C-ordered")
        return f.tell(), shape, dtype


def _shrink_npy(path: Path, count: int) -> None:
    """Cut a C-order .npy file down to its first `count` rows in place (rewrites the header)."""
    offset, shape, dtype = _npy_data_offset(path)
    new_shape = (count, *shape[1:])
    if new_shape == tuple(shape):
        return
    header = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": new_shape})
    with open(path, "r+b") as f:
        version = np.lib.format.read_magic(f)
        prefix = 10 if version == (1, 0) else 12
        room = offset - prefix
        text = header.encode("latin1")
        text = text + b" " * (room - len(text) - 1) + b"\n"
        f.seek(prefix)
        f.write(text)
        f.truncate(offset + count * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)


def file_data_hash(path: Path, chunk_bytes: int = 1 << 24) -> str:
    """SHA-256 of a .npy file's data bytes (the header is left out, so it is layout-independent)."""
    offset, _, _ = _npy_data_offset(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        while block := f.read(chunk_bytes):
            h.update(block)
    return "sha256:" + h.hexdigest()


def content_hash(hashes: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(hashes):
        h.update(f"{name} {hashes[name]}\n".encode())
    return "sha256:" + h.hexdigest()


class StoreWriter:
    """Streams images into a new store without holding the data set in memory.

    Levels are allocated as memory-mapped .npy files for `capacity` images in a temporary
    directory beside `dest`; `add(batch)` writes a chunk of top-level images and its box-averaged
    lower levels and feeds the running hashes; `finish()` trims the arrays to the images actually
    written, writes labels and the manifest and renames the directory into place. Leaving the
    `with` block by an exception removes the temporary directory: nothing half-written is left.
    """

    def __init__(
        self,
        dest: str | os.PathLike,
        capacity: int,
        resolution: int,
        channels: int,
        overwrite: bool = False,
    ) -> None:
        self.dest = Path(dest)
        check_destination(self.dest, overwrite)
        check_resolution(resolution)
        if channels not in (1, 2, 3, 4):
            raise ValueError(f"channels must be 1..4, got {channels}")
        self.capacity = int(capacity)
        self.resolution = int(resolution)
        self.channels = int(channels)
        self.overwrite = overwrite
        self.count = 0
        self._files: dict[int, tuple[int, int]] = {}  # res -> (fd, data offset)
        self._lock_fd: int | None = None
        try:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.dest.parent, f".{self.dest.name}.tmp-*")
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.tmp-", dir=self.dest.parent))
        except OSError as e:
            raise user_error_from_os(e, e.filename or self.dest.parent) from e
        # Held while this writer lives, so that a later writer removes the folder only once its
        # owner is gone (killed), never while it is being written.
        self._lock_fd = hold_lock(self.tmp / TEMP_LOCK)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)  # mkdtemp makes it private; a store is an ordinary folder
        # Each level is allocated as a (sparse) .npy of the full capacity, then filled with positioned
        # writes: the written data goes through the page cache, which the kernel writes back and
        # frees, so neither the process's memory nor its resident set grows with the data set (a
        # writable memory map would keep every written page resident until it is unmapped).
        self._hashers = {res: hashlib.sha256() for res in levels_up_to(resolution)}
        try:
            for res in levels_up_to(resolution):
                path = self.tmp / level_file(res)
                arr = np.lib.format.open_memmap(
                    path, mode="w+", dtype=np.uint8, shape=(max(self.capacity, 1), channels, res, res)
                )
                offset = arr.offset
                del arr
                self._files[res] = (os.open(path, os.O_RDWR), offset)
        except BaseException as e:
            self.abort()
            if isinstance(e, OSError):
                raise user_error_from_os(e, e.filename or self.tmp) from e
            raise

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def add(self, batch: np.ndarray) -> None:
        """Append uint8 images (B, C, R, R) at the top resolution."""
        batch = np.ascontiguousarray(batch)
        r, c = self.resolution, self.channels
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (c, r, r):
            raise ValueError(f"expected uint8 (B, {c}, {r}, {r}), got {batch.dtype} {batch.shape}")
        b = batch.shape[0]
        if self.count + b > self.capacity:
            raise ValueError(f"store capacity {self.capacity} exceeded")
        level = batch
        for res in reversed(levels_up_to(r)):
            fd, offset = self._files[res]
            data = memoryview(level).cast("B")
            pos = offset + self.count * c * res * res
            try:
                while data:
                    written = os.pwrite(fd, data, pos)
                    data, pos = data[written:], pos + written
            except OSError as e:  # a full disk: one line naming the store, not a traceback
                raise user_error_from_os(e, self.dest) from e
            self._hashers[res].update(level.data)
            if res > 4:
                level = box_downsample(level)
        self.count += b

    def finish(
        self,
        labels: np.ndarray | None = None,
        label_names: list[str] | None = None,
        source: str = "",
        extra: dict | None = None,
        files: dict[str, bytes] | None = None,
    ) -> Store:
        """Trim, write labels, hashes and manifest, and move the store into place.

        `files` are extra small files (name -> bytes, e.g. a report) written into the store; they
        are not part of the content hash.
        """
        from progan import __version__

        try:
            n = self.count
            if n == 0:
                raise UserError(f"no images to write to {self.dest}; check the source")
            self._close()
            hashes = {}
            for res in levels_up_to(self.resolution):
                _shrink_npy(self.tmp / level_file(res), n)
                hashes[level_file(res)] = "sha256:" + self._hashers[res].hexdigest()
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "tool_version": __version__,
                "count": int(n),
                "resolution": self.resolution,
                "channels": self.channels,
                "label_size": 0,
                "label_names": [],
                "source": source,
            }
            if labels is not None:
                labels = np.ascontiguousarray(labels, dtype=np.float32)
                if labels.ndim != 2 or labels.shape[0] != n:
                    raise ValueError(f"labels must be (N, L) with N={n}, got {labels.shape}")
                np.save(self.tmp / "labels.npy", labels)
                hashes["labels.npy"] = "sha256:" + hashlib.sha256(labels.data).hexdigest()
                manifest["label_size"] = int(labels.shape[1])
                manifest["label_names"] = list(label_names or [str(i) for i in range(labels.shape[1])])
            manifest.update(extra or {})
            manifest["hashes"] = hashes
            manifest["content_hash"] = content_hash(hashes)
            for name, data in (files or {}).items():
                (self.tmp / name).write_bytes(data)
            (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            if self.dest.exists():
                if not self.overwrite:
                    raise UserError(f"{self.dest} appeared while preparing; pass --overwrite to replace it")
                if self.dest.is_dir() and not self.dest.is_symlink():
                    shutil.rmtree(self.dest)
                else:
                    self.dest.unlink()
            os.replace(self.tmp, self.dest)  # the lock is held across the rename (it is on the inode)
            (self.dest / TEMP_LOCK).unlink(missing_ok=True)
            self._release_lock()
        except BaseException as e:
            self.abort()
            if isinstance(e, OSError):
                raise user_error_from_os(e, e.filename or self.dest) from e
            raise
        return open_store(self.dest)

    def _close(self) -> None:
        for fd, _ in self._files.values():
            os.close(fd)
        self._files.clear()

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def abort(self) -> None:
        self._close()
        if hasattr(self, "tmp"):
            shutil.rmtree(self.tmp, ignore_errors=True)
        self._release_lock()


# --------------------------------------------------------------------------------------------
# Temporary folders of killed writers. Every writer (store, snapshot) builds its output in a hidden
# temporary folder beside the destination and renames it into place; a kill leaves the folder
# behind. Writers hold an flock on TEMP_LOCK inside theirs, so the next writer can tell a dead
# writer's folder (lock free) from a live one's (lock held) and removes only the former.

TEMP_LOCK = LOCK_FILE = ".lock"


def hold_lock(path: Path, blocking: bool = False) -> int | None:
    """An exclusive flock on `path` (created if missing): its file descriptor, or None when another
    process holds it (non-blocking). The lock goes when the descriptor is closed or the process dies."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder removed the file as we locked it: lock the new one


def remove_stale_temporaries(folder: Path, pattern: str, owner_gone: bool = False) -> list[Path]:
    """Remove temporary folders matching `pattern` in `folder` whose writer is gone; return them.

    `owner_gone`: the caller knows no writer is alive (it holds the lock of the folder they write
    into); else a folder's writer is alive while it holds its TEMP_LOCK. A folder without a lock
    file is a torn write from before writers took locks, or one being set up this very moment:
    only the former (older than a minute) is removed."""
    removed = []
    for tmp in sorted(folder.glob(pattern)):
        if not tmp.is_dir() or tmp.is_symlink():
            continue
        lock = tmp / TEMP_LOCK
        if owner_gone:
            pass
        elif lock.exists():
            try:
                fd = hold_lock(lock)
            except OSError:
                continue
            if fd is None:  # a live writer
                continue
            os.close(fd)
        else:
            try:
                if time.time() - tmp.stat().st_mtime < 60:
                    continue
            except OSError:
                continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed


def check_resolution(resolution: int) -> None:
    """The networks' rule (a store beyond it could never be trained on)."""
    if (problem := resolution_error(int(resolution))) is not None:
        raise UserError(f"resolution {problem}; pick one such as 32 or 128")


def check_destination(dest: Path, overwrite: bool) -> None:
    if dest.exists() and not overwrite:
        raise UserError(f"{dest} already exists; choose another destination or pass --overwrite")
    if dest.exists() and overwrite and not dest.is_dir():
        raise UserError(f"{dest} exists and is not a directory; remove it or choose another destination")
    if dest.exists() and overwrite and any(dest.iterdir()) and not (dest / MANIFEST).is_file():
        raise UserError(
            f"{dest} is a non-empty folder that is not a progan store; --overwrite only replaces "
            f"stores, so remove it yourself or choose another destination"
        )


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

    For data that fits in memory (the demo, tests). `progan prepare` streams larger sets through
    `StoreWriter`.
    """
    dest = Path(dest)
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[2] != images.shape[3]:
        raise ValueError(f"images must be uint8 (N, C, R, R), got {images.dtype} {images.shape}")
    n, c, r, _ = images.shape
    if n == 0:
        raise UserError(f"no images to write to {dest}; check the source")
    check_resolution(r)
    if labels is not None:
        labels = np.asarray(labels, dtype=np.float32)
        if labels.ndim != 2 or labels.shape[0] != n:
            raise ValueError(f"labels must be (N, L) with N={n}, got {labels.shape}")
    with StoreWriter(dest, n, r, c, overwrite=overwrite) as writer:
        chunk = max(1, (1 << 26) // (c * r * r))
        for start in range(0, n, chunk):
            writer.add(images[start : start + chunk])
        return writer.finish(labels, label_names, source=source, extra=extra)


# --------------------------------------------------------------------------------------------
# Verification


def verify_store(path: str | os.PathLike, check_hashes: bool = True, chunk_bytes: int = 1 << 26) -> str:
    """Check a store end to end; return a one-line summary or raise UserError naming the problem.

    Checks the manifest, every level's shape and dtype, the recorded SHA-256 of every array, that
    every level is the 2x2 box average of the level above, and the labels' shape and values.
    """
    store = open_store(path)
    path = Path(path)
    problems: list[str] = []
    n, c = store.count, store.channels
    hashes = store.manifest.get("hashes") or {}
    arrays: dict[int, np.ndarray] = {}
    for res in store.levels:
        f = path / level_file(res)
        if not f.is_file():
            problems.append(f"{f.name} is missing")
            continue
        try:
            arr = np.load(f, mmap_mode="r")
        except Exception as e:  # noqa: BLE001 - any failure to parse is a corrupt file
            problems.append(f"{f.name} is not a readable .npy ({type(e).__name__}: {e})")
            continue
        if arr.dtype != np.uint8 or arr.shape != (n, c, res, res):
            problems.append(f"{f.name} is {arr.dtype} {arr.shape}, expected uint8 {(n, c, res, res)}")
            continue
        arrays[res] = arr
        if check_hashes and f.name in hashes and file_data_hash(f) != hashes[f.name]:
            problems.append(f"{f.name} does not match its recorded hash (modified or corrupt)")
    for res in store.levels[1:]:
        hi, lo = arrays.get(res), arrays.get(res // 2)
        if hi is None or lo is None:
            continue
        step = max(1, chunk_bytes // (c * res * res))
        for start in range(0, n, step):
            if not np.array_equal(
                box_downsample(np.asarray(hi[start : start + step])), lo[start : start + step]
            ):
                problems.append(f"{level_file(res // 2)} is not the box average of {level_file(res)}")
                break
    if store.label_size:
        f = path / "labels.npy"
        try:
            labels = np.load(f, mmap_mode="r")
            if labels.dtype != np.float32 or labels.shape != (n, store.label_size):
                problems.append(
                    f"labels.npy is {labels.dtype} {labels.shape}, expected float32 ({n}, {store.label_size})"
                )
            elif not np.isfinite(labels).all():
                problems.append("labels.npy holds non-finite values")
            elif check_hashes and "labels.npy" in hashes and file_data_hash(f) != hashes["labels.npy"]:
                problems.append("labels.npy does not match its recorded hash (modified or corrupt)")
        except FileNotFoundError:
            problems.append("labels.npy is missing")
        except Exception as e:  # noqa: BLE001
            problems.append(f"labels.npy is not a readable .npy ({type(e).__name__}: {e})")
    if hashes and store.manifest.get("content_hash") != content_hash(hashes):
        problems.append("dataset.json's content_hash does not match its per-file hashes (manifest edited)")
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise UserError(f"store {path} is corrupt: {problems[0]}{more}; prepare it again")
    what = f"{n} images, {c} channel(s), levels 4..{store.resolution}"
    if store.label_size:
        what += f", {store.label_size} label(s)"
    checked = "hashes, shapes and box averages" if hashes and check_hashes else "shapes and box averages"
    if not hashes:
        checked += " (no hashes recorded: written by an older tool)"
    return (
        f"store {path} is OK: {what}; {checked} check out ({store.manifest.get('content_hash', 'no hash')})"
    )

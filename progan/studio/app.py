"""The web studio: browse a model's faces, open one at full resolution, blend two, edit along named
directions, keep favourites. FastAPI + uvicorn, one static page (`static/`), no JavaScript build step.

Everything a client sends is a number or a name checked against what the server loaded: a model
id from `/api/models`, a seed in [0, 2**32) or the id of a latent the server stored (16 hex
digits), a label of the model, a direction of the snapshot with an amount in [-MAX_AMOUNT,
MAX_AMOUNT], a blend weight in [0, 1], a thumbnail size that is a power of two up to the
model's resolution, a page of at most MAX_PAGE seeds. No request ever names a file. Bodies are
capped at MAX_BODY bytes (a panel may raise one route's cap, as the photo upload does), the
queue of faces waiting for a model at MAX_QUEUE (then 503, a page's faces all or none),
favourites at MAX_FAVOURITES. Bad requests get a 4xx with a one-line `detail`.

One loaded model serves all requests: a `Batcher` thread per model takes the faces asked for in
order and has them rendered in blocks of `SAMPLING_BLOCK` latents on a CPU (gathered within a
few milliseconds; up to MAX_BATCH on a GPU) through `progan.sampling`, the one sampling path, so
a seed's face here is the face `progan generate` writes. Every block of every model is rendered
on one thread, the studio's `ComputeThread`: under `progan serve` the process's main thread,
with the web server on another (see ComputeThread for why).

A page of up to MAX_PAGE faces is one request, `GET /api/models/<id>/faces?seeds=0,1,..&size=128`,
answered as a stream of NDJSON lines `{"seed": S, "png": BASE64}`, one a face as
soon as its block is done (the page fills in a block at a time); when the client goes away, its
faces not rendered yet are dropped. A thumbnail (`size`) is the full-size face box-downscaled
(`thumbnail`), never one of G's lower-resolution outputs, so it is the face that opens.

A face is a seed, or a stored latent (a projected photo, see `StoredLatents`): `latent=<id>`
instead of `seed=` names `<state dir>/latents/<id>.json`, an id the server made.

Favourites live in `<state dir>/favourites.json` (written atomically; default
`$XDG_DATA_HOME/progan/studio`, i.e. `~/.local/share/progan/studio`, or `--state-dir`), keyed by
model id (the run directory's name), so they survive restarts and newer snapshots of a run.

Extending the studio (how `describe` and other features add a panel)
--------------------------------------------------------------------
The studio names no feature: the command that starts it hands its panels in
(`create_app(studio, panels=[...])`, `serve(..., panels=[...])`; `progan serve` gets describe's, the
photo box and keep-with's from progan/cli.py, which also adds the options they take to `serve`'s
parser). A `Panel` has:

- `router`: a FastAPI `APIRouter`, mounted at `/api/ext/<name>/`. Its handlers reach the studio
  through `request.app.state.studio` (`Studio.model(id)`, `Studio.face_latent(...)`,
  `Studio.render(...)`, `Studio.latents.add(...)`), and should raise `UserError` for bad input (it
  becomes a 400). Bodies are capped at MAX_BODY bytes, except on the routes a panel names in
  `max_body` (`{"/upload": 10 * 2**20}`: that route alone takes up to 10 MiB).
- `script`: a JavaScript file served at `/ext/<name>.js` and loaded by the page after start. It
  uses the page's `window.studio` object: `studio.addPanel(title)` returns an element to fill
  (shown beside the open face), `studio.state` is the open face `{model, seed, label, edits,
  blend, t, latent}`, `studio.setState(patch)` changes it (and re-renders), `studio.on("change", fn)` is
  called after every change, `studio.api(path, options)` fetches JSON and throws with the
  server's `detail` on a 4xx.
"""

from __future__ import annotations

import base64
import concurrent.futures
import functools
import json
import math
import os
import queue
import re
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from progan.checkpoint import find_snapshots, load_snapshot, snapshot_run_name, write_json_atomic
from progan.directions import load_directions, move
from progan.errors import UserError
from progan.images import encode_png
from progan.sampling import MAX_SEED, SAMPLING_BLOCK, images_for_latents, labels_for, latent_for_seed, slerp

STATIC = Path(__file__).with_name("static")
MAX_BODY = 16 * 1024
MAX_QUEUE = 512
MAX_BATCH = 32
MAX_PAGE = 32
MAX_FAVOURITES = 1000
MAX_AMOUNT = 10.0
MAX_MODELS = 32
GATHER_SECONDS = 0.005
BATCH_LOG = 1000
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


# What a face's future gives instead of its image (e.g. its PNG): made on the compute thread.
Finish = Callable[[torch.Tensor], object]


class Busy(Exception):
    """Too many faces are waiting for this model: the client should retry later (503)."""


# ---------------------------------------------------------------------------------------------
# batching


class ComputeThread:
    """Runs the studio's renders one at a time on one thread: its own (`start()`), or the thread
    that calls `run_until` (`progan serve`: the main thread, the web server beside it).

    Why one thread, and why the main one: PyTorch's CPU ops run on OpenMP (libgomp), which keeps a
    team of worker threads for each thread that has run a parallel op. Once two such teams exist
    on a 2-core CPU (more OpenMP threads than cores), libgomp stops spinning at its barriers and
    every parallel op pays for futex sleeps and wake-ups: a 1 MB multiply took 86-113 us on a
    thread after the main thread had run one, against 14 us on the main thread, and the bf16
    G_paper made a 1024x1024 face in 0.39 s on the studio's old Batcher thread against 0.16 s on
    the main thread (2-core Xeon with AMX; issue 28, benchmarks/README.md "The studio"). The main
    thread loads the models, so it has a team already; rendering there keeps it the only one."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._ident: int | None = None
        self._lock, self._open = threading.Lock(), True

    def start(self) -> None:
        threading.Thread(target=self.run_until, daemon=True, name="progan-studio-compute").start()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        """A future of fn(*args, **kwargs), run on the compute thread (at once when called there)."""
        future: Future = Future()
        if threading.get_ident() == self._ident:
            self._call(future, fn, args, kwargs)
            return future
        with self._lock:
            if self._open:
                self._jobs.put((future, fn, args, kwargs))
                return future
        future.cancel()  # the loop has ended: nothing would ever run it, nobody may wait for it
        return future

    def run_until(self, done=lambda: False, poll: float = 0.2) -> None:
        """Run the submitted jobs on this thread until `stop()`, or until `done()` is true; the
        jobs still queued then are cancelled (a waiting Batcher gets CancelledError, not a hang)."""
        self._ident = threading.get_ident()
        try:
            while not done():
                try:
                    job = self._jobs.get(timeout=poll)
                except queue.Empty:
                    continue
                if job is None:
                    return
                self._call(*job)
        finally:
            with self._lock:
                self._open = False
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job[0].cancel()

    def stop(self) -> None:
        self._jobs.put(None)

    @staticmethod
    def _call(future: Future, fn, args, kwargs) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - the caller gets it from the future
            future.set_exception(e)


@dataclass
class _Job:
    latent: torch.Tensor
    label: torch.Tensor | None
    future: concurrent.futures.Future
    # What the future gives instead of the image (e.g. its PNG), made on the compute thread right
    # after the face's block (png_bytes says why there).
    finish: Finish | None = None


class Batcher:
    """One thread per model: it takes the faces asked for in the order they came and has them
    rendered on `compute` (the studio's ComputeThread) in blocks of `block` latents (SAMPLING_BLOCK
    on a CPU, the block G runs on anyway; up to `max_batch` on a GPU), gathering a block's faces
    within `gather` seconds. Each face is handed back as soon as its block is done, so a page of 32 appears a
    block at a time, and a face whose client has gone (its future cancelled) is skipped."""

    def __init__(self, G, device, precision: str, max_batch: int = MAX_BATCH, gather: float = GATHER_SECONDS,
                 max_queue: int = MAX_QUEUE, *, compute: ComputeThread) -> None:  # fmt: skip
        self.G, self.device, self.precision, self.compute = G, device, precision, compute
        self.max_batch, self.gather = max_batch, gather
        # On a CPU a bigger call only runs G on more blocks of SAMPLING_BLOCK one after another:
        # it would hold finished faces back until the last block. A GPU runs a batch at once.
        self.block = min(max_batch, SAMPLING_BLOCK) if torch.device(device).type == "cpu" else max_batch
        self.jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        # Held while faces are queued, so that a page's room is checked and taken in one step (only
        # this thread takes faces out meanwhile, which only makes room).
        self._queueing = threading.Lock()
        # Sizes of the last BATCH_LOG batches run (for tests and the benchmark): a server that runs
        # for weeks must not keep one entry per batch it ever ran.
        self.batches: list[int] = []
        self.thread = threading.Thread(target=self._run, daemon=True, name="progan-studio-batcher")
        self.thread.start()

    def submit(
        self, latent: torch.Tensor, label: torch.Tensor | None, finish: Finish | None = None
    ) -> Future:
        with self._queueing:
            return self._put(latent, label, finish)

    def _put(self, latent: torch.Tensor, label: torch.Tensor | None, finish: Finish | None) -> Future:
        job = _Job(latent, label, concurrent.futures.Future(), finish)
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise Busy("the model is busy; try again in a moment") from None
        return job.future

    def submit_many(self, latents: torch.Tensor, labels: torch.Tensor | None,
                    finish: Finish | None = None) -> list[Future]:  # fmt: skip
        """Futures of the faces of latents (n, L) and label rows (n, K), queued in order; all or
        none: a page that does not fit in MAX_QUEUE raises Busy and queues nothing. (Queued, then
        cancelled, its faces would hold their slots until the thread passed them, and the next
        page could be refused for them.)"""
        futures: list[Future] = []
        with self._queueing:
            if self.jobs.maxsize > 0 and self.jobs.maxsize - self.jobs.qsize() < len(latents):
                raise Busy("the model is busy; try again in a moment")
            try:
                for i in range(len(latents)):
                    futures.append(self._put(latents[i], None if labels is None else labels[i], finish))
            except Busy:  # close() queued its stop meanwhile: the page is not rendered
                for f in futures:
                    f.cancel()
                raise
        return futures

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self.jobs.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.gather
            while len(batch) < self.block:
                try:
                    job = self.jobs.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:
                    self.jobs.put(None)  # finish this batch, then stop
                    break
                batch.append(job)
            # A cancelled future (its client went away) is dropped here, before G sees it.
            live = [j for j in batch if j.future.set_running_or_notify_cancel()]
            if live:
                self._render(live)

    def _render(self, batch: list[_Job]) -> None:
        try:
            z = torch.stack([j.latent for j in batch])
            labels = None if batch[0].label is None else torch.stack([j.label for j in batch])

            def render() -> list:
                images = images_for_latents(self.G, z, labels, batch=len(batch), device=self.device,
                                            precision=self.precision)  # fmt: skip
                return [im if j.finish is None else j.finish(im) for j, im in zip(batch, images, strict=True)]

            results = self.compute.submit(render).result()
            self.batches.append(len(batch))
            del self.batches[:-BATCH_LOG]
            for job, result in zip(batch, results, strict=True):
                job.future.set_result(result)
        except Exception as e:  # noqa: BLE001 - every waiting request gets the error, the thread lives on
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(e)


# ---------------------------------------------------------------------------------------------
# models


@dataclass
class Model:
    id: str
    name: str
    snapshot: Path
    G: torch.nn.Module
    label_names: list[str]
    multi_hot: bool
    directions: dict[str, tuple[torch.Tensor, dict]]
    kimg: float
    batcher: Batcher

    @property
    def config(self):
        return self.G.config

    def describe(self) -> dict:
        c = self.config
        return {
            "id": self.id, "name": self.name, "kimg": self.kimg, "resolution": int(self.G.resolution),
            "channels": c.channels, "latent_size": c.latent_size, "label_size": c.label_size,
            "label_names": self.label_names, "multi_hot": self.multi_hot,
            "directions": [{"name": k, "info": v[1]} for k, v in sorted(self.directions.items())],
            "max_amount": MAX_AMOUNT, "max_seed": MAX_SEED,
        }  # fmt: skip


def models_at(path: str | os.PathLike) -> list[Path]:
    """The snapshots to serve from a path: a snapshot, a run (its newest snapshot) or a folder of
    runs (each run's newest snapshot), at most MAX_MODELS."""
    found = find_snapshots(path, runs=True)
    if len(found) > MAX_MODELS:
        raise UserError(
            f"{path} holds {len(found)} runs; the studio serves up to {MAX_MODELS}: pick a folder"
        )
    return found


def model_id(snapshot: Path, taken: set[str]) -> str:
    base = snapshot_run_name(snapshot)
    base = re.sub(r"[^A-Za-z0-9._-]", "-", base).lstrip("-._")[:90] or "model"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    return name


# ---------------------------------------------------------------------------------------------
# favourites


class Favourites:
    """A list of kept faces in one JSON file, rewritten atomically on every change."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "favourites.json"
        self.lock = threading.Lock()
        self.items: list[dict] = []
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                self.items = [i for i in data.get("favourites", []) if isinstance(i, dict) and "id" in i]
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
                raise UserError(f"{self.path} is not a favourites file ({e}); move it away or fix it") from e

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, {"format": "progan-studio-favourites", "version": 1,
                                      "favourites": self.items})  # fmt: skip

    def add(self, face: dict) -> dict:
        key = json.dumps(face, sort_keys=True)
        with self.lock:
            for item in self.items:
                if json.dumps(item["face"], sort_keys=True) == key:
                    return item
            if len(self.items) >= MAX_FAVOURITES:
                raise UserError(f"already {MAX_FAVOURITES} favourites; remove some first")
            item = {"id": f"{int(time.time() * 1000):x}{len(self.items):03x}", "face": face,
                    "added": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
            self.items.append(item)
            self._save()
            return item

    def remove(self, fid: str) -> bool:
        with self.lock:
            kept = [i for i in self.items if i["id"] != fid]
            if len(kept) == len(self.items):
                return False
            self.items = kept
            self._save()
            return True


# ---------------------------------------------------------------------------------------------
# stored latents: faces that are not seeds (a photo projected by a panel)

LATENTS_FORMAT = "progan-studio-latent"
LATENT_ID = re.compile(r"[0-9a-f]{16}")
MAX_LATENTS = 1000


class StoredLatents:
    """Latents kept by the studio, one `<state dir>/latents/<id>.json` each (written atomically),
    the id made here (16 hex digits): a face can then be `latent=<id>` instead of a seed. The
    studio owns this format; a panel adds a latent with `add` and gets its id."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / "latents"
        self.lock = threading.Lock()
        self.cache: dict[str, tuple[str, torch.Tensor, torch.Tensor | None]] = {}

    def add(self, m: Model, latent, labels=None, info: dict | None = None) -> str:
        """Keep a latent (L,) (and label row (K,)) of model `m`; its new id."""
        import secrets

        z = torch.as_tensor(np.asarray(latent, dtype=np.float32)).reshape(-1)
        if z.numel() != m.config.latent_size or not torch.isfinite(z).all():
            raise UserError(f"a latent of model {m.id} has {m.config.latent_size} finite values")
        with self.lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            if sum(1 for _ in self.dir.glob("*.json")) >= MAX_LATENTS:
                raise UserError(f"{self.dir} holds {MAX_LATENTS} latents already; remove old ones")
            lid = secrets.token_hex(8)
            data = {"format": LATENTS_FORMAT, "version": 1, "model": m.id, "latent": z.tolist(),
                    "labels": None if labels is None else np.asarray(labels, np.float32).tolist(),
                    "added": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **(info or {})}  # fmt: skip
            write_json_atomic(self.dir / f"{lid}.json", data)
        return lid

    def get(self, m: Model, lid: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The latent (L,) and label row (K,) or None of stored latent `lid` of model `m`."""
        if not LATENT_ID.fullmatch(lid):
            raise UserError(f"latent '{lid[:40]}' is not a stored latent's id (16 hex digits)")
        if lid not in self.cache:
            path = self.dir / f"{lid}.json"
            try:
                data = json.loads(path.read_text())
                z = torch.tensor(data["latent"], dtype=torch.float32)
                labels = data.get("labels")
                labels = None if labels is None else torch.tensor(labels, dtype=torch.float32)
                entry = (str(data["model"]), z, labels)
            except FileNotFoundError:
                raise UserError(f"no stored latent '{lid}'; open the photo again") from None
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise UserError(f"{path} is not a stored latent ({e}); remove it") from e
            with self.lock:
                self.cache = {**dict(list(self.cache.items())[-255:]), lid: entry}
        model, z, labels = self.cache[lid]
        if model != m.id or z.shape != (m.config.latent_size,):
            raise UserError(f"latent '{lid}' belongs to model {model}, not {m.id}")
        if m.config.label_size and (labels is None or labels.shape != (m.config.label_size,)):
            raise UserError(f"latent '{lid}' has no label row for model {m.id}")
        return z, labels if m.config.label_size else None


def default_state_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "progan" / "studio"


# ---------------------------------------------------------------------------------------------
# the studio: models + favourites, independent of the web layer


@dataclass
class Face:
    """What a client asks for: everything is a number or a name checked against the model."""

    seed: int | None
    label: str | None = None
    edits: dict[str, float] = field(default_factory=dict)
    blend: int | None = None
    t: float = 0.0
    latent: str | None = None  # a stored latent's id instead of a seed (StoredLatents)

    def to_dict(self) -> dict:
        d = {"seed": self.seed, "label": self.label, "edits": self.edits, "blend": self.blend, "t": self.t}
        return {**d, "latent": self.latent} if self.latent is not None else d


def parse_edits(text: str | None) -> dict[str, float]:
    """'smile:1.5,age:-2' -> {'smile': 1.5, 'age': -2.0} (':' rather than '=' reads well in a URL)."""
    edits: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, _, value = part.partition(":")
        try:
            amount = float(value)
        except ValueError:
            raise UserError(f"edit '{part}' is not NAME:AMOUNT, e.g. smile:1.5") from None
        edits[name.strip()] = amount
    return edits


class Studio:
    def __init__(self, sources: list[str | os.PathLike], state_dir: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu", precision: str = "auto", max_batch: int = MAX_BATCH,
                 gather: float = GATHER_SECONDS, compute_thread: bool = True) -> None:  # fmt: skip
        """`compute_thread`: run the renders on a thread of the studio's own; False leaves that to
        whoever calls `self.compute.run_until` (serve(): the main thread)."""
        self.models: dict[str, Model] = {}
        self.compute = ComputeThread()
        if compute_thread:
            self.compute.start()
        snapshots = [s for src in sources for s in models_at(src)]
        for snap_path in snapshots:
            snap = load_snapshot(snap_path, device=device)
            mid = model_id(snap.path, set(self.models))
            self.models[mid] = Model(
                id=mid, name=f"{snapshot_run_name(snap.path)} ({snap.path.name}, {snap.kimg:g} kimg)",
                snapshot=snap.path, G=snap.G_ema, label_names=snap.label_names, multi_hot=snap.multi_hot,
                directions=load_directions(snap.path), kimg=snap.kimg,
                batcher=Batcher(snap.G_ema, torch.device(device), precision, max_batch, gather,
                                compute=self.compute),
            )  # fmt: skip
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.favourites = Favourites(self.state_dir)
        self.latents = StoredLatents(self.state_dir)

    def close(self) -> None:
        for m in self.models.values():
            m.batcher.close()
        self.compute.stop()

    def model(self, mid: str) -> Model:
        if mid not in self.models:
            raise KeyError(mid)
        return self.models[mid]

    def check_face(self, m: Model, face: Face) -> Face:
        if (face.seed is None) == (face.latent is None):
            raise UserError("a face is a seed or a stored latent: give one of seed= and latent=")
        for seed in (face.seed, face.blend):
            if seed is not None and not 0 <= seed <= MAX_SEED:
                raise UserError(f"seed {seed} is out of range; use 0 to {MAX_SEED}")
        if not 0.0 <= face.t <= 1.0 or math.isnan(face.t):
            raise UserError(f"blend weight t={face.t} is out of range; use 0 to 1")
        for name, amount in face.edits.items():
            if name not in m.directions:
                have = ", ".join(sorted(m.directions)) or "none"
                raise UserError(f"model {m.id} has no direction '{name}'; it has {have}")
            if not abs(amount) <= MAX_AMOUNT:
                raise UserError(
                    f"edit {name}:{amount} is out of range; use -{MAX_AMOUNT:g} to {MAX_AMOUNT:g}"
                )
        if face.label is not None and not m.config.label_size:
            raise UserError(f"model {m.id} is not conditional; drop the label")
        if face.label is not None and len(face.label) > 1000:
            raise UserError("label is too long")
        return face

    def face_latent(self, m: Model, face: Face) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The latent (L,) and label row (K,) of a face: blend (slerp), then directions."""
        self.check_face(m, face)
        L, K = m.config.latent_size, m.config.label_size
        if face.latent is not None:
            z, label = self.latents.get(m, face.latent)
        else:
            z = latent_for_seed(face.seed, L)
            label = labels_for(K, [face.seed], face.label, m.label_names)[0] if K else None
        if face.blend is not None:
            z = slerp(z, latent_for_seed(face.blend, L), face.t)
            if K:
                label = torch.lerp(label, labels_for(K, [face.blend], face.label, m.label_names)[0], face.t)
        if face.edits:
            z = move(z[None], m.directions, face.edits)[0]
        return z, label

    def render(self, m: Model, face: Face, finish: Finish | None = None) -> Future:
        """A future of the face's uint8 (C, H, W) image, rendered in the model's next batch (or of
        finish(image), made on the compute thread right after it)."""
        return m.batcher.submit(*self.face_latent(m, face), finish)


def thumbnail(image: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (C, H, W) -> uint8 (C, size, size): each pixel the mean of its H/size x H/size box,
    rounded (half to even). A thumbnail is the full-size face made smaller, never G's output at a
    lower stage, which is another picture."""
    factor = image.shape[-1] // size
    if factor <= 1:
        return image
    # Run on the compute thread (png_bytes' callers), so torch's two threads are G's own: 2 ms for
    # a 1024x1024 face against 9 ms in NumPy on one core (idle 2-core Xeon with AMX). The sums of
    # at most 64x64 uint8 values are exact in fp32; torch.round rounds half to even.
    return F.avg_pool2d(image[None].float(), factor)[0].round_().to(torch.uint8)


def png_bytes(image: torch.Tensor, size: int | None = None) -> bytes:
    """uint8 (C, H, W) -> PNG; `size` < H gives a box-filtered thumbnail (`thumbnail`). The web
    handlers have it made on the compute thread right after the face's block (`finish`): on a
    thread of the web server it ran beside the next block's G, and both crawled (a page's faces
    came 0.2 s apart, 3 busy threads on 2 cores)."""
    if size:
        image = thumbnail(image, size)
    return encode_png(image.numpy().transpose(1, 2, 0))


# ---------------------------------------------------------------------------------------------
# the streamed page: GET /api/models/<id>/faces?seeds=0,1,..&size=128 (issue 28)


def check_size(m: Model, size: int | None) -> None:
    """A thumbnail size is a power of two up to the model's resolution (None: full size)."""
    if size is not None and (size < 1 or size & (size - 1) or size > m.G.resolution):
        raise UserError(f"size {size} is not a power of two up to {m.G.resolution}")


def parse_page_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]: 1 to MAX_PAGE seeds, each in [0, MAX_SEED]."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > MAX_PAGE:
        raise UserError(f"seeds: {len(parts)} seeds; a page has at most {MAX_PAGE}")
    seeds = []
    for part in parts:
        # Beyond 10 digits a seed is out of range anyway; int() of a huge string would be slow.
        if not part.isdigit() or not part.isascii() or len(part) > 10 or int(part) > MAX_SEED:
            raise UserError(f"seeds: '{part[:20]}' is not a seed; use 0 to {MAX_SEED}, e.g. seeds=0,1,2")
        seeds.append(int(part))
    return seeds


def render_page(studio: Studio, m: Model, seeds: list[int], label: str | None,
                finish: Finish | None = None) -> list[Future]:  # fmt: skip
    """Futures of the faces of `seeds` (or of finish(face)), queued on the model's Batcher in order
    and rendered on the studio's compute thread, so they come back a block at a time, first seed
    first; all or none (Busy)."""
    rows = [studio.face_latent(m, Face(seed, label)) for seed in seeds]
    z = torch.stack([r[0] for r in rows])
    labels = None if rows[0][1] is None else torch.stack([r[1] for r in rows])
    return m.batcher.submit_many(z, labels, finish)


async def page_lines(seeds: list[int], futures: list[Future]) -> AsyncIterator[bytes]:
    """NDJSON lines `{"seed": S, "png": BASE64}` (or `{"seed": S, "error": MESSAGE}`), one a face
    as soon as it is rendered, in the order of `seeds`. When the client goes away (this generator
    is cancelled or closed), the faces not rendered yet are cancelled: the Batcher skips them."""
    import asyncio

    try:
        for seed, future in zip(seeds, futures, strict=True):
            try:
                png = await asyncio.wrap_future(future)
                line = {"seed": seed, "png": base64.b64encode(png).decode("ascii")}
            except Exception as e:  # noqa: BLE001 - the page shows which face failed and goes on
                line = {"seed": seed, "error": str(e).splitlines()[0] if str(e) else type(e).__name__}
            yield (json.dumps(line) + "\n").encode()
    finally:
        for future in futures:
            future.cancel()


# ---------------------------------------------------------------------------------------------
# the web layer


@dataclass
class Panel:
    """An extension of the studio: API routes under /api/ext/<name>/ and a script for the page."""

    name: str
    title: str
    router: APIRouter | None = None
    script: Path | None = None
    # Routes of this panel (as mounted in its router, e.g. "/upload") that take bodies over MAX_BODY.
    max_body: dict[str, int] = field(default_factory=dict)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes ends in 413 before it is read whole;
    `larger` gives the paths (exactly) that may take more, and how much (an upload route)."""

    def __init__(self, app, limit: int = MAX_BODY, larger: dict[str, int] | None = None) -> None:
        self.app, self.limit, self.larger = app, limit, dict(larger or {})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.larger.get(scope.get("path", ""), self.limit)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await _plain(send, 413, f"request body over {limit} bytes")
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _plain(send, 413, f"request body over {limit} bytes")


class _TooLarge(Exception):
    pass


# DNS rebinding: a web page on evil.example whose name later resolves to 127.0.0.1 reaches the
# studio from the user's own browser, same-origin as far as the browser knows; only the Host
# header still says evil.example (the check Jupyter, Vite and webpack-dev-server added). A plain
# cross-site form or fetch POST carries the attacking page's Origin.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_BINDS = ("0.0.0.0", "::", "")
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")


def allowed_hosts(bind: str, port: int, allow: list[str] | tuple[str, ...] = ()) -> frozenset[str]:
    """The Host values ('name:port', lower case) the studio answers: 127.0.0.1, localhost and
    [::1] at `port`, the address it is bound to, and each `--allow-host` NAME (at `port` unless
    it is NAME:PORT, for a proxy on another port)."""
    names = [*LOOPBACK_NAMES, *([] if bind in WILDCARD_BINDS else [f"[{bind}]" if ":" in bind else bind])]
    return frozenset(_with_port(n.strip(), port) for n in [*names, *allow])


def _with_port(netloc: str, default: int) -> str:
    """'name:port' in lower case, `default` when `netloc` names no port ('[::1]' is a name)."""
    netloc = netloc.lower()
    return netloc if re.fullmatch(r"(\[[^\]]*\]|[^:\[\]]*):\d+", netloc) else f"{netloc}:{default}"


class HostCheck:
    """ASGI middleware: 403 unless the Host header is one of `hosts` (allowed_hosts), and 403 for a
    state-changing request (POST, PUT, PATCH, DELETE) whose Origin is another site. A request
    without Origin (curl, scripts) is not a browser's cross-site request and passes."""

    def __init__(self, app, hosts: frozenset[str]) -> None:
        self.app, self.hosts = app, hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if _with_port(host, 80) not in self.hosts:
            shown = host[:100] or "(none)"
            return await _plain(send, 403, f"Host {shown} is not this studio's address; open it at "
                                f"{sorted(self.hosts)[0]} or start it with --allow-host NAME")  # fmt: skip
        origin = headers.get(b"origin")
        if origin is not None and scope.get("method") in STATE_CHANGING:
            scheme, _, netloc = origin.decode("latin-1").partition("://")
            if _with_port(netloc, 443 if scheme == "https" else 80) not in self.hosts:
                return await _plain(send, 403, f"requests from {origin.decode('latin-1')[:100]} may not "
                                    "change this studio (another site's page sent it)")  # fmt: skip
        return await self.app(scope, receive, send)


async def _plain(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class FaceIn(BaseModel):
    """A favourite as the page sends it."""

    model: str = Field(max_length=100)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    latent: str | None = Field(None, max_length=40)
    label: str | None = Field(None, max_length=1000)
    edits: dict[str, float] = Field(default_factory=dict, max_length=64)
    blend: int | None = Field(None, ge=0, le=MAX_SEED)
    t: float = Field(0.0, ge=0.0, le=1.0)
    note: str = Field("", max_length=200)

    def to_face(self) -> Face:
        """The face asked for (a blend weight counts only with a blend seed)."""
        return Face(self.seed, self.label or None, self.edits, self.blend,
                    self.t if self.blend is not None else 0.0, self.latent)  # fmt: skip


def model_or_404(studio: Studio, mid: str) -> Model:
    """The studio's model `mid`, for the studio's and the panels' handlers; a one-line 404 if none."""
    try:
        return studio.model(mid)
    except KeyError:
        raise HTTPException(404, f"no model '{mid[:100]}'; GET /api/models lists them") from None


def create_app(studio: Studio, panels: Sequence[Panel] = ()) -> FastAPI:
    """The FastAPI app of a studio (models, favourites) with the extension panels handed in."""
    import asyncio

    app = FastAPI(title="progan studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.studio = studio
    larger = {f"/api/ext/{p.name}{route}": n for p in panels for route, n in p.max_body.items()}
    app.add_middleware(BodyLimit, larger=larger)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        # One line, as for every other bad request: "seed: Input should be greater than or equal to 0".
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(x) for x in first.get("loc", ())[1:]) or "request"
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid')}"}, status_code=400)

    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy):
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    def get_model(mid: str) -> Model:
        return model_or_404(studio, mid)

    api = APIRouter(prefix="/api")

    @api.get("/models")
    def models() -> list[dict]:
        return [m.describe() for m in studio.models.values()]

    @api.get("/models/{mid}/face.png")
    async def face_png(
        mid: str,
        seed: int | None = Query(None, ge=0, le=MAX_SEED),
        latent: str | None = Query(None, max_length=40),
        label: str | None = Query(None, max_length=1000),
        edits: str | None = Query(None, max_length=4000),
        blend: int | None = Query(None, ge=0, le=MAX_SEED),
        t: float = Query(0.5, ge=0.0, le=1.0),
        size: int | None = Query(None, ge=1, le=1024),
    ):
        m = get_model(mid)
        check_size(m, size)
        face = Face(seed, label or None, parse_edits(edits), blend, t if blend is not None else 0.0, latent)
        png = await asyncio.wrap_future(studio.render(m, face, functools.partial(png_bytes, size=size)))
        # The same URL always gives the same picture from the same snapshot.
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @api.get("/models/{mid}/faces")
    async def faces_page(
        mid: str,
        seeds: str = Query(max_length=MAX_PAGE * 12),
        label: str | None = Query(None, max_length=1000),
        size: int | None = Query(None, ge=1, le=1024),
    ):
        # A page of faces as one streamed request: each face is a line as soon as its block is done.
        m = get_model(mid)
        check_size(m, size)
        seed_list = parse_page_seeds(seeds)
        futures = render_page(studio, m, seed_list, label or None, functools.partial(png_bytes, size=size))
        lines = page_lines(seed_list, futures)
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}  # no proxy holds lines back
        return StreamingResponse(lines, media_type="application/x-ndjson", headers=headers)

    @api.get("/favourites")
    def favourites() -> list[dict]:
        return studio.favourites.items

    @api.post("/favourites", status_code=201)
    def add_favourite(face: FaceIn) -> dict:
        m = get_model(face.model)
        f = face.to_face()
        studio.check_face(m, f)
        studio.face_latent(m, f)  # labels checked too: only faces that render are kept
        return studio.favourites.add({"model": m.id, **f.to_dict(), "note": face.note})

    @api.delete("/favourites/{fid}")
    def remove_favourite(fid: str) -> dict:
        if not studio.favourites.remove(fid):
            raise HTTPException(404, f"no favourite '{fid[:40]}'")
        return {"removed": fid}

    @api.get("/panels")
    def list_panels() -> list[dict]:
        return [{"name": p.name, "title": p.title, "script": f"/ext/{p.name}.js" if p.script else None}
                for p in panels]  # fmt: skip

    app.include_router(api)
    for p in panels:
        if not ID_PATTERN.fullmatch(p.name):
            raise ValueError(f"panel name {p.name!r} is not URL-safe")
        if p.router is not None:
            app.include_router(p.router, prefix=f"/api/ext/{p.name}")
        if p.script is not None:
            app.add_api_route(f"/ext/{p.name}.js", _file_route(Path(p.script), "text/javascript"))

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _file_route(path: Path, media_type: str):
    def serve():
        return FileResponse(path, media_type=media_type)

    return serve


def serve(sources: list[str], host: str = "127.0.0.1", port: int = 8000, state_dir: str | None = None,
          device: str = "cpu", precision: str = "auto", allow_hosts: list[str] | None = None,
          panels: Sequence[Panel] = ()) -> None:  # fmt: skip
    """Load the models and run the studio, with the extension panels handed in, until Ctrl-C; it
    answers only requests addressed to it (HostCheck with allowed_hosts(host, port, allow_hosts))."""
    import uvicorn

    studio = Studio(sources, state_dir, device=device, precision=precision, compute_thread=False)
    app = create_app(studio, panels=panels)
    app.add_middleware(HostCheck, hosts=allowed_hosts(host, port, allow_hosts or []))
    print(f"progan studio: {len(studio.models)} model(s), favourites in {studio.favourites.path}")
    print(f"open http://{'[' + host + ']' if ':' in host else host}:{port}/")
    # The web server on a thread of its own, the renders on this one (ComputeThread says why).
    # uvicorn installs no signal handlers off the main thread: Ctrl-C reaches this thread.
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           limit_concurrency=256))  # fmt: skip
    web = threading.Thread(target=server.run, name="progan-studio-web")
    before = {}
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C and SIGTERM stop the server as uvicorn itself would (open requests finish, a
        # second Ctrl-C forces it); this loop then sees the web thread end.
        before = {sig: signal.signal(sig, server.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
    web.start()
    try:
        studio.compute.run_until(lambda: not web.is_alive())
    finally:
        server.should_exit = True
        web.join()
        studio.close()
        for sig, handler in before.items():
            signal.signal(sig, handler)
    if not server.started:
        raise UserError(f"the studio could not listen on {host}:{port} (see the message above); "
                        "free that port or choose another with --port")  # fmt: skip

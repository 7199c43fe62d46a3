"""The studio's "open a photo" panel: upload one photo, watch it being projected into the open
model's latent space, then see it as a face of the studio, with the direction sliders.

POST /api/ext/photo/upload?model=ID[&steps=N&align=auto|on|off] with the image file as the body
(any type Pillow reads; at most MAX_UPLOAD bytes, a 413 above) decodes it in memory (at most
MAX_UPLOAD_PIXELS pixels, read from the header before decoding; not an image: 400), prepares it
as `progan project` does (a face model's photo aligned the CelebA-HQ way through the landmark
code, `face_model`/`photo_for_model`; others must be square and are resized) and starts the
projection in a background thread (202). One projection runs at a time per server: another
upload meanwhile gets 503. GET /progress says how far it is (`state`: idle, projecting, done,
cancelled, failed; `step` of `total`, `best_loss`), POST /cancel ends it after the step in hand
(nothing is kept). When it is done the latent is kept by the studio (`Studio.latents`,
`<state dir>/latents/<id>.json`, the id made by the server) and /progress gives `face`:
`{"model", "latent": id, "label", "psnr"}`, which the page opens as any face (`face.png?latent=id`),
so the direction sliders, blend and favourites work on it. The photo itself is never written
anywhere: only the latent is.

Steps are few by default (DEFAULT_STEPS, 2 restarts), so that a photo is a face in seconds on a
small model; `progan project` looks harder.
"""

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations.
import asyncio
import io
import threading
from pathlib import Path

import numpy as np

from progan.errors import UserError

MAX_UPLOAD = 10 * 2**20
MAX_UPLOAD_PIXELS = 25_000_000
# 200 steps: 1 s for a 32x32 model on one CPU core, and 42 dB on a seed's face (100 steps: 10 dB).
DEFAULT_STEPS = 200
MAX_STEPS = 1000
RESTARTS = 2
INIT_SAMPLES = 64
SCRIPT = Path(__file__).with_name("project_panel.js")


def photo_panel():
    """The `Panel` (progan.studio.app) that opens a photo: upload, projection, progress."""
    from fastapi import APIRouter, HTTPException, Query, Request

    from progan.projection import project as pr
    from progan.studio.app import Panel, model_or_404

    router = APIRouter()
    running = threading.Lock()
    cancel = threading.Event()
    progress: dict = {"state": "idle", "step": 0, "total": 0, "best_loss": None, "face": None, "error": None}
    landmarker = []  # one dlib landmarker, made at the first aligned photo (its model is ~100 MB)

    def prepare(body: bytes, m, align: bool):
        img = pr.decode_photo(io.BytesIO(body), m.config.channels, "the upload", MAX_UPLOAD_PIXELS)
        if align and not landmarker:
            from progan.data.align import FaceLandmarker

            landmarker.append(FaceLandmarker())
        lm = landmarker[0] if align else None
        return pr.photo_for_model(
            img, int(m.G.resolution), m.config.channels, align, lm, "the upload", align_off="align: off"
        )

    def project(studio, m, photo, steps: int) -> None:
        try:
            opts = pr.ProjectOptions(steps=steps, restarts=RESTARTS, init_samples=INIT_SAMPLES, batch=1)
            device = next(m.G.parameters()).device
            (p,) = pr.project_images(
                m.G, np.array(photo)[None], ["upload"], opts, device=device, progress=False,
                multi_hot=m.multi_hot,
                on_step=lambda done, total, best: progress.update(step=done, total=total, best_loss=best),
                should_stop=cancel.is_set,
            )  # fmt: skip
            if cancel.is_set():
                progress.update(state="cancelled")
                return
            info = {"source": "photo", "psnr": round(float(p.psnr), 4), "steps": steps}
            lid = studio.latents.add(m, p.latent, p.labels, info)
            label = None
            if p.labels is not None:
                names = m.label_names
                label = ",".join(names[i] if i < len(names) else str(i) for i in p.labels.nonzero()[0])
            face = {"model": m.id, "latent": lid, "label": label, "psnr": float(p.psnr)}
            progress.update(state="done", face=face)
        except Exception as e:  # noqa: BLE001 - the page polls for the outcome; the server lives on
            progress.update(state="failed", error=str(e).splitlines()[0] if str(e) else type(e).__name__)
        finally:
            running.release()

    @router.get("/progress")
    def get_progress() -> dict:
        return dict(progress)

    @router.post("/cancel")
    def post_cancel() -> dict:
        busy = running.locked()
        if busy:
            cancel.set()
        return {"cancelled": busy}

    @router.post("/upload", status_code=202)
    async def upload(
        request: Request,
        model: str = Query(max_length=200),
        steps: int = Query(DEFAULT_STEPS, ge=1, le=MAX_STEPS),
        align: str = Query("auto", pattern="^(auto|on|off)$"),
    ) -> dict:
        studio = request.app.state.studio
        m = model_or_404(studio, model)
        # The BodyLimit middleware already stops a body over MAX_UPLOAD (Panel.max_body); this is
        # the cap of this route should it be mounted without it.
        body = await request.body()
        if len(body) > MAX_UPLOAD:
            raise HTTPException(413, f"request body over {MAX_UPLOAD} bytes")
        if not body:
            raise UserError("the upload is empty; send the image file as the request body")
        if not running.acquire(blocking=False):
            raise HTTPException(503, "a photo is already being projected; try again when it has finished")
        cancel.clear()  # here, not later: a cancel while the photo is being aligned still counts
        try:
            do_align = (
                pr.face_model(int(m.G.resolution), m.config.channels) if align == "auto" else align == "on"
            )
            photo = await asyncio.to_thread(prepare, body, m, do_align)
        except BaseException:
            running.release()
            raise
        progress.update(state="projecting", step=0, total=steps, best_loss=None, face=None, error=None)
        # On the studio's compute thread, after the renders queued before it (studio.app.ComputeThread:
        # a thread of its own running G beside the renders slowed both 2.5x on a 2-core CPU).
        studio.compute.submit(project, studio, m, photo, steps)
        return dict(progress)

    return Panel(name="photo", title="Open a photo", router=router, script=SCRIPT,
                 max_body={"/upload": MAX_UPLOAD})  # fmt: skip

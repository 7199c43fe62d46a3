"""The studio's face panels: describe (a text box that runs `describe`) and keep-with (a button that
holds the traits an edit did not ask for).

The describe panel: a text box that runs `describe` on the open model and shows the
ranked candidates (the studio's own direction sliders move the chosen face along the fitted
directions).

POST /api/ext/describe/run {"model", "text", "candidates", "top", "first_seed"} -> how the words
were understood, the unknown words, and the best candidates (seed, score, per-word scores, label),
with how many were measured and whether the run was cancelled. While it runs, GET
/api/ext/describe/progress says how many faces were generated and measured and the best score so
far, and POST /api/ext/describe/cancel ends it after the batch in hand (its best so far is the
answer). Faces are measured downscaled to DEFAULT_MEASURE_SIZE as `progan describe` measures
them, in the server's worker thread (a measuring process would be started for every request).
Everything is bounded: the text at MAX_TEXT characters, candidates at MAX_CANDIDATES, top at
MAX_TOP, and one describe runs at a time per server (a second gets 503 until it finishes).

The keep-with panel, served when `progan serve` is given `--keep-with CLASSIFIER` (a `progan
attributes fit` file named on the server's command line; a client never names a file): POST
/api/ext/keep/run with the open face as the page holds it ({"model", "seed" or "latent", "label",
"edits", "blend", "t"}) runs `keep_unasked` on it, as `progan edit --keep-with` does: the edited
latent is searched nearby for the face on which the classifier reads the traits not asked for (on
the whole face and on each side) as before the edit. The result is kept as a stored latent
(`Studio.latents`) and returned as {"latent": id, "unasked_change_before", "unasked_change_after"},
which the page opens as a face with no edits. One search runs at a time (503 meanwhile); it runs on
the studio's compute thread, where the renders run.
"""

# No `from __future__ import annotations` here: FastAPI reads the request model from the handler's
# annotations, and the model is defined inside describe_panel() (pydantic is imported lazily).
import asyncio
import dataclasses
import threading
from pathlib import Path

from progan.errors import UserError

MAX_TEXT = 500
MAX_CANDIDATES = 1000
MAX_TOP = 64
SCRIPT = Path(__file__).with_name("describe_panel.js")


def describe_panel():
    """The `Panel` (progan.studio.app) that serves the describe box."""
    from fastapi import APIRouter, HTTPException, Request
    from pydantic import BaseModel, Field

    from progan.faces import describe as d
    from progan.faces.measuring import DEFAULT_MEASURE_SIZE
    from progan.faces.words import understand
    from progan.sampling import MAX_SEED
    from progan.studio.app import Panel, model_or_404

    class DescribeIn(BaseModel):
        model: str = Field(max_length=200)
        text: str = Field(min_length=1, max_length=MAX_TEXT)
        candidates: int = Field(100, ge=1, le=MAX_CANDIDATES)
        top: int = Field(16, ge=1, le=MAX_TOP)
        first_seed: int = Field(0, ge=0, le=MAX_SEED - MAX_CANDIDATES)

    router = APIRouter()
    running = threading.Lock()
    cancel = threading.Event()
    progress = {"running": False, "generated": 0, "measured": 0, "total": 0, "best": None}

    @router.get("/progress")
    def get_progress() -> dict:
        return dict(progress)

    @router.post("/cancel")
    def post_cancel() -> dict:
        if progress["running"]:
            cancel.set()
        return {"cancelled": progress["running"]}

    @router.post("/run")
    async def run(body: DescribeIn, request: Request) -> dict:
        studio = request.app.state.studio
        m = model_or_404(studio, body.model)
        desc = understand(body.text, (), m.label_names)
        if not desc.wishes:
            raise UserError(f"nothing in the description is measured ({desc.unknown_line() or 'no words'})")
        if any(w.source == "measured" for w in desc.wishes):
            d.check_measurable(m.G.resolution, f"model '{m.id}'")
        seeds = list(range(body.first_seed, body.first_seed + body.candidates))
        labels = d.label_rows(desc, m.G.label_size, m.label_names, seeds)
        if not running.acquire(blocking=False):
            raise HTTPException(503, "a describe is already running; try again when it has finished")
        cancel.clear()
        progress.update(running=True, generated=0, measured=0, total=len(seeds), best=None)
        try:
            device = next(m.G.parameters()).device
            # On the studio's compute thread, where its renders run (studio.app.ComputeThread: a
            # second thread running G would slow both 2.5x on a 2-core CPU).
            ranked, _ = await asyncio.wrap_future(studio.compute.submit(
                d.describe, m.G, desc, seeds, top=body.top, labels=labels, device=device, progress=False,
                measure_size=DEFAULT_MEASURE_SIZE,
                should_stop=cancel.is_set, on_batch=progress.update,
            ))  # fmt: skip
        finally:
            progress["running"] = False
            running.release()
        wanted = [w.trait for w in desc.wishes if w.source == "label" and not w.negated]
        return {
            "understood": desc.summary(),
            "unknown": desc.unknown,
            "faces_found": ranked.faces_found,
            "measured": ranked.total,
            "cancelled": ranked.total < len(seeds),
            "candidates": [
                {"rank": r, "seed": c.seed, "score": c.score, "words": c.words, "label": ",".join(wanted)}
                for r, c in enumerate(ranked[: body.top], 1)
            ],
        }

    return Panel(name="describe", title="Describe", router=router, script=SCRIPT)


KEEP_SCRIPT = Path(__file__).with_name("keep_panel.js")


def keep_panel(classifier_path: str):
    """The `Panel` (progan.studio.app) that holds an edit's unasked traits with the classifier at
    `classifier_path` (loaded now, so that a bad file stops `progan serve` before it listens)."""
    from fastapi import APIRouter, HTTPException, Request

    from progan.faces.attributes import load_attributes
    from progan.faces.edit import keep_unasked
    from progan.studio.app import Face, FaceIn, Panel, model_or_404

    classifier = load_attributes(classifier_path)
    name = Path(classifier_path).name
    router = APIRouter()
    running = threading.Lock()

    def search(studio, m, face: Face) -> dict:
        before, label = studio.face_latent(m, dataclasses.replace(face, edits={}))
        after, _ = studio.face_latent(m, face)
        moved, info = keep_unasked(
            m.G, before[None], after[None], face.edits, m.directions, classifier,
            labels=None if label is None else label[None], seeds=[face.seed or 0],
            device=m.batcher.device, precision=m.batcher.precision,
        )  # fmt: skip
        lid = studio.latents.add(m, moved[0], label, {"kept_from": face.to_dict(), "keep_with": name, **info})
        return {"model": m.id, "latent": lid, "label": face.label, **info}

    @router.get("/info")
    def get_info() -> dict:
        return {"classifier": name, "attributes": classifier.names}

    @router.post("/run")
    async def run(body: FaceIn, request: Request) -> dict:
        studio = request.app.state.studio
        m = model_or_404(studio, body.model)
        face = studio.check_face(m, body.to_face())
        edits = {k: v for k, v in face.edits.items() if v}
        if not edits:
            raise UserError("the face has no edit to hold the rest of; move a direction slider first")
        face.edits = edits
        if not running.acquire(blocking=False):
            raise HTTPException(503, "a keep-with search is already running; try again when it has finished")
        try:
            return await asyncio.wrap_future(studio.compute.submit(search, studio, m, face))
        finally:
            running.release()

    return Panel(name="keep", title=f"keep-with {name}", router=router, script=KEEP_SCRIPT)

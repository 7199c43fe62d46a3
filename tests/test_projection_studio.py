"""The studio's "open a photo" panel (progan/projection/studio_panel.py) through FastAPI's test
client: upload limits, progress, cancel, and the projected face shown and edited as any face."""

from __future__ import annotations

import io
import json
import re
import struct
import threading
import time
import zlib

import numpy as np
import pytest

pytest.importorskip("fastapi")
import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from helpers import tiny_run  # noqa: E402
from PIL import Image  # noqa: E402

import progan  # noqa: E402
from progan.directions import add_direction  # noqa: E402
from progan.projection import project as pr  # noqa: E402
from progan.projection import studio_panel as sp  # noqa: E402
from progan.studio.app import Studio, create_app  # noqa: E402

UPLOAD = "/api/ext/photo/upload"


@pytest.fixture
def served(tmp_path):
    """(test client of a studio of one 16x16 model with a 'smile' direction and the photo panel,
    its snapshot, tmp_path)."""
    snap = tiny_run(tmp_path / "runs" / "00000-faces", resolution=16)
    add_direction(snap, "smile", torch.randn(16, generator=torch.Generator().manual_seed(1)), 16)
    tiny_run(tmp_path / "runs" / "00001-other", resolution=8)
    studio = Studio([tmp_path / "runs"], tmp_path / "state")
    yield TestClient(create_app(studio, panels=[sp.photo_panel()])), snap, tmp_path
    studio.close()


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """The first bytes of a PNG that says it is width x height (no pixels follow: a decoder that
    believed it would decode a bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def wait_until_over(client, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = client.get("/api/ext/photo/progress").json()
        if p["state"] != "projecting":
            return p
        time.sleep(0.02)
    raise AssertionError("the projection did not end")


def files_under(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_a_photo_is_projected_with_progress_then_rendered_and_edited_as_model_render_does(
    served, monkeypatch
):
    client, snap, tmp = served
    assert {"name": "photo", "title": "Open a photo", "script": "/ext/photo.js"} in client.get(
        "/api/panels"
    ).json()
    assert "photo-form" in client.get("/ext/photo.js").text
    model = progan.load(snap, device="cpu")
    photo = model.generate([5])[0]  # a face the model can make: the projection must come close

    # Hold the projection at step 5 so that the test sees it in progress.
    at_step, go_on = threading.Event(), threading.Event()
    real = pr.project_images

    def watched(*args, on_step, **kwargs):
        def step(done, total, best):
            on_step(done, total, best)
            if done == 5:
                at_step.set()
                go_on.wait(30)

        return real(*args, on_step=step, **kwargs)

    monkeypatch.setattr(pr, "project_images", watched)
    before = files_under(tmp)
    r = client.post(f"{UPLOAD}?model=00000-faces&steps=100", content=png(photo))
    assert r.status_code == 202, r.text
    assert at_step.wait(30)
    p = client.get("/api/ext/photo/progress").json()
    assert p["state"] == "projecting" and p["step"] == 5 and p["total"] == 100
    assert isinstance(p["best_loss"], float) and p["face"] is None
    go_on.set()
    p = wait_until_over(client)
    assert p["state"] == "done" and p["step"] == 100, p
    face = p["face"]
    assert face["model"] == "00000-faces" and re.fullmatch(r"[0-9a-f]{16}", face["latent"])
    assert face["psnr"] > 30  # 45 dB when written

    # The photo was never written: the latent alone is, in the state dir, under the server's id.
    stored = tmp / "state" / "latents" / f"{face['latent']}.json"
    assert files_under(tmp) - before == {str(stored.relative_to(tmp))}
    latent = np.asarray(json.loads(stored.read_text())["latent"], dtype=np.float32)
    assert latent.shape == (16,)

    # The studio's face of that latent is Model.render's image of it, and edits move it as
    # progan.directions moves a seed's latent.
    shown = client.get(f"/api/models/00000-faces/face.png?latent={face['latent']}")
    assert shown.status_code == 200
    got = np.asarray(Image.open(io.BytesIO(shown.content)).convert("RGB"))
    np.testing.assert_array_equal(got, model.render(latent)[0])
    edited = client.get(f"/api/models/00000-faces/face.png?latent={face['latent']}&edits=smile:2.5")
    got = np.asarray(Image.open(io.BytesIO(edited.content)).convert("RGB"))
    np.testing.assert_array_equal(got, model.render(model.edit(latent, free=True, smile=2.5))[0])
    assert np.abs(got.astype(int) - model.render(latent)[0]).mean() > 1  # the edit changed it

    # A projected face can be kept like a seed's.
    r = client.post("/api/favourites", json={"model": "00000-faces", "latent": face["latent"], "edits": {}})
    assert r.status_code == 201 and r.json()["face"]["latent"] == face["latent"]


def test_upload_limits_are_one_line_4xx_and_the_cap_elsewhere_stays(served):
    client, _, _ = served
    square = png(np.zeros((16, 16, 3), np.uint8))
    for url, body, code, needle in [
        (f"{UPLOAD}?model=00000-faces", b"x" * (sp.MAX_UPLOAD + 1), 413, "request body over"),
        (f"{UPLOAD}?model=00000-faces", png_header(6000, 5000), 400, "more than 25 megapixels"),
        (f"{UPLOAD}?model=00000-faces", b"hello, not a picture", 400, "is not an image"),
        (f"{UPLOAD}?model=00000-faces", b"", 400, "empty"),
        (f"{UPLOAD}?model=00000-faces", png(np.zeros((16, 20, 3), np.uint8)), 400, "not square"),
        (f"{UPLOAD}?model=nope", square, 404, "no model 'nope'"),
        (f"{UPLOAD}?model=00000-faces&steps=100000", square, 400, "steps"),
        (f"{UPLOAD}?model=00000-faces&align=maybe", square, 400, "align"),
    ]:
        r = client.post(url, content=body)
        assert r.status_code == code, (url, r.text)
        detail = r.json()["detail"]
        assert needle in detail and "\n" not in detail, (url, detail)
    # A body without a length (chunked) is cut off at the cap too, before it is read whole.
    chunks = (b"x" * 2**20 for _ in range(11))
    r = client.post(f"{UPLOAD}?model=00000-faces", content=chunks)
    assert r.status_code == 413 and "request body over" in r.json()["detail"]
    assert client.get("/api/ext/photo/progress").json()["state"] == "idle"
    # The upload's larger cap is that route's alone.
    big = b"x" * (20 * 1024)
    assert client.post("/api/ext/photo/cancel", content=big).status_code == 413
    r = client.post("/api/favourites", json={"model": "00000-faces", "seed": 1, "note": "x" * 20000})
    assert r.status_code == 413
    # A face names a stored latent by its id only: no paths, no other model's latents.
    face = "/api/models/00000-faces/face.png"
    for query, needle in [
        ("latent=..%2Ffavourites", "16 hex digits"),
        ("latent=0123456789abcdef", "no stored latent"),
        ("seed=1&latent=0123456789abcdef", "one of seed= and latent="),
    ]:
        r = client.get(f"{face}?{query}")
        assert r.status_code == 400 and needle in r.json()["detail"], (query, r.text)


def test_one_projection_at_a_time_and_cancel_keeps_nothing(served, monkeypatch):
    client, _, tmp = served
    started, released = threading.Event(), threading.Event()
    real = pr.project_images

    def held(*args, should_stop, **kwargs):
        def stop():
            started.set()
            released.wait(30)
            return should_stop()

        return real(*args, should_stop=stop, **kwargs)

    monkeypatch.setattr(pr, "project_images", held)
    square = png(np.full((16, 16, 3), 128, np.uint8))
    assert client.post(f"{UPLOAD}?model=00000-faces", content=square).status_code == 202
    assert started.wait(30)
    r = client.post(f"{UPLOAD}?model=00000-faces", content=square)
    assert r.status_code == 503 and "already being projected" in r.json()["detail"]
    assert client.post("/api/ext/photo/cancel").json() == {"cancelled": True}
    released.set()
    assert wait_until_over(client)["state"] == "cancelled"
    assert not (tmp / "state" / "latents").exists() or not any((tmp / "state" / "latents").iterdir())
    # Then the next photo is taken (one over the 16 KiB cap of other requests: noise, 128x128,
    # resized to the model's 16x16), and a latent is the face of its own model only.
    monkeypatch.setattr(pr, "project_images", real)
    noise = png(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8))
    assert len(noise) > 32 * 1024
    r = client.post(f"{UPLOAD}?model=00000-faces&steps=3", content=noise)
    assert r.status_code == 202, r.text
    p = wait_until_over(client)
    assert p["state"] == "done"
    r = client.get(f"/api/models/00001-other/face.png?latent={p['face']['latent']}")
    assert r.status_code == 400 and "belongs to model 00000-faces" in r.json()["detail"]


def test_a_face_model_photo_is_aligned_as_progan_project_aligns_it(tmp_path, monkeypatch):
    """A colour 64x64 model is a face model: the upload goes through `photo_for_model` with
    alignment on (the landmark code), and `align=off` turns it off as --no-align does; a photo
    without a face says how to turn it off here (the menu, not the CLI's flag)."""
    tiny_run(tmp_path / "runs" / "00000-faces64", resolution=64)
    calls = []
    real = pr.photo_for_model

    def spy(img, resolution, channels, align, landmarker=None, name="the photo", **kwargs):
        calls.append((img.size, resolution, align))
        if len(calls) == 3:  # the real alignment, with a landmarker that finds no face
            return real(img, resolution, channels, align, landmarker, name, **kwargs)
        return real(img, resolution, channels, False, None, name)

    class FakeLandmarker:
        def __call__(self, rgb):
            return None

    import progan.data.align as align_module

    monkeypatch.setattr(pr, "photo_for_model", spy)
    monkeypatch.setattr(align_module, "FaceLandmarker", FakeLandmarker)
    studio = Studio([tmp_path / "runs"], tmp_path / "state")
    try:
        client = TestClient(create_app(studio, panels=[sp.photo_panel()]))
        photo = png(np.full((80, 80, 3), 90, np.uint8))
        for query in ("", "&align=off"):
            r = client.post(f"{UPLOAD}?model=00000-faces64&steps=1{query}", content=photo)
            assert r.status_code == 202, r.text
            assert wait_until_over(client)["state"] == "done"
        assert calls == [((80, 80), 64, True), ((80, 80), 64, False)]
        r = client.post(f"{UPLOAD}?model=00000-faces64&steps=1", content=photo)
        over = r.json() if r.status_code == 400 else wait_until_over(client)
        message = over.get("detail") or over.get("error")
        assert "no face found" in message and "align: off" in message and "--no-align" not in message
    finally:
        studio.close()


def test_a_projection_that_fails_says_why_in_one_line_and_frees_the_panel(served, monkeypatch):
    client, _, _ = served
    real = pr.project_images

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory\nTried to allocate 2 GiB")

    monkeypatch.setattr(pr, "project_images", broken)
    square = png(np.full((16, 16, 3), 128, np.uint8))
    assert client.post(f"{UPLOAD}?model=00000-faces", content=square).status_code == 202
    p = wait_until_over(client)
    assert p["state"] == "failed" and p["error"] == "CUDA out of memory" and p["face"] is None
    monkeypatch.setattr(pr, "project_images", real)
    assert client.post(f"{UPLOAD}?model=00000-faces&steps=2", content=square).status_code == 202
    assert wait_until_over(client)["state"] == "done"

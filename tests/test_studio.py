"""`progan serve`: the studio's API through FastAPI's test client (the page: test_studio_browser.py)."""

import asyncio
import base64
import io
import json
import time

import httpx
import numpy as np
import pytest
import torch
from fastapi import APIRouter, Request
from fastapi.testclient import TestClient
from helpers import served_app, tiny_run
from PIL import Image

from progan.checkpoint import load_snapshot
from progan.cli import build_parser, main
from progan.directions import add_direction
from progan.sampling import images_for_latents, images_for_seeds, labels_for, latents_for_seeds, slerp
from progan.studio.app import Panel, Studio, create_app


@pytest.fixture
def studio(tmp_path):
    tiny_run(tmp_path / "runs" / "00000-faces", resolution=16)
    s = Studio([tmp_path / "runs" / "00000-faces"], tmp_path / "state")
    yield s
    s.close()


def decode(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")).transpose(2, 0, 1)


def test_faces_are_the_pixels_of_generate_and_thumbnails_are_box_filtered(studio, tmp_path):
    client = TestClient(create_app(studio))
    (m,) = client.get("/api/models").json()
    assert m["id"] == "00000-faces" and m["resolution"] == 16 and m["label_size"] == 0
    G = load_snapshot(tmp_path / "runs" / "00000-faces").G_ema
    want = images_for_seeds(G, [7, 123456789]).numpy()
    for i, seed in enumerate([7, 123456789]):
        np.testing.assert_array_equal(
            decode(client.get(f"/api/models/00000-faces/face.png?seed={seed}")), want[i]
        )
    thumb = decode(client.get("/api/models/00000-faces/face.png?seed=7&size=8"))
    box = want[0].reshape(3, 8, 2, 8, 2).astype(float).mean(axis=(2, 4))
    assert thumb.shape == (3, 8, 8) and np.abs(thumb - box).max() <= 1
    assert "progan studio" in client.get("/").text and client.get("/static/studio.js").status_code == 200


def test_concurrent_requests_are_served_in_shared_batches(studio, tmp_path):
    app = create_app(studio)
    batcher = studio.models["00000-faces"].batcher
    batcher.gather = 0.05  # a slow, contended CI machine must still see the requests arrive together

    async def fetch_all():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://studio") as client:
            return await asyncio.gather(
                *[client.get(f"/api/models/00000-faces/face.png?seed={s}") for s in range(32)]
            )

    responses = asyncio.run(fetch_all())
    G = load_snapshot(tmp_path / "runs" / "00000-faces").G_ema
    want = images_for_seeds(G, range(32)).numpy()
    for s, r in enumerate(responses):
        np.testing.assert_array_equal(decode(r), want[s])
    # On a CPU the thread runs G on blocks of SAMPLING_BLOCK faces, each handed back when done.
    assert sum(batcher.batches) == 32 and batcher.block == 4 and max(batcher.batches) == 4
    assert len(batcher.batches) < 16  # blocks are shared by the requests, not one face each


def test_blend_and_direction_edits_follow_slerp_and_move(tmp_path):
    snap = tiny_run(tmp_path / "run", resolution=8)
    add_direction(snap, "smile", torch.arange(16.0), 16)
    add_direction(snap, "age", torch.ones(16), 16)
    studio = Studio([tmp_path / "run"], tmp_path / "state")
    try:
        client = TestClient(create_app(studio))
        assert [d["name"] for d in client.get("/api/models").json()[0]["directions"]] == ["age", "smile"]
        got = decode(client.get("/api/models/run/face.png?seed=3&blend=9&t=0.3&edits=smile:2.5,age:-1"))
        za, zb = latents_for_seeds([3, 9], 16)
        smile, age = torch.arange(16.0) / torch.arange(16.0).norm(), torch.ones(16) / 4
        z = slerp(za, zb, 0.3) + 2.5 * smile - 1 * age
        want = images_for_latents(load_snapshot(snap).G_ema, z[None])[0].numpy()
        np.testing.assert_array_equal(got, want)
        plain = decode(client.get("/api/models/run/face.png?seed=3"))
        assert not np.array_equal(plain, got)
        # t=0 is the first face, t=1 the second
        np.testing.assert_array_equal(
            decode(client.get("/api/models/run/face.png?seed=3&blend=9&t=0")), plain
        )
        np.testing.assert_array_equal(
            decode(client.get("/api/models/run/face.png?seed=3&blend=9&t=1")),
            decode(client.get("/api/models/run/face.png?seed=9")),
        )
    finally:
        studio.close()


def test_conditional_models_take_labels_by_name(tmp_path):
    tiny_run(tmp_path / "run", resolution=8, label_names=["cat", "dog", "fox"])
    studio = Studio([tmp_path / "run"], tmp_path / "state")
    try:
        client = TestClient(create_app(studio))
        assert client.get("/api/models").json()[0]["label_names"] == ["cat", "dog", "fox"]
        G = load_snapshot(tmp_path / "run").G_ema
        for label in (None, "dog"):
            query = "seed=5" + (f"&label={label}" if label else "")
            want = images_for_seeds(G, [5], labels_for(3, [5], label, ["cat", "dog", "fox"]))[0].numpy()
            np.testing.assert_array_equal(decode(client.get(f"/api/models/run/face.png?{query}")), want)
        r = client.get("/api/models/run/face.png?seed=5&label=emu")
        assert r.status_code == 400 and "emu" in r.json()["detail"]
    finally:
        studio.close()


def test_favourites_survive_a_restart_in_an_atomically_written_file(tmp_path):
    tiny_run(tmp_path / "run", resolution=8)
    add_direction(tmp_path / "run" / "snapshot-000001", "smile", torch.ones(16), 16)
    studio = Studio([tmp_path / "run"], tmp_path / "state")
    client = TestClient(create_app(studio))
    face = {"model": "run", "seed": 42, "edits": {"smile": 1.5}, "blend": 7, "t": 0.25, "note": "hero"}
    r = client.post("/api/favourites", json=face)
    assert r.status_code == 201
    fid = r.json()["id"]
    assert client.post("/api/favourites", json=face).json()["id"] == fid  # kept once
    client.post("/api/favourites", json={"model": "run", "seed": 1})
    studio.close()
    saved = json.loads((tmp_path / "state" / "favourites.json").read_text())
    assert [f["face"]["seed"] for f in saved["favourites"]] == [42, 1]
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["favourites.json"]  # no temporary left

    studio = Studio([tmp_path / "run"], tmp_path / "state")  # a restart
    try:
        client = TestClient(create_app(studio))
        items = client.get("/api/favourites").json()
        assert items[0]["face"] == {"model": "run", "seed": 42, "label": None, "edits": {"smile": 1.5},
                                    "blend": 7, "t": 0.25, "note": "hero"}  # fmt: skip
        assert client.delete(f"/api/favourites/{fid}").status_code == 200
        assert [i["face"]["seed"] for i in client.get("/api/favourites").json()] == [1]
        assert client.delete(f"/api/favourites/{fid}").status_code == 404
    finally:
        studio.close()


def test_bad_requests_get_a_4xx_with_a_one_line_message(studio):
    client = TestClient(create_app(studio))
    face = "/api/models/00000-faces/face.png"
    page = "/api/models/00000-faces/faces"
    for url, code, needle in [
        (f"{face}?seed=-1", 400, "seed"),
        (f"{face}?seed=4294967296", 400, "seed"),
        (f"{face}?seed=1&blend=2&t=1.5", 400, "t"),
        (f"{face}?seed=1&size=12", 400, "power of two"),
        (f"{face}?seed=1&size=32", 400, "power of two"),
        (f"{face}?seed=1&edits=smile:1", 400, "no direction 'smile'"),
        (f"{face}?seed=1&edits=smile", 400, "NAME:AMOUNT"),
        (f"{face}?seed=1&label=3", 400, "not conditional"),
        (f"{face}", 400, "seed"),
        ("/api/models/nope/face.png?seed=1", 404, "no model"),
        ("/api/models/..%2F..%2Fetc/face.png?seed=1", 404, ""),  # no route: a path is never a model
        (f"{page}?seeds=" + ",".join(map(str, range(33))), 400, "at most 32"),
        (f"{page}?seeds=", 400, "not a seed"),
        (f"{page}?seeds=1,-1", 400, "not a seed"),
        (f"{page}?seeds=4294967296", 400, "not a seed"),
        (f"{page}?seeds=1,,2", 400, "not a seed"),
        (f"{page}?seeds=1&size=12", 400, "power of two"),
        (f"{page}?seeds=1&size=32", 400, "power of two"),
        (f"{page}?seeds=1&size=0", 400, "size"),
        (f"{page}?seeds=1&label=3", 400, "not conditional"),
        (f"{page}", 400, "seeds"),
        ("/api/models/nope/faces?seeds=1", 404, "no model"),
        ("/api/models/..%2F..%2Fetc/faces?seeds=1", 404, ""),
    ]:
        r = client.get(url)
        assert r.status_code == code, (url, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str) and needle in detail and "\n" not in detail, (url, detail)
    r = client.post("/api/favourites", json={"model": "00000-faces", "seed": 1, "note": "x" * 20000})
    assert r.status_code == 413
    r = client.post("/api/favourites", json={"model": "00000-faces", "seed": 1, "edits": {"age": 1}})
    assert r.status_code == 400 and "no direction" in r.json()["detail"]
    r = client.post("/api/favourites", json={"model": "elsewhere", "seed": 1})
    assert r.status_code == 404
    assert client.get("/api/favourites").json() == []


def test_a_runs_folder_serves_one_model_per_run(tmp_path):
    tiny_run(tmp_path / "runs" / "00000-a", resolution=8)
    tiny_run(tmp_path / "runs" / "00001-b", resolution=16, nimg=2000)
    tiny_run(tmp_path / "runs" / "00001-b", resolution=16, nimg=4000, seed=1)
    (tmp_path / "runs" / "notes").mkdir()
    studio = Studio([tmp_path / "runs"], tmp_path / "state")
    try:
        models = TestClient(create_app(studio)).get("/api/models").json()
        assert [(m["id"], m["resolution"], m["kimg"]) for m in models] == [
            ("00000-a", 8, 1.0),
            ("00001-b", 16, 4.0),
        ]
    finally:
        studio.close()


def test_an_extension_panel_adds_routes_and_a_script(studio, tmp_path):
    router = APIRouter()

    @router.get("/echo")
    def echo(request: Request, seed: int):
        s = request.app.state.studio
        return {"models": list(s.models), "seed": seed}

    script = tmp_path / "describe.js"
    script.write_text("studio.addPanel('describe');")
    client = TestClient(create_app(studio, [Panel("describe", "Describe", router, script)]))
    assert client.get("/api/panels").json() == [
        {"name": "describe", "title": "Describe", "script": "/ext/describe.js"}
    ]
    assert client.get("/api/ext/describe/echo?seed=4").json() == {"models": ["00000-faces"], "seed": 4}
    assert client.get("/ext/describe.js").text == "studio.addPanel('describe');"


def test_serve_binds_localhost_by_default_and_bad_paths_are_one_line_errors(tmp_path, capsys):
    args = build_parser().parse_args(["serve", "runs"])
    assert args.host == "127.0.0.1" and args.port == 8000
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "missing", tmp_path / "empty"):
        with pytest.raises(SystemExit) as e:
            main(["serve", str(path), "--state-dir", str(tmp_path / "s")])
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and str(path) in err


# ---------------------------------------------------------------------------------------------
# a page of faces as one streamed request (issue 28, point 4)


def page_faces(response) -> list[tuple[int, np.ndarray]]:
    """The (seed, pixels (C, H, W)) of each NDJSON line of a page, in the order they came."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    out = []
    for line in response.text.splitlines():
        item = json.loads(line)
        img = Image.open(io.BytesIO(base64.b64decode(item["png"]))).convert("RGB")
        out.append((item["seed"], np.asarray(img).transpose(2, 0, 1)))
    return out


def box(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (..., C, H, W) -> each size x size pixel the rounded mean of its box (half to even)."""
    *lead, c, h, w = images.shape
    f = h // size
    mean = images.reshape(*lead, c, size, f, size, f).astype(np.float64).mean(axis=(-3, -1))
    return np.round(mean).astype(np.uint8)


def test_a_page_is_the_faces_of_generate_and_its_thumbnails_the_full_faces_made_smaller(studio, tmp_path):
    seeds = [7, 123456789, 0, 5, 31, 4294967295]
    out = tmp_path / "generated"
    with pytest.raises(SystemExit) as e:
        main(["generate", str(tmp_path / "runs" / "00000-faces"), "--seeds", ",".join(map(str, seeds)),
              "--outdir", str(out)])  # fmt: skip
    assert e.value.code == 0
    generated = np.stack([np.asarray(Image.open(out / f"seed{s:04d}.png")).transpose(2, 0, 1) for s in seeds])
    client = TestClient(create_app(studio))
    page = "/api/models/00000-faces/faces?seeds=" + ",".join(map(str, seeds))
    full = page_faces(client.get(page))
    assert [s for s, _ in full] == seeds  # in the order asked
    np.testing.assert_array_equal(np.stack([f for _, f in full]), generated)
    for size in (8, 4, 1):
        thumbs = page_faces(client.get(f"{page}&size={size}"))
        assert [s for s, _ in thumbs] == seeds
        # The full-size face box-downscaled, exactly; not G's output at a lower stage.
        np.testing.assert_array_equal(np.stack([t for _, t in thumbs]), box(generated, size))
    assert not np.array_equal(box(generated, 8)[0], box(generated, 8)[1])
    lower = load_snapshot(tmp_path / "runs" / "00000-faces").G_ema
    lower.set_stage(8, 1.0)
    assert not np.array_equal(images_for_seeds(lower, seeds).numpy(), box(generated, 8))
    one = decode(client.get("/api/models/00000-faces/face.png?seed=5&size=8"))
    np.testing.assert_array_equal(one, box(generated[3], 8))  # face.png's thumbnail is the same


def served(app):
    """`app` behind uvicorn on a free port in a thread (a real socket: a client can go away)."""
    return served_app(app)


def gate_block(monkeypatch, n: int):
    """Hold the Batcher's n-th G call until the returned `release` is set; `calls` logs each call's
    number of faces and `held` is set once the n-th call waits."""
    import threading

    import progan.studio.app as app_module

    calls: list[int] = []
    held, release = threading.Event(), threading.Event()
    real = app_module.images_for_latents

    def gated(G, z, *args, **kwargs):
        calls.append(len(z))
        if len(calls) == n:
            held.set()
            release.wait(30)
        return real(G, z, *args, **kwargs)

    monkeypatch.setattr(app_module, "images_for_latents", gated)
    return calls, held, release


def test_a_page_streams_each_block_when_done_and_stops_when_the_client_goes(studio, monkeypatch):
    from progan.studio.app import Face

    calls, held, release = gate_block(monkeypatch, 2)
    m = studio.models["00000-faces"]
    m.batcher.gather = 0.5  # a loaded machine must still see the page's faces queued together
    G = load_snapshot(m.snapshot).G_ema
    want = images_for_seeds(G, range(32)).numpy()
    try:
        with served(create_app(studio)) as url, httpx.Client(base_url=url, timeout=30) as client:
            with client.stream(
                "GET", "/api/models/00000-faces/faces?seeds=" + ",".join(map(str, range(32)))
            ) as r:
                assert r.status_code == 200
                lines = r.iter_lines()
                first = [json.loads(next(lines)) for _ in range(4)]
                # The first block's 4 faces arrived, and the second block is held in G: the page
                # does not wait for it. (The faces can arrive a moment before the render thread
                # enters its second G call, hence the wait.)
                assert held.wait(10) and calls == [4, 4]
                assert [f["seed"] for f in first] == [0, 1, 2, 3]
                for f in first:
                    png = Image.open(io.BytesIO(base64.b64decode(f["png"]))).convert("RGB")
                    np.testing.assert_array_equal(np.asarray(png).transpose(2, 0, 1), want[f["seed"]])
            # The client has gone: the page's 24 faces still queued are cancelled, never rendered.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                waiting = [j for j in list(m.batcher.jobs.queue) if j is not None]
                if len(waiting) == 24 and all(j.future.cancelled() for j in waiting):
                    break
                time.sleep(0.02)
            else:
                pytest.fail(f"the page's faces were not cancelled: {len(waiting)} waiting")
            release.set()
            # Queued after them, so done only once the thread has passed the cancelled ones.
            studio.render(m, Face(99)).result(timeout=30)
            assert calls == [4, 4, 1]
    finally:
        release.set()


def test_a_page_that_does_not_fit_the_queue_is_503_and_queues_nothing(studio, monkeypatch):
    from progan.studio.app import Face

    calls, held, release = gate_block(monkeypatch, 1)
    m = studio.models["00000-faces"]
    m.batcher.gather = 0.5  # a loaded machine must still see the page's faces queued together
    try:
        first = studio.render(m, Face(1))
        assert held.wait(10)
        m.batcher.jobs.maxsize = 20  # as a server with 20 slots left
        client = TestClient(create_app(studio))
        r = client.get("/api/models/00000-faces/faces?seeds=" + ",".join(map(str, range(32))))
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "busy" in r.json()["detail"]
        # nothing queued, not even cancelled faces, which would hold slots until the thread passed
        # them: the next page could then be refused for them (a race CI once lost under xdist)
        assert m.batcher.jobs.qsize() == 0
        release.set()
        first.result(timeout=30)
        r = client.get("/api/models/00000-faces/faces?seeds=" + ",".join(map(str, range(20))))
        assert [json.loads(line)["seed"] for line in r.text.splitlines()] == list(range(20))
        assert calls[0] == 1 and sum(calls) == 21  # the refused page's faces never reached G
    finally:
        release.set()

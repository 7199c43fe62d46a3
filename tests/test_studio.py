"""`progan serve`: the studio's API through FastAPI's test client (the page: test_studio_browser.py)."""

import asyncio
import io
import json

import httpx
import numpy as np
import pytest
import torch
from fastapi import APIRouter, Request
from fastapi.testclient import TestClient
from helpers import tiny_run
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
    assert sum(batcher.batches) == 32 and len(batcher.batches) < 8 and max(batcher.batches) <= 32


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

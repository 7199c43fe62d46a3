"""The studio's describe panel: its API through FastAPI's test client."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from faces_fakes import colour_measure  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from helpers import tiny_snapshot  # noqa: E402

from progan.checkpoint import load_snapshot  # noqa: E402
from progan.cli import build_parser  # noqa: E402
from progan.faces import describe as d  # noqa: E402
from progan.faces.studio_panel import describe_panel  # noqa: E402
from progan.faces.words import understand  # noqa: E402
from progan.studio.app import Studio, create_app  # noqa: E402


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.setattr(d, "default_measure", colour_measure)
    tiny_snapshot(tmp_path / "runs" / "faces64" / "snapshot-000001", 64)
    tiny_snapshot(tmp_path / "runs" / "faces32" / "snapshot-000001", 32)
    studio = Studio([tmp_path / "runs"], tmp_path / "state")
    yield TestClient(create_app(studio, panels=[describe_panel()])), tmp_path
    studio.close()


def test_describe_box_returns_the_ranked_candidates_of_describe(client):
    client, tmp = client
    panels = client.get("/api/panels").json()
    assert {"name": "describe", "title": "Describe", "script": "/ext/describe.js"} in panels
    assert "describe-form" in client.get("/ext/describe.js").text
    ask = {"model": "faces64", "text": "red hair, blue eyes, freckles", "candidates": 12, "top": 5}
    r = client.post("/api/ext/describe/run", json=ask)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["understood"] == "hair colour: red; eye colour: blue" and body["unknown"] == ["freckles"]
    G = load_snapshot(tmp / "runs" / "faces64" / "snapshot-000001").G_ema
    want, _ = d.describe(
        G, understand("red hair, blue eyes"), list(range(12)), measure=colour_measure, progress=False
    )
    assert [c["seed"] for c in body["candidates"]] == [c.seed for c in want[:5]]
    assert [c["score"] for c in body["candidates"]] == pytest.approx([c.score for c in want[:5]])
    seed = body["candidates"][0]["seed"]
    assert client.get(f"/api/models/faces64/face.png?seed={seed}").status_code == 200


@pytest.mark.parametrize("payload,status,detail", [
    ({"model": "faces32", "text": "red hair"}, 400, "too small to measure"),
    ({"model": "faces64", "text": "freckles"}, 400, "nothing in the description is measured"),
    ({"model": "nope", "text": "red hair"}, 404, "no model 'nope'"),
    ({"model": "faces64", "text": "red hair", "candidates": 100000}, 400, "candidates"),
    ({"model": "faces64", "text": "x" * 501}, 400, "text"),
])  # fmt: skip
def test_bad_requests_are_one_line_errors(client, payload, status, detail):
    client, _ = client
    r = client.post("/api/ext/describe/run", json=payload)
    assert r.status_code == status and detail in r.json()["detail"] and "\n" not in r.json()["detail"]


def test_progan_serve_hands_the_describe_panel_to_the_studio():
    # The studio names no feature: `progan serve` gets describe's panel from the command layer.
    args = build_parser().parse_args(["serve", "runs"])
    assert [(p.name, p.script.name) for p in args.panels()] == [
        ("describe", "describe_panel.js"),
        ("photo", "project_panel.js"),
    ]


def test_describe_shows_its_progress_and_can_be_cancelled(client, monkeypatch):
    import threading
    import time

    client, _ = client
    measured = threading.Event()

    def slow_measure(images):  # a batch every 50 ms, so the test can watch and cancel
        measured.set()
        time.sleep(0.05)
        return colour_measure(images)

    monkeypatch.setattr(d, "default_measure", slow_measure)
    answer = {}
    ask = {"model": "faces64", "text": "red hair", "candidates": 1000, "top": 3}
    run = threading.Thread(target=lambda: answer.update(r=client.post("/api/ext/describe/run", json=ask)))
    run.start()
    assert measured.wait(30)
    deadline = time.monotonic() + 30
    while (p := client.get("/api/ext/describe/progress").json())["measured"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert p["running"] and p["total"] == 1000 and p["generated"] >= p["measured"] > 0
    assert p["best"] is not None
    assert client.post("/api/ext/describe/cancel").json() == {"cancelled": True}
    run.join(60)
    body = answer["r"].json()
    assert answer["r"].status_code == 200 and body["cancelled"] and 0 < body["measured"] < 1000
    assert len(body["candidates"]) == 3 and not client.get("/api/ext/describe/progress").json()["running"]
    assert client.post("/api/ext/describe/cancel").json() == {"cancelled": False}

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
    assert [(p.name, p.script.name) for p in args.panels()] == [("describe", "describe_panel.js")]

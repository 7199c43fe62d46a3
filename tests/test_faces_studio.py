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
    assert [(p.name, p.script.name) for p in args.panels(args)] == [
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


# --- the keep-with panel (`progan serve --keep-with CLASSIFIER`) ------------------------------------


@pytest.fixture
def keeping(tmp_path):
    """(test client of a studio with one 16x16 model with 'red' and 'smile' directions and the
    keep-with panel of a classifier file reading 'red', 'smile' and 'bright', its snapshot, the
    classifier file)."""
    from faces_fakes import snapshot_with_classifier

    from progan.faces.studio_panel import keep_panel

    snap, clf = snapshot_with_classifier(
        tmp_path / "runs" / "00000-faces", tmp_path / "judge.attributes", ["red", "smile", "bright"], 16
    )
    studio = Studio([tmp_path / "runs"], tmp_path / "state")
    yield TestClient(create_app(studio, panels=[keep_panel(str(clf))])), snap, clf
    studio.close()


def test_keep_with_button_runs_the_edit_commands_search_and_opens_its_face(keeping):
    # The panel's face is `keep_unasked` on the studio's own edit of the open face, with the seed
    # seeding its moves: the same latent as calling it directly, kept as a stored latent that
    # renders, the search's unasked change never above the plain edit's.
    import torch

    from progan.checkpoint import load_snapshot
    from progan.directions import load_directions, move
    from progan.faces.attributes import load_attributes
    from progan.faces.edit import keep_unasked
    from progan.sampling import latent_for_seed

    client, snap, clf = keeping
    assert {"name": "keep", "title": "keep-with judge.attributes", "script": "/ext/keep.js"} in client.get(
        "/api/panels"
    ).json()
    assert "keep-run" in client.get("/ext/keep.js").text
    assert client.get("/api/ext/keep/info").json() == {"classifier": "judge.attributes",
                                                       "attributes": ["red", "smile", "bright"]}  # fmt: skip
    r = client.post(
        "/api/ext/keep/run", json={"model": "00000-faces", "seed": 7, "edits": {"red": 2.5, "smile": 0}}
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model"] == "00000-faces" and len(out["latent"]) == 16

    G = load_snapshot(snap).G_ema
    z0 = latent_for_seed(7, 16)[None]
    directions = load_directions(snap)
    z1 = move(z0, directions, {"red": 2.5})
    want, info = keep_unasked(G, z0, z1, {"red": 2.5}, directions, load_attributes(clf), seeds=[7])
    assert info["unasked_change_after"] == pytest.approx(out["unasked_change_after"], abs=1e-6)
    stored = client.app.state.studio.latents.get(client.app.state.studio.model("00000-faces"), out["latent"])[
        0
    ]
    assert torch.allclose(stored, want[0], atol=1e-6)
    png = client.get(f"/api/models/00000-faces/face.png?latent={out['latent']}")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    # The search moved this face (seeded, so always): a face of its own, not the plain edit.
    assert out["unasked_change_after"] < out["unasked_change_before"]
    assert not torch.allclose(stored, z1[0], atol=1e-4)


def test_keep_with_on_a_conditional_model_searches_with_the_faces_label_and_keeps_it(tmp_path):
    # The label row is the one the page asked for: the search renders with it, and the stored
    # latent keeps it, so the opened face is that label's face.
    import torch
    from faces_fakes import snapshot_with_classifier

    from progan.checkpoint import load_snapshot
    from progan.directions import load_directions, move
    from progan.faces.attributes import load_attributes
    from progan.faces.edit import keep_unasked
    from progan.faces.studio_panel import keep_panel
    from progan.sampling import labels_for, latent_for_seed

    snap, clf = snapshot_with_classifier(
        tmp_path / "runs" / "00000-pets", tmp_path / "judge.attributes", ["red", "smile", "bright"], 16,
        label_names=["cat", "dog", "fox"],
    )  # fmt: skip
    studio = Studio([tmp_path / "runs"], tmp_path / "state")
    try:
        client = TestClient(create_app(studio, panels=[keep_panel(str(clf))]))
        ask = {"model": "00000-pets", "seed": 4, "label": "dog", "edits": {"red": 2.0}}
        r = client.post("/api/ext/keep/run", json=ask)
        assert r.status_code == 200, r.text
        out = r.json()
        z, row = studio.latents.get(studio.model("00000-pets"), out["latent"])
        dog = labels_for(3, [4], "dog", ["cat", "dog", "fox"])
        assert torch.equal(row, dog[0]) and out["label"] == "dog"
        G, directions = load_snapshot(snap).G_ema, load_directions(snap)
        z0 = latent_for_seed(4, 16)[None]
        want, _ = keep_unasked(G, z0, move(z0, directions, {"red": 2.0}), {"red": 2.0}, directions,
                               load_attributes(clf), labels=dog, seeds=[4])  # fmt: skip
        assert torch.allclose(z, want[0], atol=1e-6)
        cat, _ = keep_unasked(G, z0, move(z0, directions, {"red": 2.0}), {"red": 2.0}, directions,
                              load_attributes(clf), labels=labels_for(3, [4], "cat", ["cat", "dog", "fox"]),
                              seeds=[4])  # fmt: skip
        assert not torch.allclose(cat, want)  # the label changes the search: it was used
    finally:
        studio.close()


@pytest.mark.parametrize(("payload", "status", "detail"), [
    ({"model": "00000-faces", "seed": 1, "edits": {}}, 400, "move a direction slider first"),
    ({"model": "00000-faces", "seed": 1, "edits": {"red": 0}}, 400, "move a direction slider first"),
    ({"model": "00000-faces", "seed": 1, "edits": {"age": 1}}, 400, "no direction 'age'"),
    ({"model": "00000-faces", "seed": 1, "edits": {"red": 99}}, 400, "out of range"),
    ({"model": "nope", "seed": 1, "edits": {"red": 1}}, 404, "no model"),
    ({"model": "00000-faces", "edits": {"red": 1}}, 400, "a face is a seed or a stored latent"),
    ({"model": "00000-faces", "latent": "0123456789abcdef", "edits": {"red": 1}}, 400, "no stored latent"),
])  # fmt: skip
def test_keep_with_bad_requests_are_one_line_errors(keeping, payload, status, detail):
    client, _, _ = keeping
    r = client.post("/api/ext/keep/run", json=payload)
    assert r.status_code == status and detail in r.json()["detail"] and "\n" not in r.json()["detail"]


def test_keep_with_needs_the_classifiers_own_directions(keeping, tmp_path):
    # A direction the classifier does not read cannot be held against it: the edit command's error.
    import torch

    from progan.directions import add_direction

    client, snap, _ = keeping
    add_direction(snap, "age", torch.randn(16, generator=torch.Generator().manual_seed(9)), 16)
    studio = Studio([tmp_path / "runs"], tmp_path / "state2")
    try:
        from progan.faces.studio_panel import keep_panel

        c = TestClient(create_app(studio, panels=[keep_panel(str(tmp_path / "judge.attributes"))]))
        r = c.post("/api/ext/keep/run", json={"model": "00000-faces", "seed": 1, "edits": {"age": 1}})
        assert r.status_code == 400 and "the classifier has no attribute 'age'" in r.json()["detail"]
    finally:
        studio.close()


def test_progan_serve_keep_with_adds_the_panel_and_a_bad_file_stops_it_before_serving(tmp_path, capsys):
    from progan.cli import main

    args = build_parser().parse_args(["serve", "runs", "--keep-with", "judge.attributes"])
    assert args.keep_with == "judge.attributes"
    (tmp_path / "bad.attributes").write_bytes(b"not a classifier")
    tiny_snapshot(tmp_path / "runs" / "faces16" / "snapshot-000001", 16)
    with pytest.raises(SystemExit) as exit_:
        main(["serve", str(tmp_path / "runs"), "--keep-with", str(tmp_path / "bad.attributes")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "bad.attributes is not a progan attribute classifier" in err and "\n" not in err

"""progan describe: scores, ranking, the grid and candidates.json, labels, --refine, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from faces_fakes import ColourGenerator, Measurement, Trait, category, colour_measure
from helpers import run_cli_output, tiny_snapshot
from PIL import Image

from progan.checkpoint import load_snapshot
from progan.directions import add_direction
from progan.errors import UserError
from progan.faces import describe as d
from progan.faces.words import understand
from progan.sampling import images_for_latents, latents_for_seeds


def test_score_of_one_candidate_follows_the_documented_formula():
    desc = understand("red hair, not blue eyes, very smiling, slightly open mouth, no glasses")
    m = Measurement(
        True,
        {
            "hair_colour": category({"red": 0.8, "black": 0.2}, confidence=0.5),
            "eye_colour": category({"blue": 0.3, "brown": 0.7}, confidence=1.0),
            "smile": Trait(0.9, 0.8),
            "mouth_open": Trait(0.2, 1.0),
            # eyeglasses not measured on this face: that word scores 0
        },
    )
    total, words = d.score_candidate(desc, m, None)
    expect = {
        "red hair": 0.8 * 0.5,
        "not blue eyes": (1 - 0.3) * 1.0,
        "very smile": (1 - abs(0.9 - 1.0)) * 0.8,
        "slightly open mouth": (1 - abs(0.2 - 0.5)) * 1.0,
        "not glasses": 0.0,
    }
    weights = {
        "red hair": 1,
        "not blue eyes": 1,
        "very smile": 2,
        "slightly open mouth": 0.5,
        "not glasses": 1,
    }
    assert words == pytest.approx(expect)
    assert total == pytest.approx(sum(weights[k] * v for k, v in expect.items()) / sum(weights.values()))


def test_no_face_has_no_score():
    desc = understand("red hair")
    assert d.score_candidate(desc, Measurement(False, {}, reason="no face found"), None)[0] is None


def _rank_truth(desc, G, seeds):
    """Independent ranking: each seed's score from its own image, sorted (ties by seed)."""
    z = latents_for_seeds(seeds, G.latent_size)
    imgs = images_for_latents(G, z)
    scores = [d.score_candidate(desc, m, None)[0] for m in colour_measure(imgs)]
    return [s for _, s in sorted(zip([-x for x in scores], seeds, strict=True))]


def test_describe_ranks_by_score_keeps_the_best_images_and_writes_results(tmp_path):
    G = ColourGenerator()
    desc = understand("red hair and blue eyes, freckles")
    seeds = list(range(40))
    ranked, images = d.describe(G, desc, seeds, top=6, measure=colour_measure, batch=7, progress=False)
    assert [c.seed for c in ranked] == _rank_truth(desc, G, seeds)
    assert sorted(images) == sorted(c.seed for c in ranked[:6])  # only the best are kept
    # the winners really are red on top and blue at the bottom (z[0], z[1] large)
    z = latents_for_seeds([c.seed for c in ranked], G.latent_size)
    assert float(z[:6, :2].sum(1).mean()) > float(z[-6:, :2].sum(1).mean()) + 1.5
    grid, table = d.write_results(tmp_path, desc, ranked, images, 6, {"snapshot": "x"})
    data = json.loads(table.read_text())
    assert data["unknown"] == ["freckles"] and data["understood"] == "hair colour: red; eye colour: blue"
    cands = data["candidates"]
    assert [c["seed"] for c in cands] == [c.seed for c in ranked] and cands[0]["rank"] == 1
    assert set(cands[0]["words"]) == {"red hair", "blue eyes"}
    # the stored latent regenerates the very image that was ranked
    img = images_for_latents(G, torch.tensor([cands[0]["latent"]]))[0]
    assert torch.equal(img, images[cands[0]["seed"]])
    assert not list(tmp_path.glob(".*.tmp"))
    sheet = np.asarray(Image.open(grid))
    assert sheet.shape[1] == 3 * (256 + 4) + 4 and sheet.shape[0] > 2 * 256  # 3x2 cells, captions below


def test_candidates_without_a_face_rank_last():
    class Blackout(ColourGenerator):
        def forward(self, z, labels=None):
            img = super().forward(z, labels)
            img[z[:, 3] > 0, :, 0, 0] = -1  # black corner: 'no face' for colour_measure
            return img

    G = Blackout()
    ranked, _ = d.describe(G, understand("red hair"), list(range(30)), measure=colour_measure, progress=False)
    faces = [c.score is not None for c in ranked]
    assert faces == sorted(faces, reverse=True) and not all(faces) and any(faces)
    assert all(c.reason == "no face found" for c in ranked if c.score is None)


def test_conditional_labels_are_set_directly():
    G = ColourGenerator(label_size=2)
    desc = understand("a smiling woman with red hair", labels=["Smiling", "Male"])
    seeds = list(range(5))
    labels = d.label_rows(desc, 2, ["Smiling", "Male"], seeds)
    assert labels.tolist() == [[1.0, 0.0]] * 5
    ranked, _ = d.describe(G, desc, seeds, labels=labels, measure=colour_measure, progress=False)
    assert torch.equal(torch.cat(G.seen_labels)[: len(seeds)], labels)  # then the zero rows of G's last block
    assert set(ranked[0].words) == {"red hair"}  # the labels are not searched for


def test_refine_keeps_only_steps_that_improve_the_score():
    G = ColourGenerator()
    desc = understand("red hair")
    ranked, images = d.describe(G, desc, list(range(20)), top=4, measure=colour_measure, progress=False)
    before = {c.seed: c.score for c in ranked[:4]}
    red = torch.zeros(G.latent_size)
    red[0] = 1  # z[0] is the red of the hair
    dirs = {
        "red_hair": (red, {"trait": "hair_colour"}),
        "smile": (torch.eye(G.latent_size)[2], {"trait": "smile"}),
    }
    out = d.refine(
        G, desc, ranked, images, dirs, count=4, rounds=3, step=1.0, proposals=0, measure=colour_measure
    )
    refined = [c for c in out if c.refined]
    assert refined and all(c.score > before[c.seed] for c in refined)
    for c in refined:  # every kept step raised the score; the image shown is the refined one
        scores = [before[c.seed]] + [s["score"] for s in c.refined]
        assert scores == sorted(scores) and len(set(scores)) == len(scores)
        assert torch.equal(images[c.seed], images_for_latents(G, c.latent[None])[0])
        assert c.refined[0]["along"] == ["red_hair"]
    assert [c.score for c in out if c.score is not None] == sorted(
        [c.score for c in out if c.score is not None], reverse=True
    )


def test_refine_finds_with_random_moves_what_no_direction_reaches():
    # No direction for red hair: directions alone cannot refine (the error names the fix), while
    # random moves raise the score, the same moves for the same seeds (seeded, reproducible).
    G = ColourGenerator()
    desc = understand("red hair")
    dirs = {"smile": (torch.eye(G.latent_size)[2], {"trait": "smile"})}

    def run(proposals: int):
        ranked, images = d.describe(G, desc, list(range(20)), top=4, measure=colour_measure, progress=False)
        before = {c.seed: c.score for c in ranked[:4]}
        out = d.refine(
            G, desc, ranked, images, dirs, count=4, rounds=3, proposals=proposals, measure=colour_measure
        )
        return before, out, images

    with pytest.raises(UserError, match="no directions for red hair"):
        run(0)
    with pytest.raises(UserError, match="give 0"):
        run(-1)
    before, out, images = run(8)
    refined = [c for c in out if c.refined]
    assert refined and all(c.score > before[c.seed] for c in refined)
    assert all(step["along"] == ["random"] for c in refined for step in c.refined)
    for c in refined:
        assert torch.equal(images[c.seed], images_for_latents(G, c.latent[None])[0])
    again = run(8)[1]
    assert [(c.seed, c.score) for c in again] == [(c.seed, c.score) for c in out]
    assert all(torch.equal(a.latent, b.latent) for a, b in zip(again, out, strict=True))


def test_describe_on_a_32x32_model_says_too_small(tmp_path, capsys):
    snap = tiny_snapshot(tmp_path / "snap32", 32)
    code, out, err = run_cli_output(["describe", str(snap), "a round face with red hair and blue eyes",
                                     "--out", str(tmp_path / "o"), "--candidates", "4"], capsys)  # fmt: skip
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("progan describe: error: ")
    assert "32x32" in err and "too small to measure" in err and "64x64" in err
    assert out.startswith("understood: face shape: round; hair colour: red; eye colour: blue")
    assert not (tmp_path / "o").exists()


def test_describe_command_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(d, "default_measure", colour_measure)
    snap = tiny_snapshot(tmp_path / "snap64", 64)
    code, out, err = run_cli_output(["describe", str(snap), "ginger with blue eyes and freckles", "--out",
                                     str(tmp_path / "o"), "--candidates", "12", "--top", "4", "--batch", "5",
                                     "--precision", "bf16", "--no-progress"], capsys)  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "understood: hair colour: red; eye colour: blue"
    assert lines[1] == "no measurement for: freckles"
    data = json.loads((tmp_path / "o" / "candidates.json").read_text())
    assert sorted(c["seed"] for c in data["candidates"]) == list(range(12))
    scores = [c["score"] for c in data["candidates"]]
    assert scores == sorted(scores, reverse=True)
    assert len(data["candidates"][0]["latent"]) == 16 and (tmp_path / "o" / "best.png").is_file()


def test_describe_with_nothing_understood_is_a_one_line_error(tmp_path, capsys):
    snap = tiny_snapshot(tmp_path / "snap64", 64)
    code, _, err = run_cli_output(
        ["describe", str(snap), "freckles and a tall hat", "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2 and err.count("\n") == 1 and "nothing in 'freckles and a tall hat' is measured" in err


def test_describe_on_a_model_without_faces_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        d, "default_measure", lambda imgs: [Measurement(False, {}, reason="no face found")] * len(imgs)
    )
    snap = tiny_snapshot(tmp_path / "snap64", 64)
    code, _, err = run_cli_output(["describe", str(snap), "red hair", "--out", str(tmp_path / "o"),
                                   "--candidates", "3", "--no-progress", "--measure-workers", "0"],
                                  capsys)  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "no face found in any of the 3 candidates" in err


def test_describe_refine_needs_directions(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(d, "default_measure", colour_measure)
    snap = tiny_snapshot(tmp_path / "snap64", 64)
    argv = ["describe", str(snap), "red hair", "--out", str(tmp_path / "o"), "--candidates", "6",
            "--top", "3", "--refine", "2", "--refine-rounds", "1", "--no-progress",
            "--refine-proposals", "0"]  # fmt: skip
    code, _, err = run_cli_output(argv, capsys)
    assert code == 2 and "progan directions" in err
    code, _, err = run_cli_output(argv[:-1] + ["2"], capsys)  # random moves need no direction
    assert code == 0, err
    add_direction(snap, "red_hair", torch.randn(16), 16, trait="hair_colour")
    code, _, err = run_cli_output(argv, capsys)
    assert code == 0, err


def _journal_lines(path):
    return path.read_text().splitlines()


def test_a_stopped_describe_resumed_ends_with_the_uninterrupted_ranking(tmp_path):
    G = ColourGenerator()
    desc = understand("red hair and blue eyes")
    seeds = range(100, 140)
    run = dict(top=5, keep=12, measure=colour_measure, batch=6, progress=False, header={"text": "x"})
    whole, whole_imgs = d.describe(G, desc, seeds, journal=tmp_path / "a.jsonl", **run)
    assert whole.total == 40 and len(whole) == 12  # the best `keep`, with the count of all
    # A run killed after its third batch: the journal holds three batches and a torn line.
    batches = iter(range(10))
    d.describe(G, desc, seeds, journal=tmp_path / "b.jsonl", should_stop=lambda: next(batches) == 2, **run)
    lines = _journal_lines(tmp_path / "b.jsonl")
    assert len(lines) == 1 + 18  # the header, then 3 batches of 6 (the 4th generated, not measured)
    with open(tmp_path / "b.jsonl", "a") as f:
        f.write('{"seed": 118, "sco')
    resumed, resumed_imgs = d.describe(G, desc, seeds, journal=tmp_path / "b.jsonl", **run)
    assert _journal_lines(tmp_path / "b.jsonl") == _journal_lines(tmp_path / "a.jsonl")
    key = [(c.seed, c.score, c.words, c.traits) for c in whole]
    assert [(c.seed, c.score, c.words, c.traits) for c in resumed] == key
    assert resumed.total == 40 and resumed.faces_found == whole.faces_found
    assert all(torch.equal(a.latent, b.latent) for a, b in zip(whole, resumed, strict=True))
    assert sorted(resumed_imgs) == sorted(whole_imgs) == sorted(c.seed for c in whole[:5])
    assert all(torch.equal(resumed_imgs[s], whole_imgs[s]) for s in whole_imgs)
    # a journal of another run is refused, not mixed in
    with pytest.raises(UserError, match="another describe run"):
        d.describe(G, desc, seeds, journal=tmp_path / "b.jsonl", **{**run, "header": {"text": "y"}})


def test_describe_memory_is_flat_for_any_number_of_candidates(tmp_path):
    """Four billion seeds (latents alone would take 256 GB at 16 floats): three batches run, and
    what Python allocated (tracemalloc) and the process's resident memory grew by stay small."""
    import tracemalloc

    def rss() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))

    G = ColourGenerator()
    seeds = range(0, 2**32 - 1)
    batches = iter(range(10))
    before = rss()
    tracemalloc.start()
    try:
        ranked, images = d.describe(
            G, understand("red hair"), seeds, top=4, measure=colour_measure, batch=8, progress=False,
            journal=tmp_path / "j.jsonl", should_stop=lambda: next(batches) == 2,
        )  # fmt: skip
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ranked.total == 24 and len(images) == 4 and len(_journal_lines(tmp_path / "j.jsonl")) == 25
    assert peak < 8 * 2**20, peak
    assert rss() - before < 100 * 2**20


def test_describe_command_resumes_a_run_and_writes_the_top_faces_at_full_size(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(d, "default_measure", colour_measure)  # measured in a worker process (picklable)
    snap = tiny_snapshot(tmp_path / "snap64", 64)
    common = ["--top", "3", "--batch", "4", "--no-progress"]
    a = ["describe", str(snap), "red hair", "--out", str(tmp_path / "a"), "--candidates", "14",
         "--measure-workers", "0", *common]  # fmt: skip
    code, _, err = run_cli_output(a, capsys)
    assert code == 0, err
    # a first part with the default measuring process, then --resume for the rest
    b = ["describe", str(snap), "red hair", "--out", str(tmp_path / "b"), "--candidates", "5", *common]
    code, _, err = run_cli_output(b, capsys)
    assert code == 0, err
    code, out, err = run_cli_output(
        ["describe", "--resume", str(tmp_path / "b"), "--candidates", "14", *common], capsys
    )
    assert code == 0, err
    a, b = (json.loads((tmp_path / x / "candidates.json").read_text()) for x in "ab")
    assert b["candidates"] == a["candidates"] and b["candidates_total"] == 14
    assert (
        _journal_lines(tmp_path / "b" / d.JOURNAL_NAME)[1:]
        == _journal_lines(tmp_path / "a" / d.JOURNAL_NAME)[1:]
    )
    tops = sorted((tmp_path / "b" / "top").glob("*.png"))
    assert [p.name for p in tops] == [
        f"{r:02d}-seed{c['seed']}.png" for r, c in enumerate(a["candidates"][:3], 1)
    ]
    G = load_snapshot(snap).G_ema
    best = images_for_latents(G, torch.tensor([a["candidates"][0]["latent"]]))[0]
    assert np.array_equal(
        np.asarray(Image.open(tops[0])), best.numpy().transpose(1, 2, 0)
    )  # 64x64: full size
    code, _, err = run_cli_output(
        ["describe", "--resume", str(tmp_path / "b"), str(snap), "blue eyes"], capsys
    )
    assert code == 2 and "leave out text" in err


def test_given_latents_are_the_candidates_and_keep_their_names():
    """describe(latents=..., names=...): projected photos ranked as candidates (seeds are ids)."""
    G = ColourGenerator()
    z = latents_for_seeds(range(500, 510), G.latent_size)
    names = [f"photo{i}.png" for i in range(10)]
    ranked, images = d.describe(G, understand("red hair"), range(10), top=3, measure=colour_measure,
                                batch=4, progress=False, latents=z, names=names)  # fmt: skip
    truth = _rank_truth(understand("red hair"), G, range(500, 510))
    assert [c.name for c in ranked] == [f"photo{s - 500}.png" for s in truth]
    assert all(torch.equal(c.latent, z[c.index]) for c in ranked)
    assert ranked[0].to_json(1)["seed"] is None and ranked[0].to_json(1)["name"] == ranked[0].name

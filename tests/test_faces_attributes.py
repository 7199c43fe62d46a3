"""progan attributes fit: a small classifier on a labelled store, its file, describe --attributes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from faces_fakes import SHAPE_LABELS, shape_images
from helpers import tiny_snapshot

from progan.cli import main
from progan.data.store import write_store
from progan.faces.attributes import load_attributes


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("attributes")
    images, labels = shape_images(240, 16, seed=1)
    store = write_store(tmp / "shapes", images, labels=labels, label_names=SHAPE_LABELS)
    out = tmp / "shapes.attributes"
    with pytest.raises(SystemExit) as e:
        main(["attributes", "fit", str(store.path), "--out", str(out), "--epochs", "6", "--batch", "32",
              "--device", "cpu", "--no-progress"])  # fmt: skip
    assert e.value.code == 0
    return out, tmp


def test_classifier_learns_the_known_labels(fitted):
    out, _ = fitted
    model = load_attributes(out)
    assert model.names == SHAPE_LABELS and model.kind == "multilabel" and model.resolution == 16
    images, labels = shape_images(200, 16, seed=7)  # fresh shapes, never seen
    p = model.predict(images)
    accuracy = ((p > 0.5) == (labels > 0.5)).mean(0)
    assert accuracy.min() >= 0.95, accuracy
    assert set(model.accuracy) == set(SHAPE_LABELS)  # held-out accuracy stored in the file
    # a 64x64 image of the same shape (what a generator would make) is read at the classifier's size
    big = images.repeat(4, axis=2).repeat(4, axis=3)
    assert ((model.predict(big) > 0.5) == (labels > 0.5)).mean() >= 0.95


def test_unlabelled_store_and_foreign_file_are_one_line_errors(tmp_path, capsys, fitted):
    store = write_store(tmp_path / "plain", shape_images(10, 8)[0])
    with pytest.raises(SystemExit) as e:
        main(["attributes", "fit", str(store.path), "--out", str(tmp_path / "a.safetensors")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "has no labels" in err
    bogus = tmp_path / "bogus.attributes"
    bogus.write_bytes(b"not a safetensors file")
    snap = tiny_snapshot(tmp_path / "snap", 64)
    with pytest.raises(SystemExit) as e:
        main(["describe", str(snap), "red shape", "--attributes", str(bogus), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "is not a progan attribute classifier" in err


def test_describe_with_attributes_ranks_by_the_classifier(fitted, capsys):
    out, tmp = fitted
    snap = tiny_snapshot(tmp / "snap", 16)  # learned attributes need no face measurement
    with pytest.raises(SystemExit) as e:
        main(["describe", str(snap), "a large shape, not red shape", "--attributes", str(out),
              "--out", str(tmp / "o"), "--candidates", "10", "--top", "4", "--no-progress"])  # fmt: skip
    stdout = capsys.readouterr().out
    assert e.value.code == 0
    assert stdout.splitlines()[0] == (
        "understood: Large_Shape: yes (learned attribute); Red_Shape: no (learned attribute)"
    )
    data = json.loads((tmp / "o" / "candidates.json").read_text())
    model = load_attributes(out)
    from progan.checkpoint import load_snapshot
    from progan.sampling import images_for_seeds

    seeds = [c["seed"] for c in data["candidates"]]
    p = model.predict(images_for_seeds(load_snapshot(snap).G_ema, seeds).numpy())
    expect = (p[:, 1] + (1 - p[:, 0])) / 2
    assert np.allclose([c["score"] for c in data["candidates"]], expect, atol=1e-5)
    assert list(expect) == sorted(expect, reverse=True)


def test_directions_from_the_classifier_edit_and_refine_what_it_judges(fitted, tmp_path, capsys):
    # `progan directions --attributes`: InterFaceGAN's boundaries from a classifier's answers on
    # a generator trained here on discs of known colour and size. An edit along Large_Shape makes
    # the classifier see larger shapes, and describe --prefer-attributes --refine moves the best
    # candidates along these directions.
    from faces_fakes import train_shape_generator

    from progan.directions import edit
    from progan.faces import describe as d
    from progan.faces.edit import fit_attribute_directions, sample_measurements
    from progan.faces.words import understand
    from progan.sampling import images_for_latents, latents_for_seeds

    out, tmp = fitted
    model = load_attributes(out)
    G = train_shape_generator(shape_images(128, 16, seed=2)[0], steps=200)
    z, rows = sample_measurements(G, range(1000, 1400), lambda im: list(model.predict(im)), progress=False)
    directions, skipped = fit_attribute_directions(z, np.stack(rows), model.names, "test")
    assert set(directions) == set(SHAPE_LABELS) and not skipped
    assert directions["Large_Shape"][1]["holdout_accuracy"] > 0.6  # chance: 0.5
    fresh = latents_for_seeds(range(60), G.latent_size)
    before = model.predict(images_for_latents(G, fresh))[:, 1]
    # (free: this small generator ties size to colour, cos 0.7, so little is left of size once
    # colour is held; the conditioned edit is tested in test_faces_edit.py)
    moved = edit(fresh, directions, {"Large_Shape": 2.0}, free=True)
    after = model.predict(images_for_latents(G, moved))[:, 1]
    assert after.mean() > before.mean() + 0.1, (before.mean(), after.mean())  # 0.65 -> 0.81

    desc = understand("a large shape", model.names, prefer_attributes=True)
    ranked, images = d.describe(G, desc, list(range(30, 60)), top=8, attributes=model, progress=False)
    scores = {c.seed: c.score for c in ranked[:4]}
    refined = d.refine(G, desc, list(ranked), dict(images), directions, count=4, attributes=model)
    moved = [c for c in refined if c.refined]
    assert moved and all(c.score > scores[c.seed] for c in moved)

    # the command: a 16x16 model needs no face measurement for a classifier's directions
    snap = tiny_snapshot(tmp_path / "snap", 16)
    with pytest.raises(SystemExit) as e:
        main(["directions", str(snap), "--attributes", str(out), "--samples", "60", "--no-progress"])
    stdout = capsys.readouterr().out
    assert e.value.code == 0 and stdout.splitlines()[-1].startswith("wrote ")
    assert all(name in stdout for name in SHAPE_LABELS)
    # edit --keep-with: the classifier that fitted the directions holds the other attribute
    from helpers import run_cli_output

    png = tmp_path / "kept.png"
    code, stdout, err = run_cli_output(["edit", str(snap), "--seed", "3", "--set", "Red_Shape=+2",
                                        "--keep-with", str(out), "--out", str(png)], capsys)  # fmt: skip
    assert code == 0 and png.exists(), err
    assert "shapes.attributes: Red_Shape " in stdout and "other answers changed: " in stdout
    from PIL import Image

    import progan  # the Python API takes the same search: the same face

    model = progan.load(snap, "cpu")
    moved = model.edit(model.latents([3])[0], keep_with=out, seeds=[3], Red_Shape=2.0)
    np.testing.assert_array_equal(np.asarray(Image.open(png)), model.render(moved)[0])
    code, _, err = run_cli_output(["edit", str(snap), "--seed", "3", "--set", "Red_Shape=+2", "--free",
                                   "--keep-with", str(out), "--out", str(png)], capsys)  # fmt: skip
    assert code == 2 and "drop --free" in err and len(err.strip().splitlines()) == 1


def test_soften_is_a_per_image_gaussian_blur():
    """soften against scipy's Gaussian filter (mirrored borders; the taps reach 3 of the largest
    sigma, 4 pixels here, for every image), one sigma per image, and sigma 0 leaving an image as it is."""
    import torch
    from scipy.ndimage import gaussian_filter

    from progan.faces.attributes import soften

    x = torch.from_numpy(np.random.default_rng(0).random((3, 2, 12, 12), dtype=np.float32))
    y = soften(x, torch.tensor([0.0, 0.7, 1.3]))
    assert torch.equal(y[0], x[0])
    for i, s in ((1, 0.7), (2, 1.3)):
        ref = gaussian_filter(x[i].numpy(), (0, s, s), mode="mirror", truncate=4 / s)
        np.testing.assert_allclose(y[i].numpy(), ref, atol=2e-6)


def _iris_patches(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """16x16 light grey images with a 2x2 'iris' somewhere: dark brown (label 0) or a lighter
    hazel of nearly the same hue (label 1). Blurred, a brown patch mixes with the grey to about
    hazel's lightness."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = np.clip(170 + rng.normal(0, 4, (n, 3, 16, 16)), 0, 255)
    colours = np.array([[60, 40, 25], [110, 82, 55]], np.float64)
    for i in range(n):
        r, c = rng.integers(3, 11, 2)
        x[i, :, r : r + 2, c : c + 2] = colours[y[i]][:, None, None] * rng.uniform(0.9, 1.1)
    return x.round().astype(np.uint8), np.eye(2, dtype=np.float32)[y]


def test_fit_blur_trains_a_judge_that_reads_blurred_images(tmp_path, capsys):
    """`attributes fit --blur 1.2`: held-out accuracy on sharp images and on images blurred by
    sigma 1.2, both stored in the file; the blur-trained judge reads the blurred patches that a
    judge trained on sharp ones alone gets wrong."""
    import torch

    from progan.faces.attributes import _accuracy, soften

    images, labels = _iris_patches(1200, 0)
    store = write_store(tmp_path / "irises", images, labels=labels, label_names=["brown", "hazel"])
    files = {}
    for blur in ("0", "1.2"):
        files[blur] = tmp_path / f"judge-{blur}.attributes"
        with pytest.raises(SystemExit) as e:
            main(["attributes", "fit", str(store.path), "--out", str(files[blur]), "--epochs", "4",
                  "--batch", "32", "--blur", blur, "--device", "cpu", "--no-progress"])  # fmt: skip
        assert e.value.code == 0
    out = capsys.readouterr().out
    assert "blurred by sigma 1.2" in out
    sharp, soft = load_attributes(files["0"]), load_attributes(files["1.2"])
    assert sharp.blur == 0 and sharp.accuracy_blurred is None
    assert soft.blur == 1.2 and set(soft.accuracy_blurred) == {"all"}  # one-hot labels: classes
    fresh, y = _iris_patches(300, 1)
    assert min(_accuracy(soft, fresh, y).values()) >= 0.95
    blurred = soften(torch.from_numpy(fresh).float(), torch.full((300,), 1.2)).round().to(torch.uint8).numpy()
    on_blurred = {
        "sharp": min(_accuracy(sharp, blurred, y).values()),
        "soft": min(_accuracy(soft, blurred, y).values()),
    }
    assert on_blurred["soft"] >= 0.95 and on_blurred["soft"] >= on_blurred["sharp"] + 0.1, on_blurred
    with pytest.raises(SystemExit) as e:
        main(["attributes", "fit", str(store.path), "--out", str(tmp_path / "x"), "--blur", "-1"])
    assert e.value.code == 2 and "--blur -1" in capsys.readouterr().err

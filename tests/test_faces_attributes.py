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

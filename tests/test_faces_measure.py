"""Face measurements on a real photo and on controlled variants of it (tests/face_variants.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import run_cli_output

from progan import landmarks
from progan.faces.measure import (
    MIN_SIZE,
    TRAITS,
    Face,
    measure_face,
    measure_faces,
    shape_features,
    srgb_to_lab,
)

pytestmark = pytest.mark.skipif(
    not landmarks.dlib_available(), reason="dlib and its landmark model not installed"
)
skimage = pytest.importorskip("skimage")
fv = pytest.importorskip("face_variants")


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return fv.astronaut_face(256)


@pytest.fixture(scope="module")
def base(face):
    return measure_face(face)


def test_lab_matches_scikit_image():
    from skimage.color import rgb2lab

    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    rgb[0, :4] = [[0, 0, 0], [255, 255, 255], [1, 2, 3], [255, 0, 0]]
    np.testing.assert_allclose(srgb_to_lab(rgb), rgb2lab(rgb), atol=0.02)


def test_landmarks_pick_the_face_not_the_helmet():
    # Full astronaut photo: dlib also fires (weakly) on the helmet ring, about as large as the face.
    from skimage.data import astronaut

    lm = landmarks.landmarks_68(astronaut())
    eyes = np.stack([lm[36:42].mean(0), lm[42:48].mean(0)])
    # Eye centres found once by hand-checked dlib runs (tests/test_data_align.py's ASTRONAUT_LM).
    np.testing.assert_allclose(eyes, [[203.2, 101.5], [246.5, 104.2]], atol=2.5)


def test_every_trait_is_measured_with_valid_scores(base):
    assert base.face_found and base.reason == "" and base.landmarks.shape == (68, 2)
    assert set(base.traits) == set(TRAITS)
    for name, spec in TRAITS.items():
        t = base.traits[name]
        assert 0.0 <= t.confidence <= 1.0, name
        if spec.kind == "category":
            assert t.value in spec.categories and set(t.scores) == set(spec.categories), name
            assert sum(t.scores.values()) == pytest.approx(1.0, abs=1e-6)
            assert t.value == max(t.scores, key=t.scores.get)
        else:
            assert isinstance(t.value, float) and 0.0 <= t.value <= 1.0 and t.scores == {}, name


def test_the_astronaut_as_she_is(base):
    # A broad smile showing teeth, light skin, dark-blond hair, no glasses, no beard.
    tr = base.traits
    assert tr["smile"].value > 0.8 and tr["mouth_open"].value > 0.2
    assert tr["skin_tone"].value == "light"
    assert tr["hair_colour"].value in ("blond", "brown") and tr["hair_colour"].scores["bald"] < 0.05
    assert tr["eye_colour"].value in ("brown", "hazel")
    assert tr["eyeglasses"].value < 0.3 and tr["beard"].value < 0.3


@pytest.mark.parametrize("colour", ["black", "brown", "blond", "red", "grey_white"])
def test_recoloured_hair_is_named(face, base, colour):
    t = measure_face(fv.recolour_hair(face, colour)).traits["hair_colour"]
    assert t.value == colour and t.confidence > 0.5
    assert t.scores[colour] > base.traits["hair_colour"].scores[colour] or colour == "blond"


def test_skin_coloured_scalp_reads_bald(face):
    t = measure_face(fv.make_bald(face)).traits["hair_colour"]
    assert t.value == "bald" and t.confidence > 0.5


@pytest.mark.parametrize("colour", ["blue", "green", "grey", "hazel", "brown", "dark"])
def test_recoloured_iris_is_named(face, colour):
    t = measure_face(fv.recolour_iris(face, colour)).traits["eye_colour"]
    assert t.value == colour and t.confidence > 0.5


def test_stretching_moves_face_shape_the_right_way(face):
    factors = (0.8, 0.9, 1.0, 1.1, 1.25)  # narrower ... wider
    index, long, broad, value = [], [], [], []
    for x in factors:
        img = fv.stretch_face(face, x)
        m = measure_face(img)
        index.append(shape_features(Face(img, m.landmarks))[0])  # height / width
        s = m.traits["face_shape"].scores
        long.append(s["long"])
        broad.append(s["round"] + s["square"])
        value.append(m.traits["face_shape"].value)
    assert index == sorted(index, reverse=True) and long == sorted(long, reverse=True)
    assert broad == sorted(broad)
    assert value[0] == "long" and value[-1] in ("round", "square")


@pytest.mark.parametrize("tone", ["medium", "dark"])
def test_recoloured_skin_is_named(face, tone):
    assert measure_face(fv.recolour_skin(face, tone)).traits["skin_tone"].value == tone


def test_lowered_mouth_corners_lower_the_smile(face, base):
    smiles = [base.traits["smile"].value]
    smiles += [measure_face(fv.move_mouth_corners(face, dy)).traits["smile"].value for dy in (0.08, 0.16)]
    assert smiles == sorted(smiles, reverse=True) and smiles[0] - smiles[-1] > 0.3


def test_glasses_and_beard_variants(face, base):
    assert measure_face(fv.add_glasses(face)).traits["eyeglasses"].value > 0.8
    assert measure_face(fv.add_beard(face)).traits["beard"].value > 0.8
    assert base.traits["eyeglasses"].value < 0.3 and base.traits["beard"].value < 0.3


def test_same_reading_at_other_resolutions(face):
    from PIL import Image

    # 128: its own CelebA-HQ crop; 640: the 256 crop upscaled (the large-image detection path).
    big = np.asarray(Image.fromarray(face).resize((640, 640), Image.LANCZOS))
    for size, img in [(128, fv.astronaut_face(128)), (640, big)]:
        blue = measure_face(fv.recolour_iris(img, "blue")).traits
        assert blue["eye_colour"].value == "blue", size
        assert blue["hair_colour"].value in ("blond", "brown") and blue["skin_tone"].value == "light"


def test_no_face_and_too_small():
    from skimage.data import chelsea

    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    for img in (noise, chelsea()):  # chelsea: a cat's face, not a human one
        m = measure_face(img)
        assert not m.face_found and m.traits == {} and m.landmarks is None and m.reason == "no face found"
    small = measure_face(np.zeros((32, 32, 3), np.uint8))
    assert not small.face_found and "32x32" in small.reason and f"{MIN_SIZE}x{MIN_SIZE}" in small.reason


def test_batches_nchw_tensor_and_nhwc(face):
    batch = np.stack([face, np.zeros_like(face)])
    nchw = measure_faces(torch.from_numpy(batch).permute(0, 3, 1, 2))
    nhwc = measure_faces(batch)
    assert [m.face_found for m in nchw] == [True, False] == [m.face_found for m in nhwc]
    assert nchw[0].traits["hair_colour"] == nhwc[0].traits["hair_colour"]


def _cli(capsys, *args) -> tuple[int, str, str]:
    return run_cli_output(["faces", "measure", *args], capsys)


def test_cli_text_json_overlay_and_errors(capsys, tmp_path, face):
    import json

    from PIL import Image

    Image.fromarray(fv.recolour_hair(face, "red")).save(tmp_path / "red.jpg", quality=95)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "tiny.png")
    code, out, _ = _cli(capsys, tmp_path / "red.jpg", tmp_path / "tiny.png")
    assert code == 0 and "hair_colour  red" in out and "at least 64x64" in out
    code, out, _ = _cli(capsys, tmp_path / "red.jpg", "--json", "--overlay", tmp_path / "ov")
    (rec,) = json.loads(out)
    assert rec["file"].endswith("red.jpg") and rec["traits"]["hair_colour"]["value"] == "red"
    assert len(rec["landmarks"]) == 68 and set(rec["traits"]) == set(TRAITS)
    assert (tmp_path / "ov" / "red.faces.png").is_file()
    (tmp_path / "junk.png").write_text("not an image")
    for bad, needle in [
        (tmp_path / "nope.png", "no such file"),
        (tmp_path / "junk.png", "is not an image"),
        ("/dev/null", "is not an image"),  # issue 25: it said "no such file"
        (tmp_path, "is a folder"),
    ]:
        code, out, err = _cli(capsys, tmp_path / "red.jpg", bad)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
        assert err.startswith("progan faces: error:") and str(bad) in err and needle in err


def test_missing_landmark_model_is_one_line(capsys, tmp_path, face, monkeypatch):
    from PIL import Image

    Image.fromarray(face).save(tmp_path / "a.png")
    monkeypatch.setattr(landmarks, "find_dlib_model", lambda: None)
    monkeypatch.setattr(landmarks, "_LOADED", {})
    code, out, err = _cli(capsys, tmp_path / "a.png")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "pip install -e '.[faces]'" in err and landmarks.DLIB_MODEL in err


def test_a_tilted_head_reads_the_same(face, base):
    # The regions live in a frame that follows the eye line, so a roll of 20 degrees changes nothing.
    from PIL import Image

    src = fv.recolour_iris(fv.recolour_hair(face, "red"), "blue")
    index0 = shape_features(Face(face, base.landmarks))[0]
    for angle in (-20, 20):
        img = np.asarray(Image.fromarray(src).rotate(angle, Image.BICUBIC, fillcolor=(200, 195, 200)))
        m = measure_face(img)
        assert m.traits["hair_colour"].value == "red" and m.traits["eye_colour"].value == "blue", angle
        assert shape_features(Face(img, m.landmarks))[0] == pytest.approx(index0, abs=0.03)
        assert m.traits["smile"].value > 0.8 and m.traits["skin_tone"].value == "light"


def test_landmarks_that_are_no_face_are_refused(monkeypatch):
    from progan.faces import measure

    lm = np.zeros((68, 2), np.float32)
    lm[36:42], lm[42:48], lm[17:27], lm[8] = [10, 10], [30, 10], [20, 5], [20, 2]  # chin above the brows
    monkeypatch.setattr(measure, "landmarks_68", lambda image: lm)
    m = measure_face(np.zeros((64, 64, 3), np.uint8))
    assert not m.face_found and m.traits == {} and m.reason.startswith("no face found")


# What each painted cover hides (tests/face_variants.py), and what it leaves in view.
COVERS = {
    "cap": (fv.add_cap, ["hair_colour"]),
    "hood": (fv.add_hood, ["hair_colour"]),
    "bald_on_background": (fv.bald_on_background, ["hair_colour"]),
    "sunglasses": (fv.add_sunglasses, ["eye_colour"]),
    "glare": (fv.add_glare, ["eye_colour"]),
    "hand": (fv.add_hand, ["smile", "mouth_open", "beard"]),
}


@pytest.mark.parametrize("size", [128, 256])
@pytest.mark.parametrize("cover", sorted(COVERS))
def test_a_covered_trait_is_never_reported_with_confidence(cover, size):
    # Issue 25: a real portrait under a dark cap read "black hair, 0.95". The measurer must say
    # it cannot see (confidence <= 0.5), and keep reading what the cover leaves in view.
    paint, hidden = COVERS[cover]
    img = fv.astronaut_face(size)
    before, after = measure_face(img).traits, measure_face(paint(img)).traits
    for name in hidden:
        assert before[name].confidence > 0.5 or name == "eye_colour", (name, before[name])
        assert after[name].confidence <= 0.5, (cover, name, after[name])
    assert after["skin_tone"].value == "light" and after["skin_tone"].confidence > 0.9
    if "hair_colour" not in hidden:
        assert after["hair_colour"].value == before["hair_colour"].value
        assert after["hair_colour"].confidence > 0.7
    if "smile" not in hidden:
        assert after["smile"].value > 0.8 and after["smile"].confidence > 0.8

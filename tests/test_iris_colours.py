"""benchmarks/iris_colours.py: the network-free iris reader the portraits build is checked with."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
iris_colours = pytest.importorskip("iris_colours")


def _aligned(truth: list[dict]) -> list[dict]:
    """The same faces with no nuisance move, no glasses and a neutral width: eyes where painted."""
    return [{**t, "rotation_deg": 0.0, "scale": 1.0, "shift": [0.0, 0.0], "width": 1.0, "eyeglasses": False}
            for t in truth]  # fmt: skip


def test_each_eye_reads_nearest_its_painted_colour():
    from skimage.color import rgb2lab

    from progan.data import portraits as P

    names = list(P.IRIS)
    truth = P.draw_truth(60, 5)
    faces = _aligned([next(t for t in truth if t["iris"] == k) for k in names])
    images = P.render(faces, iris_colours.RES)
    lab, spread = iris_colours.eye_lab(images, iris_colours.iris_cores())  # L*, a* and b* over the skin's
    # The painted colour, over the same skin: the median of the face's skin mask at 64x64.
    skin = P.base_portrait(2 * iris_colours.RES).skin.reshape(64, 2, 64, 2).mean((1, 3)) > 0.9
    for k, (image, eyes) in enumerate(zip(images, lab, strict=True)):
        skin_ab = np.median(rgb2lab(image.transpose(1, 2, 0)[skin] / 255.0), 0)[1:]
        painted = [_over_skin(t["iris_lch"], skin_ab) for t in faces]  # every class, on this face's skin
        for eye in eyes:
            # The iris at 64x64 is 2-3 pixels tall and shares them with the pupil and lids: its
            # median is not the painted colour, but it lies nearer it than any other class's.
            distance = [np.linalg.norm(eye - p) for p in painted]
            assert int(np.argmin(distance)) == k, (names[k], eye, painted[k])


def _over_skin(lch: list[float], skin_ab: np.ndarray) -> np.ndarray:
    """L*, and a*, b* over the skin's, of an L*, C*, hue colour."""
    L, C, h = lch
    return np.array([L, C * np.cos(np.radians(h)) - skin_ab[0], C * np.sin(np.radians(h)) - skin_ab[1]])


def test_the_reader_counts_classes_and_what_lies_between_them():
    rng = np.random.default_rng(0)
    centres = np.array([[50.0, -20, -20], [50, 20, 20], [20, 0, 0]])
    lab = np.concatenate([c + rng.normal(0, 2, (300, 3)) for c in centres])
    classes = np.repeat(np.arange(3), 300)
    reader = iris_colours.IrisReader(lab, classes, 3)
    faces = np.stack([centres[[0, 0, 2, 2, 1]], centres[[0, 1, 2, 2, 1]]], 1)  # (5 faces, 2 eyes, 3)
    faces[4, 1] = [35, 0, 0]  # between the classes: 7.5 standard deviations from the nearest
    s = iris_colours.summary(reader, faces, ["a", "b", "c"], np.full(3, 1 / 3))
    # The eye between the classes is still named (the discriminant's nearest: c), and counted apart.
    assert s["per_eye_frequency"] == {"a": 0.3, "b": 0.2, "c": 0.5}
    assert s["eyes_one_class"] == 0.6 and s["between_classes"] == 0.1
    assert s["whole_face_both_inside_and_one_class"] == {"a": 0.2, "b": 0.0, "c": 0.4}


def test_a_speckled_iris_reads_as_mixed_and_a_uniform_one_does_not():
    from skimage.color import rgb2lab

    cores = iris_colours.iris_cores()
    image = np.full((2, 3, 64, 64), 200, np.uint8)  # skin: light grey
    for core in cores:
        ys, xs = np.nonzero(core)
        rows, cols = slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)
        image[:, :, rows, cols] = np.array([40, 90, 200], np.uint8)[:, None, None]  # a blue iris
        # The second face's iris is a checkerboard of that blue and a yellow.
        checker = (np.add.outer(np.arange(64), np.arange(64)) % 2 == 1)[rows, cols]
        patch = image[1, :, rows, cols]
        patch[:, checker] = np.array([200, 180, 30], np.uint8)[:, None]
        image[1, :, rows, cols] = patch
    lab, spread = iris_colours.eye_lab(image, cores)
    blue, yellow = (
        rgb2lab(np.array(c, np.float32)[None, None] / 255)[0, 0] for c in ([40, 90, 200], [200, 180, 30])
    )
    assert spread[0].max() < 0.01
    # 2x4 pixels, half of each colour: the median lies halfway, every pixel half the distance away.
    assert spread[1] == pytest.approx(np.full(2, np.linalg.norm(blue[1:] - yellow[1:]) / 2), rel=0.02)


def test_speckle_mixes_only_the_iris_and_keeps_its_mean_colour():
    from skimage.color import rgb2lab

    images = np.zeros((4, 3, 32, 32), np.uint8)
    images[:] = np.array([90, 110, 140], np.uint8)[:, None, None]  # a greyish blue
    mask = np.zeros((4, 32, 32), bool)
    mask[:, 8:24, 8:24] = True
    base = rgb2lab(images[0, :, 0, 0][None, None] / 255.0)[0, 0]
    for kind in iris_colours.SPECKLES:
        out = iris_colours.speckle(images, mask, 6.0, kind, seed=1)
        keep = ~np.repeat(mask[:, None], 3, 1)
        assert (out[keep] == images[keep]).all()  # nothing outside the mask moves
        lab = rgb2lab(out.transpose(0, 2, 3, 1) / 255.0)[mask]
        assert np.abs(lab.mean(0) - base).max() < 0.5  # zero-mean: the iris's mean colour stays
        if kind == "blue-yellow":
            # Every pixel's b* moved by the amount, one way or the other (8-bit rounding aside).
            assert np.abs(np.abs(lab[:, 2] - base[2]) - 6.0).max() < 1.0
            assert np.abs(lab[:, 1] - base[1]).max() < 1.5
        else:
            assert 4.5 < lab[:, 2].std() < 7.5 and 2.0 < lab[:, 0].std() < 4.0
    with pytest.raises(ValueError, match="speckle kind"):
        iris_colours.speckle(images, mask, 6.0, "pink")


def test_iris_pixels_are_each_portraits_own_painted_iris():
    from progan.data import portraits as P

    truth = P.draw_truth(6, 3)
    mask = iris_colours.iris_pixels(truth)
    cores = iris_colours.iris_cores()
    near = np.zeros_like(cores[0])
    for core in cores:  # the painted cores, widened by the nuisance moves' reach
        ys, xs = np.nonzero(core)
        s = iris_colours.SEARCH
        near[ys.min() - s : ys.max() + 1 + s, xs.min() - s : xs.max() + 1 + s] = True
    for face, t in zip(mask, truth, strict=True):
        assert 15 <= face.sum() <= 80, face.sum()  # two irises of about 2x4 to 4x6 pixels
        assert not (face & ~near).any(), t  # all of them around the eyes
        assert face[:, :32].any() and face[:, 32:].any()  # both eyes


def test_oracle_by_colour_counts_only_faces_whose_eyes_agree():
    names = ["a", "b", "c"]
    colour = np.array([[0, 0], [0, 0], [1, 1], [2, 2], [0, 1]])
    oracle = np.array([0, 1, 1, 1, 2])
    t = iris_colours.oracle_by_colour(colour, oracle, names)
    assert t["faces_one_colour"] == 4
    assert t["oracle_reads"]["a"] == {"a": 1, "b": 1, "c": 0}
    assert t["oracle_reads"]["c"] == {"a": 0, "b": 1, "c": 0}
    assert t["oracle_agrees"] == 0.5  # a->a and b->b of the four

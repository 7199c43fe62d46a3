"""CelebA-HQ alignment geometry (synthetic landmarks, astronaut), CelebA input and the deltas."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from PIL import Image

from progan import landmarks
from progan.data import align
from progan.data.prepare import Options, prepare

skimage_data = pytest.importorskip("skimage.data")
needs_crypto = pytest.mark.skipif(
    __import__("importlib").util.find_spec("cryptography") is None, reason="cryptography not installed"
)

# Five landmarks of skimage.data.astronaut() (found once with dlib's 68-point model).
ASTRONAUT_LM = np.float32([[203.2, 101.5], [246.5, 104.2], [225.0, 127.0], [201.0, 139.0], [246.0, 141.0]])
COLOURS = [(255, 0, 0), (0, 255, 0), (255, 0, 255), (0, 0, 255), (255, 255, 0)]


def _synthetic_face(size: int, lm: np.ndarray, dot: int) -> Image.Image:
    """A grey textured canvas with a coloured dot centred on each landmark pixel."""
    rng = np.random.default_rng(0)
    a = (rng.normal(128, 10, (size, size, 3))).clip(0, 255).astype(np.uint8)
    for (x, y), c in zip(np.rint(lm).astype(int), COLOURS, strict=True):
        a[y - dot : y + dot + 1, x - dot : x + dot + 1] = c
    return Image.fromarray(a)


def _centroid(img: np.ndarray, colour) -> np.ndarray:
    d = np.abs(img.astype(int) - np.array(colour)).sum(-1)
    ys, xs = np.nonzero(d < 120)
    assert len(xs), f"colour {colour} not found"
    return np.array([xs.mean(), ys.mean()])


def _expected(lm: np.ndarray, size: int) -> np.ndarray:
    """Where the landmarks land in the output: the quad's affine frame, pixel-centre convention."""
    quad, half = align.celebahq_quad(lm)
    ul, ur, ll = quad[0], quad[3], quad[1]
    ex, ey = (ur - ul) / np.hypot(*(ur - ul)), (ll - ul) / np.hypot(*(ll - ul))
    rel = lm - ul
    return np.stack([rel @ ex, rel @ ey], 1) / (2 * half) * size - 0.5


@pytest.mark.parametrize(
    "canvas,eye,dot,angle",
    [
        (200, 24, 2, 0.0),  # small face: the super-resolution path
        (200, 24, 2, 25.0),  # rotated face
        (1600, 300, 40, -10.0),  # large face: the shrink path
    ],
)
def test_geometry_on_synthetic_landmarks(canvas, eye, dot, angle):
    c = canvas / 2
    base = np.float32([[-eye / 2, 0], [eye / 2, 0], [0, eye * 0.5], [-eye * 0.4, eye], [eye * 0.4, eye]])
    t = np.deg2rad(angle)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]], np.float32)
    lm = base @ rot.T + c
    size = 64
    out = np.asarray(align.align_face(_synthetic_face(canvas, lm, dot), lm, size=size))
    assert out.shape == (size, size, 3)
    want = _expected(np.rint(lm), size)
    got = np.stack([_centroid(out, col) for col in COLOURS])
    assert np.abs(got - want).max() < 1.0, (got, want)
    # Upright in the output whatever the input angle: eyes level, mouth corners level, symmetric.
    assert abs(got[0, 1] - got[1, 1]) < 0.6 and abs(got[3, 1] - got[4, 1]) < 0.6
    assert abs((got[0, 0] + got[1, 0]) / 2 - (size - 1) / 2) < 0.8


def test_geometry_on_astronaut_is_mirror_consistent():
    a = skimage_data.astronaut()
    out = np.asarray(align.align_face(Image.fromarray(a), ASTRONAUT_LM, size=128)).astype(int)
    # Mirror the photo and its landmarks (left and right swap): the result is the mirrored crop.
    w = a.shape[1]
    m = ASTRONAUT_LM.copy()
    m[:, 0] = w - 1 - m[:, 0]
    m = m[[1, 0, 2, 4, 3]]
    mirrored = np.asarray(align.align_face(Image.fromarray(a[:, ::-1].copy()), m, size=128)).astype(int)
    # Equal to within a pixel: like the official tool, the crop samples half a source pixel
    # right of and below the landmark frame, which mirroring turns into a one-pixel shift.
    assert min(np.abs(out[:, ::-1] - np.roll(mirrored, s, 1))[:, 2:-2].mean() for s in (-1, 0, 1)) < 3.5
    # The face fills the crop: skin tones at the centre, eyes darker than the cheeks below them.
    centre = out[54:74, 54:74].mean((0, 1))
    assert centre[0] > centre[2] + 20  # reddish skin, not the grey background
    quad, half = align.celebahq_quad(ASTRONAUT_LM)
    eye_to_eye = np.hypot(*(ASTRONAUT_LM[1] - ASTRONAUT_LM[0]))
    eye_to_mouth = np.hypot(*(ASTRONAUT_LM[3:].mean(0) - ASTRONAUT_LM[:2].mean(0)))
    assert half == pytest.approx(max(2.0 * eye_to_eye, 1.8 * eye_to_mouth), rel=1e-5)
    assert np.hypot(*(quad[3] - quad[0])) == pytest.approx(2 * half, rel=1e-5)  # a square
    assert np.dot(quad[3] - quad[0], quad[1] - quad[0]) == pytest.approx(0, abs=1e-2)


def test_reflect_padding_when_face_meets_the_border():
    a = skimage_data.astronaut()[60:200, 170:280].copy()  # the face close to every edge
    lm = ASTRONAUT_LM - np.float32([170, 60])
    out = np.asarray(align.align_face(Image.fromarray(a), lm, size=64)).astype(int)
    # No black or constant bands: the padding is a blurred reflection of the photo.
    for band in (out[:3], out[-3:], out[:, :3], out[:, -3:]):
        assert band.mean() > 30 and band.std() > 1


@pytest.mark.skipif(not landmarks.dlib_available(), reason="dlib and its landmark model not installed")
def test_align_faces_with_dlib_on_astronaut(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(skimage_data.astronaut()).save(src / "astronaut.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200, 3), np.uint8)).save(
        src / "noise.png"
    )
    res = prepare(src, tmp_path / "out", Options(resolution=128, align_faces=True, workers=0, progress=False))
    assert res.store.count == 1 and dict(res.skipped) == {"noise.png": "no face detected"}
    lm = align.FaceLandmarker()(np.ascontiguousarray(res.store.images(128)[0].transpose(1, 2, 0)))
    assert abs(lm[0, 1] - lm[1, 1]) < 3  # eyes level
    assert abs((lm[0, 0] + lm[1, 0]) / 2 - 64) < 3  # centred
    assert np.abs(lm[:2] - _expected(ASTRONAUT_LM, 128)[:2]).max() < 4


def _celeba(tmp_path, n=2):
    root = tmp_path / "celeba"
    (root / "img_celeba").mkdir(parents=True)
    (root / "Anno").mkdir()
    a = skimage_data.astronaut()
    names, lms = [], []
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        shift = np.array([10 * i, 5 * i])
        img = np.roll(a, shift[::-1], axis=(0, 1))
        Image.fromarray(img).save(root / "img_celeba" / name, quality=90)
        names.append(name)
        lms.append(ASTRONAUT_LM + shift)
    lines = [str(n), "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x ..."]
    lines += [
        f"{nm} " + " ".join(str(int(round(v))) for v in lm.flatten())
        for nm, lm in zip(names, lms, strict=True)
    ]
    (root / "Anno" / "list_landmarks_celeba.txt").write_text("\n".join(lines) + "\n")
    attr_names = [f"Attr{k}" for k in range(40)]
    rows = [
        f"{nm} " + " ".join("1" if (k + i) % 3 == 0 else "-1" for k in range(40))
        for i, nm in enumerate(names)
    ]
    (root / "Anno" / "list_attr_celeba.txt").write_text(
        "\n".join([str(n), " ".join(attr_names), *rows]) + "\n"
    )
    return root, names, np.float32([[float(v) for v in ln.split()[1:]] for ln in lines[2:]]).reshape(-1, 5, 2)


def test_celeba_aligned_with_attributes(tmp_path):
    root, names, lms = _celeba(tmp_path)
    res = prepare(root, tmp_path / "out", Options(resolution=32, celeba=True, workers=0, progress=False))
    store = res.store
    assert store.count == 2 and store.label_size == 40 and store.label_names[0] == "Attr0"
    assert store.labels[0, 0] == 1 and store.labels[0, 1] == 0 and store.labels[1, 2] == 1
    ref = align.align_face(Image.open(root / "img_celeba" / names[1]), lms[1], size=32)
    assert np.array_equal(store.images(32)[1], np.asarray(ref).transpose(2, 0, 1))


@needs_crypto
def test_delta_roundtrip_and_wrong_key():
    delta = np.random.default_rng(0).integers(0, 256, align.DELTA_SHAPE, np.uint8)
    token = align.encrypt_delta(delta, b"jpeg bytes", "000001.jpg")
    assert np.array_equal(align.decrypt_delta(token, b"jpeg bytes", "000001.jpg"), delta)
    with pytest.raises(ValueError, match="does not decrypt"):
        align.decrypt_delta(token, b"other bytes", "000001.jpg")
    proc = np.array([250, 3, 100], np.uint8)
    d = np.array([10, 254, 0], np.uint8)  # +10, -2, 0
    assert align.apply_delta(proc, d, exact=True).tolist() == [4, 1, 100]  # mod 256, like the official
    assert align.apply_delta(proc, d, exact=False).tolist() == [255, 1, 100]  # signed, clipped


@needs_crypto
@pytest.mark.parametrize("exact", [True, False])
def test_celebahq_deltas_end_to_end(tmp_path, exact):
    root, names, lms = _celeba(tmp_path, n=1)
    deltas = tmp_path / "deltas"
    deltas.mkdir()
    orig = (root / "img_celeba" / names[0]).read_bytes()
    proc = np.asarray(align.align_face(Image.open(root / "img_celeba" / names[0]), lms[0], 1024)).transpose(
        2, 0, 1
    )
    rng = np.random.default_rng(5)
    target = np.clip(proc.astype(int) + rng.integers(-20, 21, proc.shape), 0, 255).astype(np.uint8)
    delta = (target.astype(np.int16) - proc).astype(np.uint8)  # mod 256
    with zipfile.ZipFile(deltas / "deltas00000.zip", "w") as z:
        z.writestr("delta00000.dat", align.encrypt_delta(delta, orig, names[0]))
    proc_md5 = align.md5(proc) if exact else "0" * 32  # a mismatch stands for another Pillow/libjpeg
    (deltas / "image_list.txt").write_text(
        f"idx orig_idx orig_file proc_md5 final_md5\n0 0 {names[0]} {proc_md5} {align.md5(target)}\n"
    )
    opts = Options(resolution=64, celeba=True, celebahq_deltas=str(deltas), workers=0, progress=False)
    res = prepare(root, tmp_path / "out", opts)
    ref = np.asarray(Image.fromarray(target.transpose(1, 2, 0)).resize((64, 64), Image.LANCZOS))
    assert np.array_equal(res.store.images(64)[0], ref.transpose(2, 0, 1))
    assert res.store.manifest["prepare"]["celebahq_bit_exact"] is True
    assert bool(res.warnings) is (not exact)
    if not exact:
        assert "pillow==3.1.1" in res.warnings[0]

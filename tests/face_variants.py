"""Real face photos and controlled variants of them, for tests where the truth is known.

`astronaut_face(size)`: skimage's astronaut (Eileen Collins, NASA portrait) cropped and aligned the
CelebA-HQ way, so it looks like a ProGAN training image. The variants change one trait with
landmark-guided pixel edits whose regions and colours are defined HERE, independently of
`progan.faces.measure` (other region rules, colours given as sRGB, CIELAB from scikit-image):

- `recolour_hair(img, colour)`: hair pixels (above the eyes, outside the face, neither skin- nor
  background-coloured) get the named colour's hue, chroma and lightness, keeping their texture;
- `recolour_iris(img, colour)`: the iris (the darker part of each eye outline, minus the pupil)
  likewise;
- `stretch_face(img, x_factor)`: the whole picture scaled horizontally about the face's centre
  (wider > 1, narrower < 1), cropped / edge-padded back to its size;
- `add_glasses(img)`, `add_beard(img)`: dark frames around the eyes and across the nose bridge;
  a dark textured beard on the chin and jaw;
- `recolour_skin(img, tone)`, `make_bald(img)`: the face's skin moved to a light / medium / dark
  tone; the hair painted in the cheeks' colour (a crude bald head);
- `move_mouth_corners(img, dy)`: a smooth local warp moving both mouth corners down (dy > 0, in
  mouth widths) or up, which lowers or raises a smile.

Colour names are the measurement categories.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
from PIL import Image, ImageDraw

from progan.data.align import align_face, landmarks_from_68
from progan.landmarks import landmarks_68

# Typical photographed colours (sRGB), chosen by eye from portrait photos; not the module's prototypes.
HAIR_RGB = {
    "black": (28, 24, 22),
    "brown": (98, 68, 44),
    "blond": (205, 172, 112),
    "red": (168, 78, 38),
    "grey_white": (206, 204, 198),
}
IRIS_RGB = {
    "blue": (92, 128, 160),
    "green": (92, 122, 66),
    "grey": (132, 136, 140),
    "hazel": (138, 108, 58),
    "brown": (98, 58, 30),
    "dark": (38, 27, 22),
}


def _lab(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(np.asarray(rgb, dtype=np.uint8))


def _rgb(lab: np.ndarray) -> np.ndarray:
    from skimage.color import lab2rgb

    return np.clip(np.round(lab2rgb(lab) * 255.0), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _astronaut(size: int) -> np.ndarray:
    from skimage.data import astronaut

    a = astronaut()
    lm = landmarks_68(a)
    assert lm is not None, "dlib did not find the astronaut's face"
    return np.asarray(align_face(Image.fromarray(a), landmarks_from_68(lm), size))


def astronaut_face(size: int = 256) -> np.ndarray:
    """uint8 (size, size, 3): the astronaut's face, CelebA-HQ aligned (a fresh copy)."""
    return _astronaut(size).copy()


_LANDMARKS: dict[tuple, np.ndarray] = {}


def _landmarks(img: np.ndarray) -> np.ndarray:
    """dlib's 68 points, remembered per image content: the variants are mostly made from a few
    base pictures, and detection is most of a variant's cost."""
    key = (img.shape, hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest())
    if key not in _LANDMARKS:
        lm = landmarks_68(img)
        assert lm is not None, "dlib found no face in the test image"
        _LANDMARKS[key] = lm.astype(np.float64)
    return _LANDMARKS[key].copy()


def _retint(lab: np.ndarray, mask: np.ndarray, rgb: tuple[int, int, int], texture: float) -> None:
    """Move the masked pixels' colour to `rgb`, keeping `texture` of their lightness variation."""
    target = _lab(np.array([[rgb]], dtype=np.uint8))[0, 0]
    px = lab[mask]
    med = np.median(px, 0)
    px[:, 0] = np.clip(target[0] + (px[:, 0] - med[0]) * texture, 0, 100)
    px[:, 1] = target[1] + (px[:, 1] - med[1]) * 0.3
    px[:, 2] = target[2] + (px[:, 2] - med[2]) * 0.3
    lab[mask] = px


def hair_mask(img: np.ndarray) -> np.ndarray:
    """Hair pixels: above the eyes' lower edge, outside the convex hull of the brows and jaw, and
    neither skin-coloured (near the nose-side cheek colour in a*, b*) nor background (pale and
    unsaturated, or at the image's top corners' colour)."""
    lm = _landmarks(img)
    h, w = img.shape[:2]
    lab = _lab(img)
    yy, xx = np.mgrid[0:h, 0:w]
    eye_bottom = lm[36:48, 1].max()
    face = Image.new("L", (w, h), 0)
    hull = np.concatenate([lm[0:17], lm[26:16:-1]])
    ImageDraw.Draw(face).polygon([tuple(p) for p in hull], fill=1)
    inside = np.asarray(face, dtype=bool)
    d = float(lm[45, 0] - lm[36, 0])  # outer eye corners' distance: the patch scales with the face
    y, x = int(lm[29, 1]), int(lm[31, 0])
    cheek = lab[y - round(0.03 * d) : y + round(0.03 * d) + 1, x - round(0.2 * d) : x - round(0.06 * d)]
    cheek = cheek.reshape(-1, 3)
    skin = np.median(cheek, 0)
    skinlike = np.hypot(lab[..., 1] - skin[1], lab[..., 2] - skin[2]) < 9
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    corners = np.concatenate([lab[:8, :8].reshape(-1, 3), lab[:8, -8:].reshape(-1, 3)])
    bg = np.median(corners, 0)
    background = ((chroma < 9) & (lab[..., 0] > 60)) | (np.linalg.norm(lab - bg, axis=-1) < 8)
    head_x = (xx > lm[0, 0] - 0.5 * (lm[16, 0] - lm[0, 0])) & (xx < lm[16, 0] + 0.5 * (lm[16, 0] - lm[0, 0]))
    return (yy < eye_bottom) & head_x & ~inside & ~skinlike & ~background


def recolour_hair(img: np.ndarray, colour: str) -> np.ndarray:
    """The image with its hair recoloured to HAIR_RGB[colour] (texture kept)."""
    mask = hair_mask(img)
    lab = _lab(img)
    _retint(lab, mask, HAIR_RGB[colour], texture=0.6)
    out = img.copy()
    out[mask] = _rgb(lab)[mask]
    return out


def iris_mask(img: np.ndarray) -> np.ndarray:
    """Iris pixels: inside each eye outline, darker than the outline's 55th lightness percentile
    (the sclera is the bright rest), minus the darkest 15% (pupil and lash line)."""
    lm = _landmarks(img)
    h, w = img.shape[:2]
    L = _lab(img)[..., 0]
    mask = np.zeros((h, w), bool)
    for idx in (slice(36, 42), slice(42, 48)):
        m = Image.new("L", (w, h), 0)
        ImageDraw.Draw(m).polygon([tuple(p) for p in lm[idx]], fill=1)
        eye = np.asarray(m, dtype=bool)
        lo, hi = np.percentile(L[eye], [15, 55])
        mask |= eye & (L <= hi) & (L > lo)
    return mask


def recolour_iris(img: np.ndarray, colour: str) -> np.ndarray:
    """The image with both irises recoloured to IRIS_RGB[colour] (texture kept)."""
    mask = iris_mask(img)
    lab = _lab(img)
    _retint(lab, mask, IRIS_RGB[colour], texture=0.8)
    out = img.copy()
    out[mask] = _rgb(lab)[mask]
    return out


def stretch_face(img: np.ndarray, x_factor: float) -> np.ndarray:
    """The picture scaled by x_factor horizontally about the face's centre, same size out."""
    lm = _landmarks(img)
    h, w = img.shape[:2]
    cx = float(lm[:, 0].mean())
    new_w = max(1, round(w * x_factor))
    wide = np.asarray(Image.fromarray(img).resize((new_w, h), Image.LANCZOS))
    start = round(cx * x_factor - cx)  # keep the face's centre where it was
    pad = max(0, -start), max(0, start + w - new_w)
    wide = np.pad(wide, ((0, 0), pad, (0, 0)), mode="edge")
    start += pad[0]
    return np.ascontiguousarray(wide[:, start : start + w])


def add_glasses(img: np.ndarray, rgb: tuple[int, int, int] = (25, 25, 30)) -> np.ndarray:
    """Dark frames drawn around both eyes and across the nose bridge."""
    lm = _landmarks(img)
    eye_w = np.linalg.norm(lm[39] - lm[36])
    width = max(1, round(eye_w * 0.12))
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    rims = []
    for idx in (slice(36, 42), slice(42, 48)):
        c = lm[idx].mean(0)
        rx, ry = eye_w * 0.85, eye_w * 0.6
        draw.ellipse([c[0] - rx, c[1] - ry, c[0] + rx, c[1] + ry], outline=rgb, width=width)
        rims.append(c)
    y = (rims[0][1] + rims[1][1]) / 2 - eye_w * 0.15
    draw.line([(rims[0][0] + eye_w * 0.85, y), (rims[1][0] - eye_w * 0.85, y)], fill=rgb, width=width)
    return np.asarray(pil).copy()


def add_beard(img: np.ndarray, rgb: tuple[int, int, int] = (60, 42, 30), seed: int = 0) -> np.ndarray:
    """A dark, grainy beard over the chin and jaw, below the mouth corners."""
    lm = _landmarks(img)
    h, w = img.shape[:2]
    m = Image.new("L", (w, h), 0)
    ImageDraw.Draw(m).polygon([tuple(p) for p in np.concatenate([lm[3:14], lm[[54, 57, 48]]])], fill=1)
    mask = np.asarray(m, dtype=bool)
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 18, (h, w, 1))
    out = img.astype(np.float64)
    out[mask] = np.clip(np.asarray(rgb, dtype=np.float64) + noise[mask], 0, 255)
    return np.round(out).astype(np.uint8)


# Skin tones as sRGB of photographed cheeks (light, medium, dark), not the module's ITA bounds.
SKIN_RGB = {"light": (232, 190, 165), "medium": (188, 132, 92), "dark": (104, 66, 46)}


def skin_mask(img: np.ndarray) -> np.ndarray:
    """Skin pixels: inside the convex hull of the jaw line and the brows lifted to mid-forehead,
    within a*/b* reach of the nose-side cheek colour (which leaves out eyes, brows, lips, teeth)."""
    lm = _landmarks(img)
    h, w = img.shape[:2]
    lab = _lab(img)
    d = float(lm[45, 0] - lm[36, 0])
    brows = lm[26:16:-1].copy()
    brows[:, 1] -= 0.35 * d
    face = Image.new("L", (w, h), 0)
    ImageDraw.Draw(face).polygon([tuple(p) for p in np.concatenate([lm[0:17], brows])], fill=1)
    y, x = int(lm[29, 1]), int(lm[31, 0])
    cheek = lab[y - round(0.03 * d) : y + round(0.03 * d) + 1, x - round(0.2 * d) : x - round(0.06 * d)]
    skin = np.median(cheek.reshape(-1, 3), 0)
    near = (np.hypot(lab[..., 1] - skin[1], lab[..., 2] - skin[2]) < 10) & (
        np.abs(lab[..., 0] - skin[0]) < 25
    )
    return np.asarray(face, dtype=bool) & near


def recolour_skin(img: np.ndarray, tone: str) -> np.ndarray:
    """The image with the face's skin recoloured to SKIN_RGB[tone] (shading kept)."""
    mask = skin_mask(img)
    lab = _lab(img)
    _retint(lab, mask, SKIN_RGB[tone], texture=0.8)
    out = img.copy()
    out[mask] = _rgb(lab)[mask]
    return out


def move_mouth_corners(img: np.ndarray, dy: float) -> np.ndarray:
    """The mouth corners moved down by `dy` mouth widths (up when negative): a smooth local warp
    (Gaussian falloff, 0.25 mouth widths) around each corner, the rest of the face unchanged."""
    from scipy.ndimage import map_coordinates

    lm = _landmarks(img)
    h, w = img.shape[:2]
    width = float(np.linalg.norm(lm[54] - lm[48]))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    shift = np.zeros((h, w))
    for c in (lm[48], lm[54]):
        shift += np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / (2 * (0.25 * width) ** 2))
    src_y = yy - dy * width * shift  # backward map: the output pixel takes what lay above it
    out = np.empty_like(img)
    for ch in range(3):
        out[..., ch] = np.clip(map_coordinates(img[..., ch].astype(np.float64), [src_y, xx], order=1), 0, 255)
    return out


def make_bald(img: np.ndarray) -> np.ndarray:
    """The hair (as `hair_mask` finds it) painted in the cheeks' skin colour, shading kept: a
    crude bald head (the scalp reads as skin; the head's outline stays the hair's)."""
    lm = _landmarks(img)
    lab = _lab(img)
    d = float(lm[45, 0] - lm[36, 0])
    y, x = int(lm[29, 1]), int(lm[31, 0])
    cheek = img[y - round(0.03 * d) : y + round(0.03 * d) + 1, x - round(0.2 * d) : x - round(0.06 * d)]
    rgb = tuple(int(v) for v in np.median(cheek.reshape(-1, 3), 0))
    mask = hair_mask(img)
    _retint(lab, mask, rgb, texture=0.3)
    out = img.copy()
    out[mask] = _rgb(lab)[mask]
    return out


# --------------------------------------------------------------------------------------------
# Covered regions: things in front of a trait (issue 25). The measurer must lower its confidence
# in the covered trait, not name what covers it.


def _head(img: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    lm = _landmarks(img)
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return lm, float(lm[45, 0] - lm[36, 0]), yy, xx


def _paint(img: np.ndarray, mask: np.ndarray, rgb: tuple[int, int, int], shade: np.ndarray) -> np.ndarray:
    """`mask` painted in `rgb`, lightness varied smoothly by `shade` (fabric, skin: no strands),
    with a camera's pixel noise (sd 2 of 255 per channel) so that it is not perfectly flat."""
    out = img.astype(np.float64)
    noise = np.random.default_rng(0).normal(0.0, 2.0, (int(mask.sum()), 3))
    out[mask] = np.clip(np.asarray(rgb, dtype=np.float64) * shade[mask][:, None] + noise, 0, 255)
    return np.round(out).astype(np.uint8)


def add_cap(img: np.ndarray, rgb: tuple[int, int, int] = (34, 36, 44)) -> np.ndarray:
    """A dark cap pulled down to a third of the way from the brows to the usual hairline: the
    whole top of the head, the hair band and the temples' upper half are fabric."""
    lm, d, yy, xx = _head(img)
    brow = float(lm[17:27, 1].min())
    cx, half = float(lm[27, 0]), 0.5 * float(lm[16, 0] - lm[0, 0])
    crown = ((xx - cx) / (1.25 * half)) ** 2 + ((yy - (brow - 0.2 * d)) / (1.6 * d)) ** 2 <= 1
    mask = crown & (yy <= brow - 0.2 * d)
    return _paint(img, mask, rgb, 0.85 + 0.3 * (yy - yy[mask].min()) / max(1.0, np.ptp(yy[mask])))


def add_hood(img: np.ndarray, rgb: tuple[int, int, int] = (120, 34, 42)) -> np.ndarray:
    """A hood: fabric over the head and around the face down to the jaw, the face left open."""
    lm, d, yy, xx = _head(img)
    h, w = img.shape[:2]
    opening = Image.new("L", (w, h), 0)
    brows = lm[26:16:-1].copy()
    brows[:, 1] -= 0.3 * d
    ImageDraw.Draw(opening).polygon([tuple(p) for p in np.concatenate([lm[0:17], brows])], fill=1)
    cx, half = float(lm[27, 0]), 0.5 * float(lm[16, 0] - lm[0, 0])
    outer = ((xx - cx) / (1.5 * half)) ** 2 + ((yy - lm[27, 1]) / (2.2 * d)) ** 2 <= 1
    mask = outer & ~np.asarray(opening, dtype=bool) & (yy <= lm[8, 1])
    return _paint(img, mask, rgb, 0.8 + 0.4 * np.cos((xx - cx) / (1.5 * half)))


def add_hand(img: np.ndarray) -> np.ndarray:
    """A hand over the mouth and chin: skin-coloured (the cheeks'), with darker gaps between
    four fingers; the mouth, its corners and the beard's region are hidden."""
    lm, d, yy, xx = _head(img)
    y, x = int(lm[29, 1]), int(lm[31, 0])
    cheek = img[y - round(0.03 * d) : y + round(0.03 * d) + 1, x - round(0.2 * d) : x - round(0.06 * d)]
    rgb = tuple(int(v) for v in np.median(cheek.reshape(-1, 3), 0))
    c = lm[[48, 54, 57]].mean(0)
    mask = ((xx - c[0]) / (0.5 * d)) ** 2 + ((yy - c[1]) / (0.28 * d)) ** 2 <= 1
    gaps = np.abs(((yy - c[1]) / (0.18 * d)) % 1.0 - 0.5) < 0.05  # horizontal fingers
    return _paint(img, mask, rgb, np.where(gaps, 0.85, 1.0) - 0.05 * (xx - c[0]) / d)


def _over_eyes(img: np.ndarray, rx: float, ry: float) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """(mask of an ellipse over each eye, radii rx, ry eye widths; d, yy, xx as _head's)."""
    lm, d, yy, xx = _head(img)
    eye_w = float(np.linalg.norm(lm[39] - lm[36]))
    mask = np.zeros(img.shape[:2], bool)
    for idx in (slice(36, 42), slice(42, 48)):
        c = lm[idx].mean(0)
        mask |= ((xx - c[0]) / (rx * eye_w)) ** 2 + ((yy - c[1]) / (ry * eye_w)) ** 2 <= 1
    return mask, d, yy, xx


def add_sunglasses(img: np.ndarray, rgb: tuple[int, int, int] = (18, 18, 22)) -> np.ndarray:
    """Opaque dark lenses over both eyes."""
    mask, d, yy, _ = _over_eyes(img, 0.85, 0.6)
    return _paint(img, mask, rgb, 1.0 + 0.2 * (yy - yy.mean()) / d)


def add_glare(img: np.ndarray) -> np.ndarray:
    """Clear glasses whose lenses reflect a window: a near-white patch over each iris."""
    mask, d, _, xx = _over_eyes(img, 0.55, 0.4)
    return _paint(img, mask, (246, 248, 250), 1.0 - 0.03 * np.abs(xx - xx.mean()) / d)


def bald_on_background(img: np.ndarray) -> np.ndarray:
    """A small bald head: skin up to just above the usual hairline, the image's background (its
    top corners' colour) above it, where the hair band lies."""
    lm, d, yy, xx = _head(img)
    out = make_bald(img)
    bg = tuple(int(v) for v in np.median(np.concatenate([img[:8, :8], img[:8, -8:]]).reshape(-1, 3), 0))
    brow = float(lm[17:27, 1].min())
    cx, half = float(lm[27, 0]), 0.5 * float(lm[16, 0] - lm[0, 0])
    head = ((xx - cx) / (1.05 * half)) ** 2 + ((yy - lm[27, 1]) / (0.95 * d)) ** 2 <= 1
    return _paint(out, ~head & (yy < brow + 0.3 * d), bg, np.ones(img.shape[:2]))

"""Measuring a face: dlib's 68 landmarks, then one function per trait, each a value and a confidence.

Everything here is measured on the picture itself, with no face model trained on labels: shape from
the landmark geometry, colours from pixels in landmark-defined regions, expressions from the lip
landmarks. The regions live in a face frame that follows the face's roll: origin at the middle of
the brows, x along the line between the eye centres, y perpendicular to it towards the chin, and
one unit = the brow-to-chin distance (`u`). With that unit a forehead is about 0.5 high, the top
of the head about 0.8 above the brows, a face about 1.05 wide.

Colours are compared in CIELAB (D65), where distances track perceived differences: L* is
lightness 0..100, a* green(-)..red(+), b* blue(-)..yellow(+). Each category has a prototype colour
(typical values of photographed hair / irises; see `HAIR_PROTOTYPES`, `IRIS_PROTOTYPES`); soft
scores are a softmax over scaled distances to the prototypes, and confidence is the top score
times how much evidence there was (pixel counts against what a clear reading needs).

What this cannot see is listed in the README ("Describe: honest limits").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from PIL import Image, ImageDraw

from progan.landmarks import landmarks_68

MIN_SIZE = 64  # under 64x64 an iris is one or two pixels and dlib's detector needs >= 4x upsampling


@dataclass(frozen=True)
class TraitSpec:
    name: str
    kind: str  # "category" | "scalar"
    categories: tuple[str, ...]  # () for scalar traits
    doc: str  # what it measures, one line


@dataclass(frozen=True)
class Trait:
    value: str | float  # category name, or a scalar in [0, 1]
    confidence: float  # [0, 1]
    scores: dict[str, float] = field(default_factory=dict)  # category -> soft score; {} for scalars


@dataclass
class FaceMeasurement:
    face_found: bool
    traits: dict[str, Trait]  # {} when no face
    landmarks: np.ndarray | None  # (68, 2) float x, y in image pixels
    reason: str = ""  # "" or why nothing was measured

    def to_json(self) -> dict:
        out: dict = {"face_found": self.face_found}
        if self.reason:
            out["reason"] = self.reason
        out["traits"] = {
            k: {
                "value": t.value if isinstance(t.value, str) else round(float(t.value), 4),
                "confidence": round(float(t.confidence), 4),
                **({"scores": {c: round(float(s), 4) for c, s in t.scores.items()}} if t.scores else {}),
            }
            for k, t in self.traits.items()
        }
        if self.landmarks is not None:
            out["landmarks"] = np.round(self.landmarks, 1).tolist()
        return out


TRAITS: dict[str, TraitSpec] = {
    s.name: s
    for s in [
        TraitSpec(
            "face_shape",
            "category",
            ("round", "oval", "long", "square"),
            "jaw-line geometry: face height / width and lower-jaw width / face width",
        ),
        TraitSpec(
            "eye_colour",
            "category",
            ("blue", "green", "grey", "hazel", "brown", "dark"),
            "median CIELAB colour of the iris pixels inside both eye outlines (no sclera, pupil, highlights)",
        ),
        TraitSpec(
            "hair_colour",
            "category",
            ("black", "brown", "blond", "red", "grey_white", "bald"),
            "median CIELAB colour of the non-skin pixels above the forehead and at the temples",
        ),
        TraitSpec(
            "skin_tone",
            "category",
            ("light", "medium", "dark"),
            "individual typology angle (ITA, Chardon et al. 1991) of the cheeks' median CIELAB colour",
        ),
        TraitSpec("smile", "scalar", (), "mouth corners raised above the lip centre, and a wider mouth"),
        TraitSpec("mouth_open", "scalar", (), "gap between the inner lips relative to the mouth width"),
        TraitSpec("eyeglasses", "scalar", (), "a straight horizontal edge across the nose bridge"),
        TraitSpec("beard", "scalar", (), "share of chin and jaw pixels darker than the cheeks' skin"),
    ]
}


# --------------------------------------------------------------------------------------------
# Colour


def _srgb_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


_SRGB_LINEAR = _srgb_linear(np.arange(256, dtype=np.float64) / 255.0)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 or [0, 1] float sRGB (..., 3) -> CIELAB (..., 3), D65 white (as skimage's rgb2lab)."""
    rgb = np.asarray(rgb)
    if rgb.dtype == np.uint8:
        lin = _SRGB_LINEAR[rgb]  # a table: the power function per pixel is most of the cost
    else:
        lin = _srgb_linear(rgb.astype(np.float32))
    m = np.array(
        [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]],
        dtype=np.float32,
    )
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883], dtype=np.float32)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    lab = np.empty_like(f)
    lab[..., 0] = np.where(xyz[..., 1] > 0.008856, 116.0 * f[..., 1] - 16.0, 903.3 * xyz[..., 1])
    lab[..., 1] = 500.0 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200.0 * (f[..., 1] - f[..., 2])
    return lab


def _soft_scores(distances: dict[str, float]) -> dict[str, float]:
    """Softmax of -d^2/2 over scaled distances (d = 1: one 'typical spread' from a prototype)."""
    names = list(distances)
    d2 = np.array([distances[n] ** 2 for n in names], dtype=np.float64)
    w = np.exp(-(d2 - d2.min()) / 2.0)
    w /= w.sum()
    return {n: float(v) for n, v in zip(names, w, strict=True)}


def _prototype_scores(lab: np.ndarray, prototypes: dict, spread: tuple[float, float, float]) -> dict:
    s = np.asarray(spread, dtype=np.float64)
    return _soft_scores({k: float(np.linalg.norm((lab - np.asarray(p)) / s)) for k, p in prototypes.items()})


def _evidence(n: float, needed: float) -> float:
    """1 when there are at least `needed` pixels (or pixels of width), falling linearly to 0."""
    return float(np.clip(n / needed, 0.0, 1.0))


def _category(scores: dict[str, float], evidence: float) -> Trait:
    best = max(scores, key=scores.get)
    return Trait(best, float(np.clip(scores[best] * evidence, 0.0, 1.0)), scores)


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, x)))))


# --------------------------------------------------------------------------------------------
# The face frame


class Face:
    """An image and its 68 landmarks, with the face frame and lazily computed CIELAB pixels."""

    def __init__(self, image: np.ndarray, landmarks: np.ndarray) -> None:
        self.image = np.ascontiguousarray(image, dtype=np.uint8)
        self.lm = np.asarray(landmarks, dtype=np.float64).reshape(68, 2)
        lm = self.lm
        self.left_eye, self.right_eye = lm[36:42].mean(0), lm[42:48].mean(0)
        ex = self.right_eye - self.left_eye
        self.ex = ex / np.linalg.norm(ex)
        self.ey = np.array([-self.ex[1], self.ex[0]])  # towards the chin
        self.origin = lm[17:27].mean(0)
        self.u = float((lm[8] - self.origin) @ self.ey)  # brow-to-chin distance in pixels

    @cached_property
    def lab(self) -> np.ndarray:
        return srgb_to_lab(self.image)

    @cached_property
    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Every pixel centre's face coordinates (X, Y), each (H, W)."""
        h, w = self.image.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        dx, dy = xx - self.origin[0], yy - self.origin[1]
        return (dx * self.ex[0] + dy * self.ex[1]) / self.u, (dx * self.ey[0] + dy * self.ey[1]) / self.u

    def fc(self, idx) -> np.ndarray:
        """Face coordinates of landmarks `idx` (k, 2)."""
        d = self.lm[idx] - self.origin
        return np.stack([d @ self.ex, d @ self.ey], -1) / self.u

    def box(self, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
        """Boolean mask of a rectangle in face coordinates."""
        X, Y = self.grid
        return (X >= x0) & (X <= x1) & (Y >= y0) & (Y <= y1)

    def polygon(self, points: np.ndarray) -> np.ndarray:
        """Boolean mask of a polygon given in image pixels."""
        h, w = self.image.shape[:2]
        mask = Image.new("L", (w, h), 0)
        ImageDraw.Draw(mask).polygon([(float(x), float(y)) for x, y in points], fill=1)
        return np.asarray(mask, dtype=bool)

    @cached_property
    def cheeks(self) -> np.ndarray:
        """Mask of two discs on the cheeks: below the eyes, beside the nose, above the mouth
        corners; rarely covered by hair, glasses or beard."""
        lm = self.lm
        r = 0.07 * self.u
        h, w = self.image.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        mask = np.zeros((h, w), bool)
        for idx in ([1, 2, 3, 31, 40, 41, 48], [13, 14, 15, 35, 46, 47, 54]):
            c = lm[idx].mean(0)
            mask |= (xx - c[0]) ** 2 + (yy - c[1]) ** 2 <= r * r
        return mask

    @cached_property
    def skin(self) -> tuple[np.ndarray, np.ndarray]:
        """Median CIELAB of the cheeks' skin and its robust spread (MAD, per channel)."""
        px = self.lab[self.cheeks]
        if len(px) == 0:
            h, w = self.image.shape[:2]
            x, y = self.lm[29]
            px = self.lab[int(np.clip(y, 0, h - 1)), int(np.clip(x, 0, w - 1))][None]
        med = np.median(px, 0)
        return med, np.median(np.abs(px - med), 0)

    @cached_property
    def detail(self) -> np.ndarray:
        """|L* - its local mean| over a window of 0.04 u: strands of hair, lashes and pores make
        detail; fabric, a painted or out-of-focus background, a plain wall do not."""
        from scipy.ndimage import uniform_filter

        L = self.lab[..., 0]
        return np.abs(L - uniform_filter(L, 2 * max(1, round(0.02 * self.u)) + 1))

    def skin_like(self, lab: np.ndarray) -> np.ndarray:
        """Pixels within the skin's colour range: lightness varies with shading, so it gets the
        widest tolerance; a*/b* (hue, saturation) separate hair from skin."""
        med, mad = self.skin
        tol = np.maximum(np.array([14.0, 6.0, 7.0]), 2.5 * mad)
        return np.all(np.abs(lab - med) <= tol, axis=-1)


# --------------------------------------------------------------------------------------------
# Covered regions: a trait's confidence is multiplied by how visible its region is (0..1), so that
# a cap, a hood, sunglasses, glare or a hand lowers the confidence instead of being measured.
# Calibrated on tests/face_variants.py's painted covers of the astronaut (128 and 256 pixels):
# median detail 1.5-3.3 L* in her recoloured hair, 0.0-0.1 in a painted cap, hood or plain
# background (about 0.7 with sensor-like noise added); sclera-iris contrast 19-66 L* in open
# eyes, 0-0.3 under sunglasses and glare; 0.2-0.35 of the lip outline skin-coloured with the mouth
# seen, 1.0 under a hand.


def _ramp(x: float, lo: float, hi: float) -> float:
    """0 at lo, 1 at hi, linear between and clipped (hi < lo ramps down)."""
    return float(np.clip((x - lo) / (hi - lo), 0.0, 1.0))


def hair_visibility(face: Face, hair: np.ndarray) -> float:
    """How hair-like the hair region's non-skin pixels (`hair`, a mask) are: their median
    detail, 0 at 0.8 L* (a cap, a hood or a wall, with noise) to 1 at 1.4 (hair)."""
    if not hair.any():
        return 1.0
    return _ramp(float(np.median(face.detail[hair])), 0.8, 1.4)


def eye_visibility(face: Face, eye: int, iris: np.ndarray) -> float:
    """An open, uncovered eye shows sclera well above its iris in lightness (0 under 5 L* of
    contrast, 1 over 15: sunglasses and closed eyes have none) and no more than a catchlight of
    near-white (a share of outline pixels over L* 85 above 0.2 is glare on glasses)."""
    idx = list(range(36, 42)) if eye == 0 else list(range(42, 48))
    L = face.lab[..., 0]
    inside = face.polygon(face.lm[idx])
    if not inside.any() or not iris.any():
        return 0.0
    contrast = float(np.percentile(L[inside], 90) - np.median(L[iris]))
    glare = float((L[inside] > 85.0).mean())
    return _ramp(contrast, 5.0, 15.0) * _ramp(glare, 0.4, 0.2)


def mouth_visibility(face: Face) -> float:
    """Lips, teeth and the gap differ from the cheeks' skin: when the lip outline (points 48-59)
    is as skin-coloured as a cheek (a share over 0.85), a hand or an object covers the mouth."""
    px = face.lab[face.polygon(face.lm[48:60])]
    if len(px) == 0:
        return 0.0
    return _ramp(float(face.skin_like(px).mean()), 0.85, 0.6)


# --------------------------------------------------------------------------------------------
# Traits

# Face shape prototypes in (facial index, lower-jaw ratio).
# facial index = nasion-to-chin height (points 27 -> 8) / widest jaw-line width (pairs 0-16 .. 3-13):
#   the Martin-Saller morphological face index, whose classes are broad (euryprosopic) < 0.85,
#   medium 0.85-0.90, long (leptoprosopic) > 0.90. The dlib outline is a little wider than the
#   bizygomatic caliper width, so the prototypes sit slightly lower than the anthropometric ones.
# lower-jaw ratio = width at points 5-11 (below the mouth corners) / widest width: a square face
#   keeps its width down to the jaw angle; round and oval faces taper.
SHAPE_PROTOTYPES = {"round": (0.76, 0.64), "oval": (0.86, 0.62), "long": (0.98, 0.62), "square": (0.78, 0.74)}
SHAPE_SPREAD = (0.04, 0.04)


def shape_features(face: Face) -> tuple[float, float]:
    p = face.fc(list(range(17)))
    widest = max(abs(p[16 - i, 0] - p[i, 0]) for i in range(4))
    height = float(face.fc([8])[0, 1] - face.fc([27])[0, 1])
    return height / widest, abs(p[11, 0] - p[5, 0]) / widest


def measure_face_shape(face: Face) -> Trait:
    """round / oval / long / square from the jaw line: facial index and lower-jaw ratio."""
    feats = np.array(shape_features(face))
    scores = _prototype_scores(feats, SHAPE_PROTOTYPES, SHAPE_SPREAD)
    # Landmark noise is about a pixel: a face under ~60 px wide is too coarse for 0.04 steps.
    return _category(scores, _evidence(face.u, 60.0))


# Iris colour prototypes (L*, a*, b*) of photographed irises, diffuse light; the spread makes one
# unit about the step between neighbouring categories. Blue irises read with negative b*, green
# with negative a* and positive b*, hazel and brown with warm a*/b* at decreasing lightness, grey
# with little chroma, dark (near-black brown) below L* 25.
IRIS_PROTOTYPES = {
    "blue": (52.0, -3.0, -14.0),
    "green": (48.0, -12.0, 12.0),
    "grey": (55.0, -1.0, -1.0),
    "hazel": (42.0, 5.0, 20.0),
    "brown": (30.0, 10.0, 15.0),
    "dark": (16.0, 3.0, 4.0),
}
IRIS_SPREAD = (10.0, 6.0, 7.0)


def iris_mask(face: Face, eye: int) -> np.ndarray:
    """Mask of one iris's pixels (eye 0: points 36-41, eye 1: 42-47).

    Inside the eye outline, within an iris-sized disc (iris diameter ~0.4 of the eye's width,
    11.7 mm of ~29 mm) centred where the eye is darkest along its axis (gaze moves the iris),
    minus the pupil (inner 40% of the radius), the sclera and highlights (more than 15 L* above
    the median) and lashes/shadow (more than 20 L* below it)."""
    idx = list(range(36, 42)) if eye == 0 else list(range(42, 48))
    full = np.zeros(face.image.shape[:2], bool)
    # Work in the eye's bounding window (a few hundred pixels, not the whole crop).
    h, w = full.shape
    x0, y0 = (
        int(np.clip(np.floor(v) - 1, 0, lim)) for v, lim in zip(face.lm[idx].min(0), (w, h), strict=True)
    )
    x1, y1 = (
        int(np.clip(np.ceil(v) + 2, 0, lim)) for v, lim in zip(face.lm[idx].max(0), (w, h), strict=True)
    )
    if x1 <= x0 or y1 <= y0:
        return full
    pts = face.lm[idx] - [x0, y0]
    m = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(m).polygon([(float(x), float(y)) for x, y in pts], fill=1)
    inside = np.asarray(m, dtype=bool)
    if not inside.any():
        return full
    corner0, corner1 = pts[0], pts[3]
    width = float(np.linalg.norm(corner1 - corner0))
    axis = (corner1 - corner0) / max(width, 1e-6)
    yy, xx = np.mgrid[0 : y1 - y0, 0 : x1 - x0].astype(np.float64)
    t = (xx - corner0[0]) * axis[0] + (yy - corner0[1]) * axis[1]  # position along the eye
    L = face.lab[y0:y1, x0:x1, 0]
    # Darkest position along the axis: the iris and pupil, smoothed over a quarter of the width.
    bins = np.clip((t[inside] / max(width, 1e-6) * 16).astype(int), 0, 15)
    sums = np.bincount(bins, L[inside], 16)
    counts = np.bincount(bins, None, 16)
    mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)
    smooth = np.convolve(np.where(np.isfinite(mean), mean, 100.0), np.ones(4) / 4, "same")
    smooth[:3], smooth[-3:] = np.inf, np.inf  # the iris cannot sit in the corners
    centre_t = (np.argmin(smooth) + 0.5) / 16 * width
    centre = corner0 + axis * centre_t
    mid = pts.mean(0)
    # The disc's centre: along the axis at the dark position, across it at the outline's middle.
    centre = centre + ((mid - corner0) - axis * ((mid - corner0) @ axis))
    r = 0.2 * width
    d = np.hypot(xx - centre[0], yy - centre[1])
    cand = inside & (d <= r) & (d >= 0.4 * r)
    if cand.sum() < 3:
        cand = inside & (d <= r)
    if cand.any():
        med = np.median(L[cand])
        full[y0:y1, x0:x1] = cand & (L <= med + 15.0) & (L >= med - 20.0)
    return full


def measure_eye_colour(face: Face) -> Trait:
    """blue / green / grey / hazel / brown / dark from the median iris colour of the eyes that
    can be seen (of both when neither can; the confidence is then near 0)."""
    masks = [iris_mask(face, 0), iris_mask(face, 1)]
    seen = [eye_visibility(face, e, m) for e, m in enumerate(masks)]
    use = [m for m, v in zip(masks, seen, strict=True) if v >= 0.5] or masks
    px = face.lab[np.logical_or.reduce(use)]
    if len(px) == 0:
        return Trait("dark", 0.0, {c: 1.0 / len(IRIS_PROTOTYPES) for c in IRIS_PROTOTYPES})
    scores = _prototype_scores(np.median(px, 0), IRIS_PROTOTYPES, IRIS_SPREAD)
    # About 40 clean iris pixels (two irises ~5 px across) make a steady median.
    return _category(scores, _evidence(len(px), 40.0) * max(seen))


# Hair colour prototypes (L*, a*, b*) of photographed hair (medians over highlights and shadow).
HAIR_PROTOTYPES = {
    "black": (14.0, 1.0, 2.0),
    "brown": (30.0, 7.0, 14.0),
    "blond": (58.0, 5.0, 26.0),
    "red": (38.0, 24.0, 30.0),
    "grey_white": (72.0, 0.0, 3.0),
}
HAIR_SPREAD = (10.0, 6.0, 7.0)


def hair_regions(face: Face) -> np.ndarray:
    """Where hair grows on most heads: a band 0.5-0.75 u above the brows (above the usual
    hairline, below the top of the head) as wide as the brows, and the temples beside the
    outer brows, from the hairline down to eye level."""
    jaw = face.fc([0, 16])
    xl, xr = float(jaw[0, 0]), float(jaw[1, 0])
    top = face.box(xl * 0.8, xr * 0.8, -0.75, -0.5)
    temples = face.box(xl - 0.12, xl + 0.02, -0.45, 0.05) | face.box(xr - 0.02, xr + 0.12, -0.45, 0.05)
    return top | temples


def measure_hair_colour(face: Face) -> Trait:
    """black / brown / blond / red / grey_white from the non-skin pixels in the hair regions;
    bald when most of the band above the forehead is skin-coloured."""
    region = hair_regions(face)
    px = face.lab[region]
    if len(px) == 0:
        return Trait("bald", 0.0, {c: 1.0 / 6 for c in TRAITS["hair_colour"].categories})
    skin = face.skin_like(px)
    hair = px[~skin]
    top = face.box(-0.3, 0.3, -0.75, -0.5)
    top_px = face.lab[top]
    skin_share = float(face.skin_like(top_px).mean()) if len(top_px) else 0.0
    # Bald: the scalp above the forehead is skin; a share over ~0.6 (width 0.08) reads as bald.
    p_bald = _sigmoid((skin_share - 0.6) / 0.08)
    if len(hair) == 0:
        scores = {c: 0.0 for c in HAIR_PROTOTYPES}
    else:
        colour = _prototype_scores(np.median(hair, 0), HAIR_PROTOTYPES, HAIR_SPREAD)
        scores = {c: (1 - p_bald) * s for c, s in colour.items()}
    scores["bald"] = p_bald if len(hair) else 1.0
    total = sum(scores.values())
    scores = {c: s / total for c, s in scores.items()}
    # A cap, a hood or the background above a small bald head covers the band: the colour read
    # is theirs, so the confidence in a hair colour goes with how hair-like those pixels are.
    hair_px = region.copy()
    hair_px[region] = ~skin
    seen = p_bald + (1.0 - p_bald) * hair_visibility(face, hair_px)
    return _category(scores, _evidence(len(px), 200.0) * seen)


# ITA boundaries (degrees) of Chardon et al. (1991): very light > 55 > light > 41 > intermediate
# > 28 > tan > 10 > brown > -30 > dark. Three words: light = very light + light, medium =
# intermediate + tan, dark = brown + dark. Soft edges 4 degrees wide (lighting moves ITA that much).
ITA_LIGHT, ITA_DARK, ITA_SOFT = 41.0, 10.0, 4.0


def ita(lab: np.ndarray) -> float:
    """Individual typology angle in degrees: atan((L* - 50) / b*)."""
    return math.degrees(math.atan2(float(lab[0]) - 50.0, float(lab[2])))


def measure_skin_tone(face: Face) -> Trait:
    """light / medium / dark from the ITA of the cheeks' median colour."""
    angle = ita(face.skin[0])
    p_light = _sigmoid((angle - ITA_LIGHT) / ITA_SOFT)
    p_dark = _sigmoid((ITA_DARK - angle) / ITA_SOFT)
    p_medium = max(0.0, 1.0 - p_light - p_dark)
    total = p_light + p_medium + p_dark
    scores = {"light": p_light / total, "medium": p_medium / total, "dark": p_dark / total}
    return _category(scores, _evidence(face.u, 30.0))


def smile_features(face: Face) -> tuple[float, float]:
    """(corner lift, mouth width / eye distance). Lift: how far the mouth corners (48, 54) sit
    above the inner lips' centre (62, 66), per mouth width; about 0 for a neutral mouth."""
    p = face.fc([48, 54, 62, 66])
    width = abs(p[1, 0] - p[0, 0])
    lift = (p[2:, 1].mean() - p[:2, 1].mean()) / max(width, 1e-6)
    eyes = abs(face.fc(list(range(42, 48)))[:, 0].mean() - face.fc(list(range(36, 42)))[:, 0].mean())
    return float(lift), float(width / max(eyes, 1e-6))


def measure_smile(face: Face) -> Trait:
    """0..1: raised mouth corners (lift 0.06 per mouth width is the midpoint) and a mouth wider
    than the eye distance (neutral mouths are about as wide as the pupils are apart)."""
    lift, wide = smile_features(face)
    value = _sigmoid((lift - 0.06) / 0.025 + (wide - 1.0) / 0.08)
    return Trait(value, abs(2 * value - 1) * _evidence(face.u, 30.0) * mouth_visibility(face))


def measure_mouth_open(face: Face) -> Trait:
    """0..1: the inner-lip gap (61-67, 62-66, 63-65) per mouth width; 0.35 or more is 1."""
    p = face.fc([48, 54, 61, 62, 63, 65, 66, 67])
    width = abs(p[1, 0] - p[0, 0])
    gap = np.mean([p[7, 1] - p[2, 1], p[6, 1] - p[3, 1], p[5, 1] - p[4, 1]])
    value = float(np.clip(gap / max(width, 1e-6) / 0.35, 0.0, 1.0))
    return Trait(value, _evidence(face.u, 30.0) * mouth_visibility(face))


def _row_edge_strength(L: np.ndarray, mask: np.ndarray, face: Face) -> float:
    """Strongest face-horizontal edge in a region: the mean |dL/dy| along rows of the face frame."""
    gy, gx = np.gradient(L)
    g = np.abs(gx * face.ey[0] + gy * face.ey[1])  # change across the face's rows
    X, Y = face.grid
    if mask.sum() < 4:
        return 0.0
    rows = np.round(Y[mask] * face.u).astype(int)
    rows -= rows.min()
    sums = np.bincount(rows, g[mask])
    counts = np.bincount(rows)
    keep = counts >= max(2, 0.5 * counts.max())
    return float((sums[keep] / counts[keep]).max()) if keep.any() else 0.0


def bridge_region(face: Face) -> np.ndarray:
    """The nose bridge between the eyes, from the brows' line to below the inner eye corners."""
    return face.box(-0.07, 0.07, 0.0, 0.22)


def measure_eyeglasses(face: Face) -> Trait:
    """0..1: a frame's bridge is a straight edge across the nose between the eyes, from top to
    bottom of the bridge's run; skin there only shades smoothly. The strongest row-mean edge (L*
    per pixel, scaled to a 256-pixel face) over 2.5 is the midpoint."""
    strength = _row_edge_strength(face.lab[..., 0], bridge_region(face), face) * face.u / 128.0
    value = _sigmoid((strength - 2.5) / 0.6)
    return Trait(value, abs(2 * value - 1) * _evidence(face.u, 40.0))


def beard_region(face: Face) -> np.ndarray:
    """Chin and jaw below the lower lip (points 55-59), inside the jaw line (points 4-12) pulled
    20% towards the chin's centre: dlib's jaw points sit on the outline, where the neck's shadow
    starts, and the lip's own shadow is the region's top edge."""
    jaw = face.lm[4:13]
    centre = face.lm[[8, 57]].mean(0)
    pts = np.concatenate([centre + 0.8 * (jaw - centre), face.lm[[55, 56, 57, 58, 59]]])
    return face.polygon(pts)


def measure_beard(face: Face) -> Trait:
    """0..1: the share of chin/jaw pixels that are not skin-coloured and darker than the cheeks
    (stubble and beards are darker than the skin they grow on): 0.1 -> 0, 0.6 or more -> 1."""
    region = beard_region(face)
    px = face.lab[region]
    if len(px) == 0:
        return Trait(0.0, 0.0)
    dark = (~face.skin_like(px)) & (px[:, 0] < face.skin[0][0] - 10.0)
    share = float(dark.mean())
    value = float(np.clip((share - 0.1) / 0.5, 0.0, 1.0))
    # A hand over the mouth and chin is skin-coloured: "no beard", unless the mouth shows.
    return Trait(value, _evidence(len(px), 300.0) * mouth_visibility(face))


MEASURES = {
    "face_shape": measure_face_shape,
    "eye_colour": measure_eye_colour,
    "hair_colour": measure_hair_colour,
    "skin_tone": measure_skin_tone,
    "smile": measure_smile,
    "mouth_open": measure_mouth_open,
    "eyeglasses": measure_eyeglasses,
    "beard": measure_beard,
}


# --------------------------------------------------------------------------------------------
# Entry points


def overlay(image: np.ndarray, m: FaceMeasurement) -> np.ndarray:
    """The image with the measured regions tinted and the 68 landmarks dotted, for checking by eye:
    hair regions magenta (non-skin pixels, the ones measured, stronger), irises cyan, cheeks
    yellow, nose bridge blue, beard region green."""
    out = np.asarray(image, dtype=np.float64).copy()
    if m.landmarks is None:
        return np.asarray(image, dtype=np.uint8).copy()
    face = Face(image, m.landmarks)
    hair = hair_regions(face)
    tints = [
        (hair & ~face.skin_like(face.lab), (255, 0, 255), 0.6),
        (hair & face.skin_like(face.lab), (255, 0, 255), 0.25),
        (iris_mask(face, 0) | iris_mask(face, 1), (0, 255, 255), 0.6),
        (face.cheeks, (255, 255, 0), 0.4),
        (bridge_region(face), (0, 80, 255), 0.4),
        (beard_region(face), (0, 255, 0), 0.3),
    ]
    for mask, colour, alpha in tints:
        out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour, dtype=np.float64)
    pil = Image.fromarray(np.round(out).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    r = max(1.0, face.u / 120)
    for x, y in m.landmarks:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 0, 0))
    return np.asarray(pil).copy()


def too_small_reason(height: int, width: int) -> str:
    return (
        f"image is {width}x{height}; faces can be measured on images of at least {MIN_SIZE}x{MIN_SIZE} "
        f"(use a model or photo of {MIN_SIZE} pixels or more)"
    )


def measure_face(image: np.ndarray) -> FaceMeasurement:
    """All traits of the most confident face in a uint8 (H, W, 3) RGB image.

    No face found -> face_found False, traits {}, reason "no face found": never a guess.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"measure_face needs a uint8 (H, W, 3) RGB image, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIZE:
        return FaceMeasurement(False, {}, None, too_small_reason(h, w))
    lm = landmarks_68(image)
    if lm is None:
        return FaceMeasurement(False, {}, None, "no face found")
    u = float((lm[8] - lm[17:27].mean(0)) @ _down(lm))
    if not u >= MIN_FACE_U:  # also NaN: a chin above the brows is no face to measure
        return FaceMeasurement(
            False, {}, None, f"no face found (the landmarks span {u:.0f} pixels brow to chin)"
        )
    face = Face(*_measuring_crop(image, lm))
    return FaceMeasurement(True, {name: fn(face) for name, fn in MEASURES.items()}, lm)


# dlib finds faces from about 40 pixels wide (80 with upsampling halved); below 16 pixels from brows
# to chin, or with the chin above the brows, the points are not a face's.
MIN_FACE_U = 16.0


def _down(lm: np.ndarray) -> np.ndarray:
    """Unit vector from the eye line towards the chin (the face frame's y axis)."""
    ex = lm[42:48].mean(0) - lm[36:42].mean(0)
    ex = ex / max(float(np.linalg.norm(ex)), 1e-9)
    return np.array([-ex[1], ex[0]])


# Pixels per brow-to-chin unit the regions are measured at: an iris is then ~13 pixels across,
# plenty for a median colour, and a 1024x1024 face costs what a 350x350 one does.
MEASURE_U = 160.0


def _measuring_crop(image: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The part of the image the regions can reach (face frame X -1..1, Y -1..1.2), box-filtered
    down to MEASURE_U pixels per unit when larger (box averages keep colour medians), and the
    landmarks in its pixels. Landmarks themselves were found at full resolution."""
    f = Face(image[:1, :1], lm)  # the frame only; no pixels needed
    corners = np.array([[x, y] for x in (-1.0, 1.0) for y in (-1.0, 1.2)]) * f.u
    pts = f.origin + corners[:, :1] * f.ex + corners[:, 1:] * f.ey
    h, w = image.shape[:2]
    x0, y0 = (int(max(0, np.floor(v))) for v in pts.min(0))
    x1, y1 = int(min(w, np.ceil(pts[:, 0].max()))), int(min(h, np.ceil(pts[:, 1].max())))
    crop = image[y0:y1, x0:x1]
    lm = lm.astype(np.float64) - [x0, y0]
    factor = f.u / MEASURE_U
    if factor > 1.0:
        size = (max(1, round(crop.shape[1] / factor)), max(1, round(crop.shape[0] / factor)))
        crop = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize(size, Image.BOX))
        scale = np.array([crop.shape[1] / (x1 - x0), crop.shape[0] / (y1 - y0)])
        lm = (lm + 0.5) * scale - 0.5  # pixel centres: x_small + 0.5 = (x + 0.5) * scale
    return crop, lm


def measure_faces(images: np.ndarray | torch.Tensor) -> list[FaceMeasurement]:
    """measure_face for each image of a uint8 batch, NHWC or NCHW (numpy or torch)."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(
            f"measure_faces needs a uint8 (N, H, W, 3) or (N, 3, H, W) batch, got {images.shape}"
        )
    if images.shape[-1] != 3 and images.shape[1] == 3:
        images = images.transpose(0, 2, 3, 1)
    return [measure_face(np.ascontiguousarray(im)) for im in images]

"""`progan prepare --portraits N DEST`: aligned colour portraits whose truth is known.

No labelled face data set can be downloaded here, so this makes one from the one real colour
portrait that ships offline (scikit-image's astronaut: NASA's portrait of Eileen Collins,
public domain), aligned the CelebA-HQ way (`progan.data.align`). Every image gets
continuous, independently drawn attributes, painted with landmark-guided region rules that are
this module's own (not `progan.faces.measure`'s):

- hair colour: CIELAB lightness, chroma and hue drawn inside one of five disjoint boxes (black,
  brown, blond, red, grey), painted over the hair with its texture kept;
- iris colour: likewise in five boxes (blue, green, grey, hazel, brown);
- face width: the picture stretched horizontally about the face's centre by 0.80-0.90 (long),
  0.95-1.05 (neither) or 1.12-1.25 (round);
- smile amount: the mouth corners moved by a smooth local warp, from 0.15-0.22 mouth widths
  down (amount 0-0.3: not smiling) to 0.05 down - 0.05 up (amount 0.7-1: smiling);
- glasses and a beard, each on or off (with continuous frame darkness / beard colour);
- nuisances: background colour, rotation (+-6 deg), scale (+-5%), shift (+-3%), white balance
  (per-channel gains +-6%) and skin lightness (+-8 L*).

The bands leave gaps between the categories, so that a label is a fact about the pixels rather
than a coin flip at a threshold. The truth is stored as the store's labels (multi-hot,
`LABEL_NAMES`) and, with every continuous value, in `DEST/portraits.json`.

Speed: the regions are found once on the base portrait; each image is a few vectorised colour
blends at twice the output size, one batched `grid_sample` warp and a 2x2 box reduction
(a few ms per 64x64 image on a CPU core).
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from progan.data.store import Store, check_destination, check_resolution, write_store
from progan.errors import UserError

HAIR = ("black", "brown", "blond", "red", "grey")
IRIS = ("blue", "green", "grey", "hazel", "brown")
LABEL_NAMES = (
    [f"{c}_hair" for c in HAIR]
    + [f"{c}_eyes" for c in IRIS]
    + ["long_face", "round_face", "smiling", "eyeglasses", "beard"]
)
SIDECAR = "portraits.json"

# (L*, C*, hue deg) ranges per category: disjoint boxes, chosen by eye from portrait photos.
HAIR_LCH = {
    "black": ((8, 16), (0, 5), (40, 80)),
    "brown": ((24, 34), (14, 22), (55, 70)),
    "blond": ((62, 74), (24, 34), (74, 86)),
    "red": ((36, 48), (40, 52), (38, 50)),
    "grey": ((70, 84), (0, 5), (60, 100)),
}
IRIS_LCH = {
    "blue": ((50, 62), (24, 34), (245, 265)),
    "green": ((45, 56), (26, 36), (125, 145)),
    "grey": ((55, 66), (0, 4), (200, 260)),
    "hazel": ((40, 50), (28, 38), (70, 82)),
    "brown": ((20, 28), (14, 22), (45, 60)),
}
WIDTH_BANDS = {"long": (0.80, 0.90), "neither": (0.95, 1.05), "round": (1.12, 1.25)}
SMILE_BANDS = {"not": (0.0, 0.3), "smiling": (0.7, 1.0)}
# Mouth-corner shift in mouth widths (down > 0) at smile amount 0 and 1.
CORNER_DOWN_AT_0, CORNER_DOWN_AT_1 = 0.22, -0.05
BASE_SIZE = 256  # the aligned portrait the regions are found on


@dataclass(frozen=True)
class Base:
    """The base portrait at the working size and its regions (soft masks in [0, 1])."""

    rgb: np.ndarray  # float32 (W, W, 3) in [0, 1]
    landmarks: np.ndarray  # (68, 2) at the working size
    hair: np.ndarray
    iris: np.ndarray
    skin: np.ndarray
    background: np.ndarray
    beard: np.ndarray
    glasses: np.ndarray


def _soft(mask: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return np.clip(gaussian_filter(mask.astype(np.float32), sigma), 0.0, 1.0)


def _polygon(points: np.ndarray, size: int, scale: int = 1) -> np.ndarray:
    from PIL import Image, ImageDraw

    m = Image.new("L", (size * scale, size * scale), 0)
    ImageDraw.Draw(m).polygon([tuple(p) for p in points * scale], fill=255)
    if scale > 1:
        m = m.resize((size, size), Image.BOX)
    return np.asarray(m, dtype=np.float32) / 255.0


def regions(rgb: np.ndarray, lm: np.ndarray) -> dict[str, np.ndarray]:
    """Hard region masks of an aligned portrait (uint8 (W, W, 3)) from its 68 landmarks.

    - background: pale, unsaturated pixels (L* > 55, C* < 14) connected to the top or side
      borders above the chin, the astronaut's plain studio wall;
    - face: the jaw line closed by the brows lifted by 0.45 eye distances (the forehead);
    - skin: the face, within 12 a*b* units of the cheek's median colour;
    - hair: above jaw landmark 3, outside the face, not background, and below the eye line not
      skin-coloured (the ears); the largest connected piece;
    - iris: each eye's outline, within 0.22 eye distances of the eye's centre, darker than
      the outline's 90th percentile of lightness (only the palest corners of the white stay);
    - beard: jaw points 4-12 closed by the lower lip (landmarks 54-59, 48): chin and lower jaw.
    """
    from scipy.ndimage import binary_opening, label
    from skimage.color import rgb2lab

    size = rgb.shape[0]
    lab = rgb2lab(rgb)
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    yy, xx = np.mgrid[0:size, 0:size]
    d = float(lm[45, 0] - lm[36, 0])  # outer eye corners: everything scales with the face
    chin_y = lm[8, 1]

    pale = (lab[..., 0] > 55) & (chroma < 14) & (yy < chin_y)
    lab_cc, _ = label(pale)
    touching = set(np.unique(lab_cc[0, :])) | set(np.unique(lab_cc[:, 0])) | set(np.unique(lab_cc[:, -1]))
    touching.discard(0)
    background = np.isin(lab_cc, list(touching))

    brows = lm[26:16:-1].copy()
    brows[:, 1] -= 0.45 * d
    face = _polygon(np.concatenate([lm[0:17], brows]), size) > 0.5
    y, x = int(lm[29, 1]), int(lm[31, 0])
    r = max(1, round(0.04 * d))
    cheek = lab[y - r : y + r + 1, x - round(0.22 * d) : x - round(0.06 * d)].reshape(-1, 3)
    skin_ab = np.median(cheek, 0)
    skinlike = np.hypot(lab[..., 1] - skin_ab[1], lab[..., 2] - skin_ab[2]) < 12
    skin = face & skinlike

    # Above the eye line the hair is blond-brown close to the skin's a*b*: only the face outline
    # separates them there; below it the ears are skin-coloured and the hair is not.
    hair = (yy < lm[3, 1]) & ~face & ~background & ~((yy > lm[0, 1] - 0.1 * d) & skinlike)
    hair = binary_opening(hair, iterations=1)
    pieces, n = label(hair)
    if n:
        hair = pieces == (1 + int(np.argmax(np.bincount(pieces.ravel())[1:])))

    iris = np.zeros((size, size), bool)
    for idx in (slice(36, 42), slice(42, 48)):
        outline = _polygon(lm[idx], size, scale=4) > 0.3
        c = lm[idx].mean(0)
        # Larger than the astronaut's own iris: 0.16 eye distances and darker than the median
        # gave 45 pixels at 128 (about 3 per eye at 64), and generators trained 85 minutes at 64x64
        # drew some eye colours far from the data's rates (blue 0.07x at 388 kimg, grey 0.22x at
        # 544 kimg). This rule paints 81 pixels at 128, 1.8x as many.
        disc = np.hypot(xx - c[0], yy - c[1]) < 0.22 * d
        L = lab[..., 0]
        iris |= outline & disc & (L < np.quantile(L[outline], 0.9))

    # Under the mouth only (jaw points 4-12 closed by the lower lip): a beard over the upper lip
    # and cheeks hid the face from dlib's detector in every try at 64 and 128 pixels.
    beard = _polygon(np.concatenate([lm[4:13], lm[[54, 55, 56, 57, 58, 59, 48]]]), size) > 0.5
    return {"background": background, "face": face, "skin": skin, "hair": hair, "iris": iris, "beard": beard}


def glasses_mask(lm: np.ndarray, size: int) -> np.ndarray:
    """Soft mask of two elliptic rims around the eyes and a bridge across the nose."""
    from PIL import Image, ImageDraw

    s = 4
    eye_w = float(np.linalg.norm(lm[39] - lm[36]))
    width = max(1, round(eye_w * 0.16 * s))
    m = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(m)
    centres = []
    for idx in (slice(36, 42), slice(42, 48)):
        c = lm[idx].mean(0) * s
        rx, ry = eye_w * 0.85 * s, eye_w * 0.62 * s
        draw.ellipse([c[0] - rx, c[1] - ry, c[0] + rx, c[1] + ry], outline=255, width=width)
        centres.append(c)
    y = (centres[0][1] + centres[1][1]) / 2 - eye_w * 0.2 * s
    draw.line(
        [(centres[0][0] + eye_w * 0.85 * s, y), (centres[1][0] - eye_w * 0.85 * s, y)], fill=255, width=width
    )
    return np.asarray(m.resize((size, size), Image.BOX), dtype=np.float32) / 255.0


@functools.lru_cache(maxsize=4)
def base_portrait(work: int) -> Base:
    """The astronaut, aligned at `work` pixels, with its regions (landmarks found once, at 256)."""
    from PIL import Image

    from progan.data.align import align_face, landmarks_from_68
    from progan.landmarks import landmarks_68

    try:
        from skimage.data import astronaut
    except ImportError as e:
        raise UserError("--portraits needs scikit-image: pip install 'progan[faces]'") from e
    photo = astronaut()
    lm = landmarks_68(photo)
    if lm is None:
        raise UserError("dlib found no face in skimage.data.astronaut(); check the dlib install")
    big = np.asarray(align_face(Image.fromarray(photo), landmarks_from_68(lm), BASE_SIZE))
    lm_big = landmarks_68(big)
    if lm_big is None:
        raise UserError("dlib found no face in the aligned astronaut; check the dlib install")
    rgb = big if work == BASE_SIZE else np.asarray(Image.fromarray(big).resize((work, work), Image.LANCZOS))
    lm_w = lm_big.astype(np.float64) * work / BASE_SIZE
    reg = regions(rgb, lm_w)
    soft = max(0.5, work / 256)
    return Base(
        rgb=rgb.astype(np.float32) / 255.0,
        landmarks=lm_w,
        hair=_soft(reg["hair"], soft),
        iris=_soft(reg["iris"], 0.5 * soft),
        skin=_soft(reg["skin"], soft),
        background=_soft(reg["background"], soft),
        beard=_soft(reg["beard"], 1.5 * soft),
        glasses=glasses_mask(lm_w, work),
    )


def _uniform(rng: np.random.Generator, box: tuple[float, float], n: int) -> np.ndarray:
    return rng.uniform(box[0], box[1], n)


def lch_in_box(rng: np.random.Generator, box: tuple) -> list[float]:
    """A colour drawn uniformly in a ((L0, L1), (C0, C1), (h0, h1)) box: [L, C, h]."""
    return [float(rng.uniform(lo, hi)) for lo, hi in box]


def draw_truth(n: int, seed: int) -> list[dict]:
    """n independent draws of every attribute and nuisance (continuous values and categories)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t: dict = {}
        for part, names, boxes in (("hair", HAIR, HAIR_LCH), ("iris", IRIS, IRIS_LCH)):
            cat = names[rng.integers(len(names))]
            t[part] = cat
            t[f"{part}_lch"] = lch_in_box(rng, boxes[cat])
        shape = list(WIDTH_BANDS)[rng.integers(3)]
        t["face"] = shape
        t["width"] = float(rng.uniform(*WIDTH_BANDS[shape]))
        smiling = bool(rng.integers(2))
        t["smiling"] = smiling
        t["smile"] = float(rng.uniform(*SMILE_BANDS["smiling" if smiling else "not"]))
        t["eyeglasses"] = bool(rng.integers(2))
        t["glasses_lightness"] = float(rng.uniform(5, 30))
        t["beard"] = bool(rng.integers(2))
        t["beard_lightness"] = float(rng.uniform(15, 32))
        t["background_rgb"] = [float(v) for v in rng.uniform(0.25, 0.95, 3)]
        t["rotation_deg"] = float(rng.uniform(-6, 6))
        t["scale"] = float(rng.uniform(0.95, 1.05))
        t["shift"] = [float(v) for v in rng.uniform(-0.03, 0.03, 2)]
        t["white_balance"] = [float(v) for v in rng.uniform(0.94, 1.06, 3)]
        t["skin_dL"] = float(rng.uniform(-8, 8))
        t["noise_seed"] = int(rng.integers(2**31))
        out.append(t)
    return out


def labels_of(truth: list[dict]) -> np.ndarray:
    """Multi-hot float32 (N, len(LABEL_NAMES)) from drawn truth."""
    y = np.zeros((len(truth), len(LABEL_NAMES)), np.float32)
    col = {n: i for i, n in enumerate(LABEL_NAMES)}
    for i, t in enumerate(truth):
        y[i, col[f"{t['hair']}_hair"]] = 1
        y[i, col[f"{t['iris']}_eyes"]] = 1
        if t["face"] != "neither":
            y[i, col[f"{t['face']}_face"]] = 1
        y[i, col["smiling"]] = t["smiling"]
        y[i, col["eyeglasses"]] = t["eyeglasses"]
        y[i, col["beard"]] = t["beard"]
    return y


def _lch_to_lab(lch: np.ndarray) -> np.ndarray:
    h = np.deg2rad(lch[..., 2])
    return np.stack([lch[..., 0], lch[..., 1] * np.cos(h), lch[..., 1] * np.sin(h)], -1)


def _repaint(
    canvas: np.ndarray,
    base_lab: np.ndarray,
    mask: np.ndarray,
    target_lab: np.ndarray,
    texture: tuple[float, float],
    rows: np.ndarray | None = None,
) -> None:
    """Blend, in place, the masked pixels of every image towards its target colour, keeping
    `texture` (lightness, chroma) of the base's variation about its masked median."""
    from skimage.color import lab2rgb

    idx = np.nonzero(mask > 0.02)
    if rows is None:
        rows = np.arange(len(canvas))
    if not len(rows) or not len(idx[0]):
        return
    px = base_lab[idx]  # (P, 3)
    med = np.median(base_lab[mask > 0.5], 0) if (mask > 0.5).any() else px.mean(0)
    dev = (px - med) * np.array([texture[0], texture[1], texture[1]])
    lab = target_lab[rows][:, None, :] + dev[None]  # (n, P, 3)
    lab[..., 0] = np.clip(lab[..., 0], 0, 100)
    rgb = lab2rgb(lab).astype(np.float32)
    a = mask[idx][None, :, None]
    sub = canvas[rows][:, idx[0], idx[1]]
    canvas[rows[:, None], idx[0][None], idx[1][None]] = sub * (1 - a) + rgb * a


def render(truth: list[dict], resolution: int) -> np.ndarray:
    """uint8 (N, 3, R, R) portraits for the drawn truth (painted at 2R, box-reduced to R)."""
    import torch
    import torch.nn.functional as F
    from skimage.color import rgb2lab

    work = max(2 * resolution, 64)
    base = base_portrait(work)
    base_lab = rgb2lab(base.rgb)
    lm = base.landmarks
    n = len(truth)
    canvas = np.repeat(base.rgb[None], n, 0)

    # Skin lightness, then background: multiplicative, keeping the wall's shading.
    skin_lab = base_lab[base.skin > 0.5]
    skin_med = np.median(skin_lab, 0)
    target = np.repeat(skin_med[None], n, 0)
    target[:, 0] += [t["skin_dL"] for t in truth]
    _repaint(canvas, base_lab, base.skin, target, (1.0, 1.0))
    wall = base.rgb[base.background > 0.5].mean(0)
    bg = np.array([t["background_rgb"] for t in truth], np.float32)
    shade = (base.rgb / wall)[None]
    a = base.background[None, ..., None]
    canvas = canvas * (1 - a) + np.clip(bg[:, None, None, :] * shade, 0, 1) * a

    hair_lab = _lch_to_lab(np.array([t["hair_lch"] for t in truth]))
    _repaint(canvas, base_lab, base.hair, hair_lab, (0.6, 0.3))
    iris_lab = _lch_to_lab(np.array([t["iris_lch"] for t in truth]))
    _repaint(canvas, base_lab, base.iris, iris_lab, (0.5, 0.2))

    bearded = np.array([i for i, t in enumerate(truth) if t["beard"]], dtype=np.int64)
    if len(bearded):
        from skimage.color import lab2rgb

        # Beard colour: the hair's hue and chroma, darker; grainy (per-pixel lightness noise).
        beard_lab = hair_lab.copy()
        beard_lab[:, 0] = [t["beard_lightness"] for t in truth]
        beard_lab[:, 1:] *= 0.7
        idx = np.nonzero(base.beard > 0.02)
        grain = np.stack(
            [np.random.default_rng(truth[i]["noise_seed"]).normal(0, 6, len(idx[0])) for i in bearded]
        )
        lab = np.repeat(beard_lab[bearded][:, None, :], len(idx[0]), 1)
        lab[..., 0] = np.clip(lab[..., 0] + grain, 0, 100)
        rgb = lab2rgb(lab).astype(np.float32)
        alpha = 0.85 * base.beard[idx][None, :, None]
        sub = canvas[bearded][:, idx[0], idx[1]]
        canvas[bearded[:, None], idx[0][None], idx[1][None]] = sub * (1 - alpha) + rgb * alpha

    glassed = np.array([i for i, t in enumerate(truth) if t["eyeglasses"]], dtype=np.int64)
    if len(glassed):
        frame = np.array([truth[i]["glasses_lightness"] / 100.0 for i in glassed], np.float32)
        a = base.glasses[None, ..., None]
        canvas[glassed] = canvas[glassed] * (1 - a) + frame[:, None, None, None] * a

    # One backward warp per image: output -> similarity (rotation, scale, shift about the
    # centre) -> horizontal stretch about the face's centre -> mouth-corner warp.
    c = (work - 1) / 2
    face_cx = float(lm[:, 0].mean())
    mouth_w = float(np.linalg.norm(lm[54] - lm[48]))
    yy, xx = np.mgrid[0:work, 0:work].astype(np.float64)
    grids = np.empty((n, work, work, 2), np.float32)
    for i, t in enumerate(truth):
        th = math.radians(t["rotation_deg"])
        s = t["scale"]
        dx, dy = (np.array(t["shift"]) * work).tolist()
        u, v = xx - c - dx, yy - c - dy
        x1 = (math.cos(th) * u + math.sin(th) * v) / s + c
        y1 = (-math.sin(th) * u + math.cos(th) * v) / s + c
        x2 = face_cx + (x1 - face_cx) / t["width"]
        down = CORNER_DOWN_AT_0 + (CORNER_DOWN_AT_1 - CORNER_DOWN_AT_0) * t["smile"]
        bump = np.zeros_like(x2)
        for corner in (lm[48], lm[54]):
            bump += np.exp(-((x2 - corner[0]) ** 2 + (y1 - corner[1]) ** 2) / (2 * (0.28 * mouth_w) ** 2))
        y2 = y1 - down * mouth_w * bump
        grids[i, ..., 0] = (x2 + 0.5) / work * 2 - 1
        grids[i, ..., 1] = (y2 + 0.5) / work * 2 - 1
    x = torch.from_numpy(np.ascontiguousarray(canvas.transpose(0, 3, 1, 2)))
    warped = F.grid_sample(
        x, torch.from_numpy(grids), mode="bilinear", padding_mode="border", align_corners=False
    )
    wb = torch.tensor([t["white_balance"] for t in truth], dtype=torch.float32)[:, :, None, None]
    warped = (warped * wb).clamp(0, 1)
    out = F.avg_pool2d(warped, work // resolution) if work != resolution else warped
    return (out * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).numpy()


def make_portraits(
    count: int,
    dest: str | os.PathLike,
    resolution: int = 64,
    seed: int = 0,
    overwrite: bool = False,
    chunk: int = 256,
    progress: bool = True,
) -> Store:
    """Write `count` portraits with their truth: a store (labels) and DEST/portraits.json."""
    check_resolution(resolution)
    if count < 1:
        raise UserError(f"--portraits {count}: give at least 1 image")
    dest = Path(dest)
    check_destination(dest, overwrite)
    truth = draw_truth(count, seed)
    parts = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=count, unit="img", desc="portraits")
    for i in range(0, count, chunk):
        parts.append(render(truth[i : i + chunk], resolution))
        if bar:
            bar.update(len(parts[-1]))
    if bar:
        bar.close()
    images = np.concatenate(parts)
    store = write_store(
        dest, images, labels=labels_of(truth), label_names=LABEL_NAMES,
        source=f"progan.data.portraits: skimage.data.astronaut(), {count} painted variants, seed {seed}",
        overwrite=overwrite,
        extra={"portraits": {"seed": seed, "sidecar": SIDECAR}},
    )  # fmt: skip
    side = {"format": "progan-portraits", "seed": seed, "resolution": resolution, "label_names": LABEL_NAMES,
            "bands": {"hair_lch": HAIR_LCH, "iris_lch": IRIS_LCH, "width": WIDTH_BANDS, "smile": SMILE_BANDS},
            "images": truth}  # fmt: skip
    tmp = store.path / (SIDECAR + ".tmp")
    tmp.write_text(json.dumps(side))
    os.replace(tmp, store.path / SIDECAR)
    return store


def read_truth(store_path: str | os.PathLike) -> list[dict]:
    """The per-image continuous truth of a portraits store (its sidecar)."""
    path = Path(store_path) / SIDECAR
    try:
        data = json.loads(path.read_text())
        return list(data["images"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(
            f"{path} is not a portraits sidecar ({e}); make the store with prepare --portraits"
        ) from e

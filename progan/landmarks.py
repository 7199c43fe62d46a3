"""dlib's frontal face detector and 68-point landmarks: the one place that finds and loads them.

A neutral helper beside `progan.images`: face measurements (`progan.faces.measure`) and
`prepare --align-faces` (`progan.data.align`) both use it, so the dataset tool depends on no
feature. The model file (about 100 MB) is loaded once per process.

Detection speed: dlib's HOG detector scans an image pyramid with an 80x80 window, so its cost
grows with the pixel count while its smallest findable face is about 80 pixels wide. Large
images are therefore searched at a reduced size first (a face that fills a generated 1024x1024
image is still 200+ pixels wide at 384), small ones with dlib's 2x upsampling, and the 68 points
are then predicted on the full-resolution image.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from progan.errors import UserError, install_hint

DLIB_MODEL = "shape_predictor_68_face_landmarks.dat"
DLIB_HINT = (
    "install the optional face extra with dlib-bin and face-recognition-models "
    f"({install_hint('faces')}), or Debian's libdlib-data with dlib, or point "
    "PROGAN_DLIB_LANDMARKS at shape_predictor_68_face_landmarks.dat"
)
# First search size for large images, and the size small images are upsampled towards.
FAST_SIDE = 384
SMALL_SIDE = 256


def find_dlib_model() -> Path | None:
    candidates = []
    if os.environ.get("PROGAN_DLIB_LANDMARKS"):
        candidates.append(Path(os.environ["PROGAN_DLIB_LANDMARKS"]))
    # face-recognition-models' __init__ imports pkg_resources, which new setuptools lacks: find the
    # package's folder without importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidates.append(Path(loc) / "models" / DLIB_MODEL)
    candidates += [Path("/usr/share/dlib") / DLIB_MODEL, Path("/usr/local/share/dlib") / DLIB_MODEL]
    return next((c for c in candidates if c.is_file()), None)


def dlib_available() -> bool:
    return importlib.util.find_spec("dlib") is not None and find_dlib_model() is not None


def load_dlib(model: str | None = None, purpose: str = "face landmarks"):
    """(dlib module, HOG face detector, 68-point shape predictor), loaded once per model path.

    `purpose` names the feature in the error message when dlib or its model is missing.
    """
    key = (model, os.environ.get("PROGAN_DLIB_LANDMARKS"))
    if key in _LOADED:  # measuring a batch calls this per image: skip the file-system search
        return _LOADED[key]
    try:
        import dlib  # noqa: F401
    except ImportError as e:
        raise UserError(f"{purpose} need dlib; {DLIB_HINT}") from e
    path = Path(model) if model else find_dlib_model()
    if model and not path.is_file():
        raise UserError(f"{purpose}: {model} is not a file; point it at dlib's {DLIB_MODEL}")
    if path is None or not path.is_file():
        raise UserError(f"{purpose} need dlib's {DLIB_MODEL}; {DLIB_HINT}")
    _LOADED[key] = _load(str(path.resolve()))
    return _LOADED[key]


_LOADED: dict = {}


@functools.lru_cache(maxsize=4)
def _load(path: str):
    import dlib

    return dlib, dlib.get_frontal_face_detector(), dlib.shape_predictor(path)


def _resize(rgb: np.ndarray, scale: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    size = (max(1, round(w / scale)), max(1, round(h / scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR, reducing_gap=2.0))


def _detect(detector, rgb: np.ndarray, scale: float, upsample: int):
    """Faces as (left, top, right, bottom) in full-resolution pixels, most confident first.

    Ranked by the detector's score, not by size: a false detection (a collar, a helmet ring) is
    often as large as the face but scores lower.
    """
    small = rgb if scale == 1.0 else _resize(rgb, scale)
    rects, scores, _ = detector.run(np.ascontiguousarray(small), upsample, 0.0)
    found = sorted(zip(scores, rects, strict=True), key=lambda sr: -sr[0])
    return [(r.left() * scale, r.top() * scale, r.right() * scale, r.bottom() * scale) for _, r in found]


def detect_face(rgb: np.ndarray, model: str | None = None, purpose: str = "face landmarks"):
    """The most confident face's box (left, top, right, bottom) in pixels, or None when dlib finds none."""
    _, detector, _ = load_dlib(model, purpose)
    side = max(rgb.shape[:2])
    if side > FAST_SIDE:
        boxes = _detect(detector, rgb, side / FAST_SIDE, 0)
        if boxes:
            return boxes[0]
        # A small face in a large photo: search again at up to 1024 pixels, upsampled below 640.
        scale = max(1.0, side / 1024)
        boxes = _detect(detector, rgb, scale, 1 if side / scale < 640 else 0)
    else:
        # 64 -> 256, 128 -> 256, 256 -> 256: dlib's own pyramid upsampling, 2x per step.
        upsample = max(0, math.ceil(math.log2(SMALL_SIDE / side)))
        boxes = _detect(detector, rgb, 1.0, upsample) or _detect(detector, rgb, 1.0, upsample + 1)
    return boxes[0] if boxes else None


def landmarks_68(rgb: np.ndarray, model: str | None = None, purpose: str = "face landmarks"):
    """The most confident face's 68 iBUG/dlib landmarks as float32 (68, 2) x, y pixels, or None.

    `rgb` is uint8 (H, W, 3). Points follow the iBUG 300-W order: jaw 0-16, brows 17-26,
    nose 27-35, eyes 36-47 (the image's left eye first), lips 48-67.
    """
    dlib, _, predictor = load_dlib(model, purpose)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    box = detect_face(rgb, model, purpose)
    if box is None:
        return None
    rect = dlib.rectangle(*(round(v) for v in box))
    shape = predictor(rgb, rect)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

"""Face alignment the CelebA-HQ way, and the encrypted CelebA-HQ deltas.

Geometry (Karras et al. 2018, appendix C; the official dataset tool's `create_celebahq`): from five
landmarks (left eye, right eye, nose, left and right mouth corner, in image coordinates) take an
oriented square whose x axis runs along the eye line corrected by the eye-to-mouth direction,
with half-side max(2 * eye distance, 1.8 * eye-to-mouth distance), centred a tenth of the way
from the eyes to the mouth. The image is shrunk first when the square is much larger than the
output, cropped to the square plus a border, upsampled when the square is smaller than the output,
reflect-padded with a blur that grows towards the padded edge where the square leaves the image,
then the square is resampled to 4x the output side (bilinear) and reduced with an antialiasing
filter (Lanczos) to the output side.

Landmarks come from CelebA's `list_landmarks_celeba.txt` or, for any photo, from dlib's 68-point
shape predictor (optional extra: `dlib-bin` + `face-recognition-models`, or Debian's
`libdlib-data`).

Deltas: the published CelebA-HQ deltas are per-image bz2-compressed uint8 (3, 1024, 1024) arrays,
encrypted with Fernet under a key derived by PBKDF2-HMAC-SHA256 (100,000 iterations, the original
file name as salt) from the original JPEG's bytes; the final image is the aligned 1024x1024 image
plus the delta (mod 256). Bit-exact results need the decoder and resampler of the official
environment (Pillow 3.1.1, libjpeg 8d); elsewhere the aligned image differs by a few levels and
the delta is applied as a signed difference so that nothing wraps around.
"""

from __future__ import annotations

import base64
import bz2
import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from progan.errors import UserError, install_hint
from progan.landmarks import landmarks_68, load_dlib

DELTA_SHAPE = (3, 1024, 1024)
PBKDF2_ITERATIONS = 100_000


def _rot90(v: np.ndarray) -> np.ndarray:
    return np.array([-v[1], v[0]], dtype=v.dtype)


def celebahq_quad(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """The oriented crop square for five landmarks (5, 2) -> (quad (4, 2), half-side).

    The quad's corners are upper-left, lower-left, lower-right, upper-right in source pixel
    coordinates (the order PIL's QUAD transform takes). Landmarks are integer pixel indices as in
    CelebA's files; like the official tool, 0.5 is added to move them to pixel centres.
    """
    lm = np.asarray(landmarks, dtype=np.float32).reshape(5, 2)
    eye_avg = (lm[0] + lm[1]) * 0.5 + 0.5
    mouth_avg = (lm[3] + lm[4]) * 0.5 + 0.5
    eye_to_eye = lm[1] - lm[0]
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - _rot90(eye_to_mouth)
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = _rot90(x)
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, float(np.hypot(*x))


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    try:
        import scipy.ndimage
    except ImportError:  # Pillow's blur is a close (box-based) approximation
        from PIL import ImageFilter

        out = np.empty_like(img)
        for ch in range(img.shape[2]):
            band = Image.fromarray(img[:, :, ch], mode="F")
            out[:, :, ch] = np.asarray(band.filter(ImageFilter.GaussianBlur(sigma)))
        return out
    return scipy.ndimage.gaussian_filter(img, [sigma, sigma, 0])


def _bounds(quad: np.ndarray) -> tuple[int, int, int, int]:
    """The whole-pixel box (left, top, right, bottom) around a quad's corners."""
    return (
        int(np.floor(min(quad[:, 0]))),
        int(np.floor(min(quad[:, 1]))),
        int(np.ceil(max(quad[:, 0]))),
        int(np.ceil(max(quad[:, 1]))),
    )


def align_face(img: Image.Image, landmarks: np.ndarray, size: int = 1024) -> Image.Image:
    """The CelebA-HQ oriented crop of an RGB image, `size` x `size` (1024 for CelebA-HQ)."""
    img = img.convert("RGB")
    quad, half = celebahq_quad(landmarks)
    zoom = size / (half * 2)

    # Shrink: a large face is first reduced with an antialiasing filter.
    shrink = int(np.floor(0.5 / zoom))
    if shrink > 1:
        new = (int(np.round(float(img.size[0]) / shrink)), int(np.round(float(img.size[1]) / shrink)))
        img = img.resize(new, Image.LANCZOS)
        quad /= shrink
        zoom *= shrink

    # Crop to the square plus a border.
    border = max(int(np.round(size * 0.1 / zoom)), 3)
    crop = _bounds(quad)
    crop = (
        max(crop[0] - border, 0),
        max(crop[1] - border, 0),
        min(crop[2] + border, img.size[0]),
        min(crop[3] + border, img.size[1]),
    )
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad -= crop[0:2]

    # Simulate super-resolution: a small face is upsampled before the transform.
    superres = int(np.exp2(np.ceil(np.log2(zoom))))
    if superres > 1:
        img = img.resize((img.size[0] * superres, img.size[1] * superres), Image.LANCZOS)
        quad *= superres
        zoom /= superres

    # Pad where the square leaves the image: reflect, blurred and faded to the median colour.
    pad = _bounds(quad)
    pad = (
        max(-pad[0] + border, 0),
        max(-pad[1] + border, 0),
        max(pad[2] - img.size[0] + border, 0),
        max(pad[3] - img.size[1] + border, 0),
    )
    if max(pad) > border - 4:
        pad = np.maximum(pad, int(np.round(size * 0.3 / zoom)))
        a = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
        h, w, _ = a.shape
        yy, xx, _ = np.mgrid[:h, :w, :1]
        mask = 1.0 - np.minimum(
            np.minimum(np.float32(xx) / pad[0], np.float32(yy) / pad[1]),
            np.minimum(np.float32(w - 1 - xx) / pad[2], np.float32(h - 1 - yy) / pad[3]),
        )
        blur = size * 0.02 / zoom
        a += (_gaussian_blur(a, blur) - a) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        a += (np.median(a, axis=(0, 1)) - a) * np.clip(mask, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.round(a), 0, 255)), "RGB")
        quad += pad[0:2]

    # Transform the square to 4x the output, then reduce with an antialiasing filter.
    img = img.transform((4 * size, 4 * size), Image.QUAD, (quad + 0.5).flatten().tolist(), Image.BILINEAR)
    return img.resize((size, size), Image.LANCZOS)


def landmarks_from_68(points: np.ndarray) -> np.ndarray:
    """dlib/iBUG 68-point landmarks -> CelebA's five (eye centres, nose tip, mouth corners)."""
    p = np.asarray(points, dtype=np.float32).reshape(68, 2)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


# --------------------------------------------------------------------------------------------
# dlib landmarks for --align-faces (dlib itself is loaded in progan.landmarks)


class FaceLandmarker:
    """Finds the largest face with dlib's HOG detector and returns its five CelebA landmarks."""

    def __init__(self, model: str | os.PathLike | None = None) -> None:
        self.model = str(model) if model else None
        load_dlib(self.model, "--align-faces")  # fail fast with the install hint

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        points = landmarks_68(rgb, self.model, "--align-faces")
        return None if points is None else landmarks_from_68(points)


# --------------------------------------------------------------------------------------------
# CelebA files


def find_celeba(root: Path) -> dict:
    """Locate CelebA's images and annotation files under `root` (the official layouts)."""

    def first(*names: str) -> Path | None:
        return next((root / n for n in names if (root / n).exists()), None)

    images = first("img_celeba", "Img/img_celeba")
    landmarks = first("list_landmarks_celeba.txt", "Anno/list_landmarks_celeba.txt")
    aligned = False
    if images is None or landmarks is None:
        a_images = first("img_align_celeba", "Img/img_align_celeba")
        a_landmarks = first("list_landmarks_align_celeba.txt", "Anno/list_landmarks_align_celeba.txt")
        if a_images is not None and a_landmarks is not None:
            images, landmarks, aligned = a_images, a_landmarks, True
    if images is None or landmarks is None:
        raise UserError(
            f"{root} is not a CelebA folder: need img_celeba/ (or Img/img_celeba/) and "
            f"list_landmarks_celeba.txt (or Anno/...); download CelebA's in-the-wild images and annotations"
        )
    attrs = first("list_attr_celeba.txt", "Anno/list_attr_celeba.txt")
    return {"images": images, "landmarks": landmarks, "attributes": attrs, "aligned": aligned}


def read_landmarks(path: Path) -> tuple[list[str], np.ndarray]:
    """CelebA landmark file -> (file names, float32 (N, 5, 2))."""
    lines = path.read_text().splitlines()
    names, values = [], []
    for line in lines[2:]:
        parts = line.split()
        if len(parts) == 11:
            names.append(parts[0])
            values.append([float(v) for v in parts[1:]])
    if not names:
        raise UserError(f"{path} holds no landmarks; expected CelebA's 'NAME x1 y1 ... x5 y5' lines")
    return names, np.float32(values).reshape(-1, 5, 2)


def read_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """CelebA attribute file -> (file names, attribute names, float32 (N, 40) multi-hot)."""
    lines = path.read_text().splitlines()
    attr_names = lines[1].split()
    names, values = [], []
    for line in lines[2:]:
        parts = line.split()
        if len(parts) == len(attr_names) + 1:
            names.append(parts[0])
            values.append([1.0 if int(v) > 0 else 0.0 for v in parts[1:]])
    return names, attr_names, np.float32(values).reshape(-1, len(attr_names))


def read_image_list(deltas: Path) -> list[dict]:
    """CelebA-HQ's image_list.txt (idx orig_idx orig_file proc_md5 final_md5) as dicts."""
    path = deltas / "image_list.txt"
    if not path.is_file():
        raise UserError(
            f"{deltas} has no image_list.txt; point --celebahq-deltas at the CelebA-HQ deltas folder"
        )
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    fields = lines[0]
    rows = []
    for parts in lines[1:]:
        row = dict(zip(fields, parts, strict=False))
        for k in row:
            if k.endswith("idx"):
                row[k] = int(row[k])
        rows.append(row)
    return rows


def delta_location(deltas: Path, idx: int) -> tuple[Path, str]:
    return deltas / f"deltas{idx - idx % 1000:05d}.zip", f"delta{idx:05d}.dat"


# --------------------------------------------------------------------------------------------
# Deltas


def _need_cryptography():
    try:
        import cryptography.fernet  # noqa: F401
        import cryptography.hazmat.primitives.hashes  # noqa: F401
        import cryptography.hazmat.primitives.kdf.pbkdf2  # noqa: F401
    except ImportError as e:
        raise UserError(
            f"--celebahq-deltas needs the 'cryptography' package; {install_hint('celebahq')}"
        ) from e
    return cryptography


def delta_key(orig_bytes: bytes, orig_file: str) -> bytes:
    """The Fernet key of one delta: PBKDF2-HMAC-SHA256 of the original JPEG, file name as salt."""
    crypto = _need_cryptography()
    kdf = crypto.hazmat.primitives.kdf.pbkdf2.PBKDF2HMAC(
        algorithm=crypto.hazmat.primitives.hashes.SHA256(),
        length=32,
        salt=orig_file.encode("ascii"),
        iterations=PBKDF2_ITERATIONS,
    )
    return base64.urlsafe_b64encode(kdf.derive(orig_bytes))


def decrypt_delta(delta_bytes: bytes, orig_bytes: bytes, orig_file: str) -> np.ndarray:
    crypto = _need_cryptography()
    fernet = crypto.fernet.Fernet(delta_key(orig_bytes, orig_file))
    try:
        raw = bz2.decompress(fernet.decrypt(delta_bytes))
    except crypto.fernet.InvalidToken as e:
        raise ValueError(f"delta does not decrypt with {orig_file} (not the original CelebA JPEG?)") from e
    return np.frombuffer(raw, dtype=np.uint8).reshape(DELTA_SHAPE)


def encrypt_delta(delta: np.ndarray, orig_bytes: bytes, orig_file: str) -> bytes:
    """The inverse of `decrypt_delta` (for tests and for making deltas of one's own)."""
    crypto = _need_cryptography()
    data = bz2.compress(np.ascontiguousarray(delta, dtype=np.uint8).tobytes())
    return crypto.fernet.Fernet(delta_key(orig_bytes, orig_file)).encrypt(data)


def md5(a: np.ndarray) -> str:
    return hashlib.md5(np.ascontiguousarray(a).tobytes()).hexdigest()


def apply_delta(aligned_chw: np.ndarray, delta: np.ndarray, exact: bool) -> np.ndarray:
    """aligned + delta. `exact`: the aligned image matches the official one (its proc_md5), so
    the sum is taken mod 256 as the official tool does. Otherwise the delta is read as a signed
    difference (|delta| < 128) and the sum clipped, so that a pixel a level off does not wrap
    from black to white."""
    if exact:
        return (aligned_chw.astype(np.uint8) + delta).astype(np.uint8)
    signed = delta.astype(np.int16)
    signed[signed >= 128] -= 256
    return np.clip(aligned_chw.astype(np.int16) + signed, 0, 255).astype(np.uint8)

"""Projection: find the latent (and, for a conditional model, the label) whose image is a photo.

The generator normalises its input (pixel norm over the latent and label), so only a latent's
direction matters to the picture, while the edits of `progan.directions` are in latent-norm units
of latents drawn as N(0, I) (norm about sqrt(L)). The optimisation therefore moves a free latent
with Adam and puts it back on the sphere of radius sqrt(L) after every step: the latent it
returns is one the sampler could have drawn, and `edit --set red_hair=+2` moves it as far as it
moves a seed's latent. A conditional model's pixel norm runs over latent and label together, so
there the latent's norm sets the label's weight and is left free (on the sphere, 16x16 conditional
models were recovered at 25-35 dB; free, at 57-69 dB).

Loss per image: mean squared pixel error (images in [-1, 1]) + `msssim_weight` x (1 - MS-SSIM)
(the project's own MS-SSIM, progan.metrics.msssim, at 16x16 and above) + optionally `d_weight` x
the distance between the snapshot's own discriminator's features of the two images (no
downloaded network). Each photo gets `restarts` starting latents, optimised side by side; the
restart with the lowest final loss wins. Starting latents are random draws, or (`init="best-of"`)
the `restarts` nearest of `init_samples` random samples by pixel distance.

A conditional model's label is relaxed to a softmax over label logits (a sigmoid per attribute
for multi-hot models, such as CelebA's 40 attributes), optimised with the latent for the first
60% of the steps, then fixed to its largest class (one-hot; multi-hot: every attribute above
0.5), the kind of labels the model was trained on, while the latent settles.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from progan.errors import UserError

PROJECTIONS_FORMAT = "progan-projections"
# A photo is decoded into memory at most this large (a 16-bit 12000x12000 photo is ~860 MB);
# a decompression bomb is refused before it is decoded.
MAX_PHOTO_PIXELS = 100_000_000
# The label is optimised (as a softmax) for this share of the steps, then fixed to its argmax.
LABEL_SEARCH_SHARE = 0.6
INIT_METHODS = ("random", "best-of")
# Photos in one call: each is kept in memory with its projection (1024x1024: 6 MB a photo).
MAX_PHOTOS = 256


@dataclass
class ProjectOptions:
    """How hard to look: steps, restarts, learning rate, loss weights and the starting latents."""

    steps: int = 300
    restarts: int = 4
    lr: float = 0.1
    msssim_weight: float = 0.1
    d_weight: float = 0.0
    init: str = "best-of"
    init_samples: int = 256
    seed: int = 0
    batch: int = 4  # photos optimised side by side (each with its restarts)

    def check(self) -> None:
        if self.steps < 1 or self.restarts < 1 or self.batch < 1:
            raise UserError("steps, restarts and batch must be at least 1")
        if not self.lr > 0:
            raise UserError(f"learning rate {self.lr} must be positive; e.g. 0.1")
        if self.msssim_weight < 0 or self.d_weight < 0:
            raise UserError("loss weights must be zero or positive")
        if self.init not in INIT_METHODS:
            raise UserError(f"init '{self.init}' is not one of {', '.join(INIT_METHODS)}")
        if self.init == "best-of" and self.init_samples < self.restarts:
            raise UserError(f"init_samples {self.init_samples} must be at least restarts {self.restarts}")


@dataclass
class Projection:
    """One photo's projection: its latent (L,) on the sampler's sphere, its label row (or None),
    the photo as the model saw it and the model's image of the latent (uint8 H x W x C), and how
    close they are (PSNR in dB, MS-SSIM where the size allows)."""

    name: str
    latent: np.ndarray
    labels: np.ndarray | None
    target: np.ndarray
    image: np.ndarray
    psnr: float
    msssim: float | None
    loss: float
    source: str = ""
    extra: dict = field(default_factory=dict)

    def to_json(self, rank: int) -> dict:
        """The entry in projections.json: the fields of describe's candidates.json that
        `edit --from` and the studio read (latent, labels, rank, seed), and the match."""
        return {
            "rank": rank,
            "name": self.name,
            "source": self.source,
            "seed": None,
            "psnr": round(float(self.psnr), 4),
            "msssim": None if self.msssim is None else round(float(self.msssim), 6),
            "loss": round(float(self.loss), 6),
            "latent": [float(x) for x in self.latent.tolist()],
            "labels": None if self.labels is None else [float(x) for x in self.labels.tolist()],
            **self.extra,
        }


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Peak signal-to-noise ratio of two uint8 images in dB (inf when they are equal)."""
    x, y = (v.double() if torch.is_tensor(v) else torch.from_numpy(np.array(v, np.float64)) for v in (a, b))
    d = x - y
    mse = float((d * d).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


# --------------------------------------------------------------------------------------------
# Photos in


def face_model(resolution: int, channels: int) -> bool:
    """Whether photos for this model are aligned the CelebA-HQ way by default: colour models of
    64x64 and more, the models this project measures faces in (smaller or grey ones, such as
    Fashion-MNIST, are not face models). `--no-align` / `--align` decide otherwise."""
    return channels == 3 and resolution >= 64


def read_photo(
    path: str | os.PathLike, resolution: int, channels: int, align: bool, landmarker=None
) -> np.ndarray:
    """A photo file -> uint8 (R, R, C) as the model's data was made: aligned the CelebA-HQ way
    (dlib landmarks, `progan.data.align.align_face`) when `align`, else a square photo resized.
    Any problem (not a file, not an image, too many pixels, no face, not square) is a UserError
    naming the file and the fix."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; pass image files (e.g. {path}/*.jpg)")
    if not path.is_file():
        raise UserError(f"{path}: no such file; check the path")
    img = decode_photo(path, channels, name=str(path))
    return photo_for_model(img, resolution, channels, align, landmarker, name=str(path))


def decode_photo(source, channels: int, name: str = "the photo", max_pixels: int = MAX_PHOTO_PIXELS):
    """A photo (a path or a binary file object, e.g. an upload in memory) decoded by Pillow into a
    PIL image in the model's mode, upright (EXIF orientation). Its size is read from the header and
    checked against `max_pixels` before the pixels are decoded (no decompression bombs); anything
    Pillow cannot read is a UserError "NAME is not an image (...)"."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(source) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise UserError(
                    f"{name} is {w}x{h}, more than {max_pixels / 1_000_000:g} megapixels; "
                    "pass a smaller photo"
                )
            img.load()
            img = ImageOps.exif_transpose(img)
            return _normalise_mode(img, channels)
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        # Pillow names a file object by its repr: "unrecognised format" says it without one.
        why = "unrecognised format" if isinstance(e, UnidentifiedImageError) else str(e).splitlines()[0]
        raise UserError(f"{name} is not an image ({why}); pass a PNG or JPEG file") from e


def photo_for_model(
    img,
    resolution: int,
    channels: int,
    align: bool,
    landmarker=None,
    name: str = "the photo",
    align_off: str = "--no-align",
) -> np.ndarray:
    """A PIL image -> uint8 (R, R, C) for the model (see `read_photo`). `align_off` is how the
    caller's user turns alignment off (the CLI's flag; the studio's menu), named in the error."""
    from PIL import Image

    img = _normalise_mode(img, channels)
    if align:
        from progan.data.align import FaceLandmarker, align_face

        rgb = np.asarray(img.convert("RGB"))
        landmarker = landmarker or FaceLandmarker()
        lm = landmarker(rgb)
        if lm is None:
            raise UserError(
                f"{name}: no face found; pass a photo with a frontal face, or {align_off} for a photo "
                "already cropped the way the model's data was"
            )
        img = align_face(Image.fromarray(rgb), lm, size=resolution)
        img = _normalise_mode(img, channels)
    else:
        w, h = img.size
        if w != h:
            raise UserError(
                f"{name} is {w}x{h}, not square; crop it square the way the model's data was "
                "(or leave alignment on for a face model)"
            )
        if w != resolution:
            img = img.resize((resolution, resolution), Image.LANCZOS)
    a = np.asarray(img, dtype=np.uint8)
    return a[..., None] if a.ndim == 2 else a


def _normalise_mode(img, channels: int):
    from progan.data.prepare import normalise_mode

    return normalise_mode(img, channels, (255, 255, 255))


# --------------------------------------------------------------------------------------------
# The optimisation


def _features(D: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """D's block outputs for images x (the layers before the minibatch-stddev, which mixes a
    batch): the snapshot's own learned features, used as a perceptual distance."""
    out: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda _m, _i, o: out.append(o)) for b in D.blocks.values()]
    try:
        D(x)
    finally:
        for h in hooks:
            h.remove()
    return out


def _losses(
    images: torch.Tensor,
    targets: torch.Tensor,
    opts: ProjectOptions,
    D: torch.nn.Module | None,
    target_features: list[torch.Tensor] | None,
) -> torch.Tensor:
    """Per-image loss (n,) between generated images and targets, both in [-1, 1]."""
    from progan.metrics.msssim import MIN_RESOLUTION, ms_ssim_differentiable

    # The picture is G's output clamped to [-1, 1] (progan.images.to_uint8). The pixel distance
    # is to every output that clamps to the target: where the target is at a bound, going past
    # it costs nothing; elsewhere an output beyond a bound still has a gradient back (clamping
    # first left saturated outputs stuck: 15 dB on a random 64x64 G, 60% of whose pixels are 0).
    diff = images - targets
    diff = torch.where(targets >= 1.0, diff.clamp(max=0.0), diff)
    diff = torch.where(targets <= -1.0, diff.clamp(min=0.0), diff)
    loss = (diff * diff).mean(dim=(1, 2, 3))
    if opts.msssim_weight and images.shape[-1] >= MIN_RESOLUTION:
        ms = ms_ssim_differentiable((images.clamp(-1.0, 1.0) + 1) * 127.5, (targets + 1) * 127.5)
        loss = loss + opts.msssim_weight * (1 - ms).to(loss.dtype)
    if D is not None and opts.d_weight and target_features:
        feats = _features(D, images)
        d = sum(((f - t) ** 2).mean(dim=(1, 2, 3)) / (t * t).mean().clamp(min=1e-8)
                for f, t in zip(feats, target_features, strict=True))  # fmt: skip
        loss = loss + opts.d_weight * d / len(feats)
    return loss


def _to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1.0


def _initial_latents(
    G: torch.nn.Module,
    targets: torch.Tensor,
    opts: ProjectOptions,
    gen: torch.Generator,
    device,
    multi_hot: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(n * restarts, L) starting latents and (n * restarts, label_size) starting label logits."""
    n, L, k = len(targets), G.latent_size, G.label_size
    if opts.init == "random":
        z = torch.randn(n * opts.restarts, L, generator=gen)
        logits = torch.zeros(n * opts.restarts, k) if k else None
        return z, logits
    # best-of: the `restarts` nearest of init_samples random samples (by pixel distance)
    cand = torch.randn(opts.init_samples, L, generator=gen)
    cand_labels = None
    if k:
        cls = torch.randint(k, (opts.init_samples,), generator=gen)
        cand_labels = torch.nn.functional.one_hot(cls, k).float()
    dist = torch.empty(n, opts.init_samples)
    with torch.no_grad():
        for i in range(0, opts.init_samples, 64):
            lab = None if cand_labels is None else cand_labels[i : i + 64].to(device)
            imgs = G(cand[i : i + 64].to(device), lab).float().cpu()
            dist[:, i : i + 64] = ((imgs[None] - targets[:, None].cpu()) ** 2).mean(dim=(2, 3, 4))
    pick = dist.argsort(dim=1)[:, : opts.restarts].reshape(-1)
    z = cand[pick]
    # A picked sample's class starts ahead (logit 2), the others may still win (multi-hot: the
    # others start below 0.5).
    logits = None if cand_labels is None else cand_labels[pick] * 2.0 - (1.0 if multi_hot else 0.0)
    return z, logits


def project_images(
    G: torch.nn.Module,
    targets: np.ndarray | torch.Tensor,
    names: Sequence[str] | None = None,
    options: ProjectOptions | None = None,
    *,
    D: torch.nn.Module | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    multi_hot: bool = False,
    on_step: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[Projection]:
    """Project uint8 images (N, C, R, R) or (N, R, R, C) at G's resolution into G's latent
    space (module docstring); one Projection per image, in order. Photos are optimised `batch`
    at a time, so memory does not grow with N. fp32 throughout (the gradients need it).

    For a caller that shows progress (the studio): `on_step(done, total, best_loss)` after every
    step (steps x images so far, of steps x N; the lowest loss of the chunk's latents at that
    step), and `should_stop()` before every step: when it says True the optimisation ends there
    and each photo gets its best latent so far."""
    from tqdm import tqdm

    opts = options or ProjectOptions()
    opts.check()
    device = torch.device(device)
    t = torch.as_tensor(np.asarray(targets))
    R, C = G.resolution, G.config.channels
    if t.ndim == 3 and C == 1:
        t = t[:, None]
    if t.ndim == 4 and t.shape[1] != C and t.shape[-1] == C:
        t = t.permute(0, 3, 1, 2)
    if t.ndim != 4 or tuple(t.shape[1:]) != (C, R, R) or t.dtype != torch.uint8:
        raise UserError(
            f"images of shape {tuple(t.shape)} ({t.dtype}) given; this model takes uint8 "
            f"(N, {C}, {R}, {R}) or (N, {R}, {R}, {C})"
        )
    names = list(names) if names is not None else [f"image{i:04d}" for i in range(len(t))]
    gen = torch.Generator().manual_seed(opts.seed)
    G = G.to(device)
    was_grad = [p.requires_grad for p in G.parameters()]
    G.requires_grad_(False)
    out: list[Projection] = []
    bar = tqdm(total=len(t) * opts.steps, unit="step", desc="project", disable=not progress, file=sys.stderr)
    done = 0

    def step_done(images: int, best: float) -> None:
        nonlocal done
        done += images
        on_step(done, len(t) * opts.steps, best)

    try:
        for start in range(0, len(t), opts.batch):
            chunk = t[start : start + opts.batch]
            chunk_names = names[start : start + len(chunk)]
            out += _project_chunk(G, chunk, chunk_names, opts, D, device, gen, bar, multi_hot,
                                  on_step and step_done, should_stop)  # fmt: skip
    finally:
        bar.close()
        for p, g in zip(G.parameters(), was_grad, strict=True):
            p.requires_grad_(g)
    return out


def _hard_labels(logits: torch.Tensor, multi_hot: bool) -> torch.Tensor:
    if multi_hot:
        return (logits > 0).float()
    return torch.nn.functional.one_hot(logits.argmax(1), logits.shape[1]).float()


def _project_chunk(G, chunk, names, opts, D, device, gen, bar, multi_hot=False, on_step=None,
                   should_stop=None) -> list[Projection]:  # fmt: skip
    from progan.images import to_uint8
    from progan.metrics.msssim import MIN_RESOLUTION, ms_ssim

    n, k, L, r = len(chunk), G.label_size, G.latent_size, opts.restarts
    radius = math.sqrt(L)
    targets = _to_float(chunk).to(device)
    z0, logits0 = _initial_latents(G, targets, opts, gen, device, multi_hot)
    z = (z0 * radius / z0.norm(dim=1, keepdim=True)).to(device).requires_grad_(True)
    params = [z]
    logits = None
    if k:
        logits = logits0.to(device).requires_grad_(True)
        params.append(logits)
    opt = torch.optim.Adam(params, lr=opts.lr)
    rep = targets.repeat_interleave(r, dim=0)
    target_features = None
    if D is not None and opts.d_weight:
        with torch.no_grad():
            target_features = [f.detach() for f in _features(D, rep)]
    search_steps = int(opts.steps * LABEL_SEARCH_SHARE)
    fixed_labels = None
    for step in range(opts.steps):
        if should_stop is not None and should_stop():
            break
        # Cosine ramp-down of the rate over the last half, a short ramp-up (StyleGAN2's projector).
        frac = step / opts.steps
        lr = opts.lr * min(1.0, frac / 0.05) * (0.5 - 0.5 * math.cos(math.pi * min(1.0, 2 * (1 - frac))))
        for g in opt.param_groups:
            g["lr"] = max(lr, opts.lr * 1e-3)
        if k and step == search_steps:
            fixed_labels = _hard_labels(logits.detach(), multi_hot)
        labels = None
        if k:
            soft = torch.sigmoid(logits) if multi_hot else torch.softmax(logits, dim=1)
            labels = fixed_labels if fixed_labels is not None else soft
        images = G(z, labels).float()
        loss = _losses(images, rep, opts, D, target_features)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        if not k:  # back onto the sampler's sphere (see the module docstring)
            with torch.no_grad():
                z.mul_(radius / z.norm(dim=1, keepdim=True))
        bar.update(n)
        if on_step is not None:  # float() waits for the step: only when someone is watching
            on_step(n, float(loss.detach().min()))
    with torch.no_grad():
        if k:
            fixed_labels = _hard_labels(logits, multi_hot)
        images = G(z, fixed_labels).float()
        final = _losses(images, rep, opts, D, target_features).reshape(n, r)
        best = final.argmin(dim=1)
        idx = torch.arange(n, device=final.device) * r + best
        won = to_uint8(images[idx]).cpu()
    truth = chunk.cpu()
    scores = ms_ssim(won, truth).tolist() if chunk.shape[-1] >= MIN_RESOLUTION else [None] * n
    out = []
    for i in range(n):
        out.append(
            Projection(
                name=names[i],
                latent=z[idx[i]].detach().cpu().numpy().astype(np.float32),
                labels=None if not k else fixed_labels[idx[i]].cpu().numpy().astype(np.float32),
                target=truth[i].permute(1, 2, 0).numpy(),
                image=won[i].permute(1, 2, 0).numpy(),
                psnr=psnr(won[i], truth[i]),
                msssim=scores[i],
                loss=float(final[i, best[i]]),
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# Results out


def unique_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """File stems usable as output names, made unique (a.jpg, other/a.jpg -> a, a-2)."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(p).stem) or "photo"
        count = seen.get(stem, 0) + 1
        seen[stem] = count
        out.append(stem if count == 1 else f"{stem}-{count}")
    return out


def compare_picture(target: np.ndarray, image: np.ndarray, min_side: int = 256) -> np.ndarray:
    """The photo and its projection side by side (uint8 H x 2W + gap x C), small ones enlarged."""
    from progan.images import upscale_nearest

    h = target.shape[0]
    factor = max(1, min_side // h)
    a, b = upscale_nearest(target, factor), upscale_nearest(image, factor)
    gap = np.full((a.shape[0], max(4, a.shape[0] // 32), a.shape[2]), 255, dtype=np.uint8)
    return np.concatenate([a, gap, b], axis=1)


def write_projections(outdir: str | os.PathLike, projections: Sequence[Projection], info: dict) -> Path:
    """DIR/<name>.npy (latent), <name>-projected.png, <name>-compare.png for each projection,
    and DIR/projections.json (the list, in describe's candidates layout). Returns the JSON path."""
    from progan.checkpoint import write_json_atomic
    from progan.errors import writing
    from progan.images import save_image

    outdir = Path(outdir)
    with writing(outdir):
        outdir.mkdir(parents=True, exist_ok=True)
    for p in projections:
        npy = outdir / f"{p.name}.npy"
        tmp = npy.with_name(f".{npy.name}.tmp")
        with writing(npy):
            with open(tmp, "wb") as f:
                np.save(f, p.latent.astype(np.float32))
            os.replace(tmp, npy)
        save_image(p.image, outdir / f"{p.name}-projected.png")
        save_image(compare_picture(p.target, p.image), outdir / f"{p.name}-compare.png")
    data = {
        "format": PROJECTIONS_FORMAT,
        "format_version": 1,
        **info,
        "latent_method": "projected",
        "candidates": [p.to_json(rank) for rank, p in enumerate(projections, 1)],
    }
    path = outdir / "projections.json"
    write_json_atomic(path, data)
    return path

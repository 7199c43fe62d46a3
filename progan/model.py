"""The Python API: `progan.load(path)` -> a `Model` that generates, renders, measures, describes,
edits and projects faces, through the same functions as the `progan` commands.

    import progan
    model = progan.load("runs/00003-faces-256")          # a run, a snapshot or an imported network
    images = model.generate([0, 1, 2])                   # uint8 (3, 256, 256, 3)
    z = model.latents([42])                              # the latent of seed 42
    redder = model.render(model.edit(z, red_hair=2))     # after 'progan directions'

Every method is a thin layer over the library (`progan.sampling`, `progan.directions`,
`progan.faces`, `progan.projection`); the commands call the same functions, so a seed gives the
same picture here and in `progan generate`. Outputs are NumPy (images uint8 N x H x W x C,
latents float32 N x L) or, with `as_pil=True`, PIL images.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from progan.errors import UserError

if TYPE_CHECKING:
    from PIL import Image

    from progan.faces.attributes import AttributeModel
    from progan.faces.describe import Candidate
    from progan.projection.project import Projection

SeedsLike = int | str | Sequence[int]
ImagesLike = Any  # uint8 array (N, H, W, C) / (H, W, C), a PIL image, a file path, or a list of them


def _seed_list(seeds: SeedsLike) -> Sequence[int]:
    from progan.sampling import parse_seeds

    if isinstance(seeds, str):
        return parse_seeds(seeds)
    if isinstance(seeds, (int, np.integer)):
        return [int(seeds)]
    return [int(s) for s in seeds]


def _nhwc(images: torch.Tensor, as_pil: bool) -> np.ndarray | list[Image.Image]:
    """uint8 (N, C, H, W) -> uint8 (N, H, W, C) NumPy, or a list of PIL images."""
    arr = np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy())
    if not as_pil:
        return arr
    from PIL import Image

    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arr]


def _as_batch(images: ImagesLike) -> list[np.ndarray]:
    """Images in any of the accepted forms -> a list of uint8 (H, W, C) arrays."""
    from PIL import Image

    if isinstance(images, np.ndarray | torch.Tensor):
        a = np.asarray(images)
        if a.dtype != np.uint8:
            raise UserError(f"images must be uint8, got {a.dtype}; convert with (x * 255).round()")
        if a.ndim == 2:
            a = a[..., None]
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4:
            raise UserError(f"images of shape {a.shape}; pass (N, H, W, C) or (H, W, C) uint8")
        return [x for x in a]
    if isinstance(images, Image.Image):
        return [np.asarray(images.convert("RGB") if images.mode not in ("L", "RGB") else images)]
    if isinstance(images, str | os.PathLike):
        raise UserError(f"{images} is a file path; pass the image (numpy.asarray(PIL.Image.open(path)))")
    out: list[np.ndarray] = []
    for item in images:
        out += _as_batch(item)
    return out


def _nchw(images: list[np.ndarray]) -> torch.Tensor:
    arrays = [a[..., None] if a.ndim == 2 else a for a in images]
    if len({a.shape for a in arrays}) > 1:
        raise UserError("images of different sizes; pass images of one size (or one at a time)")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class Model:
    """A generator (a snapshot's G_ema, or an imported network) with everything to use it.

    Attributes: `G` (the torch module), `path` (where it was loaded from), `device`,
    `label_names`, `resolution`, `channels`, `latent_size`, `label_size`."""

    def __init__(
        self,
        G: torch.nn.Module,
        path: Path,
        device: torch.device,
        label_names: Sequence[str] = (),
        D: torch.nn.Module | None = None,
        snapshot: Any = None,
    ) -> None:
        self.G = G
        self.path = Path(path)
        self.device = device
        self.label_names = list(label_names)
        self._D = D
        self._snapshot = snapshot

    def __repr__(self) -> str:
        cond = f", {self.label_size} labels" if self.label_size else ""
        return f"<progan.Model {self.path} {self.resolution}x{self.resolution}x{self.channels}{cond}>"

    @property
    def multi_hot(self) -> bool:
        """Whether a conditional model's labels are attributes (several at once, e.g. CelebA's)."""
        return bool(self._snapshot is not None and self._snapshot.multi_hot)

    @property
    def resolution(self) -> int:
        return int(self.G.resolution)

    @property
    def channels(self) -> int:
        return int(self.G.config.channels)

    @property
    def latent_size(self) -> int:
        return int(self.G.latent_size)

    @property
    def label_size(self) -> int:
        return int(self.G.label_size)

    def precision(self, precision: str = "auto") -> str:
        """The precision a request runs in here: `auto` decides by the hardware (bf16 on a CPU
        with AVX-512 BF16 or AMX and on bf16 GPUs, fp32 elsewhere)."""
        from progan.device import sampling_precision

        return sampling_precision(precision, self.device)

    # -- seeds, latents, pictures -----------------------------------------------------------

    def latents(self, seeds: SeedsLike, method: str = "progan") -> np.ndarray:
        """float32 (N, latent_size): the latent of each seed (`progan.sampling`, the one path).
        `method` "official" draws as the official ProGAN scripts (imported networks' examples)."""
        from progan.sampling import latents_for_seeds

        return latents_for_seeds(_seed_list(seeds), self.latent_size, method).numpy()

    def labels(self, seeds: SeedsLike, label: str | None = None) -> np.ndarray | None:
        """Label rows (N, label_size) of a conditional model for the seeds (`label` a class name
        or index, or comma-separated attributes; None: each seed draws its own), None otherwise."""
        from progan.sampling import labels_for

        rows = labels_for(self.label_size, _seed_list(seeds), label, self.label_names)
        return None if rows is None else rows.numpy()

    def generate(
        self,
        seeds: SeedsLike,
        labels: str | np.ndarray | None = None,
        precision: str = "auto",
        *,
        as_pil: bool = False,
        batch: int = 32,
        method: str = "progan",
    ) -> np.ndarray | list[Image.Image]:
        """Images of seeds ("0-3", 7 or [1, 5, 9]) as uint8 (N, H, W, C), or PIL images with
        `as_pil`: the same images as `progan generate --seeds ... --precision P`.

        `labels` (conditional models): a class name or index, or comma-separated attributes, for
        every seed; or label rows (N, label_size); None: each seed's own class."""
        from progan.sampling import iter_seed_images

        seeds = _seed_list(seeds)
        if labels is not None and not isinstance(labels, str):
            return self.render(self.latents(seeds, method), labels, precision, as_pil=as_pil, batch=batch)
        chunks = [
            images
            for _, images in iter_seed_images(
                self.G, seeds, labels, self.label_names, batch=batch, device=self.device,
                precision=self.precision(precision), method=method,
            )
        ]  # fmt: skip
        return _nhwc(torch.cat(chunks) if chunks else self._empty(), as_pil)

    def render(
        self,
        latents: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor | None = None,
        precision: str = "auto",
        *,
        as_pil: bool = False,
        batch: int = 32,
    ) -> np.ndarray | list[Image.Image]:
        """Images of latents (N, latent_size) (or one latent (latent_size,)), uint8 (N, H, W, C);
        a conditional model needs label rows (N, label_size) or (label_size,)."""
        from progan.sampling import images_for_latents

        z = torch.as_tensor(np.asarray(latents, dtype=np.float32))
        z = z[None] if z.ndim == 1 else z
        if z.ndim != 2 or z.shape[1] != self.latent_size:
            raise UserError(f"latents of shape {tuple(z.shape)}; this model takes (N, {self.latent_size})")
        rows = self._label_rows(labels, len(z), "render")
        images = images_for_latents(
            self.G, z, rows, batch=batch, device=self.device, precision=self.precision(precision)
        )
        return _nhwc(images, as_pil)

    def _label_rows(self, labels: np.ndarray | torch.Tensor | None, n: int, what: str) -> torch.Tensor | None:
        """Label rows (n, label_size) for a conditional model (one row is repeated), None for an
        unconditional one; a missing or superfluous `labels` is a one-line error naming `what`."""
        if not self.label_size:
            if labels is not None:
                raise UserError("labels given, but this model is not conditional; drop them")
            return None
        if labels is None:
            raise UserError(f"this model is conditional: pass labels (N, {self.label_size}) to {what}")
        rows = torch.as_tensor(np.asarray(labels, dtype=np.float32))
        rows = rows[None] if rows.ndim == 1 else rows
        return rows.expand(n, -1) if len(rows) == 1 and n > 1 else rows

    def _empty(self) -> torch.Tensor:
        return torch.zeros(0, self.channels, self.resolution, self.resolution, dtype=torch.uint8)

    # -- faces -------------------------------------------------------------------------------

    def measure(self, images: ImagesLike) -> list:
        """Face measurements (`progan.faces.measure.FaceMeasurement`: traits, landmarks) of uint8
        images (N, H, W, C), one image, PIL images or a list; needs the 'faces' extra."""
        from progan.faces.measure import measure_faces

        return list(measure_faces(_nchw(_as_batch(images))))

    @property
    def directions(self) -> dict[str, tuple[torch.Tensor, dict]]:
        """The snapshot's named directions (`progan directions`, `progan import --direction`)."""
        from progan.directions import load_directions

        return load_directions(self.path) if self.path.is_dir() else {}

    def edit(
        self,
        latent: np.ndarray | torch.Tensor,
        keep: Sequence[str] | None = None,
        free: bool = False,
        *,
        keep_with: str | os.PathLike | AttributeModel | None = None,
        labels: np.ndarray | torch.Tensor | None = None,
        seeds: Sequence[int] | None = None,
        precision: str = "auto",
        **amounts: float,
    ) -> np.ndarray:
        """Latents moved along named directions, e.g. `edit(z, red_hair=2, smile=-1)`: each
        conditioned on the other traits' directions (or `keep` only; `free`: plain directions),
        as `progan edit --set`. `keep_with` (a 'progan attributes fit' classifier, its file or
        loaded, whose directions these are): then searched nearby for the face on which the
        classifier sees the attributes not asked for as before (`progan edit --keep-with`;
        `labels` for a conditional model, `seeds` seed its random moves). Returns float32
        latents of the input's shape."""
        from progan.directions import edit

        z = torch.as_tensor(np.asarray(latent, dtype=np.float32))
        one = z.ndim == 1
        z = z[None] if one else z
        amounts = {k: float(v) for k, v in amounts.items()}
        directions = self.directions  # read from the snapshot once
        moved = edit(z, directions, amounts, list(keep) if keep is not None else None, free)
        if keep_with is not None:
            from progan.faces.attributes import AttributeModel, load_attributes
            from progan.faces.edit import keep_unasked

            classifier = keep_with if isinstance(keep_with, AttributeModel) else load_attributes(keep_with)
            rows = self._label_rows(labels, len(z), "edit")
            moved = keep_unasked(
                self.G, z, moved, amounts, directions, classifier, labels=rows,
                seeds=seeds, device=self.device, precision=self.precision(precision),
            )[0]  # fmt: skip
        return (moved[0] if one else moved).numpy()

    def describe(
        self,
        text: str,
        candidates: int | SeedsLike = 500,
        *,
        top: int = 16,
        attributes: str | os.PathLike | None = None,
        prefer_attributes: bool = False,
        refine: int = 0,
        refine_rounds: int = 4,
        refine_proposals: int | None = None,
        precision: str = "auto",
        batch: int = 32,
        progress: bool = False,
    ) -> list[Candidate]:
        """Rank faces against a description ("a round face with red hair"), as `progan describe`:
        `candidates` a count (seeds 0..N-1), the seeds themselves, projections (`project`'s
        result) or a projections.json / candidates.json; returns every candidate best first
        (seed or name, latent, labels, score, per-word scores, measured traits), the best
        `refine` pushed toward the description along the snapshot's directions and by
        `refine_proposals` random moves a round (None: describe's default). `prefer_attributes`:
        the `attributes` classifier judges every phrase it names (as `describe
        --prefer-attributes`). Needs the 'faces' extra."""
        from progan.faces import describe as d
        from progan.faces.words import understand

        attrs = None
        if attributes is not None:
            from progan.faces.attributes import load_attributes

            attrs = load_attributes(attributes)
        if prefer_attributes and attrs is None:
            raise UserError("prefer_attributes needs attributes= (a classifier from 'progan attributes fit')")
        desc = understand(text, attrs.names if attrs else (), self.label_names, prefer_attributes)
        if not desc.wishes:
            raise UserError(f"nothing in '{text}' is measured; describe hair, eye or skin colour, ...")
        if any(w.source == "measured" for w in desc.wishes):
            d.check_measurable(self.resolution, self.path)
        given = given_candidates(candidates, self.latent_size, self.label_size)
        if given is None:
            seeds = list(range(candidates)) if isinstance(candidates, int) else list(_seed_list(candidates))
            labels = d.label_rows(desc, self.label_size, self.label_names, seeds)
            latents = names = None
        else:
            latents, labels, names = given
            seeds = list(range(-1, -len(names) - 1, -1))  # ids only (images are kept by seed)
        chosen = self.precision(precision)
        ranked, images = d.describe(
            self.G, desc, seeds, top=top, labels=labels, attributes=attrs, batch=batch,
            device=self.device, precision=chosen, progress=progress, latents=latents, names=names,
        )  # fmt: skip
        if refine:
            ranked = d.refine(
                self.G, desc, ranked, images, self.directions, count=refine, rounds=refine_rounds,
                proposals=refine_proposals,
                attributes=attrs, batch=batch, device=self.device, precision=chosen,
            )  # fmt: skip
        return ranked

    # -- photos ------------------------------------------------------------------------------

    def discriminator(self) -> torch.nn.Module | None:
        """The snapshot's own D (for projection's feature loss), or None when it has none."""
        if self._D is None and self._snapshot is not None:
            from progan.checkpoint import load_discriminator

            self._D = load_discriminator(self._snapshot, self.device) or False
        return self._D or None

    def read_photos(
        self, photos: ImagesLike, align: bool | None = None
    ) -> tuple[list[np.ndarray], list[str], list[str]]:
        """Photos (file paths, PIL images or uint8 arrays) -> ([uint8 (R, R, C)], [names],
        [sources]) as the model's data was made: aligned the CelebA-HQ way for a face model
        (`align` None: colour models of 64x64 and more), else square photos resized. Every photo
        is checked here, so a bad one fails with one line before any work."""
        from PIL import Image

        from progan.projection.project import face_model, photo_for_model, read_photo, unique_names

        if align is None:
            align = face_model(self.resolution, self.channels)
        landmarker = None
        if align:
            from progan.data.align import FaceLandmarker

            landmarker = FaceLandmarker()
        from progan.projection.project import MAX_PHOTOS

        items = _photo_items(photos)
        if len(items) > MAX_PHOTOS:
            raise UserError(f"{len(items)} photos given; project at most {MAX_PHOTOS} at a time")
        out, sources = [], []
        for i, item in enumerate(items):
            if isinstance(item, str | os.PathLike):
                out.append(read_photo(item, self.resolution, self.channels, align, landmarker))
                sources.append(str(item))
                continue
            if not isinstance(item, Image.Image):
                a = _as_batch(item)[0]
                item = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
            out.append(photo_for_model(item, self.resolution, self.channels, align, landmarker, f"image {i}"))
            sources.append(f"image{i:04d}")
        return out, unique_names(sources), sources

    def project(
        self,
        photos: ImagesLike,
        *,
        align: bool | None = None,
        steps: int = 300,
        restarts: int = 4,
        init: str = "best-of",
        d_weight: float = 0.0,
        seed: int = 0,
        progress: bool = False,
        **options: Any,
    ) -> list[Projection]:
        """Find each photo's latent (and label, for a conditional model): `progan project`.

        `photos`: file paths, PIL images or uint8 arrays (N, H, W, C). Returns one `Projection`
        per photo (latent, labels, the photo as the model saw it, the projected image, PSNR,
        MS-SSIM); `render(p.latent, p.labels)` draws it again and `edit(p.latent, red_hair=2)`
        edits it. More options: `progan.projection.project.ProjectOptions`."""
        from progan.projection.project import ProjectOptions, project_images

        opts = ProjectOptions(
            steps=steps, restarts=restarts, init=init, d_weight=d_weight, seed=seed, **options
        )
        opts.check()
        targets, names, sources = self.read_photos(photos, align)
        D = self.discriminator() if d_weight else None
        if d_weight and D is None:
            raise UserError(f"{self.path} has no discriminator; project without d_weight (--d-weight)")
        result = project_images(
            self.G, _nchw(targets), names, opts, D=D, device=self.device, progress=progress,
            multi_hot=self.multi_hot,
        )  # fmt: skip
        for p, source in zip(result, sources, strict=True):
            p.source = source
        return result


def _photo_items(photos: ImagesLike) -> list:
    from PIL import Image

    if isinstance(photos, str | os.PathLike | Image.Image):
        return [photos]
    if isinstance(photos, np.ndarray | torch.Tensor):
        a = np.asarray(photos)
        return list(a) if a.ndim == 4 else [a]
    return list(photos)


def given_candidates(
    candidates: Any, latent_size: int, label_size: int
) -> tuple[torch.Tensor, torch.Tensor | None, list[str]] | None:
    """(latents, label rows, names) of projections (`Model.project`'s result) or of a
    candidates.json / projections.json, for describe; None when `candidates` are seeds."""
    if isinstance(candidates, str | os.PathLike) and str(candidates).endswith(".json"):
        entries = [(z, lab, what.removeprefix("projection ")) for z, lab, what in read_candidates(candidates)]
    elif isinstance(candidates, Sequence) and candidates and hasattr(candidates[0], "latent"):
        entries = [(p.latent, p.labels, p.name) for p in candidates]
    else:
        return None
    z = torch.from_numpy(np.stack([e[0] for e in entries]).astype(np.float32))
    if z.shape[1] != latent_size:
        raise UserError(f"the candidates hold {z.shape[1]}-value latents; this model takes {latent_size}")
    labels = None
    if label_size:
        if any(e[1] is None for e in entries):
            raise UserError("the candidates have no labels, and this model is conditional")
        labels = torch.from_numpy(np.stack([e[1] for e in entries]).astype(np.float32))
    return z, labels, [e[2] for e in entries]


def read_candidates(path: str | os.PathLike) -> list[tuple[np.ndarray, np.ndarray | None, str]]:
    """[(latent (L,), label row or None, what it is)] of every entry of a describe
    candidates.json or a project projections.json, in rank order: the files `edit --from`,
    `describe --from` and the studio read."""
    try:
        data = json.loads(Path(path).read_text())
        cands = data["candidates"]
        if not isinstance(cands, list):
            raise TypeError("'candidates' is not a list")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(
            f"{path} is not a describe candidates.json or a projections.json ({e}); "
            "pass DIR/candidates.json or DIR/projections.json"
        ) from e
    out = []
    for rank, c in enumerate(cands, 1):
        try:
            latent = np.asarray(c["latent"], dtype=np.float32)
            labels = None if c.get("labels") is None else np.asarray(c["labels"], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(
                f"{path}: candidate {rank} has no usable latent ({e}); make the file again"
            ) from e
        what = f"seed {c['seed']}" if c.get("seed") is not None else f"projection {c.get('name', rank)}"
        out.append((latent, labels, what))
    return out


def read_candidate(path: str | os.PathLike, rank: int = 1) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(latent (L,), label row or None, what it is) of entry `rank` (1 = first) of a describe
    candidates.json or a project projections.json."""
    cands = read_candidates(path)
    if not 1 <= rank <= len(cands):
        raise UserError(f"--rank {rank}: {path} holds candidates 1 to {len(cands)}")
    return cands[rank - 1]


def load(path: str | os.PathLike, device: str | torch.device = "auto") -> Model:
    """A `Model` from a run folder (its newest snapshot), a snapshot folder, or a pretrained
    network file (an official ProGAN .pkl or a GAN zoo .pth, converted in memory; nothing in it
    runs). `device`: auto (a GPU when there is one), cpu, cuda, cuda:1, ..."""
    from progan.device import pick_device

    dev = device if isinstance(device, torch.device) else pick_device(device)
    p = Path(path)
    if p.is_file():
        from progan.pretrained.importer import read_file

        imp = read_file(p)
        G = imp.G_ema
        resolution, alpha = imp.stage
        G.set_stage(int(resolution or imp.config.resolution), float(alpha))
        G.to(dev).eval().requires_grad_(False)
        D = None
        if imp.D is not None:
            D = imp.D
            D.set_stage(G.resolution, float(G.alpha))
            D = D.to(dev).eval().requires_grad_(False)
        return Model(G, p, dev, D=D)
    from progan.checkpoint import load_snapshot

    snap = load_snapshot(p, device=dev)
    return Model(snap.G_ema, snap.path, dev, snap.label_names, snapshot=snap)

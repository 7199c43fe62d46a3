"""`progan describe`: generate candidates, measure each face, rank them against a description.

The score of a candidate is the weighted mean, over the description's wishes that are searched
for (measured traits and learned attributes; a conditional model's labels are set directly and
not scored), of a per-wish score in [0, 1]:

- measured category trait ("red hair"): ``scores[category] * confidence``; negated ("not red
  hair"): ``(1 - scores[category]) * confidence``;
- measured scalar trait ("smiling"): ``(1 - |value - target|) * confidence`` with target 1
  (0.5 for "slightly", 0 for "not");
- learned attribute ("young"): the classifier's probability (1 - probability when negated);

weighted by intensity (1 plain, 2 "very", 0.5 "slightly"). A candidate whose face the measurer
does not find has no score and ranks after every candidate with a face. Ties keep seed order.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from progan.errors import UserError
from progan.faces.words import Description, Wish

SCORE_DOC = (
    "weighted mean over the searched words of a score in [0, 1]: category words "
    "scores[category] x confidence (negated: (1 - scores[category]) x confidence); scalar words "
    "(1 - |value - target|) x confidence, target 1 (slightly: 0.5, not: 0); learned attributes the "
    "classifier's probability (negated: 1 - p); weights 1, 2 for 'very', 0.5 for 'slightly'; "
    "no face found: no score, ranked last"
)
CANDIDATES_FORMAT = "progan-describe"

# measure(images uint8 (N, C, H, W)) -> one FaceMeasurement per image (progan.faces.measure).
MeasureFn = Callable[[torch.Tensor], list]


def default_measure(images: torch.Tensor) -> list:
    from progan.faces.measure import measure_faces

    return measure_faces(images)


def min_measurable_size() -> int:
    try:
        from progan.faces.measure import MIN_SIZE
    except ImportError:  # the measurer's module is optional; its documented limit still holds
        return 64
    return int(MIN_SIZE)


def check_measurable(resolution: int, source: str | os.PathLike) -> None:
    """The one-line refusal for models whose faces are too small to measure."""
    size = min_measurable_size()
    if resolution < size:
        raise UserError(
            f"{source} makes {resolution}x{resolution} images, too small to measure faces in "
            f"(at least {size}x{size} needed); use a model trained at {size}x{size} or more"
        )


def wish_score(wish: Wish, measurement, attribute_probs: dict[str, float] | None) -> float:
    """The score in [0, 1] of one wish on one candidate (see the module docstring)."""
    if wish.source == "attribute":
        p = float((attribute_probs or {}).get(wish.trait, 0.0))
        return 1.0 - p if wish.negated else p
    trait = measurement.traits.get(wish.trait) if measurement is not None else None
    if trait is None:
        return 0.0
    conf = float(trait.confidence)
    if wish.value is not None:
        s = float(trait.scores.get(wish.value, 0.0))
        return (1.0 - s if wish.negated else s) * conf
    target = 0.0 if wish.negated else (0.5 if wish.weight == 0.5 else 1.0)
    return (1.0 - abs(float(trait.value) - target)) * conf


def score_candidate(
    desc: Description, measurement, attribute_probs: dict[str, float] | None
) -> tuple[float | None, dict[str, float]]:
    """(total score or None when no face was found, {wish name: score})."""
    searched = [w for w in desc.wishes if w.source != "label"]
    needs_face = any(w.source == "measured" for w in searched)
    words = {w.name: wish_score(w, measurement, attribute_probs) for w in searched}
    if needs_face and (measurement is None or not measurement.face_found):
        return None, words
    total_w = sum(w.weight for w in searched)
    if not total_w:
        return 0.0, words
    return sum(w.weight * words[w.name] for w in searched) / total_w, words


def label_rows(
    desc: Description, label_size: int, label_names: Sequence[str], seeds: Sequence[int]
) -> torch.Tensor | None:
    """Label rows for a conditional model: the labels the description names are set directly
    (1, or 0 when negated); without any, each seed draws its own as everywhere else."""
    from progan.sampling import labels_for

    if not label_size:
        return None
    wanted = [w.trait for w in desc.wishes if w.source == "label" and not w.negated]
    rows = labels_for(label_size, seeds, ",".join(wanted) if wanted else None, label_names)
    for w in desc.wishes:
        if w.source == "label" and w.negated:
            rows[:, list(label_names).index(w.trait)] = 0
    return rows


@dataclass
class Candidate:
    seed: int
    latent: torch.Tensor  # (L,)
    labels: torch.Tensor | None  # (label_size,) or None
    score: float | None
    words: dict[str, float]
    face_found: bool = True
    reason: str = ""
    traits: dict[str, object] = field(default_factory=dict)  # measured values, for the JSON
    refined: list[dict] = field(default_factory=list)  # steps kept by --refine
    name: str = ""  # a projected photo's name (describe --from projections.json); its seed is an id

    def sort_key(self) -> tuple:
        return (self.score is None, -(self.score or 0.0), self.seed)

    def to_json(self, rank: int) -> dict:
        return {
            "rank": rank,
            "seed": None if self.name else int(self.seed),
            **({"name": self.name} if self.name else {}),
            "score": None if self.score is None else round(float(self.score), 6),
            "words": {k: round(float(v), 6) for k, v in self.words.items()},
            "face_found": bool(self.face_found),
            "reason": self.reason,
            "traits": self.traits,
            "refined": self.refined,
            "latent": [float(x) for x in self.latent.tolist()],
            "labels": None if self.labels is None else [float(x) for x in self.labels.tolist()],
        }


def _traits_json(measurement) -> dict[str, object]:
    if measurement is None or not measurement.face_found:
        return {}
    out = {}
    for name, t in measurement.traits.items():
        value = t.value if isinstance(t.value, str) else round(float(t.value), 4)
        out[name] = {"value": value, "confidence": round(float(t.confidence), 4)}
    return out


def evaluate(
    desc: Description,
    images: torch.Tensor,
    measure: MeasureFn | None,
    attributes=None,
) -> list[tuple[float | None, dict[str, float], object, dict[str, float] | None]]:
    """Score a batch of uint8 images: [(score, words, measurement, attribute probabilities)]."""
    searched = [w for w in desc.wishes if w.source != "label"]
    measurements: list = [None] * len(images)
    if any(w.source == "measured" for w in searched):
        measurements = list((measure or default_measure)(images))
    probs: list[dict[str, float] | None] = [None] * len(images)
    if attributes is not None and any(w.source == "attribute" for w in searched):
        p = attributes.predict(images)
        probs = [dict(zip(attributes.names, row.tolist(), strict=True)) for row in p]
    return [(*score_candidate(desc, m, a), m, a) for m, a in zip(measurements, probs, strict=True)]


def describe(
    G: torch.nn.Module,
    desc: Description,
    seeds: Sequence[int],
    *,
    top: int = 16,
    labels: torch.Tensor | None = None,
    measure: MeasureFn | None = None,
    attributes=None,
    batch: int = 32,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    latent_method: str = "progan",
    progress: bool = True,
    latents: torch.Tensor | None = None,
    names: Sequence[str] | None = None,
) -> tuple[list[Candidate], dict[int, torch.Tensor]]:
    """Generate one candidate per seed, measure and score each; (all candidates best first,
    {seed: uint8 image} of the best `top`). Only the current best images are kept in memory.
    Given `latents` (projected photos, with their `names`), those are the candidates and `seeds`
    are only their ids."""
    from tqdm import tqdm

    from progan.sampling import iter_images, latents_for_seeds

    if latents is None:
        latents = latents_for_seeds(seeds, G.latent_size, latent_method)
    candidates: list[Candidate] = []
    kept: dict[int, torch.Tensor] = {}
    bar = tqdm(total=len(seeds), unit="face", desc="describe", disable=not progress, file=sys.stderr)
    done = 0
    for images in iter_images(G, latents, labels, batch=batch, device=device, precision=precision):
        results = evaluate(desc, images, measure, attributes)
        for k, (total, words, m, _) in enumerate(results):
            i = done + k
            c = Candidate(
                seed=int(seeds[i]),
                latent=latents[i],
                labels=None if labels is None else labels[i],
                score=total,
                words=words,
                face_found=True if m is None else bool(m.face_found),
                reason="" if m is None else str(m.reason),
                traits=_traits_json(m),
                name=names[i] if names else "",
            )
            candidates.append(c)
            kept[i] = images[k]
        # Keep only the images of the `top` best so far: memory stays flat at any --candidates.
        best = set(sorted(range(len(candidates)), key=lambda j: candidates[j].sort_key())[:top])
        kept = {j: img for j, img in kept.items() if j in best}
        done += len(images)
        bar.update(len(images))
    bar.close()
    order = sorted(range(len(candidates)), key=lambda i: candidates[i].sort_key())
    ranked = [candidates[i] for i in order]
    return ranked, {candidates[i].seed: kept[i] for i in order[:top] if i in kept}


def annotated_grid(
    images: Sequence[torch.Tensor], captions: Sequence[list[str]], cell: int = 256
) -> np.ndarray:
    """Images (C, H, W) uint8 in a grid, each with its caption lines drawn below it."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    line = 13
    cap_h = line * max((len(c) for c in captions), default=1) + 6
    n = len(images)
    cols = math.ceil(math.sqrt(n)) if n else 1
    rows = math.ceil(n / cols) if n else 1
    gap = 4
    sheet = Image.new("RGB", (cols * (cell + gap) + gap, rows * (cell + cap_h + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (img, lines) in enumerate(zip(images, captions, strict=True)):
        a = img.cpu().numpy().transpose(1, 2, 0)
        pic = Image.fromarray(a[..., 0] if a.shape[2] == 1 else a).convert("RGB")
        h = pic.size[1]
        resample = Image.Resampling.NEAREST if h < cell else Image.Resampling.LANCZOS
        pic = pic.resize((cell, cell), resample)
        r, k = divmod(i, cols)
        x, y = gap + k * (cell + gap), gap + r * (cell + cap_h + gap)
        sheet.paste(pic, (x, y))
        for j, text in enumerate(lines):
            draw.text((x + 3, y + cell + 3 + j * line), text, fill=(0, 0, 0), font=font)
    return np.asarray(sheet)


def captions_for(ranked: Sequence[Candidate]) -> list[list[str]]:
    out = []
    for rank, c in enumerate(ranked, 1):
        score = "no face" if c.score is None else f"score {c.score:.2f}"
        lines = [f"#{rank} {c.name or f'seed {c.seed}'}  {score}"]
        lines += [f"{name} {s:.2f}" for name, s in c.words.items()]
        out.append(lines)
    return out


def write_results(
    outdir: str | os.PathLike,
    desc: Description,
    ranked: list[Candidate],
    images: dict[int, torch.Tensor],
    top: int,
    info: dict,
) -> tuple[Path, Path]:
    """DIR/best.png (the top candidates, captioned) and DIR/candidates.json (all of them)."""
    from progan.checkpoint import write_json_atomic
    from progan.images import save_image

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    shown = [c for c in ranked[:top] if c.seed in images]
    grid = annotated_grid([images[c.seed] for c in shown], captions_for(shown))
    grid_path = save_image(grid, outdir / "best.png")
    data = {
        "format": CANDIDATES_FORMAT,
        "format_version": 1,
        **info,
        "description": desc.text,
        "understood": desc.summary(),
        "unknown": desc.unknown,
        "wishes": [
            {
                "name": w.name,
                "source": w.source,
                "trait": w.trait,
                "value": w.value,
                "negated": w.negated,
                "weight": w.weight,
                "phrase": w.phrase,
            }
            for w in desc.wishes
        ],  # fmt: skip
        "score": SCORE_DOC,
        "candidates": [c.to_json(rank) for rank, c in enumerate(ranked, 1)],
    }
    json_path = outdir / "candidates.json"
    write_json_atomic(json_path, data)
    return grid_path, json_path


def refine(
    G: torch.nn.Module,
    desc: Description,
    ranked: list[Candidate],
    images: dict[int, torch.Tensor],
    directions: dict[str, tuple[torch.Tensor, dict]],
    *,
    count: int,
    rounds: int = 4,
    step: float = 1.0,
    measure: MeasureFn | None = None,
    attributes=None,
    batch: int = 32,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> list[Candidate]:
    """Push the best `count` candidates along the directions toward the description; a step is
    kept only when the candidate's measured score improves (otherwise the next try is half as
    long). Returns all candidates ranked again; `images` is updated in place."""
    from progan.faces.edit import refine_direction
    from progan.sampling import images_for_latents

    work = []
    for c in ranked[:count]:
        if c.score is None:
            continue
        d, names = refine_direction(desc, directions, c.traits)
        if d is not None:
            work.append([c, d, step, names])
    if not work:
        wanted = ", ".join(w.name for w in desc.wishes if w.source == "measured") or "no measured words"
        raise UserError(
            f"--refine: the snapshot has no directions for {wanted}; "
            "fit them with 'progan directions SNAPSHOT'"
        )
    for _ in range(rounds):
        z = torch.stack([c.latent + s * d for c, d, s, _ in work])
        labels = None if work[0][0].labels is None else torch.stack([c.labels for c, *_ in work])
        imgs = images_for_latents(G, z, labels, batch=batch, device=device, precision=precision)
        for item, zi, img, (total, words, m, _) in zip(
            work, z, imgs, evaluate(desc, imgs, measure, attributes), strict=True
        ):
            c, d, s, names = item
            if total is not None and total > (c.score or 0.0):
                c.latent, c.score, c.words, c.traits = zi, total, words, _traits_json(m)
                c.refined.append(
                    {"step": round(float(s), 4), "score": round(float(total), 6), "along": names}
                )
                images[c.seed] = img
            else:
                item[2] = s / 2
    return sorted(ranked, key=Candidate.sort_key)

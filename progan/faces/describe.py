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

import heapq
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from progan.errors import UserError
from progan.faces.measuring import DEFAULT_MEASURE_SIZE, DEFAULT_MEASURE_WORKERS  # noqa: F401
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
    latent: torch.Tensor | None  # (L,); None until made again from the seed (a journal's candidates)
    labels: torch.Tensor | None  # (label_size,) or None
    score: float | None
    words: dict[str, float]
    face_found: bool = True
    reason: str = ""
    traits: dict[str, object] = field(default_factory=dict)  # measured values, for the JSON
    refined: list[dict] = field(default_factory=list)  # steps kept by --refine
    name: str = ""  # a projected photo's name (describe --from projections.json); its seed is an id
    index: int = field(default=-1, repr=False)  # position in the seed list (for its label row)

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


# candidates.json ranks the best this many (with latents, for `edit --from`); candidates.jsonl holds
# every candidate, so memory stays flat at any --candidates.
RANKED_KEPT = 1000
JOURNAL_NAME = "candidates.jsonl"
JOURNAL_FORMAT = "progan-describe-journal"

# labels: a (N, label_size) tensor for all seeds, or a function of a batch's seeds (streamed), or None.
Labels = torch.Tensor | Callable[[Sequence[int]], torch.Tensor | None] | None


class Ranking(list):
    """The best candidates, best first (a list of Candidate), with the counts over all of them."""

    total: int = 0  # candidates ranked, all of them (the list holds the best `keep`)
    faces_found: int = 0  # of those, how many had a face (or needed none)


def _batch_labels(labels: Labels, seeds: Sequence[int], start: int, chunk: Sequence[int]):
    if labels is None:
        return None
    if isinstance(labels, torch.Tensor):
        return labels[start : start + len(chunk)]
    return labels(chunk)


def downscale(images: np.ndarray, size: int | None) -> np.ndarray:
    """uint8 (N, H, W, C) images box-filtered down to `size` pixels (an integer factor: sizes are
    powers of two), or as they are when `size` is None or not smaller."""
    from PIL import Image

    if size is None or images.shape[1] <= size:
        return images
    factor = images.shape[1] // size
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(im)).reduce(factor)) for im in images])


def measure_downscaled(measure: MeasureFn | None, images: np.ndarray, size: int | None) -> list:
    """Measure uint8 (N, H, W, C) images after `downscale` to `size` pixels (None: as they are).
    The one measuring step of describe, run inline or in a worker process."""
    small = np.ascontiguousarray(downscale(images, size).transpose(0, 3, 1, 2))
    return list((measure or default_measure)(torch.from_numpy(small)))


class _Top:
    """The best `keep` candidates seen so far, in a heap whose root is the worst of them."""

    def __init__(self, keep: int) -> None:
        self.keep, self.heap, self.counter = keep, [], 0

    @staticmethod
    def _badness(c: Candidate) -> tuple:  # the heap's root is the worst: sort_key negated
        return (-int(c.score is None), c.score or 0.0, -c.seed)

    def push(self, c: Candidate) -> bool:
        """Add a candidate; whether it is among the best `keep` now."""
        item = (self._badness(c), c)
        if len(self.heap) < self.keep:
            heapq.heappush(self.heap, item)
            return True
        if item[0] > self.heap[0][0]:
            heapq.heapreplace(self.heap, item)
            return True
        return False

    def ranked(self) -> list[Candidate]:
        return sorted((c for _, c in self.heap), key=Candidate.sort_key)

    def best_score(self) -> float | None:
        scores = [c.score for _, c in self.heap if c.score is not None]
        return max(scores) if scores else None


def _candidate_from_record(r: dict) -> Candidate:
    """A candidate from one line of candidates.jsonl (seed, score, words, face_found, reason,
    traits; the latent and labels follow from the seed and are made again when ranked)."""
    return Candidate(
        seed=int(r["seed"]), latent=None, labels=None, score=r["score"], words=dict(r["words"]),
        face_found=bool(r["face_found"]), reason=str(r["reason"]), traits=dict(r["traits"]),
    )  # fmt: skip


def _without_count(header: dict) -> dict:
    return {k: v for k, v in header.items() if k != "candidates"}


# The header line is padded so that a resume asking for more candidates can rewrite it in place.
_HEADER_PAD = 40


def _header_line(info: dict) -> str:
    text = json.dumps(info)
    return text + " " * _HEADER_PAD + "\n"


def _rewrite_header(path: Path, info: dict) -> None:
    with open(path, "r+b") as f:
        width = len(f.readline()) - 1
        text = json.dumps(info).encode()
        if len(text) > width:
            raise UserError(f"{path}: the new count does not fit its header; start a new --out")
        f.seek(0)
        f.write(text + b" " * (width - len(text)))


def read_journal(path: str | os.PathLike) -> tuple[dict, Iterator[dict]]:
    """(header, records) of a candidates.jsonl, records streamed. A torn last line (a kill while it
    was written) is cut off the file; any other bad line is a UserError naming the file."""
    path = Path(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the generator below
        header = json.loads(f.readline())
        if not isinstance(header, dict) or header.get("format") != JOURNAL_FORMAT:
            raise ValueError("no describe journal header")
    except (OSError, ValueError) as e:
        raise UserError(
            f"{path} is not a describe journal ({e}); resume a directory that 'progan describe --out' wrote"
        ) from e

    def records() -> Iterator[dict]:
        with f:
            good = f.tell()
            for line in f:
                try:
                    if not line.endswith(b"\n"):
                        raise ValueError("torn line")
                    rec = json.loads(line)
                except ValueError:
                    if f.read(1):  # not the last line: the file is damaged, not torn by a kill
                        raise UserError(
                            f"{path}: line after byte {good} is not a candidate; start a new --out"
                        ) from None
                    os.truncate(path, good)
                    return
                good += len(line)
                yield rec

    return header, records()


def describe(
    G: torch.nn.Module,
    desc: Description,
    seeds: Sequence[int],
    *,
    top: int = 16,
    labels: Labels = None,
    measure: MeasureFn | None = None,
    attributes=None,
    batch: int = 32,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    latent_method: str = "progan",
    progress: bool = True,
    keep: int = RANKED_KEPT,
    journal: str | os.PathLike | None = None,
    header: dict | None = None,
    measure_size: int | None = None,
    workers: int = 0,
    should_stop: Callable[[], bool] | None = None,
    on_batch: Callable[[dict], None] | None = None,
    latents: torch.Tensor | None = None,
    names: Sequence[str] | None = None,
) -> tuple[Ranking, dict[int, torch.Tensor]]:
    """Generate one candidate per seed, measure and score each; (the best `keep` candidates best
    first, as a Ranking with the counts of all; {seed: uint8 image} of the best `top`).

    Streamed: latents, labels and images are made a batch at a time, only the best `keep`
    candidates and the images of the best `top` are held, so memory is flat at any number of
    seeds. With `journal` (a candidates.jsonl path) every measured batch is appended to it as it
    ends; when the file already holds candidates (written with the same `header`) they are taken
    as done and the run continues after them, ending with the ranking of an uninterrupted run.
    `measure_size` measures each face box-downscaled to that many pixels; `workers` > 0 measures
    in that many processes while the next batch is generated. `should_stop` ends the run early
    (between batches); `on_batch` gets {"generated", "measured", "total", "best"} after each.
    Given `latents` (N, L) (projected photos, with their `names`), those are the candidates and
    `seeds` are only their ids."""
    from tqdm import tqdm

    from progan.sampling import iter_images, latents_for_seeds

    top_c = _Top(max(keep, top))
    images: dict[int, torch.Tensor] = {}  # of the best `top` candidates
    done, faces = 0, 0
    out = None
    if journal is not None:
        journal = Path(journal)
        info = {"format": JOURNAL_FORMAT, "format_version": 1, **(header or {}), "candidates": len(seeds)}
        if journal.is_file() and journal.stat().st_size:
            old, records = read_journal(journal)
            if _without_count(old) != _without_count(info):
                raise UserError(
                    f"{journal} was written by another describe run; resume it with its own options"
                )
            for rec in records:
                if done >= len(seeds):
                    raise UserError(f"{journal} holds more than {len(seeds)} candidates; ask for more")
                if int(rec["seed"]) != int(seeds[done]):
                    raise UserError(
                        f"{journal}: candidate {done} is not seed {seeds[done]}; start a new --out"
                    )
                c = _candidate_from_record(rec)
                c.index = done
                c.name = names[done] if names else ""
                top_c.push(c)
                faces += c.score is not None
                done += 1
            if old["candidates"] != len(seeds):
                _rewrite_header(journal, info)  # a later --resume continues to the new count
        else:
            journal.parent.mkdir(parents=True, exist_ok=True)
            journal.write_text(_header_line(info))
        out = open(journal, "a")  # noqa: SIM115 - closed below
    bar = tqdm(
        total=len(seeds), initial=done, unit="face", desc="describe", disable=not progress, file=sys.stderr
    )
    generated = done
    searched = [w for w in desc.wishes if w.source != "label"]
    needs_measure = any(w.source == "measured" for w in searched)
    measure = measure or default_measure  # resolved here: a worker process sees the caller's choice
    pool = None
    if workers and needs_measure:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))

    def finish(pending) -> None:
        """Score a generated batch whose measurements are due, journal it, keep the best."""
        nonlocal done, faces
        start, imgs, probs, measured = pending
        if pool is not None:
            measured = [m for f in measured for m in f.result()]
        for k, (m, a) in enumerate(zip(measured, probs, strict=True)):
            total, words = score_candidate(desc, m, a)
            record = {
                "seed": int(seeds[start + k]), "score": None if total is None else round(float(total), 6),
                "words": {k: round(float(v), 6) for k, v in words.items()},
                "face_found": True if m is None else bool(m.face_found),
                "reason": "" if m is None else str(m.reason), "traits": _traits_json(m),
            }  # fmt: skip
            # The candidate is made from its journal line, so a resumed run ranks the same numbers.
            c = _candidate_from_record(record)
            c.index = start + k
            c.name = names[start + k] if names else ""
            faces += total is not None
            if top_c.push(c):
                images[c.seed] = imgs[k]
            if out is not None:
                out.write(json.dumps(record) + "\n")
        if out is not None:
            out.flush()  # a kill now loses at most the batch being measured
        wanted = {c.seed for c in top_c.ranked()[:top]}
        for s in [s for s in images if s not in wanted]:
            del images[s]
        done += len(imgs)
        bar.update(len(imgs))
        best = top_c.best_score()
        bar.set_postfix_str(
            f"generated {generated}, measured {done}, best {'-' if best is None else f'{best:.3f}'}"
        )
        if on_batch is not None:
            on_batch({"generated": generated, "measured": done, "total": len(seeds), "best": best})

    try:
        pending = None
        for start in range(done, len(seeds), batch):
            chunk = seeds[start : start + batch]
            if latents is None:
                z = latents_for_seeds(chunk, G.latent_size, latent_method)
            else:
                z = latents[start : start + len(chunk)]
            lab = _batch_labels(labels, seeds, start, chunk)
            (imgs,) = iter_images(G, z, lab, batch=len(z), device=device, precision=precision)
            generated += len(imgs)
            probs: list = [None] * len(imgs)
            if attributes is not None and any(w.source == "attribute" for w in searched):
                p = attributes.predict(imgs)
                probs = [dict(zip(attributes.names, row.tolist(), strict=True)) for row in p]
            if not needs_measure:
                measured = [None] * len(imgs)
            elif pool is None:
                measured = measure_downscaled(measure, imgs.permute(0, 2, 3, 1).numpy(), measure_size)
            else:
                hwc = imgs.permute(0, 2, 3, 1).numpy()
                measured = [
                    pool.submit(measure_downscaled, measure, hwc[k : k + 1], measure_size)
                    for k in range(len(hwc))
                ]
            if pending is not None:
                finish(pending)  # the previous batch, measured while this one was generated
            pending = (start, imgs, probs, measured)
            if should_stop is not None and should_stop():
                break
        if pending is not None:
            finish(pending)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if out is not None:
            out.close()
        bar.close()
    ranking = Ranking(top_c.ranked())
    ranking.total, ranking.faces_found = done, faces
    _fill_latents(G, ranking, seeds, labels, latent_method, latents)
    missing = [c for c in ranking[:top] if c.seed not in images]
    if missing:  # candidates of a resumed run's earlier part: their images through the same path
        from progan.sampling import images_for_latents

        z = torch.stack([c.latent for c in missing])
        lab = None if missing[0].labels is None else torch.stack([c.labels for c in missing])
        for c, img in zip(
            missing,
            images_for_latents(G, z, lab, batch=batch, device=device, precision=precision),
            strict=True,
        ):
            images[c.seed] = img
    return ranking, {c.seed: images[c.seed] for c in ranking[:top]}


def _fill_latents(
    G, ranking: list[Candidate], seeds, labels: Labels, latent_method: str, latents: torch.Tensor | None
) -> None:
    """Each ranked candidate's latent and label row, made again from its seed or taken from the
    given latents (the journal holds neither)."""
    from progan.sampling import latents_for_seeds

    if not ranking:
        return
    if latents is not None:
        z = latents[[c.index for c in ranking]]
    else:
        z = latents_for_seeds([c.seed for c in ranking], G.latent_size, latent_method)
    for c, zi in zip(ranking, z, strict=True):
        c.latent = zi
        rows = _batch_labels(labels, seeds, c.index, [c.seed])
        c.labels = None if rows is None else rows[0]


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
    """DIR/best.png (the top candidates, captioned), DIR/top/NN-seedS.png (each of them at full
    size) and DIR/candidates.json (the ranked candidates, at most RANKED_KEPT; every candidate is in
    the journal, candidates.jsonl)."""
    from progan.checkpoint import write_json_atomic
    from progan.images import save_image

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    shown = [c for c in ranked[:top] if c.seed in images]
    grid = annotated_grid([images[c.seed] for c in shown], captions_for(shown))
    grid_path = save_image(grid, outdir / "best.png")
    for old in (outdir / "top").glob("*.png"):  # a rerun's ranking replaces the last one's
        old.unlink()
    for rank, c in enumerate(shown, 1):
        save_image(images[c.seed].numpy().transpose(1, 2, 0), outdir / "top" / f"{rank:02d}-seed{c.seed}.png")
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
        "journal": f"{JOURNAL_NAME}: every candidate, in seed order, one JSON object a line",
        "candidates": [c.to_json(rank) for rank, c in enumerate(ranked, 1)],
    }
    json_path = outdir / "candidates.json"
    write_json_atomic(json_path, data)
    return grid_path, json_path


# Random moves tried beside the directions' step in each round of --refine. A trait that no
# direction edits well still changes under small random moves: on the 533 kimg portraits model a
# random move of an edit's length changed the oracle's eye colour in 12-14% of faces, while the
# eye-colour directions held out at 0.54-0.74. With 8 a round, `--refine 16` took the main
# sentence's precision@16 (the oracle's, through the classifier) from 0.62 with the directions
# alone to 1.00 (benchmarks/README.md, issue 29); a round renders 16 x 9 faces then.
REFINE_PROPOSALS = 8


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
    proposals: int | None = None,
    measure: MeasureFn | None = None,
    attributes=None,
    batch: int = 32,
    device: torch.device | str = "cpu",
    precision: str = "auto",
) -> list[Candidate]:
    """Push the best `count` candidates toward the description. Each round every face tries a step
    along the directions, each wish weighed by what the face still misses of it (refine_direction),
    and `proposals` random moves of the same length (seeded by the face's seed and the round;
    None: REFINE_PROPOSALS); the
    best try is kept only when it raises the candidate's score (when none does, the next tries are
    half as long). So a round renders count x (1 + proposals) faces. Returns all candidates ranked
    again; `images` is updated in place."""
    from progan.faces.edit import refine_direction
    from progan.sampling import images_for_latents

    proposals = REFINE_PROPOSALS if proposals is None else proposals
    if proposals < 0:
        raise UserError(f"--refine-proposals {proposals}: give 0 (the directions only) or more")
    work = []
    for c in ranked[:count]:
        if c.score is None:
            continue
        d, names = refine_direction(desc, directions, c.traits, c.latent, c.words)
        if d is not None or proposals:
            work.append([c, d, step, names])
    if not work:  # with proposals, every measured face is work
        wanted = ", ".join(w.name for w in desc.wishes if w.source != "label") or "no measured words"
        how = "--attributes FILE" if any(w.source == "attribute" for w in desc.wishes) else ""
        raise UserError(
            f"--refine: the snapshot has no directions for {wanted}; "
            f"fit them with 'progan directions SNAPSHOT{' ' + how if how else ''}'"
        )
    for r in range(rounds):
        if r:  # a softmax category's direction depends on the face: take it where the face is now
            for item in work:
                d = refine_direction(desc, directions, item[0].traits, item[0].latent, item[0].words)[0]
                item[1] = item[1] if d is None else d
        tries, owners, along = [], [], []
        for i, (c, d, s, names) in enumerate(work):
            moves = [] if d is None else [(d, names)]
            if proposals:
                g = torch.Generator().manual_seed((int(c.seed) % 2**31) * 1009 + r)
                u = torch.randn(proposals, c.latent.shape[-1], generator=g)
                moves += [(v, ["random"]) for v in u / u.norm(dim=1, keepdim=True)]
            for v, why in moves:
                tries.append(c.latent + s * v.to(c.latent))
                owners.append(i)
                along.append(why)
        z = torch.stack(tries)
        labels = None
        if work[0][0].labels is not None:
            labels = torch.stack([work[i][0].labels for i in owners])
        imgs = images_for_latents(G, z, labels, batch=batch, device=device, precision=precision)
        best: dict[int, int] = {}
        scored = evaluate(desc, imgs, measure, attributes)
        for k, (total, *_rest) in enumerate(scored):
            i = owners[k]
            if total is not None and total > (work[i][0].score or 0.0):
                if i not in best or total > scored[best[i]][0]:
                    best[i] = k
        for i, item in enumerate(work):
            c, _, s, _ = item
            if i not in best:
                item[2] = s / 2
                continue
            k = best[i]
            total, words, m, _ = scored[k]
            c.latent, c.score, c.words, c.traits = z[k], total, words, _traits_json(m)
            c.refined.append({"step": round(float(s), 4), "score": round(float(total), 6), "along": along[k]})
            images[c.seed] = imgs[k]
    out = Ranking(sorted(ranked, key=Candidate.sort_key))
    out.total = getattr(ranked, "total", len(ranked))
    out.faces_found = getattr(ranked, "faces_found", sum(c.score is not None for c in ranked))
    return out

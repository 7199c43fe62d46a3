"""Latent directions for measured traits (`progan directions`), edits along them, and `--refine`.

Fitting follows InterFaceGAN (Shen et al., CVPR 2020): sample many latents, measure each face,
and for every trait score (a category's score such as hair_colour=red, or a scalar trait such as
smile) train a linear SVM that separates the latents of the highest-scoring fraction from the
lowest; the unit normal of its boundary is the trait's direction. A category (red hair, blue
eyes) is a yes/no fact instead: its SVM separates every face measured as that category from every
other face, the classes weighted to balance. 30% of those samples are held out and the SVM's
(class-balanced) accuracy on them is stored with the direction, so a weak direction shows as
one. The categories of one trait are then fitted together as a softmax over the latents
(`fit_softmax`), which replaces their SVM directions where it holds out some category clearly
better (SOFTMAX_GAIN): a model that lays hair colour on one latent axis puts red in its middle,
where no half-space holds it (the SVM's held-out accuracy was 0.52 on the portraits model), and
only a face-dependent move reaches it (directions.py). The measure function is a parameter:
`progan.faces.measure.measure_faces` by default, any function with its interface in tests.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import numpy as np
import torch

from progan.errors import UserError, install_hint
from progan.faces.words import CATEGORY_NOUN, Description, Wish

MeasureFn = Callable[[torch.Tensor], list]


def direction_name(trait: str, category: str | None) -> str:
    """'hair_colour', 'red' -> 'red_hair'; 'hair_colour', 'bald' -> 'bald'; 'smile' -> 'smile'."""
    if category is None:
        return trait
    if category == "bald":
        return "bald"
    return f"{category}_{CATEGORY_NOUN.get(trait, trait)}"


def trait_scores(measurement) -> dict[str, tuple[str, str | None, float, float]]:
    """direction name -> (trait, category, score, confidence) of one face."""
    out = {}
    for trait, t in measurement.traits.items():
        if t.scores:
            for cat, s in t.scores.items():
                out[direction_name(trait, cat)] = (trait, cat, float(s), float(t.confidence))
        elif not isinstance(t.value, str):
            out[direction_name(trait, None)] = (trait, None, float(t.value), float(t.confidence))
    return out


def _sklearn(module: str, name: str):
    """A scikit-learn class, or the one-line error naming the extra to install."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as e:
        raise UserError(f"fitting directions needs scikit-learn; {install_hint('describe')}") from e


def linear_svm():
    """sklearn's LinearSVC, or the one-line error naming the extra to install."""
    return _sklearn("sklearn.svm", "LinearSVC")


def _holdout_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out, training) indices of n samples: a seeded 30% (at least 2) held out."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(2, int(0.3 * n))
    return perm[:n_val], perm[n_val:]


def fit_direction(
    latents: np.ndarray,
    scores: np.ndarray,
    fraction: float = 0.25,
    seed: int = 0,
    threshold: float | None = None,
) -> tuple[np.ndarray, float, int] | None:
    """InterFaceGAN's boundary: (unit normal, held-out accuracy, samples used), or None when the
    scores do not vary enough to separate a top from a bottom group.

    Without `threshold` the groups are the top and bottom `fraction` of the scores. With one (a
    category's 0.5) they are all scores above it against all below, the classes weighted to
    balance: a category rarer than `fraction` would otherwise fill its top group with faces
    measured as not of it, picked by how unsure the measurer was of them (see fit_directions).
    When fewer than 5 scores lie on one side, the quarters are used after all."""
    LinearSVC = linear_svm()

    n = len(scores)
    if threshold is not None:
        lo, hi = np.flatnonzero(scores < threshold), np.flatnonzero(scores > threshold)
    if threshold is None or min(len(lo), len(hi)) < 5:  # a category (almost) no face is measured
        k = int(n * fraction)  # as, or every face: the most and the least of it, as a scalar
        order = np.argsort(scores, kind="stable")
        lo, hi = order[:k], order[n - k :]
        if k < 5 or scores[hi].min() - scores[lo].max() <= 1e-3:
            return None
    x = np.concatenate([latents[lo], latents[hi]])
    y = np.concatenate([np.zeros(len(lo)), np.ones(len(hi))])
    val, train = _holdout_split(len(y), seed)
    # Balanced weights, and accuracy as the mean of the two classes' recalls: with one red face in
    # five, "never red" would otherwise score 0.8 and look like a direction.
    svm = LinearSVC(C=1.0, dual="auto", max_iter=5000, random_state=seed, class_weight="balanced")
    svm.fit(x[train], y[train])
    hit = svm.predict(x[val]) == y[val]
    acc = float(np.mean([hit[y[val] == c].mean() for c in (0, 1) if (y[val] == c).any()]))
    svm = LinearSVC(C=1.0, dual="auto", max_iter=5000, random_state=seed, class_weight="balanced").fit(x, y)
    w = svm.coef_[0].astype(np.float32)
    norm = float(np.linalg.norm(w))
    if not norm > 0:
        return None
    return w / norm, acc, len(y)


# `directions` keeps every sample's latent and measurement to fit on (about 7 KB a sample with a
# 512-d latent, and the SVM's copy): above this many it refuses at once instead of running for
# hours and then running out of memory. InterFaceGAN's directions need a few thousand samples.
MAX_DIRECTION_SAMPLES = 100_000


def check_sample_count(samples: int) -> None:
    """UserError (one line) above MAX_DIRECTION_SAMPLES samples."""
    if samples > MAX_DIRECTION_SAMPLES:
        raise UserError(
            f"--samples {samples} is above the limit of {MAX_DIRECTION_SAMPLES:,} (every sample's latent and "
            f"measurement are kept to fit on); use at most {MAX_DIRECTION_SAMPLES:,}, a few thousand suffice"
        )


def sample_measurements(
    G: torch.nn.Module,
    seeds: Sequence[int],
    measure: MeasureFn,
    *,
    labels: torch.Tensor | None = None,
    batch: int = 32,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    latent_method: str = "progan",
    progress: bool = True,
) -> tuple[torch.Tensor, list]:
    """Latents of the seeds and the measurement of each generated face."""
    from tqdm import tqdm

    from progan.sampling import iter_images, latents_for_seeds

    check_sample_count(len(seeds))
    z = latents_for_seeds(seeds, G.latent_size, latent_method)
    out: list = []
    bar = tqdm(total=len(seeds), unit="face", desc="measure", disable=not progress, file=sys.stderr)
    for images in iter_images(G, z, labels, batch=batch, device=device, precision=precision):
        out += list(measure(images))
        bar.update(len(images))
    bar.close()
    return z, out


def fit_directions(
    latents: torch.Tensor, measurements: Sequence, fraction: float = 0.25, min_faces: int = 20
) -> tuple[dict[str, tuple[torch.Tensor, dict]], dict[str, str]]:
    """({name: (unit direction, metadata)}, {name: why it was skipped}) from measured samples."""
    found = [i for i, m in enumerate(measurements) if m.face_found]
    if len(found) < min_faces:
        raise UserError(
            f"only {len(found)} of {len(measurements)} samples have a face the measurer finds "
            f"(at least {min_faces} needed); use more --samples or a model that makes faces"
        )
    z = latents[found].numpy()
    per_face = [trait_scores(measurements[i]) for i in found]
    names = sorted({k for s in per_face for k in s})
    fitted, skipped = {}, {}
    for name in names:
        rows = [(j, s[name]) for j, s in enumerate(per_face) if name in s]
        idx = np.array([j for j, _ in rows])
        # A low-confidence measurement pulls its score to the middle instead of being trusted.
        scores = np.array([0.5 + (v[2] - 0.5) * v[3] for _, v in rows], dtype=np.float64)
        # A category's score says yes or no (the pull keeps its side of 0.5): ranking by it would
        # rank the faces a rare category is NOT of by the measurer's confidence in them, a trait
        # of its own (dark hair shows less strand detail) that then became the category's direction.
        threshold = 0.5 if rows and rows[0][1][1] is not None else None
        result = (
            fit_direction(z[idx], scores, fraction, threshold=threshold) if len(rows) >= min_faces else None
        )
        if result is None:
            skipped[name] = "too few faces" if len(rows) < min_faces else "the measured scores do not vary"
            continue
        vector, acc, used = result
        trait, category = rows[0][1][0], rows[0][1][1]
        info = {"source": "progan directions", "trait": trait, "category": category,
                "samples": int(used), "holdout_accuracy": round(acc, 4)}  # fmt: skip
        fitted[name] = (torch.from_numpy(vector), info)
    # Each category trait's categories together, as a softmax, replacing their SVM directions
    # where it separates some category clearly better (a category in the middle of an axis).
    for trait in sorted({v[0] for s in per_face for v in s.values() if v[1] is not None}):
        rows, labels = [], []
        for j, s in enumerate(per_face):
            cats = {v[1]: v[2] for v in s.values() if v[0] == trait and v[1] is not None}
            if cats:
                rows.append(j)
                labels.append(max(cats, key=cats.get))
        if len(rows) >= min_faces:
            names = {c: direction_name(trait, c) for c in set(labels)}
            info = {"source": "progan directions", "trait": trait}
            _softmax_where_better(fitted, z[rows], labels, names, info)
    return fitted, skipped


def _softmax_where_better(
    fitted: dict[str, tuple[torch.Tensor, dict]],
    latents: np.ndarray,
    labels: list[str],
    names: dict[str, str],
    info: dict,
    key: str = "category",
) -> None:
    """Fit one trait's categories (`labels`, one per latent) as a softmax and let it replace
    their directions in `fitted` (category -> direction name by `names`) where it holds out some
    category better by SOFTMAX_GAIN than the SVM did; `info` plus {key: category} is each one's
    metadata."""
    softmax = fit_softmax(latents, labels)
    if softmax is None:
        return
    gain = max(acc - (fitted[names[c]][1]["holdout_accuracy"] if names[c] in fitted else 0.5)
               for c, (*_, acc) in softmax.items())  # fmt: skip
    if gain < SOFTMAX_GAIN:
        return
    for category, (vector, scale, bias, acc) in softmax.items():
        meta = {**info, key: category, "model": "softmax", "logit_scale": round(scale, 6),
                "logit_bias": round(bias, 6), "samples": len(labels),
                "holdout_accuracy": round(acc, 4)}  # fmt: skip
        fitted[names[category]] = (torch.from_numpy(vector), meta)


def exclusive_groups(on: np.ndarray, names: Sequence[str], overlap: float = 0.1) -> dict[str, str]:
    """name -> the trait it belongs to, from a classifier's yes/no answers `on` (N, A) on sampled
    faces: attributes that (almost) never hold together (black and blond hair, blue and brown
    eyes) are categories of one trait, named by its members joined with '|'; the others are
    traits of their own. Two attributes exclude each other when the faces with both are at most
    `overlap` of the rarer one's; a group grows greedily in the classifier's order and admits an
    attribute only if it excludes every member (so wavy hair never joins the hair colours).
    InterFaceGAN's classifiers name no traits; this recovers them so that an edit of one colour
    frees its sibling colours instead of holding them fixed."""
    on = np.asarray(on, bool)
    counts = on.sum(0)
    both = on.T.astype(np.int64) @ on.astype(np.int64)
    groups: list[list[int]] = []
    for j in range(len(names)):
        for g in groups:
            if counts[j] and all(counts[k] and both[j, k] <= overlap * min(counts[j], counts[k]) for k in g):
                g.append(j)
                break
        else:
            groups.append([j])
    out = {}
    for g in groups:
        trait = "|".join(sorted(names[k] for k in g)) if len(g) > 1 else names[g[0]]
        out.update({names[k]: trait for k in g})
    return out


def fit_attribute_directions(
    latents: torch.Tensor, probs: np.ndarray, names: Sequence[str], source: str, min_faces: int = 20
) -> tuple[dict[str, tuple[torch.Tensor, dict]], dict[str, str]]:
    """({name: (unit direction, metadata)}, {name: why it was skipped}) from a learned
    classifier's probabilities (N, A) on sampled faces: InterFaceGAN's own recipe, whose
    boundaries come from attribute classifiers. Each attribute's SVM separates the faces the
    classifier says have it (p > 0.5) from the rest, the classes balanced (fit_direction's
    threshold); the attributes that exclude each other (`exclusive_groups`) are one trait, fitted
    as a softmax too where it holds out better, exactly as the measured categories
    (fit_directions). Directions are named as the attributes."""
    z = latents.numpy()
    probs = np.asarray(probs, np.float64)
    trait_of = exclusive_groups(probs > 0.5, names)
    fitted, skipped = {}, {}
    for j, name in enumerate(names):
        result = fit_direction(z, probs[:, j], threshold=0.5)
        if result is None:
            skipped[name] = "the classifier's answers do not vary"
            continue
        vector, acc, used = result
        info = {"source": source, "trait": trait_of[name], "attribute": name,
                "samples": int(used), "holdout_accuracy": round(acc, 4)}  # fmt: skip
        fitted[name] = (torch.from_numpy(vector), info)
    for trait in sorted(set(trait_of.values())):
        members = [j for j, n in enumerate(names) if trait_of[n] == trait]
        if len(members) < 2:
            continue
        sub = probs[:, members]
        rows = np.flatnonzero((sub > 0.5).any(1))
        if len(rows) < min_faces:
            continue
        labels = [names[members[k]] for k in sub[rows].argmax(1)]
        _softmax_where_better(
            fitted, z[rows], labels, {n: n for n in labels}, {"source": source, "trait": trait}, "attribute"
        )
    return fitted, skipped


# A category needs this many faces measured as it to be a class of its trait's softmax; rarer
# ones (a bald face among 2,000 portraits) keep their SVM direction.
MIN_CLASS_FACES = 10
# The softmax replaces a trait's SVM directions only when it holds out some category better by
# this much. On the 371 kimg portraits model: hair colour gained 0.28 (red, 0.52 -> 0.80) and its
# edits went from 0.09-0.84 to 0.84-0.92 for every colour; face shape gained at most 0.06 (square)
# and its softmax edited round faces worse than the SVM (0.58 against 0.67 of 100 seeds).
SOFTMAX_GAIN = 0.1


def fit_softmax(
    latents: np.ndarray, labels: Sequence[str], seed: int = 0
) -> dict[str, tuple[np.ndarray, float, float, float]] | None:
    """A trait's categories as one softmax over pixel-normalised latents (multinomial logistic
    regression, the classes weighted to balance as fit_direction's): category -> (unit logit
    direction, logit scale, logit bias, held-out accuracy), or None when fewer than two categories
    have MIN_CLASS_FACES faces. The accuracy is the category's one-against-the-rest recall mean on
    a held-out 30%, as fit_direction's."""
    LogisticRegression = _sklearn("sklearn.linear_model", "LogisticRegression")
    y = np.asarray(labels)
    classes = [c for c in sorted(set(labels)) if (y == c).sum() >= MIN_CLASS_FACES]
    if len(classes) < 2:
        return None
    rows = np.isin(y, classes)
    x = latents[rows].astype(np.float64)
    x *= np.sqrt(x.shape[1]) / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    y = y[rows]
    val, train = _holdout_split(len(y), seed)
    fit = LogisticRegression(C=1.0, max_iter=3000, class_weight="balanced").fit(x[train], y[train])
    pred = fit.predict(x[val])
    accuracy = {}
    for c in classes:
        on = y[val] == c
        recalls = [((pred == c) == on)[side].mean() for side in (on, ~on) if side.any()]
        accuracy[c] = float(np.mean(recalls))
    fit = LogisticRegression(C=1.0, max_iter=3000, class_weight="balanced").fit(x, y)
    W, b = fit.coef_, fit.intercept_
    if len(fit.classes_) == 2:  # sklearn keeps one row for two classes: p(second) = sigmoid(w.x + b)
        W, b = np.stack([-W[0] / 2, W[0] / 2]), np.array([-b[0] / 2, b[0] / 2])
    out = {}
    for c, w, bias in zip(fit.classes_, W, b, strict=True):
        scale = float(np.linalg.norm(w))
        if not scale > 0:
            return None
        out[str(c)] = ((w / scale).astype(np.float32), scale, float(bias), accuracy[str(c)])
    return out


def wish_direction(wish: Wish, current: float | None = None) -> tuple[str, float] | None:
    """(direction name, sign) that moves a face toward a measured wish, or a learned attribute's
    (its direction is named as the attribute: `progan directions --attributes`), or None."""
    if wish.source == "attribute":
        return wish.trait, (-1.0 if wish.negated else 1.0)
    if wish.source != "measured":
        return None
    name = direction_name(wish.trait, wish.value)
    if wish.value is not None:
        return name, (-1.0 if wish.negated else 1.0)
    target = 0.0 if wish.negated else (0.5 if wish.weight == 0.5 else 1.0)
    if current is not None and target == 0.5:
        return name, (1.0 if current < 0.5 else -1.0)
    return name, (1.0 if target > 0 else -1.0)


def refine_direction(
    desc: Description,
    directions: dict[str, tuple[torch.Tensor, dict]],
    traits: dict | None,
    latent: torch.Tensor,
    words: dict[str, float] | None = None,
) -> tuple[torch.Tensor | None, list[str]]:
    """One unit direction at `latent` toward all the description's measured (or learned) wishes,
    and the names used: the sum of each wish's unit direction, signed and weighted, conditioned on
    the other traits' directions; a softmax category's is the step `edit` would take at this face
    (directions.conditioned_at), none where that lies within the kept directions.

    With the face's per-wish scores `words` (describe's, in [0, 1]) each wish is weighed by what
    it still misses, 1 - score (at least MIN_SHORTFALL): a face that is already red-haired and
    round but not blue-eyed moves toward blue eyes, not a third of the way along each."""
    from progan.directions import conditioned, conditioned_at, is_softmax, kept_basis

    picks = []
    for w in desc.wishes:
        cur = None
        if traits and w.value is None and w.trait in traits:
            cur = traits[w.trait].get("value")
        got = wish_direction(w, cur if isinstance(cur, (int, float)) else None)
        if got and got[0] in directions:
            miss = 1.0 if words is None or w.name not in words else max(MIN_SHORTFALL, 1.0 - words[w.name])
            picks.append((got[0], got[1] * w.weight * miss))
    if not picks:
        return None, []
    names = list(dict.fromkeys(n for n, _ in picks))
    units = conditioned(directions, names)
    for n in names:
        if is_softmax(directions[n][1]):
            basis = kept_basis(directions, n, names)
            units[n] = conditioned_at(directions, n, latent[None].float(), basis)[0]
    total = sum(sign * units[n] for n, sign in picks)
    norm = float(total.norm())
    return (total / norm if norm > 0 else None), names


# A wish the face already meets still pulls a little (a score of 0.97 is not certainty), so that
# a face meeting all of them keeps moving toward the description as a whole.
MIN_SHORTFALL = 0.05


# `edit --keep-with`: random moves tried around an edited face a round, and rounds. Each try moves
# KEEP_STEP_SHARE of the edit's own length at first (half as far after a round in which no try
# helped); an asked attribute may fall at most KEEP_ASKED_SLACK below what the edit reached.
KEEP_ROUNDS = 8
KEEP_PROPOSALS = 8
KEEP_STEP_SHARE = 0.5
KEEP_ASKED_SLACK = 0.1


def asked_groups(directions: dict[str, tuple[torch.Tensor, dict]], names: Sequence[str]) -> set[str]:
    """The classifier attributes an edit of `names` is allowed to change: each edited attribute and
    the attributes its direction's trait groups with it (red hair frees black, brown, blond and
    grey hair: `progan directions --attributes` names the trait 'black_hair|blond_hair|...')."""
    out = set()
    for name in names:
        trait = str(directions[name][1].get("trait", name))
        out |= set(trait.split("|")) if name in trait.split("|") else {name}
    return out


def keep_unasked(
    G: torch.nn.Module,
    before: torch.Tensor,
    after: torch.Tensor,
    amounts: dict[str, float],
    directions: dict[str, tuple[torch.Tensor, dict]],
    classifier,
    *,
    labels: torch.Tensor | None = None,
    seeds: Sequence[int] | None = None,
    rounds: int = KEEP_ROUNDS,
    proposals: int = KEEP_PROPOSALS,
    batch: int = 32,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    sides: bool = True,
) -> tuple[torch.Tensor, dict]:
    """Edited latents `after` (N, L) of `before` moved, by a random search, to where `classifier`
    (a `progan attributes fit` model) sees the attributes not asked for as they were before the
    edit, and the asked ones still where the edit took them.

    A linear edit keeps other traits only as far as their directions see (InterFaceGAN's
    conditioning); a trait that changes under any small move (a 64x64 portrait's iris colour: a
    random move of an edit's length changed the oracle's eye colour in 12-14% of faces) is not
    held by it. Each round every face tries `proposals` random moves (seeded by `seeds` and the
    round) of KEEP_STEP_SHARE of its edit's length; the try with the least summed change of the
    unasked attributes' probabilities replaces the face when it lowers that change and keeps every
    asked attribute within KEEP_ASKED_SLACK of what the edit reached.

    With `sides` the classifier also reads each side of the face alone (`mirrored_halves`: one
    eye at a time), and those readings of the unasked attributes are kept too. A generator may
    paint a face's two eyes in two colours, and the whole-face reading of such a face flips when
    either eye moves a little. On the 608.8 kimg portraits model, `red_hair=+2` on 300 faces
    changed the oracle's eye colour in 8.7% with `sides` against 11.7% without (the blur-trained
    oracle: 10.0% and 11.3%; benchmarks/README.md, "The two eyes, read one at a time"); it
    costs two more classifier passes a try. Returns the latents and {"unasked_change_before",
    "unasked_change_after"}: the mean summed change per face of the whole-face readings."""
    from progan.faces.attributes import mirrored_halves
    from progan.sampling import images_for_latents

    for name in amounts:
        if name not in classifier.names:
            raise UserError(
                f"--keep-with: the classifier has no attribute {name!r} "
                f"(it has {', '.join(classifier.names)}); edit along its directions "
                "('progan directions SNAPSHOT --attributes FILE')"
            )
    if rounds < 0 or proposals < 1:
        raise UserError(f"--keep-with: 1 or more proposals and 0 or more rounds, not {proposals}, {rounds}")
    col = {n: i for i, n in enumerate(classifier.names)}
    free = asked_groups(directions, list(amounts))
    unasked = [col[n] for n in classifier.names if n not in free]
    asked = [(col[n], 1.0 if a > 0 else -1.0) for n, a in amounts.items()]

    # The columns kept: the unasked attributes of the whole face, then of each side's reading.
    width = len(classifier.names)
    kept = unasked + ([width + k for k in range(2 * len(unasked))] if sides else [])

    def judge(z: torch.Tensor, lab: torch.Tensor | None) -> np.ndarray:
        images = images_for_latents(G, z, lab, batch=batch, device=device, precision=precision)
        p = classifier.predict(images)
        if not sides:
            return p
        return np.concatenate([p] + [classifier.predict(h)[:, unasked] for h in mirrored_halves(images)], 1)

    p0, p1 = judge(before, labels), judge(after, labels)
    floor = {j: p1[:, j] * s - KEEP_ASKED_SLACK for j, s in asked}  # sign * p must stay above

    def change(p: np.ndarray, rows: np.ndarray, cols: list[int] = kept) -> np.ndarray:
        return np.abs(p[:, cols] - p0[rows][:, cols]).sum(1)

    n = len(before)
    rows = np.arange(n)
    best, cost, whole = after.clone(), change(p1, rows), change(p1, rows, unasked)
    start = whole.copy()
    step = KEEP_STEP_SHARE * (after - before).norm(dim=1)
    seeds = list(range(n)) if seeds is None else list(seeds)
    for r in range(rounds):
        u = torch.cat([torch.randn(proposals, before.shape[1],
                                   generator=torch.Generator().manual_seed((int(s) % 2**31) * 1013 + r))
                       for s in seeds])  # fmt: skip
        owner = np.repeat(rows, proposals)
        tries = best[owner] + step[owner, None] * u / u.norm(dim=1, keepdim=True)
        p = judge(tries, None if labels is None else labels[owner])
        c = change(p, owner)
        ok = np.all([p[:, j] * s >= floor[j][owner] for j, s in asked], axis=0)
        c = np.where(ok, c, np.inf).reshape(n, proposals)
        k = c.argmin(1)
        better = c[rows, k] < cost
        pick = rows[better] * proposals + k[better]
        best[better] = tries[pick]
        whole[better] = change(p[pick], rows[better], unasked)
        cost = np.where(better, c[rows, k], cost)
        step = torch.where(torch.from_numpy(better), step, step / 2)
    return best, {"unasked_change_before": float(start.mean()), "unasked_change_after": float(whole.mean())}

"""`progan describe`, `progan attributes fit`, `progan directions`, `progan edit` (parsing only)."""

from __future__ import annotations

import argparse
from pathlib import Path

from progan.cliargs import SNAPSHOT_HELP, add_generation_arguments, add_snapshot_argument, positive
from progan.errors import UserError
from progan.faces.measuring import DEFAULT_MEASURE_SIZE, DEFAULT_MEASURE_WORKERS

DESCRIBE_HELP = """examples:
  progan describe runs/00003-faces-256 "a round face with red hair and blue eyes" --out picks
  progan describe SNAPSHOT "ginger, very smiling, no glasses" --candidates 2000 --top 25 --out picks
  progan describe SNAPSHOT "a young woman with wavy hair" --attributes celeba.attributes --out picks
  progan describe SNAPSHOT "red hair, blue eyes" --refine 8 --out picks   (after 'progan directions')"""

EDIT_HELP = """examples:
  progan edit SNAPSHOT --seed 42 --set red_hair=+2,smile=-1 --out face.png
  progan edit SNAPSHOT --from picks/candidates.json --rank 3 --set round_face=1.5 --out face.png"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "describe",
        help="generate candidates and rank them against a description of a face",
        epilog=DESCRIBE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("snapshot", nargs="?", help=SNAPSHOT_HELP + " (with --resume: taken from DIR)")
    p.add_argument("text", nargs="?", help='the description, e.g. "a round face with red hair and blue eyes"')
    p.add_argument("--out", help="write best.png, top/, candidates.json and candidates.jsonl here")
    p.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the describe run in DIR (a killed one, or for more --candidates)",
    )
    p.add_argument("--candidates", type=positive(int), help="faces to generate (default 500)")
    p.add_argument("--top", type=positive(int), default=16, help="faces in the grid and top/ (default 16)")
    p.add_argument("--first-seed", type=int, default=0, help="candidates are seeds N, N+1, ... (default 0)")
    p.add_argument(
        "--measure-size", type=int, default=DEFAULT_MEASURE_SIZE,
        help=f"measure faces downscaled to this many pixels (default {DEFAULT_MEASURE_SIZE}; 0: full size)",
    )  # fmt: skip
    p.add_argument(
        "--measure-workers", type=int, default=DEFAULT_MEASURE_WORKERS,
        help="processes measuring faces while the next batch is generated "
        f"(default {DEFAULT_MEASURE_WORKERS}; 0: measure in turn)",
    )  # fmt: skip
    p.add_argument(
        "--from", dest="from_file", metavar="JSON",
        help="rank (and --refine) these faces instead: a projections.json from 'progan project'",
    )  # fmt: skip
    p.add_argument("--attributes", metavar="FILE", help="a classifier from 'progan attributes fit'")
    p.add_argument(
        "--prefer-attributes", action="store_true",
        help="with --attributes: the classifier judges every phrase it names, also those the "
        "measurement rules read (e.g. eye colour on faces too small for the rules to see irises)",
    )  # fmt: skip
    p.add_argument(
        "--refine", type=int, default=0, metavar="K",
        help="push the best K toward the description (the snapshot's directions and random moves) "
        "while the score improves",
    )  # fmt: skip
    p.add_argument("--refine-rounds", type=positive(int), default=4)
    p.add_argument(
        "--refine-proposals", type=int, default=None, metavar="P",
        help="random moves tried beside the directions' step, per face and round "
        "(default: describe.REFINE_PROPOSALS, 8; 0: the directions only)",
    )  # fmt: skip
    # Small batches: measuring starts after the first one, and a kill loses at most one.
    add_generation_arguments(p, batch=8)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run_describe)

    p = subparsers.add_parser("attributes", help="learned attributes: fit a classifier on a labelled store")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    f = sub.add_parser("fit", help="train an attribute classifier on a labelled store")
    f.add_argument("store", help="a labelled store from 'progan prepare' (e.g. --celeba)")
    f.add_argument("--out", required=True, help="the classifier file to write (safetensors)")
    f.add_argument("--epochs", type=positive(int), default=5)
    f.add_argument("--batch", type=positive(int), default=64)
    f.add_argument("--resolution", type=int, help="input size (default: the store's, at most 64)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument(
        "--blur", type=float, default=0.0, metavar="SIGMA",
        help="train on copies blurred by a random Gaussian sigma up to SIGMA pixels, so that it judges "
        "a generator's softer samples by colour and shape, not sharpness (default 0: off; e.g. 1)",
    )  # fmt: skip
    f.add_argument("--device", default="auto")
    f.add_argument("--no-progress", dest="progress", action="store_false")
    f.set_defaults(func=run_attributes_fit)

    p = subparsers.add_parser(
        "directions", help="fit a latent direction per measured face trait (InterFaceGAN-style)"
    )
    add_snapshot_argument(p)
    p.add_argument("--samples", type=positive(int), default=2000, help="faces to measure (default 2000)")
    p.add_argument(
        "--fraction", type=float, default=0.25, help="top and bottom share of a scalar trait (0.25)"
    )
    p.add_argument("--first-seed", type=int, default=1_000_000, help="samples are seeds N, N+1, ...")
    p.add_argument(
        "--attributes", metavar="FILE",
        help="fit a direction per attribute of this classifier ('progan attributes fit') instead of "
        "per measured trait; they replace measured ones of the same name",
    )  # fmt: skip
    add_generation_arguments(p)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run_directions)

    p = subparsers.add_parser(
        "edit",
        help="move a face along named directions, keeping the other traits fixed",
        epilog=EDIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_snapshot_argument(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--seed", type=int, help="the face of this seed")
    src.add_argument("--from", dest="from_file", metavar="CANDIDATES", help="a describe candidates.json")
    p.add_argument("--rank", type=positive(int), default=1, help="with --from: which candidate (1 = best)")
    p.add_argument("--set", dest="amounts", required=True, help="e.g. red_hair=+2,smile=-1")
    p.add_argument("--out", required=True, help="the edited image (PNG)")
    p.add_argument("--keep", help="directions to keep fixed (default: all of the other traits)")
    p.add_argument("--free", action="store_true", help="move along the plain directions, keeping nothing")
    p.add_argument(
        "--keep-with", metavar="FILE",
        help="a 'progan attributes fit' classifier whose directions you edit along ('progan directions "
        "--attributes FILE'): search near the edit for the face on which it sees every attribute you "
        "did not ask for as before (8 rounds of 8 random moves)",
    )  # fmt: skip
    p.add_argument("--label", help="class or attributes of a conditional model (with --seed)")
    add_generation_arguments(p, batch=None)
    p.set_defaults(func=run_edit)


def _load_attributes(path: str | None):
    if not path:
        return None
    from progan.faces.attributes import load_attributes

    return load_attributes(path)


def _describe_options(args: argparse.Namespace) -> dict:
    """The options of the run: from the command line, or with --resume from DIR's journal (the
    run's own options; only --candidates may grow)."""
    from progan.faces import describe as d

    if not args.resume:
        if not args.snapshot or args.text is None or not args.out:
            raise UserError("describe needs SNAPSHOT, TEXT and --out DIR (or --resume DIR)")
        return {
            "snapshot": args.snapshot, "text": args.text, "out": args.out,
            "candidates": args.candidates or 500,
            "first_seed": args.first_seed, "attributes": args.attributes, "precision": args.precision,
            "prefer_attributes": args.prefer_attributes,
            "measure_size": args.measure_size or None, "batch": args.batch, "resumed": 0,
            "from_file": args.from_file,
        }  # fmt: skip
    journal = Path(args.resume) / d.JOURNAL_NAME
    if not journal.is_file():
        raise UserError(
            f"--resume {args.resume}: no {d.JOURNAL_NAME} there; pass the --out DIR of a describe run"
        )
    header, _ = d.read_journal(journal)
    opts = dict(header["options"])
    for name in ("snapshot", "text"):
        given = getattr(args, name)
        if given is not None and given != opts[name]:
            raise UserError(
                f"--resume {args.resume} describes {opts[name]!r}; leave out {name} or pass that one"
            )
    if args.out and Path(args.out).resolve() != Path(args.resume).resolve():
        raise UserError("--resume writes into its own DIR; leave out --out")
    return {**opts, "out": args.resume, "candidates": args.candidates or header["candidates"], "resumed": 1}


def run_describe(args: argparse.Namespace) -> int:
    from progan.checkpoint import load_snapshot
    from progan.device import pick_device, sampling_precision
    from progan.directions import load_directions
    from progan.faces import describe as d
    from progan.faces.words import understand
    from progan.sampling import MAX_SEED

    o = _describe_options(args)
    if o["first_seed"] < 0 or o["first_seed"] + o["candidates"] - 1 > MAX_SEED:
        raise UserError(
            f"--first-seed {o['first_seed']} + --candidates {o['candidates']} run past seed {MAX_SEED}"
        )
    device = pick_device(args.device)
    # resolved here, so that the journal names what ran and a resume on another machine matches
    o["precision"] = sampling_precision(o["precision"], device)
    snap = load_snapshot(o["snapshot"], device=device)
    G = snap.G_ema
    attributes = _load_attributes(o["attributes"])
    if o.get("prefer_attributes") and attributes is None:
        raise UserError("--prefer-attributes needs --attributes FILE (from 'progan attributes fit')")
    desc = understand(
        o["text"], attributes.names if attributes else (), snap.label_names, bool(o.get("prefer_attributes"))
    )
    print(f"understood: {desc.summary()}")
    if desc.unknown:
        print(desc.unknown_line())
    if not desc.wishes:
        raise UserError(
            f"nothing in '{o['text']}' is measured; describe face shape, hair, eye or skin colour, "
            "smile, open mouth, glasses or beard (or add --attributes FILE)"
        )
    if any(w.source == "measured" for w in desc.wishes):
        d.check_measurable(G.resolution, snap.path)
    if o["measure_size"] is not None:
        d.check_measurable(o["measure_size"], f"--measure-size {o['measure_size']}")
    if args.refine > args.top:
        raise UserError(
            f"--refine {args.refine} is more than --top {args.top}; refine at most the shown faces"
        )
    directions = load_directions(snap.path) if args.refine else {}
    seeds = range(o["first_seed"], o["first_seed"] + o["candidates"])
    latents = names = None

    def labels(chunk):
        return d.label_rows(desc, G.label_size, snap.label_names, chunk)

    if o.get("from_file"):  # projected photos (or another describe's candidates) instead of seeds
        from progan.model import given_candidates

        latents, labels, names = given_candidates(o["from_file"], G.latent_size, G.label_size)
        seeds = range(-1, -len(names) - 1, -1)  # ids only
    options = {k: v for k, v in o.items() if k not in ("out", "resumed")}
    header = {"options": {k: v for k, v in options.items() if k != "candidates"}, "latent_method": "progan"}
    ranked, images = d.describe(
        G, desc, seeds, top=args.top, labels=labels, attributes=attributes, batch=o["batch"],
        device=device, precision=o["precision"], progress=args.progress,
        journal=Path(o["out"]) / d.JOURNAL_NAME, header=header, measure_size=o["measure_size"],
        workers=args.measure_workers, latents=latents, names=names,
    )  # fmt: skip
    measured = any(w.source == "measured" for w in desc.wishes)
    if measured and ranked.faces_found == 0:
        reasons = sorted({c.reason for c in ranked if c.reason})
        raise UserError(
            f"no face found in any of the {ranked.total} candidates of {snap.path} "
            f"({'; '.join(reasons) or 'no face found'}); describe needs a model that makes faces"
        )
    if args.refine:
        ranked = d.refine(
            G, desc, ranked, images, directions, count=args.refine, rounds=args.refine_rounds,
            proposals=args.refine_proposals,
            attributes=attributes, batch=o["batch"], device=device, precision=o["precision"],
        )  # fmt: skip
    info = {"snapshot": str(snap.path), "latent_method": "progan", "candidates_total": ranked.total,
            "faces_found": ranked.faces_found, "measure_size": o["measure_size"]}  # fmt: skip
    grid, table = d.write_results(o["out"], desc, ranked, images, args.top, info)
    for rank, c in enumerate(ranked[: min(args.top, 5)], 1):
        score = "no face" if c.score is None else f"{c.score:.3f}"
        words = ", ".join(f"{k} {v:.2f}" for k, v in c.words.items())
        print(f"#{rank} {c.name or f'seed {c.seed}'}: {score} ({words})")
    print(f"wrote {grid}, {table} and {Path(o['out']) / 'top'}/ (full size)")
    return 0


def run_attributes_fit(args: argparse.Namespace) -> int:
    from progan.device import pick_device
    from progan.faces.attributes import fit_attributes

    model = fit_attributes(
        args.store, args.out, epochs=args.epochs, batch=args.batch, resolution=args.resolution,
        seed=args.seed, blur=args.blur, device=pick_device(args.device), progress=args.progress,
    )  # fmt: skip
    print(f"{len(model.names)} attributes ({model.kind}) at {model.resolution}x{model.resolution}")
    soft = model.accuracy_blurred or {}
    for name, acc in model.accuracy.items():
        blurred = f", {soft[name]:.3f} blurred by sigma {model.blur:g}" if name in soft else ""
        print(f"  {name:24s} held-out accuracy {acc:.3f}{blurred}")
    print(f"wrote {args.out}")
    return 0


def run_directions(args: argparse.Namespace) -> int:
    import numpy as np

    from progan.checkpoint import load_snapshot
    from progan.device import pick_device
    from progan.directions import load_directions, merge_directions, save_directions
    from progan.faces.describe import check_measurable, default_measure
    from progan.faces.edit import (
        check_sample_count,
        fit_attribute_directions,
        fit_directions,
        linear_svm,
        sample_measurements,
    )  # fmt: skip
    from progan.sampling import labels_for

    check_sample_count(args.samples)
    linear_svm()  # before minutes of measuring, not after

    if not 0 < args.fraction <= 0.5:
        raise UserError(f"--fraction {args.fraction} must be in (0, 0.5]; e.g. 0.25")
    attributes = _load_attributes(args.attributes)
    device = pick_device(args.device)
    snap = load_snapshot(args.snapshot, device=device)
    if attributes is None:
        check_measurable(snap.G_ema.resolution, snap.path)
    seeds = list(range(args.first_seed, args.first_seed + args.samples))
    labels = labels_for(snap.G_ema.label_size, seeds, None, snap.label_names)

    def judge(images):  # one row of the classifier's probabilities per face
        return list(attributes.predict(images))

    z, measurements = sample_measurements(
        snap.G_ema, seeds, default_measure if attributes is None else judge, labels=labels,
        batch=args.batch, device=device, precision=args.precision, progress=args.progress,
    )  # fmt: skip
    if attributes is None:
        fitted, skipped = fit_directions(z, measurements, fraction=args.fraction)
    else:
        source = f"progan directions --attributes {Path(args.attributes).name}"
        fitted, skipped = fit_attribute_directions(z, np.stack(measurements), attributes.names, source)
    path = save_directions(snap.path, merge_directions(load_directions(snap.path), fitted))
    for name, (_, info) in sorted(fitted.items()):
        how = f"{info['samples']} samples" + (f", softmax of {info['trait']}" if info.get("model") else "")
        print(f"  {name:20s} held-out accuracy {info['holdout_accuracy']:.3f} ({how})")
    for name, why in sorted(skipped.items()):
        print(f"  {name:20s} skipped: {why}")
    print(f"wrote {len(fitted)} directions to {path}")
    return 0


def run_edit(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from progan import load
    from progan.directions import parse_amounts
    from progan.images import save_image
    from progan.model import read_candidate

    model = load(args.snapshot, device=args.device)
    amounts = parse_amounts(args.amounts)
    if not amounts:
        raise UserError("--set names no direction; write e.g. --set red_hair=+2,smile=-1")
    if args.from_file:
        if args.label:
            raise UserError("--label goes with --seed; a candidates.json already holds each face's labels")
        z, labels, what = read_candidate(args.from_file, args.rank)
        if z.shape != (model.latent_size,):
            raise UserError(
                f"{args.from_file} holds {z.size}-value latents; {model.path} takes {model.latent_size}"
            )
    else:
        what = f"seed {args.seed}"
        z = model.latents([args.seed])[0]
        labels = model.labels([args.seed], args.label)
    keep = [k.strip() for k in args.keep.split(",") if k.strip()] if args.keep else None
    if args.keep_with and args.free:
        raise UserError("--keep-with searches near a conditioned edit; drop --free")
    classifier = None
    if args.keep_with:
        from progan.faces.attributes import load_attributes

        classifier = load_attributes(args.keep_with)
    moved = model.edit(
        z, keep=keep, free=args.free, keep_with=classifier, labels=labels,
        seeds=[args.seed if args.seed is not None else args.rank], precision=args.precision, **amounts,
    )  # fmt: skip
    pair = None if labels is None else np.broadcast_to(np.asarray(labels).reshape(1, -1), (2, labels.size))
    both = model.render(np.stack([z, moved]), pair, args.precision)
    save_image(both[1], args.out)
    print(f"{what} moved by {', '.join(f'{k} {v:+g}' for k, v in amounts.items())}: wrote {args.out}")
    if classifier is not None:
        from progan.faces.edit import asked_groups

        free = asked_groups(model.directions, list(amounts))
        _print_classifier_change(both, classifier, Path(args.keep_with).name, list(amounts), free)
    _print_change(torch.from_numpy(both).permute(0, 3, 1, 2), list(amounts), model.resolution)
    return 0


def _print_classifier_change(both, clf, name: str, asked: list[str], free: set[str]) -> None:
    """What the --keep-with classifier (file `name`) sees of the two faces (before, after): each
    asked attribute, and every one not `free` to change whose answer (p > 0.5) changed."""
    import numpy as np

    p = dict(zip(clf.names, clf.predict(np.transpose(both, (0, 3, 1, 2))).T, strict=True))
    seen = [f"{n} {p[n][0]:.2f} -> {p[n][1]:.2f}" for n in asked if n in p]
    flipped = [f"{n} {a:.2f} -> {b:.2f}"
               for n, (a, b) in p.items() if n not in free and (a > 0.5) != (b > 0.5)]  # fmt: skip
    print(f"  {name}: {', '.join(seen)}; other answers changed: {', '.join(flipped) or 'none'}")


def _print_change(images, names: list[str], resolution: int) -> None:
    """The measured score of each edited direction before and after, where faces can be measured."""
    from progan.faces import describe as d
    from progan.faces.edit import trait_scores

    if resolution < d.min_measurable_size():
        return
    try:
        before, after = (trait_scores(m) if m.face_found else {} for m in d.default_measure(images))
    except ImportError:  # the 'faces' extra is not installed: the edit stands without the check
        return
    for name in names:
        if name in before and name in after:
            print(f"  {name}: measured {before[name][2]:.2f} -> {after[name][2]:.2f}")
        elif name in before or name in after:
            print(f"  {name}: no face found {'after' if name in before else 'before'} the edit")

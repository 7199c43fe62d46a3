"""How an attribute classifier's reading of fresh portraits holds up as they are blurred.

A generator's 64x64 samples may be softer than the painted portraits it learned from (this script
measures it: below). A judge trained on sharp portraits alone (`progan attributes fit`) would then
read the softness rather than the attribute: brown irises blurred a little look, to it, green or
hazel. This script draws fresh portraits (`progan.data.portraits`, a seed no store used), blurs
them with scipy's Gaussian filter at each sigma (pixels at 64x64; not the `soften` that `fit
--blur` trains with, so that the test blur is independent of it) and prints, per classifier, the
eye-colour accuracy, the share of brown and grey irises read as drawn, and every label's frequency
over its true frequency: the number benchmarks/dream.py reports for a generator's samples.

    .venv/bin/python benchmarks/oracle_blur.py --oracle WORK/oracle.attributes WORK/oracle-blur1.attributes
    .venv/bin/python benchmarks/oracle_blur.py --oracle A B --snapshot RUN --grid G.png
    .venv/bin/python benchmarks/oracle_blur.py --oracle A B --snapshot RUN/snapshot-000200 RUN/snapshot-000240

Writes benchmarks/results/oracle-blur.json (about 30 s on 2 CPU cores for 1,000 portraits). With
--snapshot it also reads --samples of each snapshot's G_ema samples (dream.py's seeds; with
--weights G, those of the training G, whose moving average G_ema is) with every
classifier: eye-colour frequencies over the fresh portraits' truth, how often the first two
classifiers name another eye colour, and with --grid a picture of up to 16 such faces (3x, each
column: first classifier's reading over the second's in the JSON's "disagreements"). It also
gives how soft the samples are: their fine detail (mean squared Laplacian) and the blur at which
the portraits have as little.

Both eyes of a portrait have one painted colour; a generator may paint them apart. Each classifier
also reads every face twice, as its left half beside that half mirrored and as its right half
likewise (`progan.faces.attributes.mirrored_halves`), and the JSON gives how often the two
readings name one eye colour ("eyes_agree"): on the portraits, what the reading itself allows (the
halves are not exactly symmetric: the nuisance rotation and shift), on the samples, how often the
generator paints a pair.
It also gives the eye-colour frequencies of those one-eyed faces ("per_eye_frequency_over_truth").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--oracle", nargs="+", required=True, help="classifiers from 'progan attributes fit'")
    ap.add_argument("--portraits", type=int, default=1000)
    ap.add_argument(
        "--seed", type=int, default=21, help="portraits' seed (the dream build's stores use 0, 7, 11)"
    )
    ap.add_argument("--sigmas", default="0,0.4,0.6,0.8,1.0")
    ap.add_argument("--out", default=str(RESULTS / "oracle-blur.json"))
    ap.add_argument(
        "--snapshot", nargs="+", default=[], help="portraits models (snapshots): read their G_ema samples too"
    )
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument(
        "--weights",
        choices=("G_ema", "G"),
        default="G_ema",
        help="which generator of a training snapshot draws the samples (G: its last iterate, not the mean)",
    )
    ap.add_argument("--grid", help="PNG of up to 16 samples the first two classifiers read differently")
    args = ap.parse_args()

    from scipy.ndimage import gaussian_filter

    from progan.data import portraits as P
    from progan.faces.attributes import load_attributes

    truth = P.draw_truth(args.portraits, args.seed)
    images, labels = P.render(truth, 64), P.labels_of(truth)
    eyes = [i for i, n in enumerate(P.LABEL_NAMES) if n.endswith("_eyes")]
    true_eye = labels[:, eyes].argmax(1)
    blurred = {}  # sigma -> the portraits blurred by it, as uint8 (what a classifier reads)
    for sigma in (float(s) for s in args.sigmas.split(",")):
        soft = gaussian_filter(images.astype(np.float32), (0, 0, sigma, sigma), mode="mirror")
        blurred[sigma] = np.clip(soft.round(), 0, 255).astype(np.uint8) if sigma > 0 else images
    box = eye_box()
    regions = {"image": (slice(None), slice(None)), "eyes": box}
    by_sigma = {sigma: detail(x, regions) for sigma, x in blurred.items()}
    detail_by_sigma = {where: {sigma: d[where] for sigma, d in by_sigma.items()} for where in regions}
    result: dict = {
        "portraits": args.portraits,
        "seed": args.seed,
        "eye_box": [box[0].start, box[0].stop, box[1].start, box[1].stop],
        "detail_by_sigma": {
            where: {str(k): round(v, 2) for k, v in by.items()} for where, by in detail_by_sigma.items()
        },
        "oracles": {},
    }
    models = {path: load_attributes(path) for path in args.oracle}
    for path, model in models.items():
        if list(model.names) != list(P.LABEL_NAMES):
            raise SystemExit(f"{path}: not a portraits classifier (labels {model.names[:3]}...)")
        rows = []
        print(f"\n{path} (trained with blur up to sigma {model.blur:g})")
        print("| sigma | eye colour accuracy | brown read brown | grey read grey | frequency / true, min |")
        print("| --- | --- | --- | --- | --- |")
        for sigma, x in blurred.items():
            p = model.predict(x)
            read = p[:, eyes].argmax(1)
            ratio = (p > 0.5).mean(0) / np.maximum(labels.mean(0), 1e-9)
            row = {
                "sigma": sigma,
                "eye_accuracy": round(float((read == true_eye).mean()), 4),
                "brown_read_brown": round(float((read[true_eye == 4] == 4).mean()), 4),
                "grey_read_grey": round(float((read[true_eye == 2] == 2).mean()), 4),
                "frequency_over_true": {
                    n: round(float(r), 3) for n, r in zip(P.LABEL_NAMES, ratio, strict=True)
                },
            }
            rows.append(row)
            k = int(np.argmin(ratio))
            print(f"| {sigma:g} | {row['eye_accuracy']:.3f} | {row['brown_read_brown']:.2f} | "
                  f"{row['grey_read_grey']:.2f} | {ratio[k]:.2f} ({P.LABEL_NAMES[k]}) |")  # fmt: skip
        agree = pair_reading(model, images, eyes)["eyes_agree"]
        print(f"left and right eye read as one colour on {agree:.1%} of the portraits (sigma 0)")
        result["oracles"][path] = {
            "blur": model.blur, "held_out_accuracy": model.accuracy, "rows": rows, "eyes_agree": agree,
        }  # fmt: skip
    # One entry per snapshot: a run's snapshots side by side show how far the eye colours drift
    # between snapshots of one training (the grid, if asked, is the first snapshot's).
    truth_freq = labels[:, eyes].mean(0)
    result["samples"] = [
        read_samples(args, snapshot, models, truth_freq, eyes, regions, detail_by_sigma, i == 0)
        for i, snapshot in enumerate(args.snapshot)
    ]
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(args.out)
    print(f"\nwrote {args.out}")
    return 0


def eye_box(resolution: int = 64) -> tuple[slice, slice]:
    """Rows and columns around both eyes of the portraits' base face (landmarks 36-47), with a
    margin of 3 pixels for the nuisance shift and rotation."""
    from progan.data import portraits as P

    eyes = P.base_portrait(resolution).landmarks[36:48]
    (x0, y0), (x1, y1) = np.floor(eyes.min(0)).astype(int) - 3, np.ceil(eyes.max(0)).astype(int) + 4
    return slice(max(int(y0), 0), int(y1)), slice(max(int(x0), 0), int(x1))


def pair_reading(model, images: np.ndarray, eyes: list[int]) -> dict:
    """A classifier's eye colour of each eye alone (`mirrored_halves`): how often the two agree,
    and the frequency of each colour over both eyes (one read per eye)."""
    from progan.faces.attributes import mirrored_halves

    reads = [model.predict(half)[:, eyes].argmax(1) for half in mirrored_halves(images)]
    both = np.concatenate(reads)
    return {
        "eyes_agree": round(float((reads[0] == reads[1]).mean()), 4),
        "per_eye_frequency": np.bincount(both, minlength=len(eyes)) / len(both),
    }


def detail(images: np.ndarray, regions: dict[str, tuple[slice, slice]]) -> dict[str, float]:
    """Fine detail of uint8 NCHW images in each region: the mean squared Laplacian of the grey
    level (0-255), taken once over the whole image so that a region has no edge of its own.

    A blur lowers it monotonically, so the blur that gives the portraits a model's value says how
    soft its samples are (np.interp beyond the last sigma clamps to it)."""
    from scipy.ndimage import laplace

    squared = np.stack([laplace(g, mode="mirror") ** 2 for g in images.astype(np.float32).mean(1)])
    return {where: float(squared[:, rows, cols].mean()) for where, (rows, cols) in regions.items()}


def read_samples(
    args: argparse.Namespace,
    snapshot: str,
    models: dict,
    truth_freq: np.ndarray,
    eyes: list[int],
    regions: dict[str, tuple[slice, slice]],
    detail_by_sigma: dict[str, dict[float, float]],
    first: bool,
) -> dict:
    """Every classifier's eye colours on the snapshot's samples (dream.py's seeds 10,000,000+)."""
    import torch

    from progan.checkpoint import load_snapshot
    from progan.data import portraits as P
    from progan.images import save_image
    from progan.sampling import images_for_latents, latents_for_seeds

    snap = load_snapshot(snapshot, device="cpu")
    G = snap.G_ema
    if args.weights == "G":  # G's own weights into the same network, at the same stage
        from progan.checkpoint import MODEL_FILE, load_module, load_tensors

        tensors = load_tensors(snap.path / MODEL_FILE)
        if not any(k.startswith("G.") for k in tensors):
            raise SystemExit(f"{snap.path}: holds G_ema only; --weights G needs a training snapshot")
        load_module(G, "G", tensors, snap.path / MODEL_FILE)
    if G.resolution != 64:
        raise SystemExit(
            f"{snapshot}: its G draws {G.resolution}x{G.resolution}; the portraits' classifiers read 64x64"
        )
    z = latents_for_seeds(range(10_000_000, 10_000_000 + args.samples), G.latent_size)
    images = images_for_latents(G, z, batch=64).numpy()
    colours = [P.LABEL_NAMES[i].removesuffix("_eyes") for i in eyes]
    # How soft the samples are: the blur that gives the portraits as little fine detail, over
    # the whole image and around the eyes.
    softness = {}
    for where, sharpness in detail(images, regions).items():
        sigmas, details = zip(*sorted(detail_by_sigma[where].items()), strict=True)
        as_blurred = float(np.interp(-sharpness, -np.array(details), sigmas))  # detail falls with sigma
        softness[where] = {"detail": round(sharpness, 2), "as_portraits_blurred_by": round(as_blurred, 2)}
        print(f"{snap.path} ({where}): fine detail {sharpness:.1f}, as the portraits' at {as_blurred:.2f} px")
    out: dict = {
        "snapshot": str(snap.path),
        "weights": args.weights,
        "samples": args.samples,
        "softness": softness,
        "eye_frequency_over_truth": {},
        "eyes_agree": {},
        "per_eye_frequency_over_truth": {},
    }
    read = {}
    print(f"\n{args.samples} samples of {snap.path}: eye-colour frequency (p > 0.5) / truth")
    print("| classifier | " + " | ".join(colours) + " |")
    print("| --- |" + " --- |" * len(colours))
    for path, model in models.items():
        p = model.predict(images)[:, eyes]
        read[path] = p.argmax(1)
        ratio = (p > 0.5).mean(0) / truth_freq
        out["eye_frequency_over_truth"][path] = dict(zip(colours, np.round(ratio, 3).tolist(), strict=True))
        print(f"| {Path(path).name} | " + " | ".join(f"{r:.2f}x" for r in ratio) + " |")
        pair = pair_reading(model, images, eyes)
        per_eye = pair["per_eye_frequency"] / truth_freq
        out["eyes_agree"][path] = pair["eyes_agree"]
        per_eye_json = dict(zip(colours, np.round(per_eye, 3).tolist(), strict=True))
        out["per_eye_frequency_over_truth"][path] = per_eye_json
        print(f"| {Path(path).name}, one eye at a time (left and right agree on {pair['eyes_agree']:.1%}) | "
              + " | ".join(f"{r:.2f}x" for r in per_eye) + " |")  # fmt: skip
    if len(args.oracle) >= 2:
        a, b = (read[path] for path in args.oracle[:2])
        differ = np.flatnonzero(a != b)
        out["eye_colour_differs"] = round(len(differ) / args.samples, 4)
        out["disagreements"] = [[colours[a[i]], colours[b[i]]] for i in differ[:16]]
        print(f"the first two name another eye colour on {len(differ)} of {args.samples} samples")
        grid = args.grid if first else None
        if grid and len(differ):
            from dream import grid as sheet  # benchmarks/dream.py's picture sheet

            faces = images[differ[:16]].repeat(3, axis=2).repeat(3, axis=3)
            save_image(sheet(torch.from_numpy(faces), 8), grid)
            print(f"wrote {grid}: {out['disagreements']}")
    return out


if __name__ == "__main__":
    raise SystemExit(main())

"""How an attribute classifier's reading of fresh portraits holds up as they are blurred.

A generator's 64x64 samples are softer than the painted portraits it learned from. A judge
trained on sharp portraits alone (`progan attributes fit`) may then read the softness rather than
the attribute: brown irises blurred a little look, to it, green or hazel. This script draws fresh
portraits (`progan.data.portraits`, a seed no store used), blurs them with scipy's Gaussian filter
at each sigma (pixels at 64x64; not the `soften` that `fit --blur` trains with, so that the test
blur is independent of it) and prints, per classifier, the eye-colour accuracy, the share of
brown and grey irises read as drawn, and every label's frequency over its true frequency: the
number benchmarks/dream.py reports for a generator's samples.

    .venv/bin/python benchmarks/oracle_blur.py --oracle WORK/oracle.attributes WORK/oracle-blur1.attributes
    .venv/bin/python benchmarks/oracle_blur.py --oracle A B --snapshot RUN --grid G.png
    .venv/bin/python benchmarks/oracle_blur.py --oracle A B --snapshot RUN/snapshot-000200 RUN/snapshot-000240

Writes benchmarks/results/oracle-blur.json (about 30 s on 2 CPU cores for 1,000 portraits). With
--snapshot it also reads --samples of each snapshot's G_ema samples (dream.py's seeds) with every
classifier: eye-colour frequencies over the fresh portraits' truth, how often the first two
classifiers name another eye colour, and with --grid a picture of up to 16 such faces (3x, each
column: first classifier's reading over the second's in the JSON's "disagreements").
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
    ap.add_argument("--grid", help="PNG of up to 16 samples the first two classifiers read differently")
    args = ap.parse_args()

    from scipy.ndimage import gaussian_filter

    from progan.data import portraits as P
    from progan.faces.attributes import load_attributes

    truth = P.draw_truth(args.portraits, args.seed)
    images, labels = P.render(truth, 64), P.labels_of(truth)
    eyes = [i for i, n in enumerate(P.LABEL_NAMES) if n.endswith("_eyes")]
    true_eye = labels[:, eyes].argmax(1)
    result: dict = {"portraits": args.portraits, "seed": args.seed, "oracles": {}}
    models = {path: load_attributes(path) for path in args.oracle}
    for path, model in models.items():
        if list(model.names) != list(P.LABEL_NAMES):
            raise SystemExit(f"{path}: not a portraits classifier (labels {model.names[:3]}...)")
        rows = []
        print(f"\n{path} (trained with blur up to sigma {model.blur:g})")
        print("| sigma | eye colour accuracy | brown read brown | grey read grey | frequency / true, min |")
        print("| --- | --- | --- | --- | --- |")
        for sigma in (float(s) for s in args.sigmas.split(",")):
            x = images
            if sigma > 0:
                soft = gaussian_filter(images.astype(np.float32), (0, 0, sigma, sigma), mode="mirror")
                x = np.clip(soft.round(), 0, 255).astype(np.uint8)
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
        result["oracles"][path] = {"blur": model.blur, "held_out_accuracy": model.accuracy, "rows": rows}
    # One entry per snapshot: a run's snapshots side by side show how far the eye colours drift
    # between snapshots of one training (the grid, if asked, is the first snapshot's).
    truth_freq = labels[:, eyes].mean(0)
    result["samples"] = [
        read_samples(args, snapshot, models, truth_freq, eyes, grid=args.grid if i == 0 else None)
        for i, snapshot in enumerate(args.snapshot)
    ]
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(args.out)
    print(f"\nwrote {args.out}")
    return 0


def read_samples(
    args: argparse.Namespace,
    snapshot: str,
    models: dict,
    truth_freq: np.ndarray,
    eyes: list[int],
    grid: str | None,
) -> dict:
    """Every classifier's eye colours on the snapshot's samples (dream.py's seeds 10,000,000+)."""
    import torch

    from progan.checkpoint import load_snapshot
    from progan.data import portraits as P
    from progan.images import save_image
    from progan.sampling import images_for_latents, latents_for_seeds

    snap = load_snapshot(snapshot, device="cpu")
    G = snap.G_ema
    z = latents_for_seeds(range(10_000_000, 10_000_000 + args.samples), G.latent_size)
    images = images_for_latents(G, z, batch=64).numpy()
    colours = [P.LABEL_NAMES[i].removesuffix("_eyes") for i in eyes]
    out: dict = {"snapshot": str(snap.path), "samples": args.samples, "eye_frequency_over_truth": {}}
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
    if len(args.oracle) >= 2:
        a, b = (read[path] for path in args.oracle[:2])
        differ = np.flatnonzero(a != b)
        out["eye_colour_differs"] = round(len(differ) / args.samples, 4)
        out["disagreements"] = [[colours[a[i]], colours[b[i]]] for i in differ[:16]]
        print(f"the first two name another eye colour on {len(differ)} of {args.samples} samples")
        if grid and len(differ):
            from dream import grid as sheet  # benchmarks/dream.py's picture sheet

            faces = images[differ[:16]].repeat(3, axis=2).repeat(3, axis=3)
            save_image(sheet(torch.from_numpy(faces), 8), grid)
            print(f"wrote {grid}: {out['disagreements']}")
    return out


if __name__ == "__main__":
    raise SystemExit(main())

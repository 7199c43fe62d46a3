"""When does a portraits generator decide its iris colours, and does it pair the two eyes then?

The portraits' classifiers read 64x64 faces, so benchmarks/oracle_blur.py reads only 64x64
snapshots. This script also reads the snapshots of a run's lower resolutions (16x16, 32x32): their
G_ema samples are upsampled to 64x64 (bilinear) and read by the oracle, beside fresh portraits
brought down to the same resolution (2x2 means) and back up the same way. The degraded portraits,
not the truth, are the yardstick: at 32x32 the oracle reads some colours of real portraits
wrongly too (brown irises, a few pixels at 32x32, read as hazel or grey), and a colour that the
degraded portraits themselves almost never show (under 20% of its true rate) is a colour this
reading cannot see at that resolution: the table prints "-" for it rather than a ratio.

    .venv/bin/python benchmarks/irises_by_resolution.py --oracle WORK/oracle.attributes \\
        --snapshot RUN/snapshot-000456 RUN/snapshot-000504 RUN/snapshot-000599.328 --out OUT.json

Per snapshot: the resolution it draws, each eye colour's frequency on whole faces and one eye at a
time over the degraded portraits' (dream.py's seeds, --samples of them), and how often the two
eyes of one face are read as one colour, beside the degraded portraits' own pairing. About 20 s
per snapshot on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

READ_AT = 64  # the resolution the portraits' classifiers read
VISIBLE_SHARE = 0.2  # below this share of its true rate on degraded portraits, a colour is unseen


def to_resolution(images: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 NCHW images brought to `resolution`: 2x2 means down, bilinear up (as uint8)."""
    x = torch.from_numpy(images).float()
    if x.shape[-1] > resolution:
        x = F.avg_pool2d(x, x.shape[-1] // resolution)
    elif x.shape[-1] < resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).numpy()


def eye_reading(model, images: np.ndarray, eyes: list[int]) -> dict[str, np.ndarray | float]:
    """Each eye colour's share on whole faces and one eye at a time, and how often both eyes of a
    face are read as one colour (oracle_blur.pair_reading, the one-eye reading of every table)."""
    from oracle_blur import pair_reading  # benchmarks/ is on sys.path when a script here runs

    whole = np.bincount(model.predict(images)[:, eyes].argmax(1), minlength=len(eyes)) / len(images)
    pair = pair_reading(model, images, eyes)
    return {"whole": whole, "per_eye": pair["per_eye_frequency"], "agree": pair["eyes_agree"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--oracle", required=True, help="a portraits classifier from 'progan attributes fit'")
    ap.add_argument("--snapshot", nargs="+", required=True, help="snapshots of one run, any resolution")
    ap.add_argument("--portraits", type=int, default=1000)
    ap.add_argument(
        "--seed", type=int, default=21, help="the fresh portraits' seed (the stores use 0, 7, 11)"
    )
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from progan.checkpoint import load_snapshot
    from progan.data import portraits as P
    from progan.faces.attributes import load_attributes
    from progan.sampling import images_for_latents, latents_for_seeds

    model = load_attributes(args.oracle)
    if list(model.names) != list(P.LABEL_NAMES):
        raise SystemExit(f"{args.oracle}: not a portraits classifier (labels {model.names[:3]}...)")
    eyes = [i for i, n in enumerate(P.LABEL_NAMES) if n.endswith("_eyes")]
    colours = [P.LABEL_NAMES[i].removesuffix("_eyes") for i in eyes]
    truth = P.draw_truth(args.portraits, args.seed)
    portraits, truth_freq = P.render(truth, READ_AT), P.labels_of(truth)[:, eyes].mean(0)
    yardsticks: dict[int, dict] = {}  # resolution -> the degraded portraits' reading

    def yardstick(resolution: int) -> dict:
        if resolution not in yardsticks:
            seen = eye_reading(model, to_resolution(to_resolution(portraits, resolution), READ_AT), eyes)
            seen["visible"] = seen["whole"] >= VISIBLE_SHARE * truth_freq
            yardsticks[resolution] = seen
        return yardsticks[resolution]

    def ratios(share: np.ndarray, base: np.ndarray, visible: np.ndarray) -> dict[str, float | None]:
        return {
            c: (round(float(s / b), 3) if v else None)
            for c, s, b, v in zip(colours, share, base, visible, strict=True)
        }

    rows = []
    print("| snapshot | drawn at | reading | " + " | ".join(colours) + " | eyes read as one colour |")
    print("| --- | --- | --- |" + " --- |" * len(colours) + " --- |")
    for path in args.snapshot:
        snap = load_snapshot(path, device="cpu")
        z = latents_for_seeds(range(10_000_000, 10_000_000 + args.samples), snap.G_ema.latent_size)
        drawn = images_for_latents(snap.G_ema, z, batch=64).numpy()
        resolution = drawn.shape[-1]
        if resolution > READ_AT or READ_AT % resolution:
            raise SystemExit(f"{path}: draws {resolution}x{resolution}; this reads up to {READ_AT}x{READ_AT}")
        base = yardstick(resolution)
        seen = eye_reading(model, to_resolution(drawn, READ_AT), eyes)
        row = {
            "snapshot": str(snap.path),
            "resolution": resolution,
            "whole_over_portraits": ratios(seen["whole"], base["whole"], base["visible"]),
            "per_eye_over_portraits": ratios(seen["per_eye"], base["per_eye"], base["visible"]),
            "eyes_agree": round(seen["agree"], 4),
            "portraits_eyes_agree": round(base["agree"], 4),
        }
        rows.append(row)
        for reading in ("whole", "per_eye"):
            cells = ["-" if r is None else f"{r:.2f}x" for r in row[f"{reading}_over_portraits"].values()]
            agree = f"{row['eyes_agree']:.0%} (portraits {row['portraits_eyes_agree']:.0%})"
            print(f"| {snap.path.name} | {resolution} | {reading} | " + " | ".join(cells) + f" | {agree} |")
    result = {
        "oracle": args.oracle,
        "portraits": args.portraits,
        "seed": args.seed,
        "samples": args.samples,
        "visible_share": VISIBLE_SHARE,
        "portraits_by_resolution": {
            str(r): {
                "whole_over_truth": dict(
                    zip(colours, np.round(y["whole"] / truth_freq, 3).tolist(), strict=True)
                ),
                "eyes_agree": round(y["agree"], 4),
            }
            for r, y in sorted(yardsticks.items())
        },
        "snapshots": rows,
    }
    out = Path(args.out)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How often each face measurement names the known truth on controlled variants of a real photo.

The truth is known because the variants are made to order (tests/face_variants.py): the astronaut
photo, CelebA-HQ aligned at each size, with its hair recoloured to each hair colour or painted
skin-coloured (bald), its irises to each eye colour, its skin to each tone, the picture stretched
narrower/wider, its mouth corners lowered, glasses or a beard drawn on. Prints a markdown table (the
README's "Describe: honest limits" quotes it) and the median time of one `measure_face` call per
size (a ratio between sizes; absolute times depend on the machine and its load).

    .venv/bin/python benchmarks/faces_agreement.py                  # ~1 min on 2 CPU cores
    .venv/bin/python benchmarks/faces_agreement.py --sizes 128 256
    .venv/bin/python benchmarks/faces_agreement.py --sizes 128 256 512 --from-size 1024

With --from-size N the photo is aligned and every variant made at N, then box-downscaled to each
size before it is measured: what `progan describe --measure-size` does to a generated NxN face.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import face_variants as fv  # noqa: E402

from progan.faces.describe import downscale  # noqa: E402
from progan.faces.measure import Face, measure_face, shape_features  # noqa: E402

STRETCH = (0.8, 0.9, 1.0, 1.1, 1.25)


def evaluate(size: int, from_size: int | None = None) -> tuple[dict[str, list[bool]], float, dict]:
    face = fv.astronaut_face(from_size or size)
    res: dict[str, list[bool]] = {}
    elapsed: list[float] = []

    def shrink(img):
        return img if from_size is None else downscale(img[None], size)[0]

    def m(img):
        t = time.perf_counter()
        out = measure_face(shrink(img))
        elapsed.append(time.perf_counter() - t)
        return out

    base = m(face)
    notes: dict = {"base": {k: t.value for k, t in base.traits.items()}}

    hair = {c: m(fv.recolour_hair(face, c)).traits for c in fv.HAIR_RGB}
    hair["bald"] = m(fv.make_bald(face)).traits
    res["hair_colour"] = [hair[c]["hair_colour"].value == c for c in hair]
    notes["hair"] = {c: hair[c]["hair_colour"].value for c in hair}
    iris = {c: m(fv.recolour_iris(face, c)).traits for c in fv.IRIS_RGB}
    res["eye_colour"] = [iris[c]["eye_colour"].value == c for c in fv.IRIS_RGB]
    notes["iris"] = {c: iris[c]["eye_colour"].value for c in fv.IRIS_RGB}
    index, long, broad, shape = [], [], [], []
    for x in STRETCH:
        img = shrink(fv.stretch_face(face, x))
        r = measure_face(img)
        index.append(shape_features(Face(img, r.landmarks))[0])
        s = r.traits["face_shape"].scores
        long.append(s["long"])
        broad.append(s["round"] + s["square"])
        shape.append(r.traits["face_shape"].value)
    # Each neighbouring pair of stretches ordered the right way (index and scores), plus the ends named.
    res["face_shape"] = (
        [a > b for a, b in zip(index, index[1:], strict=False)]
        + [a >= b for a, b in zip(long, long[1:], strict=False)]
        + [a <= b for a, b in zip(broad, broad[1:], strict=False)]
        + [shape[0] == "long", shape[-1] in ("round", "square")]
    )
    notes["shape"] = dict(zip(STRETCH, shape, strict=True))
    glasses = m(fv.add_glasses(face)).traits["eyeglasses"].value
    beard = m(fv.add_beard(face)).traits["beard"].value
    res["eyeglasses"] = [glasses > 0.5, base.traits["eyeglasses"].value < 0.5]
    res["beard"] = [beard > 0.5, base.traits["beard"].value < 0.5]
    skin = {t: m(fv.recolour_skin(face, t)).traits["skin_tone"].value for t in fv.SKIN_RGB}
    res["skin_tone"] = [base.traits["skin_tone"].value == "light"] + [skin[t] == t for t in fv.SKIN_RGB]
    notes["skin"] = skin
    smiles = [base.traits["smile"].value] + [
        m(fv.move_mouth_corners(face, dy)).traits["smile"].value for dy in (0.05, 0.1, 0.15)
    ]
    # The real smile reads as one; lowering the corners step by step lowers the score each time.
    res["smile"] = [smiles[0] > 0.5] + [a > b for a, b in zip(smiles, smiles[1:], strict=False)]
    notes["smile"] = smiles
    res["mouth_open"] = [base.traits["mouth_open"].value > 0.1]  # teeth show between the lips
    return res, float(np.median(elapsed)), notes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    p.add_argument("--from-size", type=int, help="make every variant at this size, then downscale it")
    p.add_argument("--verbose", action="store_true", help="print what was named for each variant")
    args = p.parse_args()
    table: dict[str, dict[int, list[bool]]] = {}
    times = {}
    for size in args.sizes:
        res, sec, notes = evaluate(size, args.from_size)
        times[size] = sec
        for k, v in res.items():
            table.setdefault(k, {})[size] = v
        if args.verbose:
            print(size, notes, file=sys.stderr)
    print("| trait | " + " | ".join(f"{s}x{s}" for s in args.sizes) + " |")
    print("| --- |" + " --- |" * len(args.sizes))
    for k, per in table.items():
        print(f"| {k} | " + " | ".join(f"{sum(per[s])}/{len(per[s])}" for s in args.sizes) + " |")
    print("| s per measure_face (median) | " + " | ".join(f"{times[s]:.3f}" for s in args.sizes) + " |")


if __name__ == "__main__":
    main()

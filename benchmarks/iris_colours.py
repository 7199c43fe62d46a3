"""Where a portraits generator puts its irises in colour, against where the portraits have them.

The oracle says how often a model's samples have grey or brown eyes; it does not say what the
others look like: an iris of another class, or a colour between the classes that the oracle
must file somewhere. This script reads colour itself, with no network (`eye_lab`: each eye's
iris found near the portraits' painted one as the patch farthest from the skin around it, its
colour in CIELAB), on fresh portraits whose truth is known and on a snapshot's G_ema samples
(dream.py's seeds, 10,000,000 on).

- A linear discriminant (scikit-learn) fitted on the portraits' eyes names each eye's class; its
  accuracy on other portraits (about 80%: a 2x4-pixel iris beside its pupil and lids) says how
  well this reading sees the painted colour, and its confusions apply to samples alike.
- How mixed an iris is: the mean a*-b* distance of its pixels from its median colour. A painted
  iris is one colour with a little texture; a model's may be a speckle of several.
- Every eye gets its Mahalanobis distance to the nearest class (each class's own covariance); an
  eye farther than the portraits' 99th percentile for that class lies between the classes.
- `--picture` draws both, the portraits' eyes coloured by their class and the samples' in black,
  in the a*-b* plane (over the skin's) and as lightness against b*.

    .venv/bin/python benchmarks/iris_colours.py --snapshot RUN [RUN/snapshot-...] --picture P.png --eyes E.png

`--eyes` shows the irises themselves: the eye band of 24 portraits, then of 24 samples of each
snapshot, five times enlarged.

`--oracle ORACLE` asks whether a mixed iris is what the oracle misreads. It speckles the
portraits' own irises (`iris_pixels`) with zero-mean noise (`speckle`: Gaussian, or a coin-flip
of blue and yellow) up to and past the samples' spread, and reads them with the oracle. It also
reads every snapshot's samples both ways: for the faces whose two eyes the colour reading files in
one class, the oracle's class (`oracle_by_colour`). `--blends` pictures the faces grey by colour.

Writes benchmarks/results/iris-colours.json (about 30 s for 2,000 portraits and samples).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
RES = 64


def iris_cores(res: int = RES) -> tuple[np.ndarray, np.ndarray]:
    """The left and right eye's iris core at `res`: the base face's painted-iris mask (drawn at
    2 * res, as `render` paints) box-reduced to `res`, where it covers more than half a pixel."""
    from progan.data import portraits as P

    mask = P.base_portrait(2 * res).iris.astype(np.float32)
    cover = mask.reshape(res, 2, res, 2).mean((1, 3))
    core = cover > 0.5
    left = core.copy()
    left[:, res // 2 :] = False
    return left, core & ~left


SEARCH = 4  # pixels: the nuisance shift, rotation and scale and the face width move an eye this far
BOX = (2, 4)  # rows, columns: the iris at 64x64 (the painted core is 2-3 rows by 4-5 columns)


def eye_lab(images: np.ndarray, cores: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2, 3): each uint8 NCHW image's left and right iris as L*, and a*, b* over the skin's;
    and (N, 2): how mixed each iris's colour is, the mean a*-b* distance of its pixels from it.

    Each eye is looked for within SEARCH pixels of the painted iris core: the skin is the median
    colour of that window's border, and the iris the BOX whose pixels lie farthest from it in
    CIELAB (mean distance); its colour is the median of that box. a* and b* are taken relative to
    the skin's, since the portraits' white balance tints the whole face (0.94-1.06 per channel)."""
    from scipy.ndimage import uniform_filter
    from skimage.color import rgb2lab

    lab = rgb2lab(images.transpose(0, 2, 3, 1).astype(np.float32) / 255.0)
    out = np.zeros((len(images), 2, 3), np.float32)
    spread = np.zeros((len(images), 2), np.float32)
    for e, core in enumerate(cores):
        ys, xs = np.nonzero(core)
        y0, y1, x0, x1 = ys.min() - SEARCH, ys.max() + 1 + SEARCH, xs.min() - SEARCH, xs.max() + 1 + SEARCH
        for i, window in enumerate(lab[:, y0:y1, x0:x1]):
            border = np.concatenate([window[0], window[-1], window[:, 0], window[:, -1]])
            skin = np.median(border, 0)
            far = uniform_filter(np.linalg.norm(window - skin, axis=-1), BOX, mode="constant")
            y, x = np.unravel_index(far.argmax(), far.shape)
            box = window[
                max(y - BOX[0] // 2, 0) : y + (BOX[0] + 1) // 2,
                max(x - BOX[1] // 2, 0) : x + (BOX[1] + 1) // 2,
            ]
            px = box.reshape(-1, 3)
            colour = np.median(px, 0)
            out[i, e] = colour - [0, skin[1], skin[2]]
            spread[i, e] = np.linalg.norm(px[:, 1:] - colour[1:], axis=1).mean()
    return out, spread


def eye_strip(images: np.ndarray, rows: slice = slice(24, 36), cols: slice = slice(16, 48)) -> np.ndarray:
    """HWC uint8: the eye band (by default rows 24-35, columns 16-47 at 64x64) of up to 24 NCHW
    images, 4 across."""
    band = images[:24, :, rows, cols].transpose(0, 2, 3, 1)
    return np.concatenate(
        [np.concatenate(list(band[r * 4 : r * 4 + 4]), 1) for r in range(len(band) // 4)], 0
    )


class IrisReader:
    """Names an eye's class from its CIELAB and says how far it lies from every class."""

    def __init__(self, lab: np.ndarray, classes: np.ndarray, n_classes: int) -> None:
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        self.lda = LinearDiscriminantAnalysis().fit(lab, classes)
        self.means = np.stack([lab[classes == k].mean(0) for k in range(n_classes)])
        self.inv_cov = np.stack([np.linalg.inv(np.cov(lab[classes == k].T)) for k in range(n_classes)])
        own = self.distances(lab)[np.arange(len(lab)), classes]
        self.p99 = np.array([np.quantile(own[classes == k], 0.99) for k in range(n_classes)])

    def distances(self, lab: np.ndarray) -> np.ndarray:
        """(N, K) Mahalanobis distance of each eye to each class, under that class's covariance."""
        d = lab[:, None, :] - self.means[None]
        return np.sqrt(np.einsum("nki,kij,nkj->nk", d, self.inv_cov, d))

    def read(self, lab: np.ndarray) -> dict:
        """Each eye's class, and whether it lies within the 99th percentile of its nearest class."""
        dist = self.distances(lab)
        nearest = dist.argmin(1)
        return {
            "class": self.lda.predict(lab),
            "nearest": nearest,
            "inside": dist[np.arange(len(lab)), nearest] <= self.p99[nearest],
        }


def summary(reader: IrisReader, lab: np.ndarray, names: list[str], base_rate: np.ndarray) -> dict:
    """Per-eye class frequencies (over `base_rate`), the share between the classes, the pairing."""
    n = len(lab)
    flat = reader.read(lab.reshape(-1, 3))
    cls = flat["class"].reshape(n, 2)
    freq = np.bincount(cls.ravel(), minlength=len(names)) / cls.size
    inside = flat["inside"].reshape(n, 2)
    nearest = flat["nearest"].reshape(n, 2)
    both_inside = inside.all(1)
    return {
        "eyes": int(cls.size),
        "per_eye_frequency": {k: round(float(f), 4) for k, f in zip(names, freq, strict=True)},
        "per_eye_frequency_over_portraits": {
            k: round(float(f / b), 3) for k, f, b in zip(names, freq, base_rate, strict=True)
        },
        "between_classes": round(float(1 - inside.mean()), 4),
        "inside_by_nearest_class": {
            k: round(float(inside.ravel()[nearest.ravel() == i].mean()), 4) if (nearest == i).any() else None
            for i, k in enumerate(names)
        },
        "eyes_one_class": round(float((cls[:, 0] == cls[:, 1]).mean()), 4),
        "whole_face_both_inside_and_one_class": {
            k: round(float((both_inside & (cls[:, 0] == i) & (cls[:, 1] == i)).mean()), 4)
            for i, k in enumerate(names)
        },
        "lab_over_skin_by_class": {  # the mean reading (L*, and a*, b* over the skin's) of each class
            k: [round(float(v), 1) for v in lab.reshape(-1, 3)[flat["class"] == i].mean(0)]
            if (flat["class"] == i).any()
            else None
            for i, k in enumerate(names)
        },
    }


def iris_pixels(truth: list[dict], res: int = RES) -> np.ndarray:
    """(N, res, res) bool: each portrait's own iris pixels, after its nuisance moves: where the
    same truth rendered with the iris painted black (or white, for a light iris) differs from it
    by more than 12 levels in some channel."""
    from progan.data import portraits as P

    other = [
        {**t, "iris_lch": [100.0, 0.0, 0.0] if t["iris_lch"][0] < 50 else [0.0, 0.0, 0.0]} for t in truth
    ]
    a, b = P.render(truth, res).astype(np.int16), P.render(other, res).astype(np.int16)
    return np.abs(a - b).max(1) > 12


SPECKLES = ("gaussian", "blue-yellow")


def speckle(images: np.ndarray, mask: np.ndarray, amount: float, kind: str, seed: int = 0) -> np.ndarray:
    """uint8 NCHW images with zero-mean colour noise added to the pixels of `mask` (N, H, W) only.

    - "gaussian": a* and b* each N(0, amount), L* N(0, amount / 2), independently per pixel;
    - "blue-yellow": b* moved by +amount or -amount, a fair coin per pixel (a speckle of blue and
      yellow pixels around the painted colour, the colours a model's irises are mixed of).
    Either way the iris's mean colour stays the painted one; only how mixed it is changes."""
    from skimage.color import lab2rgb, rgb2lab

    if kind not in SPECKLES:
        raise ValueError(f"speckle kind {kind!r}: one of {SPECKLES}")
    rng = np.random.default_rng(seed)
    lab = rgb2lab(images.transpose(0, 2, 3, 1).astype(np.float32) / 255.0)
    n = int(mask.sum())
    if kind == "gaussian":
        lab[mask] += rng.normal(0.0, amount, (n, 3)) * np.array([0.5, 1.0, 1.0])
    else:
        lab[mask, 2] += amount * rng.choice([-1.0, 1.0], n)
    lab[..., 0] = np.clip(lab[..., 0], 0, 100)
    rgb = np.clip(lab2rgb(lab), 0, 1)
    out = (rgb * 255).round().astype(np.uint8).transpose(0, 3, 1, 2)
    keep = ~np.repeat(mask[:, None], 3, 1)  # the rest exactly as it was (no CIELAB round trip)
    out[keep] = images[keep]
    return out


def oracle_eye_reading(model, images: np.ndarray) -> np.ndarray:
    """(N,) the class index (portraits.IRIS order) of each face's likeliest eye colour."""
    from progan.data import portraits as P

    cols = [list(model.names).index(f"{k}_eyes") for k in P.IRIS]
    return model.predict(images)[:, cols].argmax(1)


def oracle_by_colour(colour_class: np.ndarray, oracle_class: np.ndarray, names: list[str]) -> dict:
    """For the faces whose two eyes the colour reading files in one class: how the oracle reads
    them (class -> {oracle's class: count}), and how often it agrees."""
    one = colour_class[:, 0] == colour_class[:, 1]
    table = {
        k: {
            o: int(((colour_class[:, 0] == i) & one & (oracle_class == j)).sum()) for j, o in enumerate(names)
        }
        for i, k in enumerate(names)
    }
    agree = float((oracle_class[one] == colour_class[one, 0]).mean()) if one.any() else float("nan")
    return {"faces_one_colour": int(one.sum()), "oracle_reads": table, "oracle_agrees": round(agree, 4)}


def oracle_under_speckle(
    oracle, truth: list[dict], portraits: np.ndarray, cores, amounts: list[float], names: list[str]
) -> list[dict]:
    """The oracle on the portraits with their irises speckled (`speckle`): for each kind and
    amount, how mixed the irises then read, and how often the oracle still names the painted class."""
    mask = iris_pixels(truth)
    true = np.array([names.index(t["iris"]) for t in truth])
    counts = np.maximum(np.bincount(true, minlength=len(names)), 1)
    rows = []
    for kind in SPECKLES:
        for amount in [0.0, *amounts] if kind == SPECKLES[0] else amounts:
            x = speckle(portraits, mask, amount, kind) if amount else portraits
            _, spread = eye_lab(x, cores)
            read = oracle_eye_reading(oracle, x)
            freq = np.bincount(read, minlength=len(names)) / counts
            rows.append({
                "kind": kind, "amount": amount, "colour_spread_median": round(float(np.median(spread)), 2),
                "oracle_accuracy": round(float((read == true).mean()), 4),
                "frequency_over_truth": {k: round(float(f), 3) for k, f in zip(names, freq, strict=True)},
            })  # fmt: skip
            print(f"portraits, {kind} speckle {amount:g}: colour spread "
                  f"{rows[-1]['colour_spread_median']:.1f}, the oracle names the painted class of "
                  f"{rows[-1]['oracle_accuracy']:.1%}")  # fmt: skip
    return rows


def blends_picture(
    path: str, samples: np.ndarray, colour_class: np.ndarray, oracle_class: np.ndarray,
    portraits: np.ndarray, portrait_class: np.ndarray,
) -> None:  # fmt: skip
    """Three panels of 12 eye bands, 5x: samples grey by colour (both eyes) that the oracle files
    elsewhere, samples grey by both readers, portraits with grey eyes."""
    from progan.data import portraits as P
    from progan.images import save_image

    grey = P.IRIS.index("grey")
    both_grey = (colour_class == grey).all(1)
    panels = [
        samples[both_grey & (oracle_class != grey)], samples[both_grey & (oracle_class == grey)],
        portraits[portrait_class == grey],
    ]  # fmt: skip
    bands = []
    for faces in panels:
        twelve = np.full((12, *faces.shape[1:]), 255, np.uint8)  # white where fewer than 12
        twelve[: min(12, len(faces))] = faces[:12]
        bands.append(eye_strip(twelve, rows=slice(22, 38), cols=slice(12, 52)))
    gap = np.full((bands[0].shape[0], 6, 3), 255, np.uint8)
    sheet = np.concatenate([bands[0], gap, bands[1], gap, bands[2]], 1)
    save_image(sheet.repeat(5, 0).repeat(5, 1), path)


def picture(path: str, portraits: np.ndarray, classes: np.ndarray, samples: dict[str, np.ndarray]) -> None:
    """Panels of 256x256: the a*-b* plane over the skin's (a* -50..30 across, b* -60..20 up),
    and lightness (0..100 up) against that b* (across); the portraits' eyes in their class's mean
    colour, then a pair of panels per snapshot, its samples' eyes in black over the portraits'."""
    from PIL import Image, ImageDraw
    from skimage.color import lab2rgb

    from progan.data import portraits as P
    from progan.images import save_image

    size = 256

    def to_px(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
        return np.clip((v - lo) / (hi - lo) * (size - 1), 0, size - 1)

    def points(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ab = np.stack([to_px(lab[:, 1], -50, 30), size - 1 - to_px(lab[:, 2], -60, 20)], 1)
        lb = np.stack([to_px(lab[:, 2], -60, 20), size - 1 - to_px(lab[:, 0], 0, 100)], 1)
        return ab, lb

    # Each class drawn in its painted colour (the eyes' measured a*, b* are over the skin's).
    centres = np.array([[np.mean(r) for r in box] for box in P.IRIS_LCH.values()])  # L*, C*, hue
    hue = np.radians(centres[:, 2])
    painted = np.stack([centres[:, 0], centres[:, 1] * np.cos(hue), centres[:, 1] * np.sin(hue)], 1)
    class_rgb = [tuple(int(v) for v in 255 * lab2rgb(c[None, None])[0, 0]) for c in painted]
    pale = [tuple(int(255 - (255 - v) * 0.35) for v in c) for c in class_rgb]
    rows = [("portraits", None)] + list(samples.items())
    canvas = Image.new("RGB", (2 * size + 10, len(rows) * (size + 24)), "white")
    draw = ImageDraw.Draw(canvas)
    p_ab, p_cl = points(portraits)
    for r, (title, lab) in enumerate(rows):
        y0 = r * (size + 24) + 20
        draw.text(
            (4, y0 - 16), f"{title}: a*-b* over the skin's (left), L* against that b* (right)", fill="black"
        )
        for x0, pts in ((0, p_ab), (size + 10, p_cl)):
            draw.rectangle([x0, y0, x0 + size - 1, y0 + size - 1], outline="grey")
            for (x, y), k in zip(pts, classes, strict=True):
                colour = class_rgb[k] if lab is None else pale[k]
                draw.point((x0 + x, y0 + y), fill=colour)
        if lab is not None:
            s_ab, s_cl = points(lab)
            for x0, pts in ((0, s_ab), (size + 10, s_cl)):
                for x, y in pts:
                    draw.rectangle([x0 + x, y0 + y, x0 + x + 1, y0 + y + 1], fill="black")
    save_image(np.asarray(canvas), path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snapshot", nargs="*", default=[], help="portraits models (runs or snapshots)")
    ap.add_argument("--portraits", type=int, default=2000, help="fresh portraits to fit the reader on")
    ap.add_argument("--seed", type=int, default=23, help="their seed (the dream build's stores use 0, 7, 11)")
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument(
        "--grids",
        nargs="*",
        default=[],
        help="dream.py's sample grids (RESULTS/TAG-samples.png, 8x8 faces): "
        "how mixed the irises of models no longer at hand were",
    )
    ap.add_argument("--out", default=str(RESULTS / "iris-colours.json"))
    ap.add_argument("--picture", help="PNG of the portraits' eyes and the samples' in colour space")
    ap.add_argument("--eyes", help="PNG of 24 portraits' eyes beside 24 samples' of each snapshot (5x)")
    ap.add_argument(
        "--oracle",
        help="an oracle ('progan attributes fit' on the portraits): read speckled portraits with it, "
        "and each snapshot's samples beside the colour reading",
    )
    ap.add_argument("--speckle", default="3,5,7,9,12", help="speckle amounts (CIELAB units) for --oracle")
    ap.add_argument(
        "--blends",
        help="PNG (with --oracle): 12 samples whose irises read grey by colour and another class by the "
        "oracle, 12 read grey by both, 12 portraits with grey eyes (the eye band, 5x)",
    )
    args = ap.parse_args()

    import torch

    from progan.checkpoint import load_snapshot, write_json_atomic
    from progan.data import portraits as P
    from progan.images import save_image
    from progan.sampling import images_for_latents, latents_for_seeds

    torch.set_grad_enabled(False)
    names = list(P.IRIS)
    cores = iris_cores()
    truth = P.draw_truth(2 * args.portraits, args.seed)
    portraits = P.render(truth, RES)
    lab, spread = eye_lab(portraits, cores)
    cls = np.array([names.index(t["iris"]) for t in truth])
    fit, test = slice(0, args.portraits), slice(args.portraits, None)
    reader = IrisReader(lab[fit].reshape(-1, 3), np.repeat(cls[fit], 2), len(names))
    base_rate = np.bincount(cls[fit], minlength=len(names)) / args.portraits
    read = reader.read(lab[test].reshape(-1, 3))
    accuracy = float((read["class"] == np.repeat(cls[test], 2)).mean())
    result: dict = {
        "portraits": args.portraits,
        "seed": args.seed,
        "core_pixels": [int(c.sum()) for c in cores],
        "reader_accuracy_on_other_portraits": round(accuracy, 4),
        "painted_lch_by_class": {
            k: [round(float(v), 1) for v in np.mean([t["iris_lch"] for t in truth if t["iris"] == k], 0)]
            for k in names
        },
        "portraits_read": summary(reader, lab[test], names, base_rate),
        "portraits_colour_spread_median": round(float(np.median(spread[test])), 2),
        "samples": {},
    }
    print(f"iris cores {result['core_pixels']} px; the reader names the painted class of "
          f"{accuracy:.1%} of other portraits' eyes; "
          f"{result['portraits_read']['between_classes']:.1%} of them lie between the classes")  # fmt: skip
    oracle = None
    if args.oracle:
        from progan.faces.attributes import load_attributes

        oracle = load_attributes(args.oracle)
        result["oracle"] = {"path": args.oracle, "speckled_portraits": oracle_under_speckle(
            oracle, [truth[i] for i in range(args.portraits, 2 * args.portraits)], portraits[test], cores,
            [float(a) for a in args.speckle.split(",")], names,
        )}  # fmt: skip
        # The same cross-reading on the portraits: how far the two readers agree where both see well.
        table = oracle_by_colour(
            read["class"].reshape(-1, 2), oracle_eye_reading(oracle, portraits[test]), names
        )
        result["oracle"]["portraits_by_colour"] = table
        print(f"portraits whose eyes read one class by colour: {table['faces_one_colour']}; the oracle "
              f"agrees on {table['oracle_agrees']:.1%}")  # fmt: skip
    sample_lab, strips = {}, [eye_strip(portraits[test][:24])]
    for snapshot in args.snapshot:
        snap = load_snapshot(snapshot, device="cpu")
        G = snap.G_ema
        if G.resolution != RES:
            raise SystemExit(f"{snapshot}: its G draws {G.resolution}x{G.resolution}, not {RES}x{RES}")
        z = latents_for_seeds(range(10_000_000, 10_000_000 + args.samples), G.latent_size)
        images = images_for_latents(G, z, batch=64).numpy()
        x, x_spread = eye_lab(images, cores)
        strips.append(eye_strip(images[:24]))
        s = summary(reader, x, names, base_rate)
        kimg = f"{snap.kimg:g} kimg"
        result["samples"][kimg] = {
            "snapshot": str(snap.path), "colour_spread_median": round(float(np.median(x_spread)), 2), **s,
        }  # fmt: skip
        sample_lab[kimg] = x.reshape(-1, 3)
        ratios = ", ".join(f"{k} {v:.2f}x" for k, v in s["per_eye_frequency_over_portraits"].items())
        print(f"{snap.path}: per eye {ratios}; between the classes {s['between_classes']:.1%}; "
              f"one class {s['eyes_one_class']:.1%}; colour spread in an iris {np.median(x_spread):.1f} "
              f"(portraits {np.median(spread[test]):.1f})")  # fmt: skip
        if oracle is not None:
            colour_class = reader.read(x.reshape(-1, 3))["class"].reshape(-1, 2)
            oracle_class = oracle_eye_reading(oracle, images)
            table = oracle_by_colour(colour_class, oracle_class, names)
            result["samples"][kimg]["oracle_by_colour"] = table
            print(f"  faces whose eyes read one class by colour: {table['faces_one_colour']}; the oracle "
                  f"agrees on {table['oracle_agrees']:.1%}; grey by colour, by the oracle: "
                  f"{table['oracle_reads']['grey']}")  # fmt: skip
            if args.blends and len(sample_lab) == 1:
                blends_picture(args.blends, images, colour_class, oracle_class, portraits[test], cls[test])
                print(f"wrote {args.blends}")
    for path in args.grids:
        from PIL import Image

        g = np.asarray(Image.open(path).convert("RGB"))
        if g.shape != (8 * RES, 8 * RES, 3):
            raise SystemExit(f"{path}: not an 8x8 grid of {RES}x{RES} faces (dream.py's TAG-samples.png)")
        faces = g.reshape(8, RES, 8, RES, 3).transpose(0, 2, 4, 1, 3).reshape(64, 3, RES, RES)
        _, grid_spread = eye_lab(np.ascontiguousarray(faces), cores)
        result.setdefault("grids", {})[Path(path).name] = round(float(np.median(grid_spread)), 2)
        print(f"{path}: colour spread in an iris {np.median(grid_spread):.1f} (128 eyes)")
    if args.picture:
        picture(args.picture, lab[fit].reshape(-1, 3), np.repeat(cls[fit], 2), sample_lab)
        print(f"wrote {args.picture}")
    if args.eyes:
        gap = np.full((strips[0].shape[0], 8, 3), 255, np.uint8)
        row = np.concatenate([part for strip in strips for part in (strip, gap)][:-1], 1)
        save_image(row.repeat(5, 0).repeat(5, 1), args.eyes)  # five times enlarged, pixels kept square
        print(f"wrote {args.eyes}")
    write_json_atomic(Path(args.out), result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

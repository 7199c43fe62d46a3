"""Issue 29: why the portraits models paint a face's two eyes in two colours (benchmarks/README.md,
"Why the eyes stay unpaired").

Two measurements on the portraits themselves (no trained generator needed):

1. Footprint. How far one attribute moves a 64x64 portrait (L2 distance, pixels in [-1, 1]),
   median over 300 draws. WGAN-GP's gradient penalty keeps D close to 1-Lipschitz, so this is the
   most D's score can change with that attribute, and so the most the loss can charge G for
   getting it wrong: recolouring one eye is the smallest change of all.
2. Can a network see it when asked? The paper's D (the portraits build's sizes) and the
   attribute classifier's network, trained supervised for a fixed time to tell matched portraits
   from the same kind of portraits with one eye recoloured to another iris colour. The recoloured
   eye's colour is drawn from the others, so one eye alone looks the same in both classes (as a
   generator's eyes, drawn in about the data's proportions, look to D one at a time): only the
   pair tells them apart. The control task: both eyes warm (brown, hazel) against both eyes cool
   (blue, grey), same D, from the same draws. Learners named with "-mirror-difference" are fed the
   image minus its mirror image, which hands them the comparison of the two eyes (no paper's D
   does that).

    python benchmarks/eye_pairing.py                     # results/eye-pairing.json, 29 minutes on 2 cores
    python benchmarks/eye_pairing.py --control-images 0 --footprint-draws 20 \
        --images d-paper-mirror-difference=12800,oracle-net-mirror-difference=32000,d-paper=192000 \
        --out benchmarks/results/eye-pairing-long.json                       # 40 minutes
    python benchmarks/eye_pairing.py --control-images 0 --footprint-draws 20 \
        --images d-paper-mirror-difference=48000 --out benchmarks/results/eye-pairing-mirror.json   # 9 min
    python benchmarks/eye_pairing.py --images "" --control-images 0 --footprint-resolutions 64,128 \
        --out benchmarks/results/eye-pairing-footprint.json                  # the footprint alone, 2 minutes
    python benchmarks/eye_pairing.py --images d-paper=640,oracle-net=640 --control-images 640 \
        --train 200 --test 60 --footprint-draws 20 --out /tmp/pairing.json     # a 30-second smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from progan.data.portraits import HAIR, HAIR_LCH, IRIS, IRIS_LCH, draw_truth, lch_in_box, render

RESULTS = Path(__file__).resolve().parent / "results"
RES = 64


def recoloured(t: dict, part: str, names: tuple[str, ...], boxes: dict, rng: np.random.Generator) -> dict:
    """The same draw with `part` (hair or iris) moved to another of its colour boxes."""
    t = copy.deepcopy(t)
    cat = names[(names.index(t[part]) + 1 + int(rng.integers(len(names) - 1))) % len(names)]
    t[part] = cat
    t[f"{part}_lch"] = lch_in_box(rng, boxes[cat])
    return t


def one_eye_recoloured(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`a` with one side (left or right, at random) taken from `b`, the same draws with other irises.

    The two renders differ only in the irises, and the fold is the eyes' midpoint (x = 31.9 of 64 on
    the base face; rotation and shift move an eye by 2 pixels at most, far from the fold)."""
    out = a.copy()
    w = a.shape[-1] // 2
    right = rng.integers(2, size=len(a)).astype(bool)
    out[right, ..., w:] = b[right, ..., w:]
    out[~right, ..., :w] = b[~right, ..., :w]
    return out


def footprint(n: int, seed: int, res: int = RES) -> dict:
    rng = np.random.default_rng(seed)
    base = draw_truth(n, seed=seed)
    a = render(base, res)

    def dist(b: np.ndarray) -> float:
        d = (a.astype(np.float32) - b.astype(np.float32)).reshape(n, -1) / 127.5
        return float(np.median(np.linalg.norm(d, axis=1)))

    both = render([recoloured(t, "iris", IRIS, IRIS_LCH, rng) for t in base], res)
    out = {
        "one eye recoloured (a mismatched pair)": dist(one_eye_recoloured(a, both, rng)),
        "both eyes recoloured": dist(both),
    }
    changes = {
        "hair colour": [recoloured(t, "hair", HAIR, HAIR_LCH, rng) for t in base],
        "smile (amount a -> 1 - a)": [{**t, "smile": 1.0 - t["smile"]} for t in base],
        "glasses on/off": [{**t, "eyeglasses": not t["eyeglasses"]} for t in base],
        "beard on/off": [{**t, "beard": not t["beard"]} for t in base],
        "face width (long <-> round)": [{**t, "width": 0.85 if t["width"] > 1.0 else 1.18} for t in base],
    }
    for name, ts in changes.items():
        out[name] = dist(render(ts, res))
    return out


def tasks(n_train: int, n_test: int, seed: int) -> dict[str, tuple[np.ndarray, ...]]:
    """(train x, train y, test x, test y) per task; no face is drawn in both classes."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    truth = draw_truth(2 * n, seed=seed)
    a = render(truth, RES)
    mismatched = one_eye_recoloured(
        a, render([recoloured(t, "iris", IRIS, IRIS_LCH, rng) for t in truth], RES), rng
    )
    pair = (a[:n], mismatched[n:])  # class 0: matched (first n draws), class 1: one eye off (other n)
    warm = a[[t["iris"] in ("brown", "hazel") for t in truth]]
    cool = a[[t["iris"] in ("blue", "grey") for t in truth]]
    k = min(len(warm), len(cool), n)
    colour = (warm[:k], cool[:k])
    out = {}
    for name, (c0, c1) in {"pair": pair, "colour": colour}.items():
        m = min(len(c0), len(c1))
        te = min(n_test, m // 5)
        split = [np.concatenate(p) for p in ((c0[te:m], c1[te:m]), (c0[:te], c1[:te]))]
        ys = [np.repeat(np.float32([0, 1]), len(s) // 2) for s in split]
        out[name] = (split[0], ys[0], split[1], ys[1])
    return out


class MirrorDifference(torch.nn.Module):
    """A learner fed the image minus its mirror image: the two eyes' difference, handed over."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x - x.flip(-1))


def learner(name: str) -> torch.nn.Module:
    """ "d-paper", "d-wide", "oracle-net", or one of them + "-mirror-difference"."""
    if name.endswith("-mirror-difference"):
        return MirrorDifference(learner(name.removesuffix("-mirror-difference")))
    if name == "d-paper":  # the portraits build's D: --fmap-base 1024 --fmap-max 128 (32 maps at 64x64)
        from progan.networks import Discriminator

        return Discriminator(resolution=RES, latent_size=128, fmap_base=1024, fmap_max=128)
    if name == "d-wide":  # 4x the maps at 64x64 and 32x32 (128 each)
        from progan.networks import Discriminator

        return Discriminator(resolution=RES, latent_size=128, fmap_base=4096, fmap_max=128)
    if name == "oracle-net":  # the network of `progan attributes fit` (batch norm, strided convs)
        from progan.faces.attributes import AttributeNet

        return AttributeNet(3, RES, 1, width=32)
    raise SystemExit(f"unknown learner {name!r}; use d-paper, d-wide or oracle-net (+ -mirror-difference)")


def train(name: str, data: tuple[np.ndarray, ...], images: int, seed: int, tag: str) -> dict:
    """Adam (the paper's betas for D) on the logistic loss with mirror augmentation, batch 32, until
    it has seen `images` training images."""
    xs, ys, xt, yt = data
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = learner(name)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.0, 0.99), eps=1e-8)

    def prep(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).float() / 127.5 - 1.0

    def accuracy() -> float:
        net.eval()
        with torch.no_grad():
            s = torch.cat([net(prep(xt[i : i + 250]))[:, 0] for i in range(0, len(xt), 250)])
        net.train()
        return float(((s > 0).numpy() == (yt > 0.5)).mean())

    curve, step, t0 = [], 0, time.time()
    while 32 * step < images:
        idx = rng.integers(len(xs), size=32)
        xb = prep(xs[idx])
        flip = torch.rand(len(xb)) < 0.5
        xb[flip] = xb[flip].flip(-1)
        loss = F.binary_cross_entropy_with_logits(net(xb)[:, 0], torch.from_numpy(ys[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 100 == 0:
            curve.append({"images": 32 * step, "held_out_accuracy": accuracy()})
            print(
                f"  {tag} {name}: {32 * step} images, {time.time() - t0:.0f} s, "
                f"held-out accuracy {curve[-1]['held_out_accuracy']:.3f}",
                flush=True,
            )
    return {
        "learner": name,
        "task": tag,
        "train_images": len(xs),
        "test_images": len(xt),
        "seconds": round(time.time() - t0),
        "images_seen": 32 * step,
        "held_out_accuracy": accuracy(),
        "curve": curve,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=int, default=2500, help="training faces per class")
    p.add_argument("--test", type=int, default=500, help="held-out faces per class")
    p.add_argument(
        "--images",
        default="d-paper=48000,d-wide=12800,oracle-net=192000",
        help="training images each learner sees on the pairing task (a wide D is 6x slower; '' for none)",
    )
    p.add_argument(
        "--control-images", type=int, default=12800, help="the paper D's training images on the control"
    )
    p.add_argument("--footprint-draws", type=int, default=300)
    p.add_argument("--footprint-resolutions", default="64", help="e.g. 64,128: the footprint at each size")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--out", type=Path, default=RESULTS / "eye-pairing.json")
    a = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.time()
    report: dict = {"resolution": RES, "footprint_draws": a.footprint_draws}
    for res in (int(r) for r in a.footprint_resolutions.split(",")):
        key = "footprint_l2" if res == RES else f"footprint_l2_{res}"
        report[key] = footprint(a.footprint_draws, a.seed + 100, res)
        print(f"footprint at {res}x{res} (median L2, [-1, 1] pixels):", json.dumps(report[key], indent=1))
    budget = {k: int(v) for k, v in (item.split("=") for item in a.images.split(",") if item)}
    if budget or a.control_images:
        data = tasks(a.train, a.test, a.seed)
        print(f"rendered the tasks after {time.time() - t0:.0f} s", flush=True)
    runs = [train(name, data["pair"], n, a.seed, "pair") for name, n in budget.items()]
    if a.control_images:
        runs.append(train("d-paper", data["colour"], a.control_images, a.seed, "colour"))
    report["supervised"] = runs
    report["seconds"] = round(time.time() - t0)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(a.out)
    for r in runs:
        print(
            f"{r['task']:7s} {r['learner']:11s} {r['images_seen']:7d} images seen: "
            f"held-out accuracy {r['held_out_accuracy']:.3f}"
        )
    print(f"wrote {a.out} ({report['seconds']} s)")


if __name__ == "__main__":
    main()

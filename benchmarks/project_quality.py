"""How well `progan project` finds images, where the truth is known (issue 30, points 2 and 5).

(a) Images the model made from seeds it never starts from (10,000,000 on) are projected back:
    PSNR and MS-SSIM against the seed's image, at the model's size.
(b) Held-out real images (a test store, e.g. the Fashion-MNIST test split) are projected, against
    two baselines: the best of `--random` random samples (by pixel distance) and the nearest
    training image (by pixel distance over the whole training store). For a conditional model the
    projected label is compared with the test label.
(5) Starting latents: the nearest of 256 random samples (`init="best-of"`, the default) against
    random starts, at the same steps and restarts.

    python benchmarks/project_quality.py --snapshot runs/00001-fmnist32 \\
        --train /work/fm30/train32 --test /work/fm30/test32 --num 40 --out benchmarks/results

Writes project_quality-<tag>.json and project_quality-<tag>.png (rows: test image, projection,
best random sample, nearest training image) into --out and prints a Markdown table. Timings are
seconds on this machine for the whole set (a shared CPU: compare the methods' ratios).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import progan  # noqa: E402
from progan.data.store import open_store  # noqa: E402
from progan.metrics.msssim import ms_ssim  # noqa: E402
from progan.projection.project import psnr  # noqa: E402


def scores(found: np.ndarray, truth: np.ndarray) -> dict:
    """Mean PSNR and MS-SSIM of uint8 NHWC pairs (and each PSNR)."""
    p = [psnr(a, b) for a, b in zip(found, truth, strict=True)]
    a, b = (torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2) for x in (found, truth))
    ms = ms_ssim(a, b).numpy() if found.shape[1] >= 16 else np.full(len(found), np.nan)
    return {
        "psnr_mean": float(np.mean(p)),
        "psnr_median": float(np.median(p)),
        "psnr_min": float(np.min(p)),
        "share_psnr_30": float(np.mean(np.array(p) >= 30)),
        "msssim_mean": float(np.nanmean(ms)),
    }


def best_random(model, targets: np.ndarray, count: int, first_seed: int = 20_000_000) -> np.ndarray:
    """For each target, the nearest (pixel MSE) of `count` random samples (seeds from first_seed)."""
    best = np.zeros_like(targets)
    best_d = np.full(len(targets), np.inf)
    t = targets.astype(np.float32)
    for start in range(first_seed, first_seed + count, 100):
        imgs = model.generate(range(start, start + 100), precision="fp32").astype(np.float32)
        d = ((imgs[None] - t[:, None]) ** 2).mean(axis=(2, 3, 4))
        k = d.argmin(1)
        better = d[np.arange(len(t)), k] < best_d
        best[better] = imgs[k[better]].astype(np.uint8)
        best_d[better] = d[np.arange(len(t)), k][better]
    return best


def nearest_training(train_images: np.ndarray, targets: np.ndarray, chunk: int = 5000) -> np.ndarray:
    """For each target, the training image nearest by pixel MSE (the whole training store)."""
    t = torch.from_numpy(targets.reshape(len(targets), -1).astype(np.float32))
    best_d = torch.full((len(targets),), float("inf"))
    best_i = torch.zeros(len(targets), dtype=torch.long)
    for s in range(0, len(train_images), chunk):
        x = torch.from_numpy(
            np.asarray(train_images[s : s + chunk]).reshape(-1, t.shape[1]).astype(np.float32)
        )
        d = torch.cdist(t, x) ** 2
        v, i = d.min(1)
        better = v < best_d
        best_d[better], best_i[better] = v[better], i[better] + s
    return np.stack([np.asarray(train_images[i]) for i in best_i.tolist()])


def train_encoder(model, samples: int, epochs: int, seed: int = 0):
    """A small CNN image -> latent direction (and label logits), trained on the model's own
    samples (seeds 30,000,000 on): pSp/e4e-style learned inversion as a starting point."""
    from torch import nn

    R, C, L, K = model.resolution, model.channels, model.latent_size, model.label_size
    torch.manual_seed(seed)
    layers, ch, res = [], C, R
    while res > 4:
        layers += [nn.Conv2d(ch, 64, 3, padding=1), nn.LeakyReLU(0.2), nn.AvgPool2d(2)]
        ch, res = 64, res // 2
    enc = nn.Sequential(
        *layers, nn.Flatten(), nn.Linear(64 * 16, 256), nn.LeakyReLU(0.2), nn.Linear(256, L + K)
    )
    seeds = range(30_000_000, 30_000_000 + samples)
    z = torch.from_numpy(model.latents(seeds))
    labels = model.labels(seeds)
    x = (
        torch.from_numpy(model.generate(seeds, labels, precision="fp32")).permute(0, 3, 1, 2).float() / 127.5
        - 1
    )
    cls = None if labels is None else torch.from_numpy(labels).argmax(1)
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3)
    for _ in range(epochs):
        perm = torch.randperm(samples)
        for i in range(0, samples, 128):
            b = perm[i : i + 128]
            out = enc(x[b])
            zn = z[b] / z[b].norm(dim=1, keepdim=True)
            loss = 1 - torch.nn.functional.cosine_similarity(out[:, :L], zn).mean()
            if K:
                loss = loss + torch.nn.functional.cross_entropy(out[:, L:], cls[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return enc.eval()


def project_from_encoder(model, enc, targets: np.ndarray, steps: int, restarts: int) -> list:
    """Projection whose first restart starts at the encoder's guess (the others best-of-N)."""
    from progan.projection import project as P

    L = model.latent_size
    original = P._initial_latents

    def start(G, t, opts, gen, device, multi_hot=False):
        z, logits = original(G, t, opts, gen, device, multi_hot)
        with torch.no_grad():
            guess = enc(t.cpu())
        n = len(t)
        z = z.reshape(n, opts.restarts, -1)
        z[:, 0] = guess[:, :L] * (L**0.5) / guess[:, :L].norm(dim=1, keepdim=True)
        if logits is not None:
            logits = logits.reshape(n, opts.restarts, -1)
            logits[:, 0] = guess[:, L:]
            logits = logits.reshape(n * opts.restarts, -1)
        return z.reshape(n * opts.restarts, -1), logits

    P._initial_latents = start
    try:
        return model.project(targets, align=False, steps=steps, restarts=restarts, batch=8)
    finally:
        P._initial_latents = original


def to_nhwc(chw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(chw).transpose(0, 2, 3, 1))


def figure(rows: list[np.ndarray], path: Path, cell: int = 96) -> None:
    """Columns = the test images; rows = the given image sets, each cell enlarged (nearest)."""
    from progan.images import save_image, upscale_nearest

    n = rows[0].shape[0]
    gap = 4
    factor = max(1, cell // rows[0].shape[1])
    size = rows[0].shape[1] * factor
    c = rows[0].shape[3]
    sheet = np.full((len(rows) * (size + gap) + gap, n * (size + gap) + gap, c), 255, np.uint8)
    for r, images in enumerate(rows):
        for i in range(n):
            y, x = gap + r * (size + gap), gap + i * (size + gap)
            sheet[y : y + size, x : x + size] = upscale_nearest(images[i], factor)
    save_image(sheet, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snapshot", required=True)
    ap.add_argument("--train", help="the training store (nearest-training baseline)")
    ap.add_argument("--test", help="a held-out store of the same size")
    ap.add_argument("--num", type=int, default=40, help="images of each kind")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--restarts", type=int, default=4)
    ap.add_argument("--random", type=int, default=1000, help="random samples of the best-of baseline")
    ap.add_argument("--inits", default="best-of,random")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--encoder-samples", type=int, default=0, help="train a learned encoder on this many samples"
    )
    ap.add_argument("--encoder-epochs", type=int, default=5)
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = progan.load(args.snapshot, device="cpu")
    tag = args.tag or f"{model.path.parent.name}-{model.resolution}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"snapshot": str(model.path), "resolution": model.resolution, "num": args.num,
                    "steps": args.steps, "restarts": args.restarts, "threads": args.threads}  # fmt: skip
    inits = args.inits.split(",")

    # (a) the model's own images of known seeds
    seeds = list(range(10_000_000, 10_000_000 + args.num))
    own = model.generate(seeds, precision="fp32")
    for init in inits:
        t0 = time.time()
        found = model.project(own, align=False, steps=args.steps, restarts=args.restarts, init=init, batch=8)
        row = scores(np.stack([p.image for p in found]), own)
        row["seconds"] = time.time() - t0
        if model.label_size:
            want = model.labels(seeds).argmax(1)
            row["label_accuracy"] = float(
                np.mean([int(p.labels.argmax()) == w for p, w in zip(found, want, strict=True)])
            )
        result[f"own_{init}"] = row
        print(f"(a) own images, init {init}: {row}", flush=True)

    # (b) held-out real images against the two baselines
    if args.test:
        test = open_store(args.test)
        idx = np.random.default_rng(0).choice(test.count, args.num, replace=False)
        idx.sort()
        targets = to_nhwc(test.images(model.resolution)[idx])
        result["test_indices"] = idx.tolist()
        rows = [targets]
        for init in inits:
            t0 = time.time()
            found = model.project(
                targets, align=False, steps=args.steps, restarts=args.restarts, init=init, batch=8
            )
            images = np.stack([p.image for p in found])
            row = scores(images, targets)
            row["seconds"] = time.time() - t0
            if model.label_size and test.labels is not None:
                want = np.asarray(test.labels)[idx].argmax(1)
                row["label_accuracy"] = float(
                    np.mean([int(p.labels.argmax()) == w for p, w in zip(found, want, strict=True)])
                )
            result[f"heldout_{init}"] = row
            if init == inits[0]:
                rows.append(images)
            print(f"(b) held-out, init {init}: {row}", flush=True)
        if args.encoder_samples:
            t0 = time.time()
            enc = train_encoder(model, args.encoder_samples, args.encoder_epochs)
            trained = time.time() - t0
            for name, imgs in (("own", own), ("heldout", targets)):
                t0 = time.time()
                found = project_from_encoder(model, enc, imgs, args.steps, args.restarts)
                row = {**scores(np.stack([p.image for p in found]), imgs), "seconds": time.time() - t0,
                       "encoder_training_seconds": trained}  # fmt: skip
                result[f"{name}_encoder"] = row
                print(f"({name}) encoder start: {row}", flush=True)
        t0 = time.time()
        rand = best_random(model, targets, args.random)
        result["heldout_best_of_random"] = {**scores(rand, targets), "seconds": time.time() - t0}
        rows.append(rand)
        print(f"(b) best of {args.random} random: {result['heldout_best_of_random']}", flush=True)
        if args.train:
            train = open_store(args.train)
            near = to_nhwc(nearest_training(train.images(model.resolution), to_nhwc_inv(targets)))
            result["heldout_nearest_training"] = scores(near, targets)
            rows.append(near)
            print(f"(b) nearest training image: {result['heldout_nearest_training']}", flush=True)
        figure([r[:12] for r in rows], out / f"project_quality-{tag}.png")
    (out / f"project_quality-{tag}.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out / f'project_quality-{tag}.json'}")


def to_nhwc_inv(nhwc: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))


if __name__ == "__main__":
    main()

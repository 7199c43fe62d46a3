"""Data pipeline speed: `progan prepare` throughput and loader rate vs. what training consumes.

    python benchmarks/data_speed.py [--count 2000] [--json out.json]

1. Writes `--count` generated JPEGs (`--size` px, smooth random content), times `progan prepare`
   on them at 128x128 with the default worker count (images/s, all cores).
2. Times `BatchLoader.next` (random access into the memory-mapped level, mirror augmentation,
   uint8) at 32x32 and 128x128.
3. Times training work on this machine at the same resolutions and batch sizes with the paper's
   networks (`progan.networks`): by default only D forward + backward on the real minibatch, a
   strict part of a training step, so the consumption it reports is an upper bound and the
   loader/training ratio a lower bound; `--full-step` times whole D+G steps. The loader must
   deliver at least 20x what training consumes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from progan.data.loader import BatchLoader  # noqa: E402
from progan.data.prepare import Options, prepare  # noqa: E402


def make_jpegs(folder: Path, count: int, size: int, seed: int = 0) -> float:
    """Photo-like JPEGs: low-frequency colour fields plus a little noise. Returns MB written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    total = 0
    for i in range(count):
        low = Image.fromarray(rng.integers(0, 256, (6, 6, 3), np.uint8)).resize((size, size), Image.BICUBIC)
        a = np.asarray(low).astype(np.int16) + rng.integers(-8, 9, (size, size, 3), dtype=np.int16)
        path = folder / f"{i // 500:02d}" / f"img{i:05d}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        total += path.stat().st_size
    return total / 1e6


def loader_rate(store, resolution: int, batch: int, seconds: float) -> float:
    loader = BatchLoader(store, seed=0, mirror=True)
    loader.next(resolution, batch)  # open the memory map
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        images, _ = loader.next(resolution, batch)
        n += images.shape[0]
    return n / (time.perf_counter() - t0)


def training_rate(resolution: int, batch: int, repeats: int, full_step: bool) -> tuple[float, str]:
    """Real images per second that training consumes on this CPU, an upper bound by default.

    Default: the fastest of `repeats` timings of D forward + backward on one real minibatch with
    the paper's D. A training step does strictly more (G forward and backward twice, D on the fakes,
    the gradient penalty's double backward, two Adam updates), so the true consumption is lower
    and the loader/training ratio reported is conservative. `full_step` times the whole D+G step.
    """
    import torch

    try:
        from progan.loss import LossConfig, discriminator_loss, generator_loss
        from progan.networks import Discriminator, Generator, NetworkConfig
    except ImportError as e:  # the networks are another part of the project
        return float("nan"), f"training networks unavailable ({e})"
    torch.manual_seed(0)
    cfg = NetworkConfig(resolution=resolution, channels=3)
    D = Discriminator(cfg)
    reals = torch.rand(batch, 3, resolution, resolution) * 2 - 1
    if full_step:
        G = Generator(cfg)
        opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.0, 0.99))
        opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.0, 0.99))
        loss_cfg = LossConfig()

        def step() -> None:
            fakes = G(torch.randn(batch, cfg.latent_size))
            loss, _ = discriminator_loss(D, reals, fakes, None, torch.rand(batch, 1, 1, 1), loss_cfg)
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()
            loss, _ = generator_loss(D, G(torch.randn(batch, cfg.latent_size)), None, loss_cfg)
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()

        what = "full D+G step (paper networks)"
    else:

        def step() -> None:
            D.zero_grad(set_to_none=True)
            D(reals)[:, 0].sum().backward()

        what = "D fwd+bwd on the reals only (lower bound of a step)"
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    dt = min(times)
    return batch / dt, f"{what}: {dt:.2f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000, help="generated JPEGs to prepare")
    ap.add_argument("--size", type=int, default=256, help="side of the generated JPEGs")
    ap.add_argument("--workers", type=int, default=None, help="prepare workers (default: all cores, <= 8)")
    ap.add_argument("--batch32", type=int, default=64, help="minibatch at 32x32")
    ap.add_argument("--batch128", type=int, default=16, help="minibatch at 128x128 (the paper's)")
    ap.add_argument("--repeats", type=int, default=2, help="training timings per resolution (fastest counts)")
    ap.add_argument("--full-step", action="store_true", help="time full D+G training steps (slow on CPU)")
    ap.add_argument("--seconds", type=float, default=1.0, help="time per loader measurement")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()

    results: dict = {"cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="progan-data-speed-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        mb = make_jpegs(tmp / "jpegs", args.count, args.size)
        dt = time.perf_counter() - t0
        print(
            f"generated {args.count} JPEGs of {args.size}x{args.size} ({mb:.1f} MB) in {dt:.1f} s", flush=True
        )
        opts = Options(resolution=128, progress=False)
        if args.workers is not None:
            opts.workers = args.workers
        res = prepare(tmp / "jpegs", tmp / "store", opts)
        results["prepare"] = {
            "images": res.store.count,
            "seconds": round(res.seconds, 2),
            "images_per_s": round(res.store.count / res.seconds, 1),
            "workers": opts.workers,
            "resolution": 128,
        }
        print(
            f"prepare: {res.store.count} JPEGs -> store 4..128 in {res.seconds:.1f} s = "
            f"{res.store.count / res.seconds:.0f} images/s ({opts.workers} workers)"
        )
        print(
            f"{'res':>5} {'batch':>5} {'loader img/s':>13} {'training img/s':>15} {'ratio':>8}  training step"
        )
        ok = True
        for r, b in ((32, args.batch32), (128, args.batch128)):
            load = loader_rate(res.store, r, b, args.seconds)
            train, how = training_rate(r, b, args.repeats, args.full_step)
            ratio = load / train if train == train else float("nan")
            ok &= bool(ratio >= 20)
            results[f"{r}x{r}"] = {
                "batch": b,
                "loader_images_per_s": round(load, 1),
                "training_images_per_s": round(train, 2),
                "ratio": round(ratio, 1),
                "training": how,
            }
            print(f"{r:>5} {b:>5} {load:>13.0f} {train:>15.1f} {ratio:>7.0f}x  {how}")
        results["loader_at_least_20x"] = ok
        print("loader delivers >= 20x what training consumes:", "yes" if ok else "NO")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

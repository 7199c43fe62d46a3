"""Does bf16 train as well as fp32? Fixed-budget runs on Fashion-MNIST, compared by SWD.

Trains the same small progressive GAN (4x4 -> 32x32) on Fashion-MNIST (Debian package
`dataset-fashion-mnist`) in fp32 with two seeds, which gives the run-to-run noise, and in bf16
with the same two seeds; then measures each run's G_ema against the reals with the paper's sliced
Wasserstein distance, and writes the four sample grids side by side.

    python benchmarks/precision_quality.py --kimg 64 --out benchmarks/results

Prints a table (SWD x1e3 per level and average, final losses, img/s) and writes
`precision_quality.json` and `precision_quality.png` into --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def run_one(store: Path, outdir: Path, precision: str, seed: int, kimg: float) -> dict:
    from progan.checkpoint import load_snapshot
    from progan.metrics.evaluate import compute_metrics
    from progan.runspec import TrainOptions, resolve_run
    from progan.training import train

    opts = TrainOptions(
        data=str(store), outdir=str(outdir), name=f"{precision}-seed{seed}", preset="cpu",
        training_kimg=kimg / 8, transition_kimg=kimg / 8, total_kimg=kimg, batch=16, latent_size=128,
        ema_beta=0.99,  # as the demo: a short run needs a G_ema over fewer updates
        fmap_base=512, fmap_max=64, seed=seed, precision=precision, tick_kimg=kimg / 10,
        snapshot_ticks=0, image_ticks=0, progress=False,
    )  # fmt: skip
    run_dir = train(resolve_run(opts))
    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    snap = load_snapshot(run_dir)
    metrics = compute_metrics(["swd"], snap.G_ema, str(store), 4096, "cpu", seed=123)
    last = rows[-1]
    return {
        "precision": precision,
        "seed": seed,
        "run_dir": str(run_dir),
        **metrics,
        "loss_G": last["loss_G"],
        "loss_D": last["loss_D"],
        "img_per_sec_32": float(np.median([r["img_per_sec"] for r in rows if r["resolution"] == 32])),
        "grid": str(run_dir / "fakes-final.png"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kimg", type=float, default=64.0, help="training length of each run")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from progan.images import save_strip

    torch.set_num_threads(args.threads)
    if not FASHION.exists():
        sys.exit(f"{FASHION} is missing: apt-get install dataset-fashion-mnist")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="progan-precision-"))
    store = work / "fmnist32"
    cmd = [sys.executable, "-m", "progan", "prepare", str(FASHION), str(store), "--resolution", "32"]
    subprocess.run(cmd, check=True)
    results = [run_one(store, work / "runs", p, s, args.kimg) for p in ("fp32", "bf16") for s in (0, 1)]
    levels = sorted(k for k in results[0] if k.startswith("swd_") and k != "swd_avg")
    header = (
        f"{'run':<12}"
        + "".join(f"{k:>10}" for k in [*levels, "swd_avg"])
        + f"{'loss_G':>9}{'loss_D':>9}{'img/s@32':>10}"
    )
    print(header)
    for r in results:
        name = f"{r['precision']}-s{r['seed']}"
        vals = "".join(f"{r[k]:>10.2f}" for k in [*levels, "swd_avg"])
        print(f"{name:<12}{vals}{r['loss_G']:>9.3f}{r['loss_D']:>9.3f}{r['img_per_sec_32']:>10.1f}")
    fp32 = [r["swd_avg"] for r in results if r["precision"] == "fp32"]
    bf16 = [r["swd_avg"] for r in results if r["precision"] == "bf16"]
    print(f"fp32 seed spread (run-to-run noise): {abs(fp32[0] - fp32[1]):.2f}; "
          f"bf16 - fp32 mean: {np.mean(bf16) - np.mean(fp32):+.2f}")  # fmt: skip
    (out / "precision_quality.json").write_text(json.dumps(results, indent=2))
    save_strip([Path(r["grid"]) for r in results], out / "precision_quality.png", gap=12)
    print(f"grids (fp32 s0, fp32 s1, bf16 s0, bf16 s1): {out / 'precision_quality.png'}")


if __name__ == "__main__":
    main()

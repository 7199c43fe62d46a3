"""The best samples for a budget: what a fixed time of training gives, by SWD, for G and G_ema.

Trains progan with its defaults (the `cpu` preset, G_ema's half-life rule, conditional on the 10
classes) on the Fashion-MNIST train split at 32x32 (Debian package `dataset-fashion-mnist`) for a
fixed budget with `--minutes` (the time planner: 4x4 -> 32x32), at latent 512, 128 feature maps,
minibatch 16; then scores the raw G and G_ema with the paper's SWD on `--num` generated images
against the 10,000-image test split, at the end of every resolution from 16x16 on and at the end
of the run, next to the real-vs-real noise floor (two disjoint sets of `--num` train images).

    python benchmarks/quality_budget.py --minutes 20 --clock cpu --seeds 0,1 --precisions fp32,bf16

`--clock cpu` budgets the training process's CPU seconds per thread instead of wall seconds: on a
machine shared with other jobs the run then gets the same amount of computation as on an idle one
(the calibration and the deadline use the same clock). Writes `quality_budget.json` and
`quality_budget.png` (the final G_ema grids side by side) into --out and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

FASHION = Path("/usr/share/datasets/fashion-mnist")
TRAIN = FASHION / "train-images-idx3-ubyte.gz"
TEST = FASHION / "t10k-images-idx3-ubyte.gz"


def prepare(source: Path, dest: Path) -> Path:
    if not (dest / "dataset.json").is_file():
        cmd = [sys.executable, "-m", "progan", "prepare", str(source), str(dest), "--resolution", "32"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return dest


def train_run(
    store: Path,
    outdir: Path,
    precision: str,
    seed: int,
    minutes: float,
    clock: str,
    ema_rampup: float | None,
    lr: float | None = None,
    wgan_target: float | None = None,
    gp_interval: int | None = None,
) -> tuple:
    """One timed run; a snapshot is also written at the end of every resolution."""
    from progan.loss import LossConfig
    from progan.runspec import TrainOptions, resolve_run
    from progan.training import Trainer

    class Recording(Trainer):
        ends: list = []

        def _on_grow(self, finished_resolution: int) -> None:
            super()._on_grow(finished_resolution)
            Recording.ends.append((finished_resolution, self.save()))

    Recording.ends = []
    opts = TrainOptions(
        data=str(store), outdir=str(outdir), name=f"{precision}-seed{seed}-{minutes:g}min", preset="cpu",
        minutes=minutes, clock=clock, batch=16, latent_size=512, fmap_max=128, seed=seed,
        precision=precision, tick_kimg=1, snapshot_ticks=0, image_ticks=0, progress=False,
        **({} if ema_rampup is None else {"ema_rampup": ema_rampup}), **({} if lr is None else {"lr": lr}),
        **({} if gp_interval is None else {"gp_interval": gp_interval}),
        **({} if wgan_target is None else {"loss": asdict(LossConfig(wgan_target=wgan_target))}),
    )  # fmt: skip
    t0 = time.time()
    trainer = Recording(resolve_run(opts))
    run_dir = trainer.run()
    wall = time.time() - t0
    final = sorted(run_dir.glob("snapshot-*"))[-1]
    ends = [*Recording.ends, (trainer.resolution, final)]
    return run_dir, ends, wall, trainer.budget.elapsed()


def load_generators(snapshot: Path, resolution: int) -> dict:
    from progan import checkpoint as ckpt
    from progan.networks import Generator

    state = ckpt.read_state(snapshot)
    config = ckpt.load_config(state, snapshot)
    weights = ckpt.load_tensors(snapshot / ckpt.MODEL_FILE)
    out = {}
    for name in ("G", "G_ema"):
        G = Generator(config)
        ckpt.load_module(G, name, weights, snapshot / ckpt.MODEL_FILE)
        G.set_stage(resolution, 1.0)
        out[name] = G.eval().requires_grad_(False)
    return out


def evaluate(ends: list, test_store: Path, num: int) -> list[dict]:
    from progan.metrics.evaluate import compute_metrics

    rows = []
    for resolution, snapshot in ends:
        if resolution < 16:  # SWD's Laplacian pyramid needs 16x16
            continue
        kimg = json.loads((snapshot / "state.json").read_text())["kimg"]
        row = {"resolution": resolution, "kimg": kimg, "snapshot": str(snapshot)}
        for name, G in load_generators(snapshot, resolution).items():
            m = compute_metrics(["swd"], G, str(test_store), num, "cpu", seed=123)
            row[name] = m
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget of each run")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="cpu")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--num", type=int, default=10000, help="images per SWD side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", help="folder for stores and runs (default: a temporary one)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--tag", default="", help="suffix of the output files")
    parser.add_argument("--images-exponent", type=float,
                        help="planner IMAGES_EXPONENT (0 equal images per phase, 1 equal time)")  # fmt: skip
    parser.add_argument("--ema-rampup", type=float, help="G_ema's ramp-up instead of the default")
    parser.add_argument(
        "--lr-rampdown",
        type=float,
        help="planner LR_RAMPDOWN_SHARE (share of the last stable images; 0 none)",
    )
    parser.add_argument("--lr", type=float, help="learning rate instead of the cpu preset's")
    parser.add_argument("--wgan-target", type=float, help="WGAN-GP target instead of the default")
    parser.add_argument("--gp-interval", type=int, help="lazy gradient penalty: on 1 D update in N")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import progan.planner

    if args.images_exponent is not None:
        progan.planner.IMAGES_EXPONENT = args.images_exponent
    if args.lr_rampdown is not None:
        progan.planner.LR_RAMPDOWN_SHARE = args.lr_rampdown
    if not TRAIN.exists():
        sys.exit(f"{TRAIN} is missing: apt-get install dataset-fashion-mnist")
    from progan.images import save_strip
    from progan.metrics.evaluate import real_vs_real_swd

    work = Path(args.work or tempfile.mkdtemp(prefix="progan-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    train_store = prepare(TRAIN, work / "fmnist-train32")
    test_store = prepare(TEST, work / "fmnist-test32")
    # The floor depends only on the store and --num: kept in the work folder for later invocations.
    floor_file = work / f"noise-floor-{args.num}.json"
    if floor_file.is_file():
        floor = {int(r): v for r, v in json.loads(floor_file.read_text()).items()}
    else:
        floor = {r: real_vs_real_swd(train_store, args.num, resolution=r, seed=123) for r in (16, 32)}
        floor_file.write_text(json.dumps(floor))
    print(f"noise floor (train vs train, {args.num} each): 16: {floor[16]['swd_avg']:.2f}  "
          f"32: {floor[32]['swd_avg']:.2f}", flush=True)  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for precision in args.precisions.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            run_dir, ends, wall, spent = train_run(
                train_store, work / "runs", precision, seed, args.minutes, args.clock, args.ema_rampup,
                args.lr, args.wgan_target, args.gp_interval,
            )  # fmt: skip
            rows = evaluate(ends, test_store, args.num)
            plan = json.loads((run_dir / "options.json").read_text())["plan"]
            options = json.loads((run_dir / "options.json").read_text())
            result = {"precision": precision, "seed": seed, "minutes": args.minutes, "clock": args.clock,
                      "budget_seconds_spent": spent, "wall_seconds": wall, "run_dir": str(run_dir),
                      "plan": plan, "precision_chosen": options["precision_chosen"], "ends": rows,
                      "grid": str(run_dir / "fakes-final.png")}  # fmt: skip
            results.append(result)
            if rows:
                last = rows[-1]
                print(f"{precision} seed {seed}: {last['kimg']:.1f} kimg, G {last['G']['swd_avg']:.2f} "
                      f"G_ema {last['G_ema']['swd_avg']:.2f} ({spent:.0f} s on the {args.clock} clock, "
                      f"{wall:.0f} s wall)", flush=True)  # fmt: skip
            else:  # the budget ended below 16x16, where SWD's pyramid starts
                print(f"{precision} seed {seed}: ended below 16x16, not scored", flush=True)
            (out / f"quality_budget{args.tag}.json").write_text(
                json.dumps({"noise_floor": floor, "num": args.num, "runs": results}, indent=2)
            )
    save_strip([Path(r["grid"]) for r in results], out / f"quality_budget{args.tag}.png", gap=12)
    print(table(results, floor))


def table(results: list[dict], floor: dict) -> str:
    lines = [
        "| run | kimg | res | G swd_avg | G_ema swd_avg | G x floor | G_ema x floor |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        for row in r["ends"]:
            f = floor[row["resolution"]]["swd_avg"]
            g, e = row["G"]["swd_avg"], row["G_ema"]["swd_avg"]
            lines.append(f"| {r['precision']} seed {r['seed']} | {row['kimg']:.1f} | {row['resolution']} | "
                         f"{g:.2f} | {e:.2f} | {g / f:.1f}x | {e / f:.1f}x |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()

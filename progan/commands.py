"""The core subcommands: `train`, `generate`, `demo` (argument parsing only; the work is elsewhere)."""

from __future__ import annotations

import argparse

from progan.errors import UserError

TRAIN_HELP = """examples:
  progan train --data datasets/faces32 --preset cpu
  progan train --data datasets/celebahq --preset v2-1gpu --mirror
  progan train --resume runs/00003-faces32-32 [--kimg 120]"""


def _power_of_two(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not an integer; use a power of two such as 32"
        ) from None
    if value < 4 or value > 1024 or value & (value - 1):
        raise argparse.ArgumentTypeError(
            f"{value} is not a power of two from 4 to 1024; use e.g. 32, 128 or 1024"
        )
    return value


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{value} must be positive")
        return value

    return parse


def register(subparsers: argparse._SubParsersAction) -> None:
    from progan.schedule import PRESETS

    p = subparsers.add_parser(
        "train",
        help="train a progressive GAN on a dataset store",
        epilog=TRAIN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Every option defaults to None so that, on --resume, the ones given explicitly are known.
    g = p.add_argument_group("run")
    g.add_argument("--data", help="dataset store made by 'progan prepare'")
    g.add_argument(
        "--resume", metavar="RUN_OR_SNAPSHOT", help="continue a run from its newest (or this) snapshot"
    )
    g.add_argument("--outdir", help="parent of run directories (default: runs)")
    g.add_argument("--name", help="run name (default: <store>-<resolution>)")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    g.add_argument("--precision", choices=["fp32", "bf16", "fp16"])
    g.add_argument(
        "--compile", action="store_true", default=None, help="torch.compile G and D (eager on failure)"
    )
    g.add_argument(
        "--no-channels-last", dest="channels_last", action="store_false", default=None, help="NCHW layout"
    )
    g.add_argument(
        "--gpus",
        type=_positive(int),
        help="data-parallel processes on this machine (CPU ranks with --device cpu)",
    )
    g.add_argument(
        "--deterministic", action="store_true", default=None, help="use deterministic algorithms only"
    )
    g.add_argument(
        "--no-progress", dest="progress", action="store_false", default=None, help="no progress bar"
    )
    g = p.add_argument_group("schedule")
    g.add_argument("--preset", choices=sorted(PRESETS), help="schedule preset (default: cpu)")
    g.add_argument("--resolution", type=_power_of_two, help="final resolution (default: the store's)")
    g.add_argument(
        "--kimg", dest="total_kimg", type=_positive(float), help="total length in thousands of images"
    )
    g.add_argument("--training-kimg", type=_positive(float), help="kimg at each stable resolution")
    g.add_argument("--transition-kimg", type=_positive(float), help="kimg of each fade-in")
    g.add_argument(
        "--batch",
        type=_positive(int),
        help="one minibatch size for every resolution (out of memory? lower it)",
    )
    g.add_argument("--lr", type=_positive(float), help="one learning rate for every resolution")
    g = p.add_argument_group("model")
    g.add_argument("--latent-size", type=_positive(int))
    g.add_argument("--fmap-base", type=_positive(int))
    g.add_argument("--fmap-max", type=_positive(int))
    g.add_argument("--fmap-decay", type=_positive(float))
    g.add_argument("--mbstd-group-size", type=int)
    g.add_argument("--no-labels", dest="conditional", action="store_false", default=None,
                   help="ignore the store's labels (unconditional model)")  # fmt: skip
    g.add_argument("--mirror", action="store_true", default=None, help="random x-flips of the reals")
    g.add_argument("--ema-beta", type=float)
    g = p.add_argument_group("output")
    g.add_argument("--tick-kimg", type=_positive(float), help="kimg between log lines (default: 4)")
    g.add_argument("--snapshot-ticks", type=int, help="ticks between snapshots (default: 10)")
    g.add_argument("--image-ticks", type=int, help="ticks between sample grids (default: 5)")
    g.add_argument("--grid-size", type=_positive(int), help="samples in each grid (default: 64)")
    g.add_argument("--metrics", type=lambda s: [m for m in s.split(",") if m], help="e.g. swd or swd,msssim")
    g.add_argument("--metrics-every", type=int, help="ticks between metric evaluations (0: with snapshots)")
    g.add_argument("--metrics-num", type=_positive(int), help="generated images per evaluation")
    p.set_defaults(func=run_train)

    p = subparsers.add_parser("generate", help="write images from a snapshot's G_ema")
    p.add_argument("snapshot", help="a snapshot directory, or a run directory (its newest snapshot)")
    p.add_argument("--seeds", default="0-15", help="e.g. 0-63 or 1,5,9 (default: 0-15)")
    p.add_argument("--outdir", help="write one PNG per seed here")
    p.add_argument("--grid", help="write all images as one grid PNG here")
    p.add_argument("--label", help="class index/name, or comma-separated attributes (conditional models)")
    p.add_argument("--batch", type=_positive(int), default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.set_defaults(func=run_generate)

    p = subparsers.add_parser("demo", help="train 4x4 -> 32x32 on 100 real faces (a few minutes on a CPU)")
    p.add_argument("--outdir", default="runs")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None)
    p.add_argument(
        "--kimg", dest="total_kimg", type=_positive(float), help="total length (default: the demo's)"
    )
    p.set_defaults(func=run_demo)


def run_train(args: argparse.Namespace) -> int:
    from progan.training import TrainOptions, train

    runtime = ("func", "command", "resume", "gpus")
    given = {k: v for k, v in vars(args).items() if v is not None and k not in runtime}
    if not args.resume and not args.data:
        raise UserError("no dataset given: pass --data STORE (make one with 'progan prepare SOURCE STORE')")
    opts = TrainOptions() if args.resume else TrainOptions(**given)
    overrides = given if args.resume else None
    from progan import distributed

    if args.gpus and args.gpus > 1:
        distributed.launch(args.gpus, train, opts, args.resume, overrides)
    else:
        try:
            train(opts, args.resume, overrides)
        finally:  # under torchrun: leave the process group cleanly
            distributed.shutdown()
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from progan.checkpoint import load_snapshot
    from progan.device import pick_device
    from progan.generate import generate, labels_for, parse_seeds, write_grid, write_images

    if not args.outdir and not args.grid:
        raise UserError("nowhere to write: pass --outdir DIR (one PNG per seed) and/or --grid FILE.png")
    seeds = parse_seeds(args.seeds)
    device = pick_device(args.device)
    snap = load_snapshot(args.snapshot, device=device)
    labels = labels_for(snap.G_ema.label_size, seeds, args.label, snap.label_names)
    images = generate(snap.G_ema, seeds, labels, batch=args.batch, device=device, precision=args.precision)
    if args.outdir:
        paths = write_images(images, seeds, args.outdir)
        print(f"wrote {len(paths)} images to {args.outdir}")
    if args.grid:
        print(f"wrote grid {write_grid(images, args.grid)}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from progan.demo import run_demo as demo

    overrides = {k: v for k, v in (("precision", args.precision), ("total_kimg", args.total_kimg)) if v}
    demo(outdir=args.outdir, device=args.device, **overrides)
    return 0

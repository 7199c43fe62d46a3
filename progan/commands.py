"""The commands of progan's top-level modules: `train`, `generate`, `demo`, `video`, `export` (argument
parsing only; the work is in training.py, generate.py, demo.py, video.py and export.py)."""

from __future__ import annotations

import argparse
import sys

from progan.cliargs import add_generation_arguments, add_snapshot_argument, need, positive
from progan.errors import UserError

TRAIN_HELP = """examples:
  progan train --data datasets/faces32 --preset cpu
  progan train --data datasets/celebahq --preset v2-1gpu --mirror
  progan train --resume runs/00003-faces32-32 [--kimg 120]"""

VIDEO_HELP = """examples:
  progan video runs/00003-faces --out faces.mp4                         # official 60 s interpolation loop
  progan video runs/00003-faces --out wall.mp4 --grid 3x4 --seconds 20 --smoothing 2
  progan video runs/00003-faces --out picked.gif --kind morph --seeds 3,17,42
  progan video runs/00003-faces --out growth.mp4 --kind training        # time-lapse of the run's grids"""


def _power_of_two(text: str) -> int:
    from progan.checks import resolution_error

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not an integer; use a power of two such as 32"
        ) from None
    if (problem := resolution_error(value)) is not None:
        raise argparse.ArgumentTypeError(f"{problem}; use e.g. 32, 128 or 1024")
    return value


def _default(name: str) -> str:
    """'(default: X)', read from TrainOptions: the CLI's options default to None so that a resumed
    run knows which ones were given, and the help must not repeat the values."""
    from progan.runspec import option_default

    value = option_default(name)
    if isinstance(value, bool):
        value = "on" if value else "off"
    elif isinstance(value, list):
        value = ",".join(value) or "none"
    return f"(default: {value})"


def register(subparsers: argparse._SubParsersAction) -> None:
    from progan.device import TRAIN_PRECISIONS
    from progan.metrics.cli import add_metric_arguments
    from progan.schedule import PRESETS

    p = subparsers.add_parser(
        "train",
        help="train a progressive GAN on a dataset store",
        epilog=TRAIN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Every option defaults to None so that, on --resume, the ones given explicitly are known; the
    # help shows TrainOptions' defaults.
    d = _default
    g = p.add_argument_group("run")
    g.add_argument("--data", help="dataset store made by 'progan prepare'")
    g.add_argument(
        "--resume", metavar="RUN_OR_SNAPSHOT", help="continue a run from its newest (or this) snapshot"
    )
    g.add_argument(
        "--dry-run", action="store_true", help="print the resolved run (network, schedule, ...) and exit"
    )
    g.add_argument("--outdir", help=f"parent of run directories {d('outdir')}")
    g.add_argument("--name", help="run name (default: <store>-<resolution>)")
    g.add_argument("--seed", type=int, help=d("seed"))
    g.add_argument("--device", help=f"auto, cpu, cuda, cuda:1, ... {d('device')}")
    g.add_argument(
        "--precision",
        choices=TRAIN_PRECISIONS,
        help=f"auto: bf16 with AMX, AVX-512 BF16 or bf16 tensor cores, else fp32 {d('precision')}",
    )
    g.add_argument(
        "--compile", action="store_true", default=None, help="torch.compile G and D (eager on failure)"
    )
    g.add_argument(
        "--no-channels-last", dest="channels_last", action="store_false", default=None, help="NCHW layout"
    )
    g.add_argument(
        "--gpus",
        type=positive(int),
        help="data-parallel processes on this machine (CPU ranks with --device cpu)",
    )
    g.add_argument(
        "--deterministic", action="store_true", default=None, help="use deterministic algorithms only"
    )
    g.add_argument(
        "--no-progress", dest="progress", action="store_false", default=None, help="no progress bar"
    )
    g = p.add_argument_group("schedule")
    g.add_argument("--preset", choices=sorted(PRESETS), help=f"schedule preset {d('preset')}")
    g.add_argument("--resolution", type=_power_of_two, help="final resolution (default: the store's)")
    g.add_argument(
        "--kimg",
        dest="total_kimg",
        type=positive(float),
        help="total length in thousands of images (default: the preset's)",
    )
    g.add_argument(
        "--minutes",
        type=positive(float),
        help="train for this long: plan the schedule from measured speeds, end on time with a snapshot",
    )
    g.add_argument("--hours", type=positive(float), help="as --minutes, in hours")
    g.add_argument(
        "--final-share",
        type=float,
        metavar="F",
        help="with --minutes: give the final resolution this share of the training time (0.8), "
        "the earlier resolutions the rest (default: the planner's split)",
    )
    g.add_argument("--training-kimg", type=positive(float), help="kimg at each stable resolution")
    g.add_argument("--transition-kimg", type=positive(float), help="kimg of each fade-in")
    g.add_argument(
        "--batch",
        type=positive(int),
        help="one minibatch size for every resolution (out of memory? lower it)",
    )
    g.add_argument("--lr", type=positive(float), help="one learning rate for every resolution")
    g.add_argument(
        "--d-lr-ratio",
        type=positive(float),
        metavar="R",
        help=f"D's learning rate R times G's (not the paper: a faster critic) {d('d_lr_ratio')}",
    )
    g.add_argument(
        "--gp-interval",
        type=positive(int),
        help=f"the gradient penalty on one D update in N, weighted N (lazy) {d('gp_interval')}",
    )
    g = p.add_argument_group("model")
    g.add_argument("--latent-size", type=positive(int), help=d("latent_size"))
    g.add_argument("--fmap-base", type=positive(int), help=d("fmap_base"))
    g.add_argument("--fmap-max", type=positive(int), help=d("fmap_max"))
    g.add_argument("--fmap-decay", type=positive(float), help=d("fmap_decay"))
    g.add_argument("--mbstd-group-size", type=int, help=d("mbstd_group_size"))
    g.add_argument("--no-fused-scale", dest="fused_scale", action="store_false", default=None,
                   help="D pools after its activations, as the paper's table (default: the "
                        "official code's fused conv+downscale, then the activation; faster)")  # fmt: skip
    g.add_argument("--d-mirror-difference", action="store_true", default=None,
                   help="not the paper: D also sees the image minus its mirror image, so that a face "
                        "whose halves disagree (two eye colours) costs G more; for aligned, "
                        "mirror-symmetric data such as faces (benchmarks/README.md, issue 29)")  # fmt: skip
    g.add_argument("--no-labels", dest="conditional", action="store_false", default=None,
                   help="ignore the store's labels (unconditional model)")  # fmt: skip
    g.add_argument("--mirror", action="store_true", default=None, help="random x-flips of the reals")
    g.add_argument(
        "--ema-kimg", type=positive(float), help=f"G_ema half-life in kimg, per resolution {d('ema_kimg')}"
    )
    g.add_argument("--ema-rampup", type=float, help=f"G_ema ramp-up, 0 for none {d('ema_rampup')}")
    g.add_argument(
        "--ema-rampdown", metavar="RULE",
        help=f"G_ema over a timed run's lr ramp-down: average (the mean of G's iterates over its "
             f"second half) or anneal (the half-life shrinks with the lr, ending on G) {d('ema_rampdown')}",
    )  # fmt: skip
    g.add_argument(
        "--ema-beta", type=float, help="a fixed G_ema beta per update instead (the paper preset's: 0.999)"
    )
    g = p.add_argument_group("output")
    g.add_argument("--tick-kimg", type=positive(float), help=f"kimg between log lines {d('tick_kimg')}")
    g.add_argument("--snapshot-ticks", type=int, help=f"ticks between snapshots {d('snapshot_ticks')}")
    g.add_argument("--image-ticks", type=int, help=f"ticks between sample grids {d('image_ticks')}")
    g.add_argument("--grid-size", type=positive(int), help=f"samples in each grid {d('grid_size')}")
    g.add_argument(
        "--metrics-every",
        type=int,
        help=f"ticks between metric evaluations, 0: with snapshots {d('metrics_every')}",
    )
    g.add_argument(
        "--metrics-num", type=positive(int), help=f"generated images per evaluation {d('metrics_num')}"
    )
    add_metric_arguments(g, default_metrics=None)  # --metrics, --inception-weights, as evaluate has them
    p.set_defaults(func=run_train)

    p = subparsers.add_parser("generate", help="write images from a snapshot's G_ema")
    add_snapshot_argument(p)
    p.add_argument("--seeds", default="0-15", help="e.g. 0-63 or 1,5,9 (default: 0-15)")
    p.add_argument("--outdir", help="write one PNG per seed here")
    p.add_argument("--grid", help="write all images as one grid PNG here")
    p.add_argument("--label", help="class index/name, or comma-separated attributes (conditional models)")
    add_generation_arguments(p)
    p.add_argument(
        "--latents",
        choices=["progan", "official", "official-stream"],
        default="progan",
        help="how a seed becomes a latent: progan's (default); 'official': numpy RandomState(seed).randn "
        "as the official scripts draw one latent per seed; 'official-stream': seeds are rows of "
        "RandomState(--stream-seed).randn(N, 512), e.g. --stream-seed 1000 --seeds "
        "477,56,83,887,583,391,86,340,341,415 are the official import_example.py's img0..img9",
    )
    p.add_argument("--stream-seed", type=int, default=1000, help="seed of --latents official-stream")
    p.add_argument(
        "--direction",
        metavar="NAME=AMOUNT,...",
        help="move every latent along the snapshot's named directions, e.g. smile=+2,age=-1",
    )
    p.set_defaults(func=run_generate)

    p = subparsers.add_parser("demo", help="train 4x4 -> 32x32 on 100 real faces (a few minutes on a CPU)")
    p.add_argument("--outdir", default="runs")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=TRAIN_PRECISIONS, default=None)
    p.add_argument(
        "--kimg", dest="total_kimg", type=positive(float), help="a fixed length in kimg instead of a time"
    )
    p.add_argument(
        "--minutes",
        type=positive(float),
        help="training time, planned from measured speeds (default: the demo's own, to end within 8 minutes)",
    )
    p.set_defaults(func=run_demo)


def register_outputs(subparsers: argparse._SubParsersAction) -> None:
    """`video` and `export`: what a trained generator is turned into (registered after `faces`, as
    `progan --help` lists them)."""
    p = subparsers.add_parser(
        "video",
        help="interpolation loop, morph through chosen faces, or training time-lapse (mp4/gif/webp)",
        epilog=VIDEO_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", help="snapshot or run directory (a run directory for --kind training)")
    p.add_argument("--out", required=True, help="FILE.mp4 (H.264), FILE.gif or FILE.webp")
    p.add_argument("--kind", choices=["interpolation", "morph", "training"], default="interpolation")
    p.add_argument(
        "--seconds",
        type=positive(float),
        help="length (default: 60 for interpolation, 2 per seed for morph, 0.5 per grid for training)",
    )
    p.add_argument("--fps", type=positive(float), default=30.0)
    p.add_argument("--grid", default="1x1", help="interpolation: ROWSxCOLS faces per frame (default 1x1)")
    p.add_argument("--smoothing", type=positive(float), default=1.0,
                   help="interpolation: sigma of the temporal Gaussian, in seconds (default 1)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="interpolation: random seed of the latents")
    p.add_argument("--seeds", help="morph: the faces to loop through, e.g. 3,17,42")
    p.add_argument("--label", help="conditional models: class index/name or attributes")
    p.add_argument("--zoom", type=positive(int), help="enlarge frames (default: to >= 256 pixels)")
    add_generation_arguments(p, precision_help="fp16 on CUDA only")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run_video)

    p = subparsers.add_parser(
        "export",
        help="write G_ema as ONNX for game engines and other runtimes (checked in onnxruntime)",
        epilog="example:\n  progan export runs/00003-faces --out g.onnx --uint8 --opset 15",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_snapshot_argument(p)
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--out", required=True, help="FILE.onnx")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 11 to 20 (default 17)")
    p.add_argument(
        "--uint8", action="store_true", help="output ready pixels (uint8 0-255) instead of [-1, 1]"
    )
    p.add_argument("--resolution", type=int, help="export a lower stage than the snapshot's")
    p.add_argument(
        "--tolerance",
        type=float,
        help="largest accepted |onnxruntime - PyTorch| (default 1e-3; 1 with --uint8)",
    )
    p.add_argument("--no-check", dest="check", action="store_false", help="skip the onnxruntime check")
    p.set_defaults(func=run_export)


def run_train(args: argparse.Namespace) -> int:
    from progan import distributed
    from progan.runspec import TrainOptions, resolve_resume, resolve_run
    from progan.training import train_status

    runtime = ("func", "command", "resume", "gpus", "dry_run", "hours", "debug")
    given = {k: v for k, v in vars(args).items() if v is not None and k not in runtime}
    if args.hours is not None:
        if args.minutes is not None:
            raise UserError("--minutes and --hours both given; pass one of them")
        given["minutes"] = args.hours * 60
    if not args.resume and not args.data:
        raise UserError("no dataset given: pass --data STORE (make one with 'progan prepare SOURCE STORE')")
    # The whole run is resolved and checked here, before a rank is spawned or a directory made.
    world_size = args.gpus or distributed.world_size_from_environment()
    if args.resume:
        spec = resolve_resume(args.resume, given, world_size)
    else:
        spec = resolve_run(TrainOptions(**given), world_size=world_size)
    if args.dry_run:
        print(spec.describe())
        return 0
    if args.gpus and args.gpus > 1:
        distributed.check_local_gpus(args.gpus, spec.options.device)
        return distributed.launch(args.gpus, train_status, spec)
    try:  # 0, or 128 + the signal that stopped the run (its snapshot is written)
        return train_status(spec)
    finally:  # under torchrun: leave the process group cleanly
        distributed.shutdown()


def run_generate(args: argparse.Namespace) -> int:
    from progan import directions
    from progan.checkpoint import load_snapshot
    from progan.device import pick_device, sampling_precision
    from progan.generate import write_seed_images
    from progan.sampling import parse_seeds

    if not args.outdir and not args.grid:
        raise UserError("nowhere to write: pass --outdir DIR (one PNG per seed) and/or --grid FILE.png")
    seeds = parse_seeds(args.seeds)
    amounts = directions.parse_amounts(args.direction) if args.direction else {}
    device = pick_device(args.device)
    precision = sampling_precision(args.precision, device)
    snap = load_snapshot(args.snapshot, device=device)
    edit = None
    if amounts:
        found = directions.load_directions(snap.path)
        edit = lambda z: directions.move(z, found, amounts)  # noqa: E731
    written, grid = write_seed_images(
        snap.G_ema, seeds, args.label, snap.label_names, outdir=args.outdir, grid=args.grid,
        batch=args.batch, device=device, precision=precision, method=args.latents,
        stream_seed=args.stream_seed, edit=edit,
    )  # fmt: skip
    if args.outdir:
        print(f"wrote {written} images to {args.outdir}")
    if grid:
        print(f"wrote grid {grid}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from progan.demo import run_demo as demo

    overrides = {k: v for k, v in (("precision", args.precision), ("minutes", args.minutes)) if v}
    if args.total_kimg:  # a fixed length: the demo's 12 + 12 kimg phases, no time budget
        overrides.update(total_kimg=args.total_kimg, minutes=None, training_kimg=12, transition_kimg=12)
    demo(outdir=args.outdir, device=args.device, **overrides)
    return 0


def run_video(args: argparse.Namespace) -> int:
    need("video", *(["imageio_ffmpeg"] if args.out.lower().endswith(".mp4") else []),
         *(["scipy"] if args.kind == "interpolation" else []))  # fmt: skip
    from progan import video

    path = video.check_output(args.out)
    if args.kind == "training":
        per_grid = 0.5
        if args.seconds:
            from pathlib import Path

            run = Path(args.source)
            n = len(video.training_grids(run)) if run.is_dir() else 0
            per_grid = args.seconds / max(n, 1)
        total, frames = video.training_video(args.source, per_grid, args.fps, args.zoom)
    else:
        from progan.checkpoint import load_snapshot
        from progan.device import pick_device, sampling_precision
        from progan.sampling import labels_for, parse_seeds

        device = pick_device(args.device)
        precision = sampling_precision(args.precision, device)
        snap = load_snapshot(args.source, device=device)
        G = snap.G_ema
        common = dict(batch=args.batch, zoom=args.zoom, device=device, precision=precision)
        if args.kind == "interpolation":
            rows, cols = video.parse_grid(args.grid)
            labels = video.cell_labels(G.label_size, rows * cols, args.seed, args.label, snap.label_names)
            total, frames = video.interpolation_video(
                G, args.seconds or 60.0, args.fps, (rows, cols), args.smoothing, args.seed, labels, **common
            )
        else:
            if not args.seeds:
                raise UserError("--kind morph needs --seeds, e.g. --seeds 3,17,42")
            seeds = parse_seeds(args.seeds)
            labels = labels_for(G.label_size, seeds, args.label, snap.label_names)
            seconds = args.seconds or 2.0 * len(seeds)
            total, frames = video.morph_video(G, seeds, seconds, args.fps, labels, **common)
    out = video.write_video(frames, path, args.fps, total=total, progress=args.progress)
    print(f"wrote {out} ({total} frames at {args.fps:g} fps)")
    return 0


def run_export(args: argparse.Namespace) -> int:
    need("export", "onnx", *(["onnxruntime"] if args.check else []))
    from progan.checkpoint import load_snapshot
    from progan.export import ExportMismatch, export_onnx

    snap = load_snapshot(args.snapshot, device="cpu")
    try:
        result = export_onnx(
            snap.G_ema, args.out, opset=args.opset, uint8=args.uint8,
            resolution=args.resolution, check=args.check, tolerance=args.tolerance,
        )  # fmt: skip
    except ExportMismatch as e:
        print(f"progan export: check failed: {e}", file=sys.stderr)
        return 1
    c, r = snap.config.channels, result.resolution
    shapes = ", ".join(f"{n} [N, {snap.config.latent_size if n == 'latent' else snap.config.label_size}]"
                       for n in result.inputs)  # fmt: skip
    kind = "uint8 0..255" if args.uint8 else "float32 in [-1, 1]"
    print(f"wrote {result.path}: inputs {shapes}; output image [N, {c}, {r}, {r}] {kind}; opset {args.opset}")
    if result.max_difference is not None:
        print(f"onnxruntime vs PyTorch: largest difference {result.max_difference:.3g} "
              f"(tolerance {result.tolerance:g})")  # fmt: skip
    return 0

"""The studio's commands: `video`, `export`, `serve` (argument parsing only; the work is elsewhere)."""

from __future__ import annotations

import argparse
import sys

from progan.cliargs import add_generation_arguments, add_snapshot_argument, positive
from progan.errors import UserError

VIDEO_HELP = """examples:
  progan video runs/00003-faces --out faces.mp4                         # official 60 s interpolation loop
  progan video runs/00003-faces --out wall.mp4 --grid 3x4 --seconds 20 --smoothing 2
  progan video runs/00003-faces --out picked.gif --kind morph --seeds 3,17,42
  progan video runs/00003-faces --out growth.mp4 --kind training        # time-lapse of the run's grids"""


def need(extra: str, *modules: str) -> None:
    """A one-line error naming the extra to install when an optional dependency is missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(
            f"this command needs {', '.join(missing)}: in the progan clone, pip install -e '.[{extra}]' "
            "(or ./setup.sh)"
        )


def register(subparsers: argparse._SubParsersAction) -> None:
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

    p = subparsers.add_parser(
        "serve",
        help="the web studio: browse, blend, edit and keep faces (http://127.0.0.1:8000)",
        epilog="examples:\n  progan serve runs/00003-faces\n"
        "  progan serve runs/ --port 8080 --state-dir ~/faces",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", nargs="+", help="snapshot, run directory, or a folder of runs (one model each)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--allow-host", action="append", default=[], metavar="NAME[:PORT]",
        help="also answer requests addressed to this name (a LAN name or address, a proxy's name); "
        "repeatable. Other Host headers get 403 (the studio answers only 127.0.0.1, localhost and "
        "the --host address by default, against DNS rebinding)",
    )  # fmt: skip
    p.add_argument("--state-dir", help="where favourites.json lives (default ~/.local/share/progan/studio)")
    add_generation_arguments(p, batch=None, precisions=["auto", "fp32", "bf16"])
    p.set_defaults(func=run_serve)


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


def run_serve(args: argparse.Namespace) -> int:
    from progan.device import pick_device, sampling_precision

    need("serve", "fastapi", "uvicorn")
    from progan.studio.app import serve

    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port} is not a TCP port; use 1 to 65535")
    device = pick_device(args.device)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: --host {args.host}: the studio has no authentication; anyone who can reach port "
              f"{args.port} can use it and change its favourites (name it for them with --allow-host)",
              file=sys.stderr)  # fmt: skip
    serve(args.source, host=args.host, port=args.port, state_dir=args.state_dir, device=str(device),
          precision=sampling_precision(args.precision, device), allow_hosts=args.allow_host)  # fmt: skip
    return 0

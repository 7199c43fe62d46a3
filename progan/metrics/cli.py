"""`progan evaluate`: metrics of a snapshot, of every snapshot of a run, or a store's noise floor."""

from __future__ import annotations

import argparse

from progan.errors import UserError

HELP = """Evaluate one snapshot or every snapshot of a run: writes metrics.jsonl and metrics-<metric>.png
beside the snapshots and prints a table. Given a dataset store, reports the SWD noise floor
(real against real). Metrics: swd (the paper's sliced Wasserstein distance x1e3, per level and avg),
msssim (among generated pairs), fid, kid, is, pr (precision/recall; these four need Inception
weights: --inception-weights FILE on machines that cannot download)."""


def add_metric_arguments(parser: argparse.ArgumentParser, default_metrics: str | None = "swd") -> None:
    """Options shared by `evaluate` and `train` (metrics during training)."""
    parser.add_argument(
        "--metrics",
        default=default_metrics,
        help=f"comma-separated metrics: swd,msssim,fid,kid,is,pr (default: {default_metrics or 'none'})",
    )
    parser.add_argument(
        "--inception-weights",
        metavar="FILE",
        default=None,
        help="Inception-v3 weights for fid/kid/is/pr: NVIDIA's TorchScript inception-2015-12-05.pt, or "
        "torch-fidelity's weights-inception-2015-12-05-6726825d.pth (needs torch-fidelity)",
    )


def register(subparsers) -> None:
    from progan.device import TRAIN_PRECISIONS

    p = subparsers.add_parser(
        "evaluate", help="compute SWD, MS-SSIM, FID, ... of snapshots", description=HELP
    )
    p.add_argument(
        "path", metavar="RUN_OR_SNAPSHOT", help="run directory, snapshot directory or dataset store"
    )
    add_metric_arguments(p, default_metrics="swd,msssim")
    p.add_argument(
        "--num", type=int, default=10000, help="generated (and real) images per metric (default: %(default)s)"
    )
    p.add_argument(
        "--data", metavar="STORE", default=None, help="dataset store of the reals (default: the run's)"
    )
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--precision", choices=TRAIN_PRECISIONS, default="auto",
                   help="G's precision for the generated images, as 'progan generate' renders them "
                        "(default auto: bf16 on a CPU with AMX or AVX-512 BF16 or a CUDA GPU of compute "
                        "capability >= 8.0, else fp32)")  # fmt: skip
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="picks the generated images (seeds 1,000,000 x (S + 1) on, as 'progan generate --seeds' "
        "numbers them), real subsets and projections (default: %(default)s)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default: by resolution)")
    p.add_argument(
        "--out", default=None, help="where to write metrics.jsonl and plots (default: the run dir)"
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="cache of reals' statistics (default: $PROGAN_CACHE_DIR or ~/.cache)",
    )
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from progan.device import pick_device, sampling_precision
    from progan.metrics.evaluate import evaluate_path, parse_metrics

    names = parse_metrics(args.metrics or "")
    if args.num < 2:
        raise UserError(f"--num {args.num} is too small; use at least a few hundred images")
    device = pick_device(args.device or "auto")
    evaluate_path(
        args.path,
        names,
        args.num,
        data=args.data,
        device=device,
        seed=args.seed,
        batch_size=args.batch_size,
        inception_weights=args.inception_weights,
        out_dir=args.out,
        cache_dir=args.cache_dir,
        precision=sampling_precision(args.precision, device),
    )
    return 0

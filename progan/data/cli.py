"""`progan prepare`: make (or --verify) a multi-resolution dataset store. See docs/data.md."""

from __future__ import annotations

import argparse
import sys

from progan.errors import UserError

EPILOG = """examples:
  progan prepare photos/ data/photos --resolution 128            folder (recursive), centre crop
  progan prepare faces.zip data/faces --resolution 64 --pad reflect
  progan prepare train-images-idx3-ubyte.gz data/mnist --resolution 32   (labels from the idx pair)
  progan prepare pets/ data/pets --resolution 64 --labels from-folders
  progan prepare celeba/ data/celebahq --resolution 1024 --celeba --celebahq-deltas deltas/
  progan prepare --portraits 10000 data/portraits64 --resolution 64   (painted portraits, known truth)
  progan prepare --verify data/photos
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="turn a folder, archive, idx pair or CelebA into a dataset store",
        description=(
            "Turn a folder (recursive), a .zip/.tar archive, an MNIST/Fashion-MNIST idx pair or CelebA "
            "into a multi-resolution dataset store for 'progan train --data DEST'."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "source", nargs="?", metavar="SOURCE", help="folder, .zip/.tar archive, idx images file, CelebA"
    )
    p.add_argument("dest", nargs="?", metavar="DEST", help="the store to write (a new folder)")
    p.add_argument("-r", "--resolution", type=int, help="top resolution, a power of two >= 4 (e.g. 128)")
    p.add_argument("--channels", type=int, choices=[1, 3], help="stored channels (default: inferred)")
    fit = p.add_mutually_exclusive_group()
    fit.add_argument("--crop", choices=["center"], help="non-square images: centre crop (the default)")
    fit.add_argument("--pad", choices=["reflect"], help="non-square images: pad to a square by reflection")
    fit.add_argument("--stretch", action="store_true", help="non-square images: stretch to a square")
    p.add_argument(
        "--background", default="white", help="colour transparent images are composited on (default: white)"
    )
    p.add_argument(
        "--labels",
        metavar="FILE|from-folders|none",
        help="labels: a CSV/JSON file (name -> class or attributes), class per sub-folder, or none",
    )
    p.add_argument("--celeba", action="store_true", help="SOURCE is CelebA: align faces from its landmarks")
    p.add_argument(
        "--align-faces", action="store_true", help="find faces with dlib and align them like CelebA-HQ"
    )
    p.add_argument("--celebahq-deltas", metavar="DIR", help="apply the CelebA-HQ deltas (with --celeba)")
    p.add_argument(
        "--workers", type=int, default=None, help="decoding processes (default: all cores, at most 8)"
    )
    p.add_argument("--limit", type=int, default=None, help="stop after this many images (for a trial run)")
    p.add_argument(
        "--max-file-mb",
        type=float,
        default=256.0,
        help="skip archive members larger than this, in MiB (they are read into memory; default: 256)",
    )
    p.add_argument(
        "--max-megapixels",
        type=float,
        default=100.0,
        help="skip images with more pixels than this, in millions (decoded whole; default: 100)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace DEST if it is a store")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--verify", metavar="STORE", help="check an existing store (hashes, shapes, box averages)")
    p.add_argument(
        "--portraits", type=int, metavar="N",
        help="make N aligned colour portraits with known attributes (the store's labels and "
        "DEST/portraits.json) from scikit-image's astronaut; SOURCE is not given",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="with --portraits: the draws' seed (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from progan.data.store import verify_store

    if args.verify:
        if args.source or args.dest:
            raise UserError("--verify takes only the store: progan prepare --verify STORE")
        print(verify_store(args.verify))
        return 0

    if args.portraits is not None:
        return _run_portraits(args)

    from progan.data.prepare import Options, prepare

    if not args.source or not args.dest:
        raise UserError("need SOURCE and DEST: progan prepare SOURCE DEST --resolution R")
    if args.resolution is None:
        raise UserError("need --resolution R (a power of two such as 32, 128 or 1024)")
    if args.celebahq_deltas and not args.celeba:
        raise UserError("--celebahq-deltas needs --celeba (SOURCE is the CelebA folder)")
    if args.align_faces and args.celeba:
        raise UserError("--celeba aligns from CelebA's own landmarks; drop --align-faces")
    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be at least 1")
    fit = "pad" if args.pad else "stretch" if args.stretch else "crop"
    options = Options(
        resolution=args.resolution,
        channels=args.channels,
        fit=fit,
        background=args.background,
        labels=args.labels,
        celeba=args.celeba,
        align_faces=args.align_faces,
        celebahq_deltas=args.celebahq_deltas,
        limit=args.limit,
        overwrite=args.overwrite,
        max_file_mb=args.max_file_mb,
        max_megapixels=args.max_megapixels,
        progress=not args.quiet,
    )
    if args.workers is not None:
        options.workers = args.workers
    result = prepare(args.source, args.dest, options)
    store = result.store
    what = f"{store.count} images, {store.channels} channel(s), levels 4..{store.resolution}"
    if store.label_size:
        what += f", {store.label_size} label(s)"
    print(
        f"prepared {store.path}: {what} from {result.kind} {args.source} in {result.seconds:.1f} s "
        f"({result.images_per_second:.0f} images/s)"
    )
    if result.skipped:
        print(
            f"skipped {len(result.skipped)} file(s), listed in {store.path / 'report.json'}:", file=sys.stderr
        )
        for name, reason in result.skipped[:10]:
            print(f"  {name}: {reason}", file=sys.stderr)
        if len(result.skipped) > 10:
            print(f"  ... and {len(result.skipped) - 10} more", file=sys.stderr)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def _run_portraits(args: argparse.Namespace) -> int:
    from progan.data.portraits import SIDECAR, make_portraits

    if args.dest is not None:
        raise UserError("--portraits takes only DEST: progan prepare --portraits N DEST --resolution 64")
    if not args.source:
        raise UserError("need DEST: progan prepare --portraits N DEST --resolution 64")
    store = make_portraits(
        args.portraits, args.source, resolution=args.resolution or 64, seed=args.seed,
        overwrite=args.overwrite, progress=not args.quiet,
    )  # fmt: skip
    print(
        f"prepared {store.path}: {store.count} portraits at {store.resolution}x{store.resolution}, "
        f"{store.label_size} labels ({', '.join(store.label_names)}); continuous truth in {SIDECAR}"
    )
    return 0

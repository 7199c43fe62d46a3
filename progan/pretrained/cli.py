"""`progan import SOURCE DEST [--direction NAME=FILE.npy ...]`."""

from __future__ import annotations

import argparse
import sys

HELP = """Turn a pretrained network file into a progan snapshot (nothing in the file is run):
an official ProGAN .pkl (TF or Theano-era, e.g. karras2018iclr-celebahq-1024x1024.pkl) or a
pytorch_GAN_zoo PGAN .pth. Then: progan generate DEST --latents official --seeds 0-7 --grid g.png"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import", help="import an official ProGAN .pkl or a GAN zoo .pth", description=HELP
    )
    p.add_argument("source", help="the pretrained network file")
    p.add_argument("dest", help="the snapshot folder to write")
    p.add_argument(
        "--direction",
        action="append",
        default=[],
        metavar="NAME=FILE.npy",
        help="store a latent direction (e.g. InterFaceGAN's boundary_smile.npy) under NAME; repeatable",
    )
    p.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    from progan.pretrained.importer import import_file, parse_direction_args

    imp, out = import_file(args.source, args.dest, parse_direction_args(args.direction))
    for line in imp.summary():
        print(line)
    for w in imp.warnings:
        print(f"warning: {w}", file=sys.stderr)
    for name, _ in parse_direction_args(args.direction):
        print(f"direction:  {name}")
    print(f"wrote snapshot {out}")
    return 0

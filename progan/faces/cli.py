"""`progan faces measure IMAGE...`: print the face measurements of photos, so a person can check them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EPILOG = """examples:
  progan faces measure me.jpg                    one block of traits per image
  progan faces measure photos/*.png --json       a JSON list, one object per image
  progan faces measure me.jpg --overlay checks/  also draw the landmarks and measured regions
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "faces",
        help="measure faces in photos (shape, eye/hair colour, skin tone, smile, ...)",
        description="Face tools. 'progan faces measure IMAGE...' prints every measured trait of each image.",
    )
    sub = p.add_subparsers(dest="faces_command", metavar="ACTION", parser_class=type(p))
    sub.required = True
    m = sub.add_parser(
        "measure",
        help="print the face measurements of images",
        description=(
            "Find the most confident face in each image with dlib, and print its traits with a value "
            "and a confidence: face shape, eye colour, hair colour, skin tone, smile, open mouth, "
            "eyeglasses, beard. An image without a face says 'no face found'; one under 64x64 says so."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    m.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    m.add_argument(
        "--overlay", metavar="DIR", help="write IMAGE-stem.faces.png there: landmarks and measured regions"
    )
    m.set_defaults(func=run_measure)


def format_measurement(m) -> list[str]:
    """Text lines for one FaceMeasurement (below the file's own line)."""
    from progan.faces.measure import TRAITS

    if not m.face_found:
        return [f"  {m.reason}"]
    lines = []
    for name, t in m.traits.items():
        if TRAITS[name].kind == "category":
            others = "  ".join(f"{c} {s:.2f}" for c, s in sorted(t.scores.items(), key=lambda cs: -cs[1]))
            lines.append(f"  {name:<12} {t.value:<11} confidence {t.confidence:.2f}   ({others})")
        else:
            lines.append(f"  {name:<12} {t.value:<11.2f} confidence {t.confidence:.2f}")
    return lines


def run_measure(args: argparse.Namespace) -> int:
    from progan.faces.measure import measure_face, overlay
    from progan.images import read_rgb, save_image
    from progan.landmarks import load_dlib

    paths = [Path(p) for p in args.images]
    images = [read_rgb(p) for p in paths]  # every file checked before the slow part
    load_dlib(purpose="face measurements")  # the install hint before any output
    out = []
    for path, img in zip(paths, images, strict=True):
        m = measure_face(img)
        if args.overlay:
            save_image(overlay(img, m), Path(args.overlay) / f"{path.stem}.faces.png")
        if args.json:
            out.append({"file": str(path), **m.to_json()})
        else:
            h, w = img.shape[:2]
            print(f"{path} ({w}x{h}):")
            print("\n".join(format_measurement(m)), flush=True)
    if args.json:
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
    return 0

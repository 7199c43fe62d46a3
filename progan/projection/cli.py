"""`progan project SNAPSHOT PHOTO... --out DIR` (parsing and printing; the work is Model.project)."""

from __future__ import annotations

import argparse

from progan.cliargs import add_snapshot_argument, positive

HELP = """examples:
  progan project runs/00003-faces-256 me.jpg friend.png --out projected
  progan edit runs/00003-faces-256 --from projected/projections.json --rank 1 --set red_hair=+2 --out red.png
  progan project runs/00007-fashion-32 shirt.png --no-align --out projected   (not a face model)"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from progan.projection.project import INIT_METHODS, ProjectOptions

    d = ProjectOptions()
    p = subparsers.add_parser(
        "project",
        help="find the latent (and label) of each photo, to edit real faces",
        description=(
            "Find each photo's latent in the snapshot's generator (and its label for a conditional "
            "model). A face model's photos are aligned the CelebA-HQ way first (dlib landmarks)."
        ),
        epilog=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_snapshot_argument(p)
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="image files (PNG, JPEG, ...)")
    p.add_argument("--out", required=True, help="write <name>.npy, <name>-projected.png, "
                   "<name>-compare.png and projections.json here")  # fmt: skip
    align = p.add_mutually_exclusive_group()
    align.add_argument("--no-align", dest="align", action="store_false", default=None,
                       help="photos already cropped the model's way (square): no alignment")  # fmt: skip
    align.add_argument("--align", dest="align", action="store_true",
                       help="align faces even for a model under 64x64 or grey (default: colour "
                            "models of 64x64 and more are face models)")  # fmt: skip
    p.add_argument("--steps", type=positive(int), default=d.steps, help=f"optimisation steps ({d.steps})")
    p.add_argument("--restarts", type=positive(int), default=d.restarts,
                   help=f"starting latents per photo; the best wins ({d.restarts})")  # fmt: skip
    p.add_argument("--init", choices=INIT_METHODS, default=d.init,
                   help=f"random, or the nearest of --init-samples samples ({d.init})")  # fmt: skip
    p.add_argument("--init-samples", type=positive(int), default=d.init_samples, help=f"({d.init_samples})")
    p.add_argument("--lr", type=positive(float), default=d.lr, help=f"Adam's learning rate ({d.lr})")
    p.add_argument("--msssim-weight", type=float, default=d.msssim_weight,
                   help=f"weight of 1 - MS-SSIM in the loss ({d.msssim_weight})")  # fmt: skip
    p.add_argument("--d-weight", type=float, default=d.d_weight,
                   help="weight of the snapshot's own D features in the loss (0: off)")  # fmt: skip
    p.add_argument("--batch", type=positive(int), default=d.batch, help=f"photos at once ({d.batch})")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting latents (0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default auto)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run_project)


def run_project(args: argparse.Namespace) -> int:
    from progan import load
    from progan.projection.project import write_projections

    model = load(args.snapshot, device=args.device)
    projections = model.project(
        args.photos, align=args.align, steps=args.steps, restarts=args.restarts, init=args.init,
        init_samples=args.init_samples, lr=args.lr, msssim_weight=args.msssim_weight,
        d_weight=args.d_weight, batch=args.batch, seed=args.seed, progress=args.progress,
    )  # fmt: skip
    path = write_projections(args.out, projections, {"snapshot": str(model.path)})
    for p in projections:
        ms = "" if p.msssim is None else f", MS-SSIM {p.msssim:.3f}"
        label = ""
        if p.labels is not None:
            k = int(p.labels.argmax())
            label = f", label {model.label_names[k] if k < len(model.label_names) else k}"
        print(f"{p.source} -> {args.out}/{p.name}.npy: PSNR {p.psnr:.1f} dB{ms}{label}")
    print(f"wrote {path}")
    return 0

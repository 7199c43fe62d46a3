"""The studio's command: `serve` (argument parsing only; the work is in progan/studio/app.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from progan.cliargs import add_generation_arguments, need
from progan.errors import UserError


def register(
    subparsers: argparse._SubParsersAction,
    panels: Callable[[argparse.Namespace], list] = lambda args: [],
    panel_arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None,
) -> None:
    """`progan serve`; `panels(args)` makes the extension panels it serves (called only when
    serving, as panels need FastAPI) and `panel_arguments(parser)` adds the options they take:
    the command layer (progan/cli.py) hands in the features' panels."""
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
    p.add_argument("--state-dir", help="where favourites.json and the latents of opened photos "
                   "(latents/) live (default ~/.local/share/progan/studio)")  # fmt: skip
    add_generation_arguments(p, batch=None, precisions=["auto", "fp32", "bf16"])
    panel_arguments(p)
    p.set_defaults(func=run_serve, panels=panels)


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
          precision=sampling_precision(args.precision, device), allow_hosts=args.allow_host,
          panels=args.panels(args))  # fmt: skip
    return 0

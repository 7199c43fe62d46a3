"""The `progan` command: a thin layer that parses arguments and calls library functions.

Each package registers the commands of its own code with a `register(subparsers)` function in its
cli.py / commands.py; this file imports those modules and calls them in the order `progan --help`
lists the commands. It is also where features are plugged into each other: the studio's `serve`
gets the panels of other features (describe's box, open a photo) from here, so the studio names no feature.
"""

from __future__ import annotations

import argparse
import sys

from progan import commands
from progan.data import cli as data_cli
from progan.errors import UserError, os_error_message
from progan.faces import cli as faces_cli
from progan.faces import commands as faces_commands
from progan.metrics import cli as metrics_cli
from progan.pretrained import cli as pretrained_cli
from progan.projection import cli as projection_cli
from progan.studio import cli as studio_cli


def studio_panels(args: argparse.Namespace) -> list:
    """The panels features add to `progan serve`: describe's box (progan/faces/studio_panel.py),
    "open a photo" (progan/projection/studio_panel.py) and, with --keep-with, the button that holds
    an edit's unasked traits (progan/faces/studio_panel.py)."""
    from progan.faces.studio_panel import describe_panel, keep_panel
    from progan.projection.studio_panel import photo_panel

    extra = [keep_panel(args.keep_with)] if args.keep_with else []
    return [describe_panel(), photo_panel(), *extra]


def studio_panel_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the features' studio panels, on `progan serve`."""
    parser.add_argument(
        "--keep-with", metavar="CLASSIFIER",
        help="a 'progan attributes fit' file: the face view gets a button that holds the traits an "
        "edit did not ask for, as 'progan edit --keep-with' (edit along this classifier's directions: "
        "'progan directions SNAPSHOT --attributes CLASSIFIER')",
    )  # fmt: skip


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    commands.register(subparsers)  # train, generate, demo
    data_cli.register(subparsers)  # prepare
    metrics_cli.register(subparsers)  # evaluate
    faces_cli.register(subparsers)  # faces measure
    commands.register_outputs(subparsers)  # video, export
    studio_cli.register(subparsers, panels=studio_panels, panel_arguments=studio_panel_arguments)  # serve
    pretrained_cli.register(subparsers)  # import
    faces_commands.register(subparsers)  # describe, attributes, directions, edit
    projection_cli.register(subparsers)  # project


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error: the problem and where to look for the fix."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="progan", description="Progressive Growing of GANs (Karras et al., 2018).")
    from progan import __version__

    parser.add_argument("--version", action="version", version=f"progan {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of any error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    subparsers.required = True
    register_commands(subparsers)
    for sub in subparsers.choices.values():  # `progan CMD ... --debug` works as well as `progan --debug CMD`
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Every command reuses freed tensor memory instead of paging it in again (11% of a 1024x1024
    # G's time); a library user opts in with the same call.
    from progan.allocator import keep_freed_memory

    keep_freed_memory()
    try:
        result = args.func(args)
    except BaseException as e:  # noqa: BLE001 - every failure ends in one line (or a traceback with --debug)
        if isinstance(e, SystemExit):
            raise
        if args.debug:
            raise
        message, code = describe_failure(e)
        print(f"progan {args.command}: error: {message}", file=sys.stderr)
        sys.exit(code)
    sys.exit(result or 0)


def describe_failure(e: BaseException) -> tuple[str, int]:
    """One line and an exit code for an exception that ends a command.

    Problems with input or machine (UserError, full or read-only disk, missing permission) exit
    with 2; anything else is a bug in progan and exits with 1, its traceback one --debug away."""
    if isinstance(e, UserError):
        return str(e), 2
    if isinstance(e, OSError):
        return os_error_message(e), 2
    if isinstance(e, MemoryError):
        return "out of memory; ask for less (a smaller --batch, fewer images) or free memory", 2
    if isinstance(e, KeyboardInterrupt):
        return "interrupted", 130
    first = (str(e).strip().splitlines() or [""])[0]
    return (
        f"unexpected {type(e).__name__}: {first} (a bug in progan: rerun with --debug for the traceback "
        f"and report it)",
        1,
    )

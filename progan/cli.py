"""The `progan` command: a thin layer that parses arguments and calls library functions.

Each subcommand lives beside the code it drives and plugs in through a `register(subparsers)`
function listed in COMMAND_MODULES, so later features add a command without touching this file's
logic.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from progan.errors import UserError, os_error_message

# Modules that define subcommands, in the order `progan --help` lists them.
COMMAND_MODULES = [
    "progan.commands",  # train, generate, demo
    "progan.data.cli",  # prepare
    "progan.metrics.cli",  # evaluate
    "progan.faces.cli",  # faces measure
    "progan.studio.cli",  # video, export, serve
    "progan.pretrained.cli",  # import
    "progan.faces.commands",  # describe, attributes, directions, edit
]


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
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # a command module that is not part of this build yet
                continue
            raise
        module.register(subparsers)
    for sub in subparsers.choices.values():  # `progan CMD ... --debug` works as well as `progan --debug CMD`
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
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

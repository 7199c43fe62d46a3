"""The `progan` command: a thin layer that parses arguments and calls library functions.

Each subcommand lives beside the code it drives and plugs in through a `register(subparsers)`
function listed in COMMAND_MODULES, so later features add a command without touching this file's
logic.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from progan.errors import UserError

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
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except UserError as e:
        print(f"progan {args.command}: error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(result or 0)

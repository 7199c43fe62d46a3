"""Command-line arguments that several subcommands share, defined once here.

Every command that turns a snapshot's G_ema into images takes the same snapshot argument and the
same --batch/--device/--precision triple; the numeric checks give the same one-line errors.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from progan.errors import UserError, install_hint

SNAPSHOT_HELP = "a snapshot directory, or a run directory (its newest snapshot)"


def positive(kind: type) -> Callable[[str], int | float]:
    """An argparse type: `kind(text)`, refused with one line unless it is a positive number."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"'{text}' is not {what}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{value} must be positive")
        return value

    return parse


def add_snapshot_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("snapshot", help=SNAPSHOT_HELP)


def add_generation_arguments(
    p: argparse.ArgumentParser,
    batch: int | None = 32,
    precisions: Sequence[str] | None = None,
    precision_help: str | None = None,
) -> None:
    """--batch (left out when `batch` is None), --device and --precision (auto by default: the
    rule of device.sampling_precision) of a command that runs G_ema; `precisions` narrows the
    choices (default: device.TRAIN_PRECISIONS, auto included)."""
    from progan.device import TRAIN_PRECISIONS

    if batch is not None:
        p.add_argument("--batch", type=positive(int), default=batch, help=f"images per batch ({batch})")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default auto)")
    rule = "auto (default): bf16 on a CPU with AMX or AVX-512 BF16 or a CUDA GPU of compute capability >= 8.0, else fp32"  # noqa: E501
    p.add_argument("--precision", choices=list(precisions or TRAIN_PRECISIONS), default="auto",
                   help=f"{rule}; {precision_help}" if precision_help else rule)  # fmt: skip


def need(extra: str, *modules: str) -> None:
    """A one-line error naming the extra to install when an optional dependency is missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"this command needs {', '.join(missing)}: {install_hint(extra)}")

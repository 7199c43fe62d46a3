"""Checking values that come from users or files (options, state.json, manifests) against a table
of kinds and ranges, so that a bad value fails at once with one line naming it, before any work or
allocation, instead of deep inside a run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from progan.errors import UserError


@dataclass(frozen=True)
class Field:
    """A value's kind ("int", "float", "bool", "str", "list", "dict"), its bounds, and whether it
    may be None. `below` is an exclusive upper bound (for ema_beta < 1)."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    optional: bool = False
    below: float | None = None
    choices: tuple = ()

    def problem(self, value: Any) -> str | None:
        if value is None:
            return None if self.optional else "is missing"
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, (int, float)) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "str": isinstance(value, str),
            "list": isinstance(value, list),
            "dict": isinstance(value, dict),
        }[self.kind]
        if not ok:
            return f"is {type(value).__name__} {_short(value)}, not {self.kind}"
        if self.kind == "float" and not math.isfinite(value):
            return f"is {value}, not a finite number"
        if self.choices and value not in self.choices:
            return f"is {_short(value)}, not one of {', '.join(map(str, self.choices))}"
        if self.lo is not None and value < self.lo:
            return f"is {value}, below {self.lo:g}"
        if self.hi is not None and value > self.hi:
            return f"is {value}, above {self.hi:g}"
        if self.below is not None and value >= self.below:
            return f"is {value}, must be below {self.below:g}"
        return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_fields(
    values: dict, spec: dict[str, Field], where: str, fix: str, option_names: bool = False
) -> None:
    """Raise UserError naming the first field of `values` that does not fit `spec`.

    With `option_names` a field is named as its command-line option (--ema-beta), else as
    `where: name`; `fix` says what to do."""
    if not isinstance(values, dict):
        raise UserError(f"{where}: expected an object, found {type(values).__name__} {_short(values)}; {fix}")
    for name, field in spec.items():
        problem = field.problem(values.get(name))
        if problem:
            label = f"--{name.replace('_', '-')}" if option_names else f"{where}: {name}"
            raise UserError(f"{label} {problem}; {fix}")


def format_bytes(n: float) -> str:
    """A size for messages: '512 B', '3.4 KiB', '12.0 MiB', '1.5 GiB' (never '0.0 GiB')."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


# The one resolution rule (networks, the CLI, the store and prepare): a power of two from 4 to 1024,
# the range of the paper's networks.
MIN_RESOLUTION, MAX_RESOLUTION = 4, 1024


def resolution_error(resolution: object) -> str | None:
    """Why `resolution` is not a valid resolution, or None when it is."""
    ok = isinstance(resolution, int) and not isinstance(resolution, bool)
    if ok and MIN_RESOLUTION <= resolution <= MAX_RESOLUTION and resolution & (resolution - 1) == 0:
        return None
    return f"{resolution} is not a power of two from {MIN_RESOLUTION} to {MAX_RESOLUTION}"

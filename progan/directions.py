"""Named latent directions of a snapshot: `directions.safetensors` beside `model.safetensors`.

One store for every source of directions: InterFaceGAN's published `(1, 512)` boundaries
(`progan import --direction`), directions that `progan directions` fits from measured traits,
and the studio's sliders. Each direction is a float32 vector of the generator's latent size,
stored unit length under its name; its metadata (where it came from, what it measures) is JSON
in the safetensors header. Moving a face by `amount` along a direction adds
`amount * direction` to its latent (InterFaceGAN's edit, with amounts in latent-norm units).

This module is the one owner of the file (checkpoint.py, the owner of the rest of a snapshot,
names it so and never reads or writes it): every read and write of `directions.safetensors`
goes through `load_directions` / `save_directions` / `add_direction` here.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from progan.errors import UserError

DIRECTIONS_FILE = "directions.safetensors"
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise UserError(
            f"direction name '{name}' is not usable; use letters, digits and '_' (starting with a letter)"
        )
    return name


def load_directions(snapshot: str | os.PathLike) -> dict[str, tuple[torch.Tensor, dict]]:
    """name -> (unit vector (L,), metadata) of a snapshot; empty when it has none."""
    path = Path(snapshot) / DIRECTIONS_FILE
    if not path.is_file():
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("directions", "{}"))
            return {k: (f.get_tensor(k).float(), dict(meta.get(k, {}))) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable directions file ({e}); delete it, add them again") from e


def save_directions(snapshot: str | os.PathLike, directions: dict[str, tuple[torch.Tensor, dict]]) -> Path:
    """Write all directions of a snapshot at once, atomically (temporary name, then rename)."""
    path = Path(snapshot) / DIRECTIONS_FILE
    tensors, meta = {}, {}
    for name, (vector, info) in directions.items():
        check_name(name)
        v = torch.as_tensor(vector, dtype=torch.float32).reshape(-1)
        norm = float(v.norm())
        if not norm > 0 or not torch.isfinite(v).all():
            raise UserError(f"direction '{name}' is zero or not finite; it cannot be stored")
        tensors[name] = (v / norm).contiguous()
        meta[name] = info
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata={"directions": json.dumps(meta)})
    os.replace(tmp, path)
    return path


def add_direction(
    snapshot: str | os.PathLike, name: str, vector: torch.Tensor, latent_size: int, **info: object
) -> Path:
    """Add (or replace) one named direction of a snapshot; `info` is kept as its metadata."""
    v = torch.as_tensor(vector, dtype=torch.float32).reshape(-1)
    if v.numel() != latent_size:
        raise UserError(
            f"direction '{name}' has {v.numel()} values, but the model's latent has {latent_size}; "
            "use a direction made for this model"
        )
    directions = load_directions(snapshot)
    directions[check_name(name)] = (v, dict(info))
    return save_directions(snapshot, directions)


def parse_amounts(text: str) -> dict[str, float]:
    """'smile=+2,age=-1.5' -> {'smile': 2.0, 'age': -1.5}."""
    amounts: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            amounts[check_name(name.strip())] = float(value)
        except ValueError:
            raise UserError(f"'{part}' is not NAME=AMOUNT; write e.g. smile=+2,age=-1") from None
        if not sep:
            raise UserError(f"'{part}' is not NAME=AMOUNT; write e.g. smile=+2,age=-1")
    return amounts


def move(
    latents: torch.Tensor, directions: dict[str, tuple[torch.Tensor, dict]], amounts: dict[str, float]
) -> torch.Tensor:
    """Latents (N, L) moved by amounts[name] along each named direction."""
    out = latents.clone()
    for name, amount in amounts.items():
        if name not in directions:
            have = ", ".join(sorted(directions)) or "none (add some with 'progan import --direction')"
            raise UserError(f"this snapshot has no direction '{name}'; it has {have}")
        out += float(amount) * directions[name][0].to(out)
    return out


def conditioned(
    directions: dict[str, tuple[torch.Tensor, dict]], edited: list[str], keep: list[str] | None = None
) -> dict[str, torch.Tensor]:
    """Unit directions for `edited` that leave the `keep` directions' traits unchanged.

    InterFaceGAN's conditional manipulation: each edited direction loses its component in the
    span of the kept ones, so a linear model of a kept trait sees no change. By default every
    stored direction of another trait (metadata "trait"; a direction without one is its own
    trait) is kept; directions of the same trait ("blond_hair" beside "red_hair") are free to change.
    """
    missing = [n for n in edited if n not in directions]
    if missing:
        have = ", ".join(sorted(directions)) or "none (fit some with 'progan directions SNAPSHOT')"
        raise UserError(f"this snapshot has no direction '{missing[0]}'; it has {have}")
    out = {}
    for name in edited:
        vec, info = directions[name]
        d = vec / vec.norm()
        trait = info.get("trait", name)
        fixed = [
            k for k in (keep if keep is not None else directions)
            if k not in edited and k in directions and directions[k][1].get("trait", k) != trait
        ]  # fmt: skip
        if fixed:
            basis = torch.stack([directions[k][0] / directions[k][0].norm() for k in fixed], 1)
            u, s, _ = torch.linalg.svd(basis, full_matrices=False)
            u = u[:, s > s.max() * 1e-5]
            d = d - u @ (u.T @ d)
            if float(d.norm()) < 0.05:
                raise UserError(
                    f"direction '{name}' lies within the {len(fixed)} directions kept fixed; "
                    "keep fewer (--keep a,b) or edit without keeping (--free)"
                )
        out[name] = d / d.norm()
    return out


def edit(
    latents: torch.Tensor,
    directions: dict[str, tuple[torch.Tensor, dict]],
    amounts: dict[str, float],
    keep: list[str] | None = None,
    free: bool = False,
) -> torch.Tensor:
    """Latents (N, L) moved by amounts[name] along each named direction: `progan edit`'s move.

    By default each edited direction is first conditioned on the other traits' directions (or on
    `keep` only), so their linear models see no change (InterFaceGAN's conditional edit); `free`
    moves along the plain directions (`move`)."""
    if not amounts:
        raise UserError("no direction to move along; name one, e.g. red_hair=+2,smile=-1")
    if free:
        return move(latents, directions, amounts)
    units = conditioned(directions, list(amounts), keep)
    out = latents.clone()
    for name, amount in amounts.items():
        out += float(amount) * units[name].to(out)
    return out

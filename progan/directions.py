"""Named latent directions of a snapshot: `directions.safetensors` beside `model.safetensors`.

One store for every source of directions: InterFaceGAN's published `(1, 512)` boundaries
(`progan import --direction`), directions that `progan directions` fits from measured traits,
and the studio's sliders. Each direction is a float32 vector of the generator's latent size,
stored unit length under its name; its metadata (where it came from, what it measures) is JSON
in the safetensors header. Moving a face by `amount` along a direction adds
`amount * direction` to its latent (InterFaceGAN's edit, with amounts in latent-norm units).

A category of a trait (red of hair colour) may instead be one class of a softmax over the
trait's categories, fitted on the latents: its metadata then has "model": "softmax" with the
class's logit scale and bias, so that with its sibling categories the logits
`scale_k * (u_k . x) + bias_k` of a pixel-normalised latent x can be rebuilt. Such a direction
is face-dependent: a move along it follows the gradient of log p(category | x) in small steps,
which points from the face's own category toward the asked one. A model can lay hair colour on
one axis of its latent, black -> brown -> red -> blond -> grey; a fixed direction then cannot
make every face red (it pushes a blond face to grey), a softmax's gradient can (from black it
points up the axis, from blond down).

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


def merge_directions(
    old: dict[str, tuple[torch.Tensor, dict]], new: dict[str, tuple[torch.Tensor, dict]]
) -> dict[str, tuple[torch.Tensor, dict]]:
    """`old` with `new` added or replacing by name, less the old softmax categories whose trait
    lost a class to `new` or is a softmax of `new`: a softmax is rebuilt from all its stored
    classes (`_softmax_classes`), so a remnant of an old one would move faces by the wrong gradient."""
    broken = {old[n][1].get("trait") for n in new if n in old and is_softmax(old[n][1])}
    broken |= {info.get("trait") for _, info in new.values() if is_softmax(info)}
    kept = {k: v for k, v in old.items() if not (is_softmax(v[1]) and v[1].get("trait") in broken)}
    return {**kept, **new}


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


# A face-dependent move is taken in this many equal steps of its amount: enough that each step's
# softmax gradient is followed closely (an amount of 2 in 20 steps of 0.1 latent-norm units), few
# enough to cost nothing beside rendering one face.
EDIT_STEPS = 20


def is_softmax(info: dict) -> bool:
    """Is this direction one class of a trait's softmax (face-dependent), not a fixed vector?"""
    return info.get("model") == "softmax"


def _missing(directions: dict, names: list[str], hint: str) -> None:
    missing = [n for n in names if n not in directions]
    if missing:
        have = ", ".join(sorted(directions)) or hint
        raise UserError(f"this snapshot has no direction '{missing[0]}'; it has {have}")


def _softmax_classes(directions: dict, trait: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(W (K, L), bias (K,), names) of the softmax classes stored for one trait."""
    names = sorted(n for n, (_, i) in directions.items() if is_softmax(i) and i.get("trait") == trait)
    W = torch.stack([directions[n][0] * float(directions[n][1]["logit_scale"]) for n in names])
    bias = torch.tensor([float(directions[n][1]["logit_bias"]) for n in names])
    return W, bias, names


def _unit_rows(d: torch.Tensor) -> torch.Tensor:
    norm = d.norm(dim=-1, keepdim=True)
    return torch.where(norm > 1e-8, d / norm.clamp_min(1e-12), torch.zeros_like(d))


def direction_at(
    directions: dict[str, tuple[torch.Tensor, dict]], name: str, latents: torch.Tensor
) -> torch.Tensor:
    """Unit directions (N, L) of `name` at each latent: the stored vector, or for a softmax
    category the gradient of log p(category | latent) (zero where it vanishes)."""
    vec, info = directions[name]
    latents = latents.float()
    if not is_softmax(info):
        return (vec / vec.norm()).to(latents).expand_as(latents)
    W, bias, names = _softmax_classes(directions, info["trait"])
    x = latents * (latents.shape[1] ** 0.5) / latents.norm(dim=1, keepdim=True).clamp_min(1e-12)
    p = torch.softmax(x @ W.T + bias, dim=1)
    return _unit_rows(W[names.index(name)] - p @ W)


def kept_basis(
    directions: dict[str, tuple[torch.Tensor, dict]],
    name: str,
    edited: list[str],
    keep: list[str] | None = None,
) -> torch.Tensor | None:
    """Orthonormal columns (L, M) spanning the directions kept fixed while `name` is edited:
    every stored direction of another trait (metadata "trait"; a direction without one is its own
    trait), or `keep` only; directions of the same trait ("blond_hair" beside "red_hair") are free."""
    trait = directions[name][1].get("trait", name)
    fixed = [
        k for k in (keep if keep is not None else directions)
        if k not in edited and k in directions and directions[k][1].get("trait", k) != trait
    ]  # fmt: skip
    if not fixed:
        return None
    basis = torch.stack([directions[k][0] / directions[k][0].norm() for k in fixed], 1)
    u, s, _ = torch.linalg.svd(basis, full_matrices=False)
    return u[:, s > s.max() * 1e-5]


# A conditioned direction shorter than this (of a unit one) lies within the kept directions: the
# fixed ones are refused (`conditioned`), a face-dependent step is skipped (`conditioned_at`).
MIN_CONDITIONED_NORM = 0.05


def conditioned_at(
    directions: dict[str, tuple[torch.Tensor, dict]],
    name: str,
    latents: torch.Tensor,
    basis: torch.Tensor | None,
) -> torch.Tensor:
    """Unit directions (N, L) of `name` at each latent (`direction_at`) with their component in
    `basis` (kept_basis's columns; None keeps nothing) removed: the one conditioned step that
    `edit` and `describe --refine` take. A latent whose direction lies (almost) within the kept
    span gets zero, so that face stays, rather than a tiny remainder blown up to unit length."""
    d = direction_at(directions, name, latents)
    if basis is None:
        return d
    rest = d - (d @ basis) @ basis.T
    return torch.where(rest.norm(dim=1, keepdim=True) < MIN_CONDITIONED_NORM, 0.0, _unit_rows(rest))


def conditioned(
    directions: dict[str, tuple[torch.Tensor, dict]], edited: list[str], keep: list[str] | None = None
) -> dict[str, torch.Tensor]:
    """Unit directions for `edited` that leave the `keep` directions' traits unchanged.

    InterFaceGAN's conditional manipulation: each edited direction loses its component in the
    span of the kept ones (`kept_basis`), so a linear model of a kept trait sees no change. A
    softmax category has no fixed direction and is left out: its stored vector is only its
    class's logit direction, and its step at each face is `conditioned_at`'s (a logit direction
    within the kept span says nothing about the gradient at a face, so it is not refused).
    """
    _missing(directions, edited, "none (fit some with 'progan directions SNAPSHOT')")
    out = {}
    for name in edited:
        vec, info = directions[name]
        if is_softmax(info):
            continue
        d = vec / vec.norm()
        u = kept_basis(directions, name, edited, keep)
        if u is not None:
            d = d - u @ (u.T @ d)
            if float(d.norm()) < MIN_CONDITIONED_NORM:
                raise UserError(
                    f"direction '{name}' lies within the {u.shape[1]} directions kept fixed; "
                    "keep fewer (--keep a,b) or edit without keeping (--free)"
                )
        out[name] = d / d.norm()
    return out


def _stepped(
    latents: torch.Tensor,
    directions: dict[str, tuple[torch.Tensor, dict]],
    amounts: dict[str, float],
    bases: dict[str, torch.Tensor | None],
) -> torch.Tensor:
    """Latents moved by amounts[name] along each direction in EDIT_STEPS equal steps, each step's
    direction taken at the current latents (a softmax category's gradient) and conditioned on
    `bases[name]`. The result keeps each input latent's norm: a pixel-normalising generator sees
    the same face, and one that does not sees a latent of the size it was given."""
    z = latents.float()
    scale = z.norm(dim=1, keepdim=True).clamp_min(1e-12)
    root = z.shape[1] ** 0.5
    x = z * root / scale
    for _ in range(EDIT_STEPS):
        step = torch.zeros_like(x)
        for name, amount in amounts.items():
            step += float(amount) / EDIT_STEPS * conditioned_at(directions, name, x, bases.get(name))
        x = x + step
    return (x * scale / x.norm(dim=1, keepdim=True).clamp_min(1e-12)).to(latents.dtype)


def move(
    latents: torch.Tensor, directions: dict[str, tuple[torch.Tensor, dict]], amounts: dict[str, float]
) -> torch.Tensor:
    """Latents (N, L) moved by amounts[name] along each named direction (a softmax category's
    along its face-dependent gradient, see the module's docstring)."""
    _missing(directions, list(amounts), "none (add some with 'progan import --direction')")
    if any(is_softmax(directions[n][1]) for n in amounts):
        return _stepped(latents, directions, amounts, {})
    out = latents.clone()
    for name, amount in amounts.items():
        out += float(amount) * directions[name][0].to(out)
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
    moves along the plain directions (`move`). A softmax category moves along its face-dependent
    gradient, conditioned at every step."""
    if not amounts:
        raise UserError("no direction to move along; name one, e.g. red_hair=+2,smile=-1")
    if free:
        return move(latents, directions, amounts)
    units = conditioned(directions, list(amounts), keep)  # refuses a fixed one within the kept span
    if any(is_softmax(directions[n][1]) for n in amounts):
        bases = {n: kept_basis(directions, n, list(amounts), keep) for n in amounts}
        return _stepped(latents, directions, amounts, bases)
    out = latents.clone()
    for name, amount in amounts.items():
        out += float(amount) * units[name].to(out)
    return out

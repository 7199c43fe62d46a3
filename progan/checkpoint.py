"""Snapshots: weights and optimizer state in safetensors, everything else in JSON, written atomically.

A snapshot directory::

    snapshot-000120/
      model.safetensors   G.*, D.*, G_ema.* weights (fp32)
      optim.safetensors   Adam moments and steps of G and D, RNG and loader state
      state.json          format marker, images shown, stage, network config, run options, ...

Nothing here ever unpickles: safetensors holds only tensors and JSON only data, so loading a
snapshot from an untrusted source cannot run code.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from progan.errors import UserError
from progan.networks import Discriminator, Generator, NetworkConfig

SNAPSHOT_FORMAT = "progan-snapshot"
SNAPSHOT_VERSION = 1
STATE_FILE = "state.json"
MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optim.safetensors"


def kimg_tag(nimg: int) -> str:
    """'000120' at 120 kimg; '000000.400' at 400 images (short ticks of small runs)."""
    kimg, rest = divmod(nimg, 1000)
    return f"{kimg:06d}" + (f".{rest:03d}" if rest else "")


def snapshot_name(nimg: int) -> str:
    return f"snapshot-{kimg_tag(nimg)}"


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in state.items()}


def _unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    p = prefix + "."
    return {k[len(p) :]: v for k, v in tensors.items() if k.startswith(p)}


def optimizer_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    """Flatten an optimizer's per-parameter state into named tensors, plus its JSON param groups."""
    sd = opt.state_dict()
    tensors = {}
    for idx, pstate in sd["state"].items():
        for key, value in pstate.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"{prefix}.{idx}.{key}"] = t.detach().cpu().contiguous()
    return tensors, sd["param_groups"]


def load_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict, groups: list) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in _unprefixed(prefix, tensors).items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": groups})
    # Moments must share their parameter's memory layout (channels-last convs): fused Adam walks
    # parameter and moment storage side by side.
    for group in opt.param_groups:
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                mismatched = isinstance(value, torch.Tensor) and value.shape == p.shape
                if mismatched and value.stride() != p.stride():
                    opt.state[p][key] = torch.empty_like(p).copy_(value)


def save_snapshot(
    run_dir: Path,
    nimg: int,
    models: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    extra_tensors: dict[str, torch.Tensor],
    state: dict,
) -> Path:
    """Write a snapshot into `run_dir` under a temporary name and rename it into place."""
    final = run_dir / snapshot_name(nimg)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=run_dir))
    try:
        weights: dict[str, torch.Tensor] = {}
        for name, module in models.items():
            weights.update(_prefixed(name, module.state_dict()))
        save_file(weights, str(tmp / MODEL_FILE))
        optim: dict[str, torch.Tensor] = {k: v.detach().cpu().contiguous() for k, v in extra_tensors.items()}
        groups = {}
        for name, opt in optimizers.items():
            tensors, groups[name] = optimizer_tensors(name, opt)
            optim.update(tensors)
        save_file(optim, str(tmp / OPTIM_FILE))
        full_state = {"format": SNAPSHOT_FORMAT, "format_version": SNAPSHOT_VERSION, "nimg": nimg,
                      "kimg": nimg / 1000, **state, "optimizer_groups": groups}  # fmt: skip
        (tmp / STATE_FILE).write_text(json.dumps(full_state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def list_snapshots(run_dir: str | os.PathLike) -> list[Path]:
    """Complete snapshots of a run, oldest first (temporary directories of torn writes are ignored)."""
    run_dir = Path(run_dir)
    found = []
    for p in run_dir.glob("snapshot-*"):
        if (p / STATE_FILE).is_file():
            try:
                nimg = json.loads((p / STATE_FILE).read_text()).get("nimg", 0)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            found.append((nimg, p))
    return [p for _, p in sorted(found)]


def resolve_snapshot(path: str | os.PathLike) -> Path:
    """A snapshot directory, or the newest snapshot of a run directory; UserError otherwise."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist; pass a run directory (runs/00001-name) or a snapshot in it")
    if (path / STATE_FILE).is_file():
        return path
    if path.is_dir():
        snaps = list_snapshots(path)
        if snaps:
            return snaps[-1]
    raise UserError(
        f"{path} is neither a progan snapshot nor a run directory with snapshots; "
        "pass runs/<run>/snapshot-<kimg> or runs/<run>"
    )


def read_state(snapshot: Path) -> dict:
    try:
        state = json.loads((snapshot / STATE_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{snapshot / STATE_FILE} is not valid JSON ({e}); use another snapshot") from e
    if not isinstance(state, dict) or state.get("format") != SNAPSHOT_FORMAT:
        raise UserError(
            f"{snapshot} is not a progan snapshot (no '{SNAPSHOT_FORMAT}' marker in {STATE_FILE})"
        )
    if int(state.get("format_version", 0)) > SNAPSHOT_VERSION:
        raise UserError(f"{snapshot} was written by a newer progan; upgrade progan to load it")
    return state


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"{path} is missing; the snapshot is incomplete, use an earlier one")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable safetensors file ({e}); use another snapshot") from e


def load_module(module: torch.nn.Module, prefix: str, tensors: dict, source: Path) -> None:
    try:
        module.load_state_dict(_unprefixed(prefix, tensors))
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise UserError(f"{source}: weights of {prefix} do not fit its network config ({first})") from e


@dataclass
class Snapshot:
    """A snapshot loaded for inference: G_ema in eval mode at the stage it was saved at."""

    path: Path
    state: dict
    config: NetworkConfig
    G_ema: Generator

    @property
    def options(self) -> dict:
        return self.state.get("options", {})

    @property
    def kimg(self) -> float:
        return float(self.state["kimg"])

    @property
    def label_names(self) -> list[str]:
        return list(self.state.get("label_names") or [])


def load_config(state: dict, snapshot: Path) -> NetworkConfig:
    try:
        return NetworkConfig(**state["network"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(
            f"{snapshot / STATE_FILE} has no valid network config ({e}); use another snapshot"
        ) from e


def load_snapshot(path: str | os.PathLike, device: str | torch.device = "cpu") -> Snapshot:
    """Load G_ema of a snapshot (or of a run's newest snapshot) for generation and metrics."""
    snap = resolve_snapshot(path)
    state = read_state(snap)
    config = load_config(state, snap)
    G_ema = Generator(config)
    load_module(G_ema, "G_ema", load_tensors(snap / MODEL_FILE), snap / MODEL_FILE)
    stage = state.get("stage", {})
    G_ema.set_stage(int(stage.get("resolution", config.resolution)), float(stage.get("alpha", 1.0)))
    G_ema.to(device).eval().requires_grad_(False)
    return Snapshot(path=snap, state=state, config=config, G_ema=G_ema)


def build_networks(config: NetworkConfig) -> tuple[Generator, Discriminator, Generator]:
    G = Generator(config)
    D = Discriminator(config)
    G_ema = Generator(config)
    G_ema.load_state_dict(G.state_dict())
    G_ema.eval().requires_grad_(False)
    return G, D, G_ema

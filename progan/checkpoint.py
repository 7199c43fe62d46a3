"""The snapshot format: its one owner. Every key of a snapshot is written and read here.

A snapshot directory::

    snapshot-000120/
      model.safetensors   G_ema.* weights (fp32); G.* and D.* too in training snapshots
      optim.safetensors   training snapshots only: Adam moments and steps of G and D
                          (G_opt.*, D_opt.*), rng.train, loader.order, counters.skipped
      state.json          format marker and version, kind ("training" or "inference"), nimg,
                          kimg, stage, network config, label names, run options, ...
      directions.safetensors   optional: named latent directions. Its one owner is
                          progan/directions.py (DIRECTIONS_FILE); nothing here reads or writes it

Two kinds share the format. Training writes *training* snapshots (`save_training_snapshot`,
resumed with `load_training_snapshot`); importers, exporters and tools that make a generator
without training it write *inference* snapshots (`save_inference_snapshot`). Everything that
only samples reads either kind with `load_snapshot`. Snapshots written before the kind marker
existed (format_version 1 without "kind") are training snapshots and still load
(tests/fixtures/snapshot-v1).

Finding snapshots from a path a user gives (a snapshot, a run, a folder of runs) is
`find_snapshots`, for every command; snapshot names are made and read here (`snapshot_name`,
`snapshot_run_name`), and the stored run options that readers need are `Snapshot` properties
(`label_names`, `multi_hot`, `data`).

Nothing here ever unpickles: safetensors holds only tensors and JSON only data, so loading a
snapshot from an untrusted source cannot run code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from progan.checks import Field, check_fields
from progan.errors import UserError, writing
from progan.networks import Generator, NetworkConfig

SNAPSHOT_FORMAT = "progan-snapshot"
SNAPSHOT_VERSION = 1
STATE_FILE = "state.json"
SNAPSHOT_PREFIX = "snapshot-"
MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optim.safetensors"
KIND_TRAINING = "training"
KIND_INFERENCE = "inference"


def kimg_tag(nimg: int) -> str:
    """'000120' at 120 kimg; '000000.400' at 400 images (short ticks of small runs)."""
    kimg, rest = divmod(nimg, 1000)
    return f"{kimg:06d}" + (f".{rest:03d}" if rest else "")


def snapshot_name(nimg: int) -> str:
    return f"{SNAPSHOT_PREFIX}{kimg_tag(nimg)}"


def snapshot_run_name(snapshot: Path) -> str:
    """The name of the run a snapshot belongs to: its run directory's for a snapshot that training
    named, else its own (an imported model's folder, say)."""
    return snapshot.parent.name if snapshot.name.startswith(SNAPSHOT_PREFIX) else snapshot.name


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with writing(path):
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


def _write_snapshot_dir(final: Path, files: dict[str, dict[str, torch.Tensor]], state: dict) -> Path:
    """Write the safetensors `files` and state.json under a temporary name, then rename into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        for name, tensors in files.items():
            save_file(tensors, str(tmp / name))
        full_state = {"format": SNAPSHOT_FORMAT, "format_version": SNAPSHOT_VERSION, **state}
        (tmp / STATE_FILE).write_text(json.dumps(full_state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, (OSError, SafetensorError)):
            raise UserError(
                f"cannot write snapshot {final}: {_write_failure(e)}; free disk space (or fix the "
                f"folder's permissions) and run again (training resumes from its last snapshot)"
            ) from e
        raise
    return final


@dataclass
class TrainingState:
    """Everything a training snapshot holds besides the weights and the Adam states: the counters,
    the schedule position, the run's options and the random state of the run and its loader."""

    nimg: int
    tick: int
    resolution_trained: int  # the stage resolution of the last step, 0 before the first
    stage: dict  # {"resolution": r, "alpha": a}: where G_ema should run for sampling
    network: NetworkConfig
    options: dict
    schedule: dict
    label_names: list[str] = field(default_factory=list)
    loader: dict = field(default_factory=dict)  # the loader's JSON state (BatchLoader.state_json)
    loader_tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # BatchLoader.state_tensors
    rng: torch.Tensor | None = None  # the training torch.Generator's state
    skipped: torch.Tensor | None = None  # non-finite updates skipped so far
    precision_chosen: dict = field(default_factory=dict)  # {"precision", "reason"} of --precision auto
    elapsed_seconds: float = 0.0  # time spent by the run so far (a timed run's budget clock)
    d_steps: int = 0  # D updates so far (which of them carry a lazy gradient penalty)
    # fp16's loss scaler (torch.amp.GradScaler.state_dict()): its scale and growth tracker, so that
    # a resumed fp16 run neither restarts at 2**16 nor skips its first updates again.
    scaler: dict = field(default_factory=dict)

    @property
    def kimg(self) -> float:
        return self.nimg / 1000


def save_training_snapshot(
    run_dir: Path,
    models: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    state: TrainingState,
) -> Path:
    """Write a resumable snapshot `run_dir/snapshot-<kimg>`: `models` G, D, G_ema, `optimizers`
    G_opt, D_opt, and `state`."""
    weights: dict[str, torch.Tensor] = {}
    for name, module in models.items():
        weights.update(_prefixed(name, module.state_dict()))
    optim: dict[str, torch.Tensor] = {}
    if state.rng is not None:
        optim["rng.train"] = state.rng.detach().cpu().contiguous()
    optim.update(_prefixed("loader", state.loader_tensors))
    if state.skipped is not None:
        optim["counters.skipped"] = state.skipped.detach().cpu().reshape(1)
    if state.scaler:
        optim["scaler.scale"] = torch.tensor([state.scaler["scale"]], dtype=torch.float32)
        optim["scaler.growth_tracker"] = torch.tensor([state.scaler["_growth_tracker"]], dtype=torch.int64)
    groups = {}
    for name, opt in optimizers.items():
        tensors, groups[name] = optimizer_tensors(name, opt)
        optim.update(tensors)
    json_state = {
        "kind": KIND_TRAINING,
        "nimg": state.nimg,
        "kimg": state.kimg,
        "tick": state.tick,
        "resolution_trained": state.resolution_trained,
        "stage": state.stage,
        "network": state.network.to_dict(),
        "options": state.options,
        "schedule": state.schedule,
        "label_names": list(state.label_names),
        "loader": state.loader,
        "precision_chosen": state.precision_chosen,
        "elapsed_seconds": state.elapsed_seconds,
        "d_steps": state.d_steps,
        "torch_version": torch.__version__,
        "optimizer_groups": groups,
    }
    return _write_snapshot_dir(
        run_dir / snapshot_name(state.nimg), {MODEL_FILE: weights, OPTIM_FILE: optim}, json_state
    )


def load_training_snapshot(
    snapshot: Path,
    models: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
) -> TrainingState:
    """Restore a training snapshot into built `models` (G, D, G_ema) and `optimizers` (G_opt,
    D_opt); return the rest of its state."""
    state = read_state(snapshot, for_training=True)
    weights = load_tensors(snapshot / MODEL_FILE)
    for name, module in models.items():
        load_module(module, name, weights, snapshot / MODEL_FILE)
    extra = load_tensors(snapshot / OPTIM_FILE)
    groups = state.get("optimizer_groups", {})
    try:
        for name, opt in optimizers.items():
            load_optimizer(name, opt, extra, groups[name])
        return TrainingState(
            nimg=int(state["nimg"]),
            tick=int(state["tick"]),
            resolution_trained=int(state["resolution_trained"]),
            stage=dict(state["stage"]),
            network=load_config(state, snapshot),
            options=dict(state["options"]),
            schedule=dict(state["schedule"]),
            label_names=list(state.get("label_names") or []),
            loader=dict(state["loader"]),
            loader_tensors=_unprefixed("loader", extra),
            rng=extra["rng.train"],
            skipped=extra["counters.skipped"].reshape(()),
            precision_chosen=dict(state.get("precision_chosen") or {}),
            elapsed_seconds=float(state.get("elapsed_seconds", 0.0)),
            d_steps=int(state.get("d_steps", 0)),
            scaler=_scaler_state(extra),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{snapshot} lacks part of its training state ({e!r}); use another snapshot") from e


def _scaler_state(tensors: dict[str, torch.Tensor]) -> dict:
    """The loss scaler's saved scale and growth tracker (empty: not fp16, or saved before they were)."""
    if "scaler.scale" not in tensors:
        return {}
    return {
        "scale": float(tensors["scaler.scale"].reshape(())),
        "_growth_tracker": int(tensors["scaler.growth_tracker"].reshape(())),
    }


def save_inference_snapshot(
    dest: str | os.PathLike,
    config: NetworkConfig,
    G_ema: torch.nn.Module,
    G: torch.nn.Module | None = None,
    D: torch.nn.Module | None = None,
    *,
    nimg: int = 0,
    label_names: list[str] | tuple[str, ...] = (),
    options: dict | None = None,
    info: dict | None = None,
    stage: tuple[int, float] | None = None,
) -> Path:
    """Write a snapshot for sampling (generate, metrics, studio, ...) at `dest` (a directory,
    replaced atomically if it is already a snapshot): G_ema's weights, optionally G and D, the
    network config and JSON `info` (where the weights came from, licence, ...).

    `load_snapshot(dest)` reads it back; it runs G_ema at the config's full resolution, or at
    `stage` = (resolution, alpha) for networks saved mid-fade (imported ones). `options` are
    run options (e.g. {"data": store}) that `evaluate` reads; `nimg` the images the networks
    were trained on, when known.
    """
    dest = Path(dest)
    if dest.exists() and not (dest / STATE_FILE).is_file():
        raise UserError(f"{dest} exists and is not a progan snapshot; choose a new folder")
    if G_ema.config != config:
        raise ValueError("G_ema was built from another network config than the one given")
    models = {"G_ema": G_ema, "G": G, "D": D}
    weights: dict[str, torch.Tensor] = {}
    for name, module in models.items():
        if module is not None:
            weights.update(_prefixed(name, module.state_dict()))
    state = {
        "kind": KIND_INFERENCE,
        "nimg": int(nimg),
        "kimg": int(nimg) / 1000,
        "stage": {"resolution": stage[0], "alpha": float(stage[1])}
        if stage
        else {"resolution": config.resolution, "alpha": 1.0},  # fmt: skip
        "network": config.to_dict(),
        "label_names": list(label_names),
        "options": dict(options or {}),
        "info": dict(info or {}),
        "torch_version": torch.__version__,
    }
    return _write_snapshot_dir(dest, {MODEL_FILE: weights}, state)


def snapshot_kind(state: dict) -> str:
    """ "training" or "inference"; snapshots from before the marker are training snapshots."""
    return str(state.get("kind", KIND_TRAINING))


def _write_failure(e: BaseException) -> str:
    """What went wrong in words: safetensors reports I/O errors as text ('IoError(Os { code: 28, ...')."""
    if isinstance(e, OSError):
        return os.strerror(e.errno) if e.errno else str(e)
    text = str(e)
    m = re.search(r"code: (\d+)", text)
    return os.strerror(int(m.group(1))) if m else (text.splitlines() or ["write failed"])[0]


def list_snapshots(run_dir: str | os.PathLike) -> list[Path]:
    """Complete snapshots of a run, oldest first (temporary directories of torn writes are ignored)."""
    run_dir = Path(run_dir)
    found = []
    for p in run_dir.glob(f"{SNAPSHOT_PREFIX}*"):
        if (p / STATE_FILE).is_file():
            try:
                nimg = json.loads((p / STATE_FILE).read_text()).get("nimg", 0)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            found.append((nimg, p))
    return [p for _, p in sorted(found)]


def find_snapshots(path: str | os.PathLike, every: bool = False, runs: bool = False) -> list[Path]:
    """The snapshots a path names, for every command that takes one:

    - a snapshot directory: [it];
    - a run directory: [its newest snapshot], or with `every` all of them, oldest first;
    - with `runs`, a folder of runs: each run's newest snapshot, in the order of the runs' names.

    Anything else is a UserError saying what to pass.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist; pass a run directory (runs/00001-name) or a snapshot in it")
    if (path / STATE_FILE).is_file():
        return [path]
    snaps = list_snapshots(path) if path.is_dir() else []
    if snaps:
        return snaps if every else snaps[-1:]
    if runs and path.is_dir():
        newest = [s[-1] for run in sorted(path.iterdir()) if run.is_dir() and (s := list_snapshots(run))]
        if newest:
            return newest
        raise UserError(f"{path} holds no snapshots; pass runs/<run>, runs/<run>/snapshot-<kimg> or runs/")
    raise UserError(
        f"{path} is neither a progan snapshot nor a run directory with snapshots; "
        "pass runs/<run>/snapshot-<kimg> or runs/<run>"
    )


# What a snapshot's state.json must hold: for loading G_ema (generation, metrics) and, beyond
# that, for resuming training. Checked on reading, so a damaged file fails with one line.
STATE_FIELDS = {"network": Field("dict"), "stage": Field("dict", optional=True)}
TRAINING_STATE_FIELDS = {
    "nimg": Field("int", 0, 2**53), "tick": Field("int", 0, 2**53),
    "resolution_trained": Field("int", 0, 1024),
    "options": Field("dict"), "loader": Field("dict"), "optimizer_groups": Field("dict"),
    "schedule": Field("dict", optional=True), "label_names": Field("list", optional=True),
}  # fmt: skip
STAGE_FIELDS = {"resolution": Field("int", 4, 1024), "alpha": Field("float", 0.0, 1.0)}
LOADER_FIELDS = {"rng": Field("dict"), "pos": Field("int", 0, 2**53)}
NETWORK_FIELDS = {
    "resolution": Field("int", 4, 1024), "channels": Field("int", 1, 3), "latent_size": Field("int", 1, 8192),
    "label_size": Field("int", 0, 2**16), "fmap_base": Field("int", 1, 2**20),
    "fmap_decay": Field("float", 1e-6, 16),
    "fmap_max": Field("int", 1, 8192), "mbstd_group_size": Field("int", 0, 1024),
    # Absent from snapshots saved before the options (NetworkConfig.from_dict reads them as off).
    "fused_scale": Field("bool", optional=True), "d_mirror_difference": Field("bool", optional=True),
}  # fmt: skip


def read_state(snapshot: Path, for_training: bool = False) -> dict:
    """A snapshot's state.json, checked: the fields that loading G_ema needs (and, `for_training`,
    those that resuming needs) have the right kinds and sizes, or UserError names the first bad one.
    An inference snapshot asked for training is refused with its own message."""
    path = snapshot / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); use another snapshot") from e
    if not isinstance(state, dict) or state.get("format") != SNAPSHOT_FORMAT:
        raise UserError(
            f"{snapshot} is not a progan snapshot (no '{SNAPSHOT_FORMAT}' marker in {STATE_FILE})"
        )
    version = state.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise UserError(f"{path}: format_version is {version!r}, not a number; use another snapshot")
    if version > SNAPSHOT_VERSION:
        raise UserError(f"{snapshot} was written by a newer progan; upgrade progan to load it")
    fix = "the file is damaged; use another snapshot"
    check_fields(state, STATE_FIELDS, str(path), fix)
    check_fields(state["network"], NETWORK_FIELDS, f"{path} network", fix)
    if state.get("stage") is not None:
        check_fields(state["stage"], STAGE_FIELDS, f"{path} stage", fix)
    if for_training:
        if snapshot_kind(state) != KIND_TRAINING:
            raise UserError(
                f"{snapshot} is an inference snapshot (no optimizer state, no data order); it can be "
                "sampled from (progan generate) but not resumed"
            )
        check_fields(state, TRAINING_STATE_FIELDS, str(path), fix)
        check_fields(state["loader"], LOADER_FIELDS, f"{path} loader", fix)
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
        """The run options stored with the snapshot ({} when it has none)."""
        options = self.state.get("options")
        return options if isinstance(options, dict) else {}

    @property
    def kimg(self) -> float:
        return float(self.state["kimg"])

    @property
    def label_names(self) -> list[str]:
        return list(self.state.get("label_names") or [])

    @property
    def multi_hot(self) -> bool:
        """Whether the labels are attributes (several may hold) rather than one class."""
        return bool((self.options.get("loss") or {}).get("multi_hot", False))

    @property
    def data(self) -> str | None:
        """The dataset store the run trained on, where it says (evaluate's default reals)."""
        return self.options.get("data")

    @property
    def kind(self) -> str:
        return snapshot_kind(self.state)

    @property
    def info(self) -> dict:
        """Free-form JSON an inference snapshot's writer stored (source, licence, ...)."""
        return dict(self.state.get("info") or {})


def load_config(state: dict, snapshot: Path) -> NetworkConfig:
    try:
        return NetworkConfig.from_dict(state["network"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(
            f"{snapshot / STATE_FILE} has no valid network config ({e}); use another snapshot"
        ) from e


def load_snapshot(path: str | os.PathLike, device: str | torch.device = "cpu") -> Snapshot:
    """Load G_ema of a snapshot (or of a run's newest snapshot) for generation and metrics."""
    (snap,) = find_snapshots(path)
    state = read_state(snap)
    config = load_config(state, snap)
    G_ema = Generator(config)
    load_module(G_ema, "G_ema", load_tensors(snap / MODEL_FILE), snap / MODEL_FILE)
    stage = state.get("stage", {})
    G_ema.set_stage(int(stage.get("resolution", config.resolution)), float(stage.get("alpha", 1.0)))
    G_ema.to(device).eval().requires_grad_(False)
    return Snapshot(path=snap, state=state, config=config, G_ema=G_ema)


def load_discriminator(snapshot: Snapshot, device: str | torch.device = "cpu"):
    """The snapshot's D (eval mode, at G_ema's stage, no gradients), or None when it has none
    (inference snapshots of imported generators). Read from the same model.safetensors."""
    from safetensors import safe_open

    from progan.networks import Discriminator

    path = snapshot.path / MODEL_FILE
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys() if k.startswith("D.")}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable safetensors file ({e}); use another snapshot") from e
    if not tensors:
        return None
    D = Discriminator(snapshot.config)
    load_module(D, "D", tensors, path)
    G = snapshot.G_ema
    D.set_stage(G.resolution, float(G.alpha))
    return D.to(device).eval().requires_grad_(False)

"""`progan import`: a pretrained network file -> an ordinary progan snapshot.

Reads official ProGAN pickles (TF and Theano-era states) with a restricted unpickler and GAN zoo
checkpoints with torch.load(weights_only=True); nothing in a file runs. Writes model.safetensors
(G_ema, and G and D where the file has them) and state.json with the network config, so that
`progan generate`, `evaluate` and every other command treat it like a trained run.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from progan import directions as dirs
from progan.checkpoint import save_inference_snapshot
from progan.errors import UserError
from progan.networks import Discriminator, Generator, NetworkConfig, count_parameters
from progan.pretrained import ganzoo, known, official
from progan.pretrained.unpickler import StateStub, load_pickle

# torch.save's legacy (pre-zip) format starts with this pickled magic number.
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@dataclass
class Imported:
    """A pretrained network converted to progan modules, and what is known about it."""

    origin: str  # "official-tf", "official-theano" or "ganzoo"
    config: NetworkConfig
    G_ema: Generator
    G: Generator | None = None
    D: Discriminator | None = None
    stage: tuple[int, float] = (0, 1.0)
    source: str = ""
    sha256: str = ""
    known: known.KnownFile | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def origin_text(self) -> str:
        return {
            "official-tf": "official ProGAN network, TF format (tkarras/progressive_growing_of_gans)",
            "official-theano": "official ProGAN network, Theano-era (tkarras/progressive_growing_of_gans)",
            "ganzoo": "pytorch_GAN_zoo PGAN checkpoint (facebookresearch/pytorch_GAN_zoo)",
        }[self.origin]

    def info(self) -> dict:
        return {
            "imported_from": Path(self.source).name,
            "origin": self.origin,
            "sha256": self.sha256,
            "known_file": self.known.name if self.known else None,
            "dataset": self.known.dataset if self.known else None,
            "licence": self.known.licence if self.known else None,
            "latents": "official" if self.origin.startswith("official") else "progan",
        }

    def summary(self) -> list[str]:
        c = self.config
        labels = f"{c.label_size} labels" if c.label_size else "unconditional"
        lines = [
            f"file:       {self.source} (SHA-256 {self.sha256})",
            f"origin:     {self.origin_text}",
            f"dataset:    {self.known.dataset if self.known else 'unknown (not a published file)'}",
            f"network:    {c.resolution}x{c.resolution}, {c.channels} channels, {labels}, "
            f"latent {c.latent_size}",
            f"parameters: G_ema {count_parameters(self.G_ema):,}"
            + (f", G {count_parameters(self.G):,}" if self.G is not None else ", no G")
            + (f", D {count_parameters(self.D):,}" if self.D is not None else ", no D"),
        ]
        if self.stage[0] != c.resolution or self.stage[1] != 1.0:
            lines.append(
                f"stage:      {self.stage[0]}x{self.stage[0]}, alpha {self.stage[1]:g} (saved mid-training)"
            )
        if self.known:
            lines.append(f"known file: {self.known.name} ({self.known.licence})")
        return lines


def sha256_of(path: Path, data: bytes | None = None) -> str:
    if data is not None:
        return hashlib.sha256(data).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_safetensors(head: bytes) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 0 < n < 100_000_000 and head[8:9] == b"{"


def empty(cls: type, config: NetworkConfig) -> torch.nn.Module:
    """A network with uninitialized weights (all of them are loaded next): skips random init."""
    with torch.device("meta"):
        module = cls(config)
    module = module.to_empty(device="cpu")
    module.set_stage(config.resolution, 1.0)  # fills the (uninitialized) alpha buffer
    return module


def read_file(path: str | os.PathLike) -> Imported:
    """Convert a pretrained network file to progan modules (nothing from the file runs)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist or is not a file; pass an official .pkl or a GAN zoo .pth")
    with open(path, "rb") as f:
        head = f.read(16)
    if _is_safetensors(head):
        raise UserError(
            f"{path} is a safetensors file, not a ProGAN network: expected an official ProGAN .pkl or a "
            "GAN zoo PGAN .pth (a progan snapshot needs no import: pass its folder to generate)"
        )
    data = None
    if head.startswith(b"PK\x03\x04"):
        imported = _from_ganzoo(path)
    elif head[:1] in (b"\x80", b"(", b"c", b"]", b"}"):
        data = path.read_bytes()
        obj = load_pickle(data, str(path))
        if obj == TORCH_LEGACY_MAGIC:  # a torch.save file of torch < 1.6
            imported = _from_ganzoo(path)
        else:
            imported = _from_official(obj, path)
    else:
        raise UserError(
            f"{path} is neither a pickle nor a torch checkpoint; expected an official ProGAN .pkl or a "
            "GAN zoo PGAN .pth"
        )
    imported.source = str(path)
    imported.sha256 = sha256_of(path, data)
    imported.known = known.lookup(path.name)
    c = imported.config
    origin = "official" if imported.origin.startswith("official") else "ganzoo"
    if imported.known:
        problems = known.check(
            imported.known, origin, c.resolution, c.channels, c.label_size, imported.sha256
        )
        if problems:
            imported.warnings.append(
                f"named like the published {imported.known.name}, but " + "; ".join(problems)
            )
            imported.known = None
    else:
        imported.warnings.append(
            f"{path.name} is not one of the published files (see the README's table); imported it by its "
            "structure, which is complete"
        )
    return imported


def _from_official(obj: object, path: Path) -> Imported:
    stubs = list(obj) if isinstance(obj, (tuple, list)) else [obj]
    if not stubs or not all(isinstance(s, StateStub) for s in stubs) or len(stubs) > 3:
        found = (
            type(obj).__name__
            if not isinstance(obj, (tuple, list))
            else f"a {len(stubs)}-item {type(obj).__name__}"
        )
        raise UserError(
            f"{path} is a pickle of {found}, not an official ProGAN network: expected a (G, D, Gs) tuple of "
            "tfutil.Network or network.Network"
        )
    nets = [official.read_network(s, str(path)) for s in stubs]
    # The official files hold (G, D, Gs); a pickle of Gs alone is also accepted.
    gens = [n for n in nets if n is not None and n.func == "G_paper"]
    discs = [n for n in nets if n is not None and n.func == "D_paper"]
    if not gens:
        raise UserError(f"{path}: no G_paper network in the file; nothing to import")
    Gs_net = gens[-1]
    G_net = gens[0] if len(gens) > 1 else None
    D_net = discs[0] if discs else None
    config = official.config_from(Gs_net, D_net, str(path))
    G_ema = empty(Generator, config)
    G_ema.load_state_dict(official.generator_state(Gs_net, G_ema, str(path)))
    imp = Imported(origin=f"official-{Gs_net.era}", config=config, G_ema=G_ema)
    if G_net is not None:
        imp.G = empty(Generator, config)
        imp.G.load_state_dict(official.generator_state(G_net, imp.G, str(path)))
    if D_net is not None:
        imp.D = empty(Discriminator, config)
        imp.D.load_state_dict(official.discriminator_state(D_net, imp.D, str(path)))
    imp.stage = official.stage_of(Gs_net, config.resolution)
    return imp


def _from_ganzoo(path: Path) -> Imported:
    ckpt = ganzoo.load_checkpoint(path)
    config, alpha, cfg = ganzoo.network_config(ckpt, path)
    equalized = bool(cfg.get("equalizedlR", True))
    avg = ckpt.get("avgG") or ckpt["netG"]
    G_ema = empty(Generator, config)
    G_ema.load_state_dict(ganzoo.generator_state(avg, G_ema, equalized, path))
    imp = Imported(origin="ganzoo", config=config, G_ema=G_ema, stage=(config.resolution, alpha))
    if "avgG" in ckpt:
        imp.G = empty(Generator, config)
        imp.G.load_state_dict(ganzoo.generator_state(ckpt["netG"], imp.G, equalized, path))
    else:
        imp.warnings.append("the checkpoint has no avgG (EMA generator); G_ema is its netG")
    if ckpt.get("netD"):
        imp.D = empty(Discriminator, config)
        imp.D.load_state_dict(ganzoo.discriminator_state(ckpt["netD"], imp.D, equalized, path))
    return imp


def write_snapshot(imp: Imported, dest: str | os.PathLike) -> Path:
    """An inference snapshot at `dest` through checkpoint's writer (atomic)."""
    return save_inference_snapshot(
        dest, imp.config, imp.G_ema, imp.G, imp.D, info=imp.info(), stage=imp.stage
    )


def read_direction(path: str | os.PathLike, latent_size: int) -> np.ndarray:
    """A latent direction from a .npy file (InterFaceGAN boundaries are (1, latent_size))."""
    path = Path(path)
    try:
        v = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise UserError(
            f"{path} is not a NumPy .npy array ({e}); pass a boundary such as boundary_smile.npy"
        ) from None
    if v.dtype.kind not in "fiu" or v.size != latent_size:
        raise UserError(
            f"{path} holds a {v.dtype} array of shape {v.shape}; a direction needs {latent_size} numbers "
            f"(InterFaceGAN's (1, {latent_size}))"
        )
    return v.astype(np.float32).reshape(-1)


def parse_direction_args(items: list[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, sep, file = item.partition("=")
        if not sep or not file:
            raise UserError(f"--direction '{item}' is not NAME=FILE.npy; write e.g. smile=boundary_smile.npy")
        out.append((dirs.check_name(name.strip()), file.strip()))
    return out


def import_file(
    source: str | os.PathLike, dest: str | os.PathLike, direction_files: list[tuple[str, str]] = ()
) -> tuple[Imported, Path]:
    """Import `source` into the snapshot `dest`, with the named direction files stored in it."""
    imp = read_file(source)
    vectors = [(n, f, read_direction(f, imp.config.latent_size)) for n, f in direction_files]
    out = write_snapshot(imp, dest)
    for name, file, v in vectors:
        dirs.add_direction(out, name, torch.from_numpy(v), imp.config.latent_size, source=Path(file).name)
    return imp, out

"""facebookresearch/pytorch_GAN_zoo PGAN checkpoints: `{config, netG, netD, avgG}` (torch.save).

Its equalized layers multiply the layer's output, bias included, by He's constant
sqrt(2 / fan_in): gain sqrt(2) on every layer, the first dense layer and ToRGB included (the paper
uses sqrt(2)/4 and 1 there). Its blending factor alpha runs the other way: 0 is the new scale
alone. Each scale has its own depth (config.depthOtherScales). All of this maps onto progan's
networks exactly: the effective weight W * c becomes progan's W' * s (s its own run-time scale),
the effective bias b * c its bias, the depths NetworkConfig.fmaps, and alpha 1 - alpha.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from pathlib import Path

import torch

from progan.errors import UserError
from progan.networks import Discriminator, Generator, NetworkConfig
from progan.pretrained.unpickler import GanZooConfig

CONFIG_CLASS = "models.utils.config.BaseConfig"


def load_checkpoint(path: Path) -> dict:
    """torch.load with weights_only=True; the only class allowed besides tensors is the zoo's
    config, as an inert stub."""
    try:
        with torch.serialization.safe_globals([(GanZooConfig, CONFIG_CLASS)]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        for line in str(e).splitlines():
            if "Unsupported global" in line or "GLOBAL" in line:
                first = line.strip()
                break
        raise UserError(
            f"{path}: refused to load ({first[:200]}); only GAN zoo PGAN checkpoints and official ProGAN "
            "pickles are read, and nothing in a file is run"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise UserError(
            f"{path} is damaged or truncated ({str(e).splitlines()[0][:200]}); download it again"
        ) from None
    if not isinstance(obj, dict) or "netG" not in obj or "config" not in obj:
        keys = sorted(obj)[:6] if isinstance(obj, dict) else type(obj).__name__
        raise UserError(
            f"{path}: a torch file with {keys}, not a GAN zoo PGAN checkpoint ({{config, netG, netD, avgG}})"
        )
    return obj


def _config_dict(ckpt: dict, path: Path) -> dict:
    cfg = ckpt["config"]
    if isinstance(cfg, GanZooConfig):
        return dict(cfg.state)
    if isinstance(cfg, dict):
        return dict(cfg)
    raise UserError(f"{path}: its 'config' is a {type(cfg).__name__}, not the GAN zoo's config")


def network_config(ckpt: dict, path: Path) -> tuple[NetworkConfig, float, dict]:
    """(progan config, progan alpha, the zoo config) of a checkpoint."""
    cfg = _config_dict(ckpt, path)
    netG = ckpt["netG"]
    try:
        d0 = int(cfg.get("depthScale0", 512))
        depths = [int(d) for d in cfg.get("depthOtherScales", [])]
        latent = int(netG["formatLayer.module.weight"].shape[1])
        channels = int(netG["toRGBLayers.0.module.weight"].shape[0])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{path}: not a GAN zoo PGAN checkpoint (no {e} in netG/config)") from None
    if float(cfg.get("leakyReluLeak", 0.2)) != 0.2:
        raise UserError(f"{path}: leakyReluLeak={cfg.get('leakyReluLeak')}; progan's networks use 0.2")
    labels = int(cfg.get("categoryVectorDim", 0) or 0)
    norm = bool(cfg.get("perChannelNormalization", True))
    loss = str(cfg.get("lossCriterion", "WGANGP"))
    try:
        config = NetworkConfig(
            resolution=4 * 2 ** len(depths),
            channels=channels,
            latent_size=latent - labels,
            label_size=labels,
            fmaps=[d0, d0, *depths],
            mbstd_group_size=4 if cfg.get("miniBatchStdDev", False) else 0,
            mbstd_mode="ganzoo",
            normalize_latents=norm,
            use_pixelnorm=norm,
            output_activation="tanh" if loss in ("MSE", "DCGAN") else "linear",
            fused_scale=False,  # the zoo's D pools after its LeakyReLUs (the paper's order)
        )
    except ValueError as e:
        raise UserError(f"{path}: progan cannot build this network ({e})") from None
    alpha = 1.0 - float(cfg.get("alpha", 0.0))  # the zoo's alpha weighs the old scale
    return config, alpha, cfg


def _layer(
    state: dict, module: torch.nn.Module, key: str, zoo: dict, zoo_key: str, equalized: bool, path: Path
) -> None:
    try:
        w = zoo[zoo_key + ".module.weight"].float()
        b = zoo[zoo_key + ".module.bias"].float()
    except KeyError:
        raise UserError(f"{path}: no '{zoo_key}.module.weight/bias'; not a GAN zoo PGAN checkpoint") from None
    layer = module.get_submodule(key)
    fan_in = math.prod(w.shape[1:])
    c = math.sqrt(2.0 / fan_in) if equalized else 1.0
    ratio = c / layer.scale
    w = w if abs(ratio - 1.0) < 1e-12 else w * ratio
    expected = module.state_dict()
    for name, value in ((key + ".weight", w), (key + ".bias", b * c)):
        if value.shape != expected[name].shape:
            raise UserError(
                f"{path}: '{zoo_key}' has shape {tuple(value.shape)}, "
                f"its config needs {tuple(expected[name].shape)}"
            )
        state[name] = value.contiguous()


def generator_state(zoo: dict, G: Generator, equalized: bool, path: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    _layer(state, G, "dense", zoo, "formatLayer", equalized, path)
    _layer(state, G, "conv4", zoo, "groupScale0.0", equalized, path)
    _layer(state, G, "torgb.4", zoo, "toRGBLayers.0", equalized, path)
    for i in range(int(math.log2(G.config.resolution)) - 2):
        res = 2 ** (i + 3)
        _layer(state, G, f"blocks.{res}.conv0", zoo, f"scaleLayers.{i}.0", equalized, path)
        _layer(state, G, f"blocks.{res}.conv1", zoo, f"scaleLayers.{i}.1", equalized, path)
        _layer(state, G, f"torgb.{res}", zoo, f"toRGBLayers.{i + 1}", equalized, path)
    return state


def discriminator_state(zoo: dict, D: Discriminator, equalized: bool, path: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for i in range(int(math.log2(D.config.resolution)) - 1):
        _layer(state, D, f"fromrgb.{2 ** (i + 2)}", zoo, f"fromRGBLayers.{i}", equalized, path)
    for i in range(int(math.log2(D.config.resolution)) - 2):
        res = 2 ** (i + 3)
        _layer(state, D, f"blocks.{res}.conv0", zoo, f"scaleLayers.{i}.0", equalized, path)
        _layer(state, D, f"blocks.{res}.conv1", zoo, f"scaleLayers.{i}.1", equalized, path)
    _layer(state, D, "conv4", zoo, "groupScaleZero.0", equalized, path)
    _layer(state, D, "dense0", zoo, "groupScaleZero.1", equalized, path)
    _layer(state, D, "dense1", zoo, "decisionLayer", equalized, path)
    return state

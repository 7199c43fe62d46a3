"""progan: Progressive Growing of GANs (Karras et al., ICLR 2018) in modern PyTorch.

`progan.load(path)` returns a `progan.Model` (see progan/model.py and the README's "Python");
importing progan itself loads nothing else (torch is imported on the first `load`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    import os

    import torch

    from progan.model import Model


def load(path: str | os.PathLike, device: str | torch.device = "auto") -> Model:
    """A `progan.Model` from a run folder (its newest snapshot), a snapshot folder, or a
    pretrained network file (official .pkl, GAN zoo .pth); see `progan.model.load`."""
    from progan.model import load as _load

    return _load(path, device)


def __getattr__(name: str):
    if name == "Model":
        from progan.model import Model

        return Model
    raise AttributeError(f"module 'progan' has no attribute {name!r}")

"""Learned attributes: a small classifier trained on a labelled store (`progan attributes fit`).

CelebA's 40 attributes (from `prepare --celeba`), or any labels a store holds, become words for
`progan describe --attributes FILE` ("smiling", "young", "male", "bangs", "wavy hair", ...).

The classifier is a small strided CNN on the store's level at `resolution` (64x64 at most: the
attributes it learns are visible there, and it trains in minutes on a CPU). Multi-hot labels
train one sigmoid per attribute; one-hot labels (classes) a softmax. The file is safetensors:
the weights, and in its metadata the label names, the kind, the input size and the held-out
accuracy, so nothing but tensors and JSON is ever read back.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from progan.errors import UserError

ATTRIBUTES_FORMAT = "progan-attributes"
Images = TypeVar("Images", torch.Tensor, np.ndarray)
MAX_RESOLUTION = 64


class AttributeNet(nn.Module):
    """Strided 3x3 convolutions down to 4x4, global average pooling, one linear layer."""

    def __init__(self, channels: int, resolution: int, outputs: int, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, r = channels, resolution
        while r > 4:
            out = min(width * (resolution // r), 8 * width)
            layers += [nn.Conv2d(c, out, 3, stride=2, padding=1), nn.BatchNorm2d(out), nn.LeakyReLU(0.2)]
            c, r = out, r // 2
        layers += [nn.Conv2d(c, c, 3, padding=1), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


def _prepare(images: torch.Tensor | np.ndarray, channels: int, resolution: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float in [-1, 1] at the classifier's size and channel count."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    x = x.float() / 127.5 - 1.0
    if x.shape[1] != channels:
        x = x.mean(1, keepdim=True) if channels == 1 else x.expand(-1, channels, -1, -1)
    if x.shape[-1] != resolution:
        # 'area' is the store's own 2x2 box average at power-of-two factors.
        x = F.interpolate(
            x, size=(resolution, resolution), mode="area" if x.shape[-1] > resolution else "nearest"
        )
    return x


def soften(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W), each blurred by a Gaussian of its own `sigma` (N,) in pixels (0 leaves
    an image as it is); reflected borders, separable taps out to 3 sigma."""
    n, c, h, w = x.shape
    radius = min(max(1, math.ceil(3.0 * float(sigma.max()))), h - 1, w - 1)  # reflect needs < size
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    s = sigma.to(x).clamp_min(1e-3)[:, None]  # 1e-3 px: every tap but the centre underflows to 0
    taps = torch.exp(-(t * t) / (2.0 * s * s))
    k = (taps / taps.sum(1, keepdim=True)).repeat_interleave(c, 0)  # one row per image channel
    y = F.pad(x.reshape(1, n * c, h, w), (radius,) * 4, mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, -1, 1), groups=n * c)
    return y.reshape(n, c, h, w)


@dataclass
class AttributeModel:
    names: list[str]
    kind: str  # "multilabel" | "class"
    resolution: int
    channels: int
    net: AttributeNet
    accuracy: dict[str, float]
    blur: float = 0.0  # the largest training blur sigma (`fit --blur`), 0: trained on the images as stored
    accuracy_blurred: dict[str, float] | None = None  # held-out accuracy with every image blurred by `blur`

    @torch.no_grad()
    def predict(self, images: torch.Tensor | np.ndarray, batch: int = 256) -> np.ndarray:
        """Probabilities (N, len(names)) for uint8 (N, C, H, W) images."""
        self.net.eval()
        out = []
        for i in range(0, len(images), batch):
            logits = self.net(_prepare(images[i : i + batch], self.channels, self.resolution))
            out.append(torch.softmax(logits, 1) if self.kind == "class" else torch.sigmoid(logits))
        if not out:
            return np.zeros((0, len(self.names)), np.float32)
        return torch.cat(out).numpy()


def mirrored_halves(images: Images) -> tuple[Images, Images]:
    """Each uint8 (N, C, H, W) face as its left half beside that half mirrored, and as its right
    half likewise: one side of the face shown twice, so that a classifier reads one eye at a time.

    The fold is the middle column, where faces aligned the CelebA-HQ way have their eyes'
    midpoint (the portraits' base face: x = 31.9 of 64). A generator can paint the two eyes of
    one face in two colours, which no training face has; a whole-face reading of such a face is
    then a coin toss (benchmarks/README.md, "The two eyes, read one at a time")."""
    w = images.shape[-1]
    if w % 2:
        raise ValueError(f"mirrored_halves takes an even width, not {w}")
    if isinstance(images, torch.Tensor):
        left, right, mirror = images.clone(), images.clone(), lambda a: a.flip(-1)
    else:
        left, right, mirror = images.copy(), images.copy(), lambda a: a[..., ::-1]
    left[..., w // 2 :] = mirror(images[..., : w // 2])
    right[..., : w // 2] = mirror(images[..., w // 2 :])
    return left, right


def _accuracy(model: AttributeModel, images: np.ndarray, labels: np.ndarray, blur: float = 0.0) -> dict:
    """Held-out accuracy per attribute ("all" for classes), of images blurred by sigma `blur`."""
    if blur > 0:
        x = _prepare(images, model.channels, model.resolution)
        x = soften(x, torch.full((len(x),), blur))
        images = ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    p = model.predict(images)
    if model.kind == "class":
        return {"all": float((p.argmax(1) == labels.argmax(1)).mean())}
    return {n: float(((p[:, k] > 0.5) == (labels[:, k] > 0.5)).mean()) for k, n in enumerate(model.names)}


def save_attributes(path: str | os.PathLike, model: AttributeModel, width: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": ATTRIBUTES_FORMAT,
        "names": json.dumps(model.names),
        "kind": model.kind,
        "resolution": str(model.resolution),
        "channels": str(model.channels),
        "width": str(width),
        "accuracy": json.dumps(model.accuracy),
        "blur": str(model.blur),
        "accuracy_blurred": json.dumps(model.accuracy_blurred),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def load_attributes(path: str | os.PathLike) -> AttributeModel:
    """An attribute classifier saved by `progan attributes fit`; UserError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; make one with 'progan attributes fit STORE --out {path}'")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("format") != ATTRIBUTES_FORMAT:
            raise ValueError("no progan-attributes marker")
        names = list(json.loads(meta["names"]))
        res, ch, width = int(meta["resolution"]), int(meta["channels"]), int(meta["width"])
        net = AttributeNet(ch, res, len(names), width)
        net.load_state_dict(tensors)
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as e:
        raise UserError(
            f"{path} is not a progan attribute classifier ({str(e).splitlines()[0]}); "
            "make one with 'progan attributes fit STORE --out FILE'"
        ) from e
    net.eval()
    return AttributeModel(
        names, meta["kind"], res, ch, net, json.loads(meta.get("accuracy", "{}")),
        float(meta.get("blur", 0.0)), json.loads(meta.get("accuracy_blurred", "null")),
    )  # fmt: skip


def fit_attributes(
    store_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    epochs: int = 5,
    batch: int = 64,
    lr: float = 2e-3,
    resolution: int | None = None,
    width: int = 32,
    holdout: float = 0.1,
    seed: int = 0,
    blur: float = 0.0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> AttributeModel:
    """Train the classifier on a labelled store, report held-out accuracy, save it to `out`.

    `blur` > 0 trains on images blurred by a Gaussian of a sigma drawn uniformly in [0, blur]
    pixels (at the classifier's input size), so that a judge of a generator's samples reads their
    colours and shapes rather than their sharpness: trained on sharp 64x64 portraits alone, the
    oracle read brown irises blurred by sigma 0.6 as green or hazel in 36% of faces (1% at 0.4);
    trained with `blur=1`, in 0-1% up to sigma 1 (benchmarks/oracle_blur.py)."""
    if not (0.0 <= blur <= 4.0):
        raise UserError(f"--blur {blur}: give a Gaussian sigma in pixels from 0 (off) to 4, e.g. 1")
    from tqdm import tqdm

    from progan.data.store import open_store

    store = open_store(store_path)
    labels = store.labels
    if labels is None:
        raise UserError(
            f"store {store.path} has no labels; prepare it with --celeba or --labels FILE|from-folders"
        )
    labels = np.asarray(labels, dtype=np.float32)
    res = resolution or min(MAX_RESOLUTION, store.resolution)
    images = store.images(res)
    one_hot = bool(np.all((labels == 0) | (labels == 1)) and np.all(labels.sum(1) == 1))
    kind = "class" if one_hot else "multilabel"
    names = store.label_names
    rng = np.random.default_rng(seed)
    order = rng.permutation(store.count)
    n_val = int(round(store.count * holdout)) if store.count >= 10 else 0
    val, train = np.sort(order[:n_val]), order[n_val:]
    torch.manual_seed(seed)
    device = torch.device(device)
    net = AttributeNet(store.channels, res, len(names), width).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * max(1, math.ceil(len(train) / batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    bar = tqdm(total=steps, unit="step", desc="attributes", disable=not progress, file=sys.stderr)
    y_all = torch.from_numpy(labels.copy())
    for _ in range(epochs):
        net.train()
        perm = rng.permutation(train)
        for i in range(0, len(perm), batch):
            idx = np.sort(perm[i : i + batch])  # sorted reads of the memory map
            x = _prepare(torch.from_numpy(np.asarray(images[idx])), store.channels, res).to(device)
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5).to(device)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)  # faces are left-right symmetric
            if blur > 0:
                x = soften(x, torch.from_numpy(rng.uniform(0.0, blur, len(idx))).to(device))
            y = y_all[idx].to(device)
            logits = net(x)
            if kind == "class":
                loss = F.cross_entropy(logits, y.argmax(1))
            else:
                loss = F.binary_cross_entropy_with_logits(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model = AttributeModel(names, kind, res, store.channels, net.cpu().eval(), {}, blur)
    if len(val):
        held_out = np.asarray(images[val])  # one read of the memory map for both accuracies
        model.accuracy = _accuracy(model, held_out, labels[val])
        if blur > 0:
            model.accuracy_blurred = _accuracy(model, held_out, labels[val], blur)
    save_attributes(out, model, width)
    return model

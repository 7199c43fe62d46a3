"""Stand-ins for the describe tests: measurements with the interface of progan/faces/measure.py, a
colour 'measurer' whose truth is known, and tiny generators and snapshots."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from progan.checkpoint import save_inference_snapshot
from progan.networks import Generator, NetworkConfig


@dataclass(frozen=True)
class Trait:
    value: str | float
    confidence: float
    scores: dict = field(default_factory=dict)


@dataclass
class Measurement:
    face_found: bool
    traits: dict
    landmarks: np.ndarray | None = None
    reason: str = ""


def category(scores: dict[str, float], confidence: float = 1.0) -> Trait:
    return Trait(max(scores, key=scores.get), confidence, dict(scores))


def colour_measure(images: torch.Tensor) -> list[Measurement]:
    """A measurer whose truth is the pixels: hair 'red' = R / (R + G) of the top half, eyes 'blue'
    = B / (B + R) of the bottom half, smile = mean brightness; an image with a black top-left
    pixel has 'no face'."""
    x = images.float() / 255.0
    out = []
    for img in x:
        if float(img[:, 0, 0].sum()) == 0.0:
            out.append(Measurement(False, {}, reason="no face found"))
            continue
        h = img.shape[1] // 2
        top, bottom = img[:, :h].mean((1, 2)), img[:, h:].mean((1, 2))
        red = float(top[0] / (top[0] + top[1] + 1e-6))  # red against green in the top half
        blue = float(bottom[2] / (bottom[2] + bottom[0] + 1e-6))  # blue against red at the bottom
        out.append(
            Measurement(
                True,
                {
                    "hair_colour": category({"red": red, "black": 1 - red}),
                    "eye_colour": category({"blue": blue, "brown": 1 - blue}),
                    "smile": Trait(float(img.mean()), 1.0),
                },
            )
        )
    return out


class ColourGenerator(nn.Module):
    """latent -> image in [-1, 1]: z[0] drives the red of the top half, z[1] the blue of the
    bottom half, z[2] the brightness; the rest is ignored. The Generator interface (G(z, labels),
    latent_size, label_size, resolution) without any training."""

    def __init__(self, resolution: int = 64, latent_size: int = 8, label_size: int = 0) -> None:
        super().__init__()
        self.resolution, self.latent_size, self.label_size = resolution, latent_size, label_size
        self.config = SimpleNamespace(
            resolution=resolution, latent_size=latent_size, label_size=label_size, channels=3
        )
        self.seen_labels: list[torch.Tensor] = []

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is not None:
            self.seen_labels.append(labels.cpu())
        n, r = len(z), self.resolution
        s = torch.sigmoid(z[:, :3])
        img = torch.full((n, 3, r, r), 0.3)
        img[:, 0, : r // 2] = s[:, 0, None, None]
        img[:, 1, : r // 2] = 0.3
        img[:, 2, r // 2 :] = s[:, 1, None, None]
        img = img * (0.5 + s[:, 2, None, None, None])
        return img.clamp(0, 1) * 2 - 1


def tiny_snapshot(dest: Path, resolution: int, label_names: list[str] | None = None, seed: int = 0) -> Path:
    """A random G_ema in the real snapshot format (faces need not be faces for these tests)."""
    torch.manual_seed(seed)
    config = NetworkConfig(
        resolution=resolution, latent_size=16, fmap_base=32, fmap_max=8, label_size=len(label_names or [])
    )
    return save_inference_snapshot(dest, config, Generator(config).eval(), label_names=label_names or [])


SHAPE_LABELS = ["Red_Shape", "Large_Shape"]


def shape_images(n: int, resolution: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Discs on a grey noisy ground whose colour (red or blue) and size (large or small) are known:
    uint8 (n, 3, R, R) and multi-hot labels (n, 2) [Red_Shape, Large_Shape]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:resolution, 0:resolution] + 0.5
    images = np.empty((n, 3, resolution, resolution), np.uint8)
    labels = rng.integers(0, 2, (n, 2)).astype(np.float32)
    for i in range(n):
        red, large = labels[i]
        radius = resolution * (0.36 if large else 0.2) * rng.uniform(0.9, 1.1)
        cx, cy = resolution / 2 + rng.uniform(-1, 1, 2) * resolution * 0.08
        disc = (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
        colour = np.array([200, 40, 50] if red else [40, 60, 200]) + rng.normal(0, 12, 3)
        img = rng.normal(128, 10, (resolution, resolution, 3))
        img[disc] = colour
        images[i] = np.clip(img, 0, 255).astype(np.uint8).transpose(2, 0, 1)
    return images, labels


class ShapeGenerator(nn.Module):
    """A small generator (latent -> image in [-1, 1]) with the Generator interface: two linear
    layers, small enough to train in about a second on one CPU core."""

    def __init__(self, latent_size: int = 8, resolution: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.latent_size, self.label_size, self.resolution = latent_size, 0, resolution
        self.config = SimpleNamespace(
            resolution=resolution, latent_size=latent_size, label_size=0, channels=3
        )
        self.net = nn.Sequential(
            nn.Linear(latent_size, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 3 * resolution**2), nn.Tanh()
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        z = z * z.square().mean(1, keepdim=True).add(1e-8).rsqrt()  # on the sphere, as ProGAN's input
        return self.net(z).view(-1, 3, self.resolution, self.resolution)


def train_shape_generator(images: np.ndarray, steps: int = 300, latent_size: int = 8, seed: int = 0):
    """Fit a ShapeGenerator to a store's images by Generative Latent Optimization (Bojanowski et
    al., 2018): every image gets a latent, and the generator and the latents are trained together
    to reconstruct the images, so nearby latents make similar shapes (seconds on a CPU; a GAN
    would need minutes)."""
    torch.manual_seed(seed)
    G = ShapeGenerator(latent_size, images.shape[-1])
    x = torch.from_numpy(images).float() / 127.5 - 1
    z = nn.Parameter(torch.randn(len(x), latent_size))
    opt = torch.optim.Adam([*G.parameters(), z], lr=3e-3)
    for _ in range(steps):
        loss = (G(z) - x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return G.eval().requires_grad_(False)


def shape_measure(images: torch.Tensor) -> list[Measurement]:
    """The truth of a shape image: 'shape' red/blue from the colour of the pixels that stand out
    from the grey ground, 'size' = the share of those pixels (scaled so a large disc is ~1)."""
    x = images.float()
    out = []
    for img in x:
        mask = (img - 128).abs().sum(0) > 90
        size = min(1.0, float(mask.float().mean()) / 0.4)
        if not mask.any():
            out.append(Measurement(True, {"size": Trait(0.0, 1.0)}))
            continue
        r, b = float(img[0][mask].mean()), float(img[2][mask].mean())
        red = min(1.0, max(0.0, 0.5 + (r - b) / 320))
        out.append(
            Measurement(True, {"shape": category({"red": red, "blue": 1 - red}), "size": Trait(size, 1.0)})
        )
    return out


def snapshot_with_classifier(
    run_dir: Path,
    classifier_path: Path,
    names: list[str],
    resolution: int,
    label_names: list[str] | None = None,
) -> tuple[Path, Path]:
    """A tiny snapshot (tests/helpers.tiny_run) with a random direction for each of `names` but the
    last, and a random-weight `progan attributes fit` file reading all of `names` at `resolution`:
    a model and the classifier of its directions, for keep-with. (snapshot, classifier file)."""
    from helpers import tiny_run

    from progan.directions import add_direction
    from progan.faces.attributes import AttributeModel, AttributeNet, save_attributes

    snap = tiny_run(run_dir, resolution=resolution, label_names=label_names)
    for i, name in enumerate(names[:-1]):
        add_direction(snap, name, torch.randn(16, generator=torch.Generator().manual_seed(i + 1)), 16)
    torch.manual_seed(3)
    net = AttributeNet(3, resolution, len(names), width=8)
    model = AttributeModel(list(names), "multilabel", resolution, 3, net, {})
    return snap, save_attributes(classifier_path, model, width=8)

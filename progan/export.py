"""ONNX export of a snapshot's G_ema, for game engines and other runtimes, checked in onnxruntime.

The exported graph is G_ema at one resolution with no fade-in branch (a snapshot taken while a
resolution fades in is refused: export a stable one, or a lower `--resolution`):

- inputs ``latent`` float32 ``[N, latent_size]`` (standard normal draws; the graph normalizes
  them itself) and, for a conditional model, ``labels`` float32 ``[N, label_size]`` (one-hot or
  multi-hot); N is dynamic;
- output ``image`` ``[N, C, H, W]``, RGB (or one grey channel), float32 clamped to [-1, 1] (G's
  linear output overshoots: 3.1 was seen), or with `uint8=True` ready pixels
  ``round((x + 1) * 127.5)`` clamped to [0, 255], as `progan generate` writes them.

The TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`) is used: it writes every
opset from 11 up natively (game engines often want an older one; the dynamo exporter only writes
18+ and converts down), needs no onnxscript, and takes seconds instead of tens of seconds here.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from progan.errors import UserError
from progan.images import to_uint8
from progan.networks import Generator
from progan.sampling import latents_for_seeds

DEFAULT_OPSET = 17
OPSETS = range(11, 21)
# Largest |onnxruntime - PyTorch| accepted: float output in [-1, 1] (0.13 of one uint8 level), and
# one level for uint8 output (a value on a rounding boundary may round either way).
TOLERANCE_FLOAT = 1e-3
TOLERANCE_UINT8 = 1


class ExportedGenerator(torch.nn.Module):
    """G at a fixed stage, with plain tensor inputs and outputs (what the ONNX graph computes)."""

    def __init__(self, G: Generator, uint8: bool = False) -> None:
        super().__init__()
        self.G = G
        self.uint8 = uint8

    def forward(self, latent: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        image = self.G(latent, labels)
        # The same pixels either way: to_uint8 clamps after rounding, the float range is promised.
        return to_uint8(image) if self.uint8 else image.clamp(-1.0, 1.0)


@dataclass
class ExportResult:
    path: Path
    resolution: int
    inputs: list[str]
    max_difference: float | None
    tolerance: float


def export_stage(G: Generator, resolution: int | None) -> int:
    """The resolution to export: the snapshot's own stage, or a lower, stable one."""
    current = G.resolution
    if resolution is None:
        if G.fading:
            raise UserError(
                f"this snapshot is in the middle of fading in {current}x{current} (alpha "
                f"{float(G.alpha):.2f}); export a snapshot from a stable phase, or pass "
                f"--resolution {current // 2}"
            )
        return current
    if resolution > current:
        raise UserError(
            f"--resolution {resolution} is above the snapshot's stage {current}x{current}, "
            "whose higher layers are untrained; use a later snapshot"
        )
    if resolution < 4 or resolution & (resolution - 1):
        raise UserError(f"--resolution {resolution} is not a power of two from 4 to {current}")
    return resolution


def check_labels(G: Generator, n: int) -> torch.Tensor | None:
    """One-hot labels cycling through the classes, to check a conditional model on every class."""
    if not G.label_size:
        return None
    return torch.eye(G.label_size)[torch.arange(n) % G.label_size]


def export_onnx(
    G: Generator,
    path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    uint8: bool = False,
    resolution: int | None = None,
    check: bool = True,
    tolerance: float | None = None,
    check_count: int = 5,
) -> ExportResult:
    """Write G as ONNX (atomically, and only if onnxruntime agrees with PyTorch within `tolerance`)."""
    if opset not in OPSETS:
        raise UserError(f"--opset {opset} is not supported; use {OPSETS[0]} to {OPSETS[-1]} (default 17)")
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise UserError(f"--out {path}: end the file name with .onnx")
    if not path.parent.exists():
        raise UserError(f"--out {path}: folder {path.parent} does not exist; create it first")
    G = G.cpu().eval()
    res = export_stage(G, resolution)
    G.set_stage(res, 1.0)  # no fade branch: the Python-side flag drops it from the traced graph
    model = ExportedGenerator(G, uint8).eval()
    conditional = bool(G.label_size)
    inputs = ["latent", "labels"] if conditional else ["latent"]
    example = (torch.randn(2, G.latent_size),) + ((check_labels(G, 2),) if conditional else ())
    tmp = path.with_name(f".{path.stem}.tmp.onnx")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy-exporter deprecation notice; see the docstring
            torch.onnx.export(
                model, example, str(tmp), dynamo=False, opset_version=opset, input_names=inputs,
                output_names=["image"], dynamic_axes={name: {0: "batch"} for name in inputs + ["image"]},
            )  # fmt: skip
        tol = tolerance if tolerance is not None else (TOLERANCE_UINT8 if uint8 else TOLERANCE_FLOAT)
        diff = None
        if check:
            diff = compare_with_onnxruntime(model, tmp, check_count)
            if not diff <= tol:
                raise ExportMismatch(
                    f"onnxruntime differs from PyTorch by up to {diff:.3g} (tolerance {tol:g}); "
                    f"{path} was not written"
                )
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return ExportResult(path, res, inputs, diff, tol)


class ExportMismatch(Exception):
    """The written graph does not compute what the PyTorch generator computes."""


def compare_with_onnxruntime(model: ExportedGenerator, onnx_path: Path, n: int = 5) -> float:
    """Largest |onnxruntime - PyTorch| over n seeds' latents (a batch size the export never saw)."""
    import onnxruntime as ort

    G = model.G
    z = latents_for_seeds(range(n), G.latent_size)
    labels = check_labels(G, n)
    feeds = {"latent": z.numpy()}
    if labels is not None:
        feeds["labels"] = labels.numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(["image"], feeds)[0]
    with torch.no_grad():
        want = model(z, labels).numpy()
    if got.shape != want.shape or got.dtype != want.dtype:
        raise ExportMismatch(f"onnxruntime gave {got.dtype} {got.shape}, PyTorch {want.dtype} {want.shape}")
    return float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())

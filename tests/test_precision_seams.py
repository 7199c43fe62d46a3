"""Mixed-dtype seams: what CUDA autocast does differently from CPU autocast, reproduced on the CPU.

CUDA autocast runs some ops in fp32 that CPU autocast leaves in bf16/fp16 (upsample_nearest2d is on
CUDA's fp32 list), so the two branches of a fade reach `torch.lerp` in different dtypes there:
`RuntimeError: expected dtype float for 'end' but got dtype c10::BFloat16` at the first fade-in of
a default run on an H200 (issue 26). Here the branches are forced into different dtypes with
forward hooks, and whole runs go through a fade with upsampling in fp32 as on CUDA.
"""

import pytest
import torch
from helpers import tiny_spec

from progan import device, layers, networks
from progan.device import autocast
from progan.networks import Discriminator, Generator, NetworkConfig
from progan.training import Trainer

CFG = NetworkConfig(resolution=16, latent_size=16, fmap_base=64, fmap_max=16)
LOW_PRECISIONS = ("bf16", "fp16")


def _to_fp32(module, inputs, output):
    return output.float()


def _branches(net, resolution: int, which: str) -> torch.nn.Module:
    """The module whose output starts the fade's old ("low") or new ("new") branch."""
    if isinstance(net, Generator):
        return net.torgb[str(resolution // 2 if which == "low" else resolution)]
    return net.fromrgb[str(resolution // 2)] if which == "low" else net.blocks[str(resolution)]


@pytest.mark.parametrize("which", ["low", "new"])
@pytest.mark.parametrize("precision", LOW_PRECISIONS)
@pytest.mark.parametrize("net_class", [Generator, Discriminator])
def test_fade_takes_branches_in_different_dtypes(net_class, precision, which):
    torch.manual_seed(0)
    net = net_class(CFG)
    net.set_stage(16, 0.3)
    _branches(net, 16, which).register_forward_hook(_to_fp32)
    x = torch.randn(4, 16) if net_class is Generator else torch.randn(4, 3, 16, 16)
    with autocast(torch.device("cpu"), precision):
        out = net(x)
    assert torch.isfinite(out.float()).all()
    # And the blend is the fade's: the same output as with both branches in fp32, to the precision.
    with torch.no_grad():
        ref = net_class(CFG)
        ref.load_state_dict(net.state_dict())
        ref.set_stage(16, 0.3)
        expected = ref(x)
    assert torch.nn.functional.cosine_similarity(out.float().flatten(), expected.flatten(), dim=0) > 0.99


def cuda_like_upsample(x: torch.Tensor) -> torch.Tensor:
    """upsample2x as CUDA autocast runs it: upsample_nearest2d is on its fp32 list."""
    if torch.is_autocast_enabled("cpu"):
        x = x.float()
    return layers.upsample2x(x)


@pytest.mark.parametrize("precision", ["fp32", *LOW_PRECISIONS])
def test_default_run_trains_through_a_fade_in_every_precision(tiny_store, tmp_path, monkeypatch, precision):
    monkeypatch.setattr(device, "FP16_DEVICE_TYPES", ("cuda", "cpu"))
    monkeypatch.setattr(networks, "upsample2x", cuda_like_upsample)
    # 4x4 stable, then the 8x8 fade-in: 20 steps of 8 images (the options' defaults otherwise).
    t = Trainer(tiny_spec(tiny_store, tmp_path, precision=precision, total_kimg=0.16, snapshot_ticks=0,
                          image_ticks=0))  # fmt: skip
    run_dir = t.run()
    assert t.resolution == 8 and t.schedule.at(t.nimg / 1000 - 0.008).fading
    assert (run_dir / "snapshot-000000.160").is_dir()
    assert all(torch.isfinite(p).all() for p in t.G.parameters())


def test_fp16_resume_is_bit_identical(tiny_store, tmp_path, monkeypatch):
    # The loss scaler's state travels in the snapshot: a resumed fp16 run neither restarts at 2**16
    # nor skips its first updates again (8 skipped and scale 16384 against 4 and 8192 on an H200).
    monkeypatch.setattr(device, "FP16_DEVICE_TYPES", ("cuda", "cpu"))
    opts = dict(precision="fp16", snapshot_ticks=1, image_ticks=0, deterministic=True)
    full = Trainer(tiny_spec(tiny_store, tmp_path / "full", total_kimg=0.16, **opts))
    full.run()
    half = Trainer(tiny_spec(tiny_store, tmp_path / "half", total_kimg=0.08, **opts))
    half_dir = half.run()
    resumed = Trainer.from_snapshot(half_dir, {"total_kimg": 0.16})
    assert resumed.scaler.state_dict() == half.scaler.state_dict()
    resumed.run()
    assert int(resumed.skipped) == int(full.skipped) > 0
    assert resumed.scaler.state_dict() == full.scaler.state_dict()
    for a, b in zip(full.G.state_dict().values(), resumed.G.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(full.D.state_dict().values(), resumed.D.state_dict().values(), strict=True):
        assert torch.equal(a, b)

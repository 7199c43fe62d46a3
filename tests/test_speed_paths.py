"""The fast paths compute the same step as the fp32 reference, within stated tolerances."""

import os

import pytest
import torch

from progan.device import autocast, cpu_flags
from progan.loss import LossConfig, discriminator_loss, generator_loss
from progan.networks import Discriminator, Generator, NetworkConfig

CFG = NetworkConfig(resolution=16, latent_size=32, fmap_base=256, fmap_max=32)


def grads_of_one_step(channels_last: bool, precision: str):
    """Gradients of D's and G's losses from a fixed state and fixed inputs, at 16x16 mid-fade."""
    torch.manual_seed(0)
    G, D = Generator(CFG), Discriminator(CFG)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    G.to(memory_format=fmt)
    D.to(memory_format=fmt)
    for m in (G, D):
        m.set_stage(16, 0.6)
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(8, 32, generator=gen)
    reals = torch.rand(8, 3, 16, 16, generator=gen) * 2 - 1
    mix = torch.rand(8, 1, 1, 1, generator=gen)
    amp = autocast(torch.device("cpu"), precision)
    with amp:
        fakes = G(z).float()
        loss_D, _ = discriminator_loss(D, reals, fakes.detach(), None, mix, LossConfig())
    loss_D.backward()
    d_grads = [p.grad.clone() for p in D.parameters() if p.grad is not None]
    D.zero_grad(set_to_none=True)
    D.requires_grad_(False)
    with amp:
        loss_G, _ = generator_loss(D, G(z), None, LossConfig())
    loss_G.backward()
    g_grads = [p.grad.clone() for p in G.parameters() if p.grad is not None]
    return torch.cat([g.flatten() for g in d_grads]), torch.cat([g.flatten() for g in g_grads])


def cosine(a, b):
    return torch.nn.functional.cosine_similarity(a, b, dim=0).item()


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


REFERENCE = None


def reference():
    global REFERENCE
    if REFERENCE is None:
        REFERENCE = grads_of_one_step(channels_last=False, precision="fp32")
    return REFERENCE


def test_channels_last_matches_fp32_reference():
    d_ref, g_ref = reference()
    d, g = grads_of_one_step(channels_last=True, precision="fp32")
    # Same math, other summation order: relative error at fp32 rounding level.
    assert relative_error(d, d_ref) < 1e-4
    assert relative_error(g, g_ref) < 1e-4


# oneDNN's AMX bf16 kernels are less exact in the gradient penalty's double backward (measured on a
# 2-core Xeon with AMX, 2026-11-26): D's gradient had cosine 0.976 and relative error 0.22 against
# fp32, but 0.9975 and 0.071 on the same CPU with AMX turned off (ONEDNN_MAX_CPU_ISA=
# AVX512_CORE_BF16), and 0.992 and 0.13 either way with the penalty off; G's was 0.9965 and 0.084
# either way. In 20 minutes there, bf16 still trained to a better SWD than fp32 did (3.8x the noise
# floor against 5.1x, seed 0): benchmarks/README.md, "On a CPU with native bf16".
D_BF16_BOUNDS = (0.97, 0.3) if "amx_bf16" in cpu_flags() else (0.99, 0.1)


def test_bf16_matches_fp32_reference():
    d_ref, g_ref = reference()
    d, g = grads_of_one_step(channels_last=True, precision="bf16")
    # bf16 keeps 8 bits of mantissa: gradients agree in direction and to a few percent in size.
    min_cosine, max_error = D_BF16_BOUNDS
    assert cosine(d, d_ref) > min_cosine and relative_error(d, d_ref) < max_error
    assert cosine(g, g_ref) > 0.99 and relative_error(g, g_ref) < 0.1
    assert torch.isfinite(d).all() and torch.isfinite(g).all()


@pytest.mark.skipif(not os.environ.get("PROGAN_SLOW_TESTS"), reason="torch.compile takes minutes on a CPU")
def test_compiled_step_matches_eager(tiny_store, tmp_path):
    from helpers import TINY_NET

    from progan.runspec import TrainOptions, resolve_run
    from progan.schedule import Stage
    from progan.training import Trainer

    def one_step(compile_: bool):
        opts = TrainOptions(data=str(tiny_store.path), outdir=str(tmp_path), batch=8, progress=False,
                            compile=compile_, **TINY_NET)  # fmt: skip
        t = Trainer(resolve_run(opts))
        st = Stage(8, 0.5, 8, 1e-3)
        t._set_stage(st)
        t.step(st, {})
        return torch.cat([p.detach().flatten() for p in t.G.parameters()]), t

    eager, _ = one_step(False)
    compiled, t = one_step(True)
    assert not t.G_fwd.failed, "torch.compile fell back to eager mode"
    assert relative_error(compiled, eager) < 1e-4


def test_the_sampling_copy_is_the_same_generator_channels_last_in_one_dtype():
    """sampling.iter_images runs G's sampling copy (scales folded, channels-last, weights in the
    precision's dtype): the same function as G within rounding, mid-fade too; every conv reads a
    channels-last input of that dtype (no fp32 <-> bf16 round trips, no layout changes); the copy
    is kept while G is unchanged and made again when its weights or stage change."""
    from progan.layers import EqualizedConv2d
    from progan.sampling import sampling_network

    torch.manual_seed(0)
    G = Generator(NetworkConfig(resolution=64, latent_size=32, fmap_base=256, fmap_max=32)).eval()
    z = torch.randn(4, 32, generator=torch.Generator().manual_seed(3))
    cpu = torch.device("cpu")
    for stage, alpha in ((64, 1.0), (32, 0.4)):
        G.set_stage(stage, alpha)
        with torch.no_grad():
            ref = G(z)
            fast32 = sampling_network(G, cpu, "fp32")(z)
            with autocast(cpu, "bf16"):
                ref16 = G(z).float()
                S = sampling_network(G, cpu, "bf16")
                seen = []
                hooks = [m.register_forward_pre_hook(lambda m, a, seen=seen: seen.append(a[0]))
                         for m in S.modules() if isinstance(m, EqualizedConv2d)]  # fmt: skip
                fast16 = S(z).float()
                for h in hooks:
                    h.remove()
        assert fast32.shape == ref.shape == (4, 3, stage, stage)
        assert (fast32 - ref).abs().max() < 1e-4
        # bf16 against the fp32 reference: as close as autocast on G itself is
        err16, err_ref = ((x - ref).norm() / ref.norm() for x in (fast16, ref16))
        assert err16 < 0.03 and err16 < 2 * err_ref, (err16, err_ref)
        assert seen and all(x.dtype == torch.bfloat16 for x in seen)
        # all but the dense layer's 4x4 reshape, which the first conv makes channels-last
        assert all(x.is_contiguous(memory_format=torch.channels_last) for x in seen if x.shape[-1] > 4)
    assert sampling_network(G, cpu, "bf16") is S
    with torch.no_grad():
        G.blocks["8"].conv0.weight.mul_(2)
    assert sampling_network(G, cpu, "bf16") is not S


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_to_uint8_works_in_place_on_its_own_copy_with_the_definitions_arithmetic(dtype):
    from progan.images import to_uint8

    # values across the range, past it, and on the .5 boundaries of the rounding
    x = torch.cat([torch.linspace(-1.2, 1.2, 4001), torch.arange(-255, 256) / 255.0]).to(dtype)
    x = x[: 4 * 3 * 11 * 11].reshape(4, 3, 11, 11).contiguous(memory_format=torch.channels_last)
    before = x.clone()
    got = to_uint8(x)
    assert torch.equal(x, before)  # the caller's images are left alone (fp32 included)
    assert got.dtype == torch.uint8 and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, ((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8))

"""pro-gan-pth 3.4 (PyPI) at the architecture of `train_speed.py`: one worker, run by the peer's venv.

    ~/.cache/progan-bench/peer-venv/bin/python benchmarks/peer_pro_gan_pth.py --threads 2
    (then commands on stdin: train, gen, quit; see `serve` in train_speed.py)

Not part of progan and never imported by it; `train_speed.py` runs it in its own subprocess.
The package is installed with --no-deps next to torch and numpy only, and 3.4 predates current
torch, so before it is imported this script patches, at run time and in this process only:

* `torchvision` (imported by `gan.py` and `data_tools.py` for `save_image` and the transforms),
  `torch.utils.tensorboard` (needs the tensorboard package) and `PIL` when missing: stub modules
  in `sys.modules`; none of them is used by the code measured here;
* `torch.optim.Adam`: `ProGAN.train` passes `betas=(0, 0.99)`, and torch >= 2.x rejects a mix of
  int and float betas ("betas must be either both floats or both Tensors"); the betas are cast to
  float;
* `EqualizedConvTranspose2d._output_padding`: the package calls torch's private
  `_output_padding(input, output_size, stride, padding, kernel_size)`, which has since gained a
  required `num_spatial_dims` argument;
* `pro_gan_pytorch.networks.nf`: its fmap_base (16384) and fmap_max (512) are module defaults,
  not constructor arguments; they are set to 4096 / 128 as progan's `--fmap-base 4096
  --fmap-max 128`, which gives 128 maps at every level.

Measured: `Generator(depth=5, latent_size=512)` and `Discriminator(depth=5, latent_size=128)`
(depth is log2(resolution): 5 is 4 -> 32; D's final 4x4 conv to 128 features matches progan's
dense layer of nf(0) = 128), stabilized (alpha = 1). A training step is one iteration of its
`ProGAN.train` inner loop: `optimize_discriminator` with `WganGP()`, the EMA `update_average`
(beta 0.999) and `optimize_generator`, on a minibatch of 16 reals in [-1, 1] already in memory
(no DataLoader: that favours the peer) and fresh latents. Adam as in `ProGAN.train` (lr 0.003,
betas (0, 0.99), eps 1e-8). Generation: the EMA (shadow) generator on 16 latents under no_grad.
"""

from __future__ import annotations

import contextlib
import functools
import io
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_speed import (
    BATCH,
    FMAPS,
    GEN_BATCH,
    LATENT,
    PEER_NAME,
    serve,
    take_stdout,
    worker_args,
)  # noqa: E402


def _stub(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def _unavailable(*args, **kwargs):
    raise RuntimeError("stubbed for the benchmark: not available")


class _Inert:
    """Stands in for a torchvision transform: constructible (the package builds a default
    transform at import time), but never meant to run."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, *args, **kwargs):
        _unavailable()


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def patch_environment() -> None:
    """Stubs and monkeypatches that let pro-gan-pth 3.4 import and run on current torch."""
    import torch

    if not _importable("torchvision"):
        tv = _stub("torchvision")
        tv.utils = _stub("torchvision.utils", save_image=_unavailable)
        tv.transforms = _stub(
            "torchvision.transforms",
            Compose=_Inert, RandomHorizontalFlip=_Inert, Resize=_Inert, ToTensor=_Inert,
        )  # fmt: skip
    if not _importable("tensorboard"):
        _stub("torch.utils.tensorboard", SummaryWriter=_unavailable)
    if not _importable("PIL"):
        pil = _stub("PIL")
        pil.Image = _stub("PIL.Image", Image=object, open=_unavailable)

    class Adam(torch.optim.Adam):
        """Adam that accepts the package's integer beta (0, 0.99)."""

        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), *args, **kwargs):
            if not any(isinstance(b, torch.Tensor) for b in betas):
                betas = tuple(float(b) for b in betas)
            super().__init__(params, lr, betas, *args, **kwargs)

    torch.optim.Adam = Adam

    from pro_gan_pytorch import custom_layers, networks

    original = torch.nn.ConvTranspose2d._output_padding

    def _output_padding(
        self, input, output_size, stride, padding, kernel_size, num_spatial_dims=2, dilation=None
    ):
        if output_size is None:  # the package passes the builtin `input`: never look at it then
            return self.output_padding
        return original(self, input, output_size, stride, padding, kernel_size, num_spatial_dims, dilation)

    custom_layers.EqualizedConvTranspose2d._output_padding = _output_padding
    networks.nf = functools.partial(networks.nf, fmap_base=FMAPS * 32, fmap_max=FMAPS)


def main() -> None:
    a = worker_args()
    proto = take_stdout()
    patch_environment()
    import torch
    from pro_gan_pytorch.custom_layers import update_average
    from pro_gan_pytorch.gan import ProGAN
    from pro_gan_pytorch.losses import WganGP
    from pro_gan_pytorch.networks import Discriminator, Generator

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    resolution = a.resolution
    depth = resolution.bit_length() - 1  # log2: 5 for 32x32
    gen = Generator(depth=depth, num_channels=3, latent_size=LATENT, use_eql=True)
    dis = Discriminator(depth=depth, num_channels=3, latent_size=FMAPS, use_eql=True)
    with contextlib.redirect_stdout(io.StringIO()):  # its constructor prints both networks
        pro_gan = ProGAN(gen, dis, device=torch.device("cpu"), use_ema=True, ema_beta=0.999)
    convs = [m for m in [*gen.modules(), *dis.modules()] if isinstance(m, torch.nn.Conv2d)]
    widths = {m.out_channels for m in convs} - {1, 3}  # all but toRGB and the score
    if widths != {FMAPS}:
        raise SystemExit(f"pro-gan-pth's feature maps are {sorted(widths)}, expected {FMAPS} everywhere")
    # As ProGAN.train builds them (integer beta 0 included, accepted by the patched Adam).
    gen_optim = torch.optim.Adam(params=pro_gan.gen.parameters(), lr=0.003, betas=(0, 0.99), eps=1e-8)
    dis_optim = torch.optim.Adam(params=pro_gan.dis.parameters(), lr=0.003, betas=(0, 0.99), eps=1e-8)
    loss = WganGP()
    reals = torch.rand(512, 3, resolution, resolution) * 2 - 1
    cursor = [0]
    alpha = 1.0

    def train_step() -> None:
        i = cursor[0] = (cursor[0] + BATCH) % len(reals)
        images = reals[i : i + BATCH]
        noise = torch.randn(BATCH, LATENT)
        pro_gan.optimize_discriminator(loss, dis_optim, noise, images, depth, alpha)
        update_average(pro_gan.gen_shadow, pro_gan.gen, beta=pro_gan.ema_beta)
        pro_gan.optimize_generator(loss, gen_optim, noise, images, depth, alpha)

    def generate() -> None:
        with torch.no_grad():
            pro_gan.gen_shadow(torch.randn(GEN_BATCH, LATENT), depth, alpha)

    serve(proto, PEER_NAME, train_step, generate, a)


if __name__ == "__main__":
    main()

"""Generator and discriminator of the paper (official `G_paper` / `D_paper`), growable with fade-in.

Both networks are built for their final resolution from the start (as the official code does) and
run up to `resolution`, the current stage, set with `set_stage`. While a stage fades in
(`alpha` < 1) the output of the new block is blended with the upsampled output of the block below
(generator) and the new block's features with the features of the downsampled image (discriminator).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from progan.checks import resolution_error
from progan.layers import (
    SQRT2,
    EqualizedConv2d,
    EqualizedLinear,
    MinibatchStdDev,
    conv_act,
    downsample2x,
    fade,
    leaky_relu,
    pixel_norm,
    pixel_norm_,
    upsample2x,
)

# G's hidden activations (both in place: every caller passes a fresh layer output), and their
# negative slopes (`conv_act`).
ACTIVATIONS = {"lrelu": leaky_relu, "relu": torch.relu_}
SLOPES = {"lrelu": 0.2, "relu": 0.0}


@dataclass
class NetworkConfig:
    """Everything that fixes the architecture of G and D (stored in every snapshot)."""

    resolution: int = 1024
    channels: int = 3
    latent_size: int = 512
    label_size: int = 0
    fmap_base: int = 8192
    fmap_decay: float = 1.0
    fmap_max: int = 512
    mbstd_group_size: int = 4
    normalize_latents: bool = True
    use_pixelnorm: bool = True
    # Options that imported networks need (progan.pretrained); the defaults are the paper's networks.
    # Feature maps per stage 0 .. log2(resolution) - 1, when they do not follow the fmap_base rule
    # (the GAN zoo chooses a depth per scale).
    fmaps: list[int] | None = field(default=None)
    # G's hidden activation: "lrelu" (0.2) or "relu" (the official G_paper's use_leakyrelu=False).
    activation: str = "lrelu"
    # G's output: "linear" (the paper) or "tanh" (GAN zoo models trained with its MSE/DCGAN losses).
    output_activation: str = "linear"
    # D's minibatch-stddev grouping and variance: "progan", "official" or "ganzoo" (MinibatchStdDev).
    mbstd_mode: str = "progan"
    # D's last conv of each block with the 2x2 downscale (the official TF code's default,
    # `fused_scale=True`): convolution and average pooling in one stride-2 4x4 convolution, then
    # bias and LeakyReLU. False is the paper's Table 2 (and the Theano code's) order, LeakyReLU
    # before the pooling: a different function of the same weights, and about 1.9x slower in
    # that layer with the gradient penalty. G's fused upscale needs no option: it equals G's
    # upsample-then-conv exactly, so G always uses it.
    fused_scale: bool = True
    # Not the paper (issue 29, opt-in): D's fromRGB layers also see the image minus its mirror
    # image, channels doubled. A face whose two halves disagree (one blue eye, one brown) leaves a
    # difference there; benchmarks/eye_pairing.py found that D_paper stays at chance on such a
    # pair after 192,000 images and learns it in 48,000 (0.85) when handed this difference.
    d_mirror_difference: bool = False

    def __post_init__(self) -> None:
        check_resolution(self.resolution)
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.fmaps is not None:
            self.fmaps = [int(n) for n in self.fmaps]
            if len(self.fmaps) < log2(self.resolution) or min(self.fmaps) < 1:
                raise ValueError(
                    f"fmaps needs a positive count for each stage 0..{log2(self.resolution) - 1}, "
                    f"got {self.fmaps}"
                )
        if self.activation not in ("lrelu", "relu"):
            raise ValueError(f"activation must be 'lrelu' or 'relu', got {self.activation!r}")
        if self.mbstd_mode not in MinibatchStdDev.MODES:
            raise ValueError(f"mbstd_mode must be one of {MinibatchStdDev.MODES}, got {self.mbstd_mode!r}")
        if self.output_activation not in ("linear", "tanh"):
            raise ValueError(f"output_activation must be 'linear' or 'tanh', got {self.output_activation!r}")

    def nf(self, stage: int) -> int:
        """Feature maps at a stage (stage = log2(resolution) - 1): fmap_base / 2**(stage*decay), capped."""
        if self.fmaps is not None:
            return self.fmaps[stage]
        # At least one feature map, so that a small fmap_base still builds at high resolution.
        return max(min(int(self.fmap_base / (2.0 ** (stage * self.fmap_decay))), self.fmap_max), 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> NetworkConfig:
        """A saved config (state.json, options.json). Those saved before `fused_scale` existed
        trained the paper-order D, so a missing key means False, not today's default."""
        return cls(**{"fused_scale": False, **d})


def check_resolution(resolution: int) -> int:
    if (problem := resolution_error(resolution)) is not None:
        raise ValueError(f"resolution {problem}")
    return resolution


def log2(resolution: int) -> int:
    return int(math.log2(resolution))


class _StageMixin:
    """Current stage (resolution, alpha) shared by G and D.

    alpha lives in a tensor buffer so that changing it every step neither syncs with the device
    nor makes torch.compile specialize on its value; `fading` is the Python-side branch flag.
    """

    config: NetworkConfig
    alpha: torch.Tensor

    def _init_stage(self) -> None:
        self.resolution = self.config.resolution
        self.fading = False
        self.register_buffer("alpha", torch.ones(()), persistent=False)  # type: ignore[attr-defined]

    def set_stage(self, resolution: int, alpha: float = 1.0) -> None:
        check_resolution(resolution)
        if resolution > self.config.resolution:
            raise ValueError(f"stage {resolution} exceeds the network's resolution {self.config.resolution}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.resolution = resolution
        self.fading = alpha < 1.0 and resolution > 4
        self.alpha.fill_(alpha)


class GeneratorBlock(nn.Module):
    """Nearest 2x upsample, then two 3x3 convs, each followed by LeakyReLU and pixel norm (the
    upsample and the first conv run as one transposed convolution, which is the same function)."""

    def __init__(
        self, in_channels: int, out_channels: int, use_pixelnorm: bool, activation: str = "lrelu"
    ) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, out_channels, 3)
        self.conv1 = EqualizedConv2d(out_channels, out_channels, 3)
        self.use_pixelnorm = use_pixelnorm
        self.slope = SLOPES[activation]
        self.norm_in_place = False  # True in a sampling copy (no gradients): `pixel_norm_`

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        if not self.use_pixelnorm:
            return x
        return pixel_norm_(x) if self.norm_in_place else pixel_norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._norm(conv_act(self.conv0, x, self.slope, up=True))
        return self._norm(conv_act(self.conv1, x, self.slope))


class Generator(_StageMixin, nn.Module):
    """G_paper: latent (+ label) -> image in [-1, 1] (linear output, no tanh)."""

    def __init__(self, config: NetworkConfig | None = None, **kwargs) -> None:
        super().__init__()
        self.config = config = config or NetworkConfig(**kwargs)
        self._init_stage()
        nf = config.nf
        in_features = config.latent_size + config.label_size
        c4 = nf(1)
        # The 4x4 block: a dense layer to 4x4xC (the official gain sqrt(2)/4), then one 3x3 conv.
        self.dense = EqualizedLinear(in_features, c4 * 16, gain=SQRT2 / 4)
        self.conv4 = EqualizedConv2d(c4, c4, 3)
        self.blocks = nn.ModuleDict()
        self.torgb = nn.ModuleDict({"4": EqualizedConv2d(c4, config.channels, 1, gain=1.0)})
        for lg in range(3, log2(config.resolution) + 1):
            res = 2**lg
            self.blocks[str(res)] = GeneratorBlock(
                nf(lg - 2), nf(lg - 1), config.use_pixelnorm, config.activation
            )
            self.torgb[str(res)] = EqualizedConv2d(nf(lg - 1), config.channels, 1, gain=1.0)
        self.norm_in_place = False  # True in a sampling copy (no gradients): `pixel_norm_`

    @property
    def latent_size(self) -> int:
        return self.config.latent_size

    @property
    def label_size(self) -> int:
        return self.config.label_size

    @property
    def channels(self) -> int:
        return self.config.channels

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        if not self.config.use_pixelnorm:
            return x
        return pixel_norm_(x) if self.norm_in_place else pixel_norm(x)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.config.label_size:
            if labels is None:
                raise ValueError("this generator is conditional: pass labels (N, label_size)")
            z = torch.cat([z, labels.to(z.dtype)], dim=1)
        if self.config.normalize_latents:
            z = pixel_norm(z)  # never in place: z is the caller's
        act = ACTIVATIONS[self.config.activation]
        x = act(self.dense(z)).reshape(z.shape[0], -1, 4, 4)
        x = self._norm(x)
        x = self._norm(act(self.conv4(x)))
        prev = x
        for lg in range(3, log2(self.resolution) + 1):
            prev = x
            x = self.blocks[str(2**lg)](x)
        out = self.torgb[str(self.resolution)](x)
        if self.fading:
            low = upsample2x(self.torgb[str(self.resolution // 2)](prev))
            out = fade(low, out, self.alpha)
        return torch.tanh(out) if self.config.output_activation == "tanh" else out


class DiscriminatorBlock(nn.Module):
    """Two 3x3 convs with LeakyReLU and a 2x2 average pooling: fused into the second conv before
    its bias and LeakyReLU (the official code), or after them (the paper's table)."""

    def __init__(self, in_channels: int, out_channels: int, fused_scale: bool = True) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3)
        self.fused_scale = fused_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = leaky_relu(self.conv0(x))
        if self.fused_scale:
            return leaky_relu(self.conv1.forward_then_downsample(x))
        return downsample2x(leaky_relu(self.conv1(x)))


class Discriminator(_StageMixin, nn.Module):
    """D_paper: image -> (N, 1 + label_size): the WGAN score, then label logits when conditional."""

    def __init__(self, config: NetworkConfig | None = None, **kwargs) -> None:
        super().__init__()
        self.config = config = config or NetworkConfig(**kwargs)
        self._init_stage()
        nf = config.nf
        self.fromrgb = nn.ModuleDict()
        self.blocks = nn.ModuleDict()
        in_channels = config.channels * (2 if config.d_mirror_difference else 1)  # [x, x - flip(x)]
        for lg in range(2, log2(config.resolution) + 1):
            res = 2**lg
            self.fromrgb[str(res)] = EqualizedConv2d(in_channels, nf(lg - 1), 1)
            if lg >= 3:
                self.blocks[str(res)] = DiscriminatorBlock(nf(lg - 1), nf(lg - 2), config.fused_scale)
        c4 = nf(1)
        mbstd = config.mbstd_group_size > 1
        self.mbstd = MinibatchStdDev(config.mbstd_group_size, config.mbstd_mode) if mbstd else None
        self.conv4 = EqualizedConv2d(c4 + (1 if self.mbstd else 0), c4, 3)
        self.dense0 = EqualizedLinear(c4 * 16, nf(0))
        self.dense1 = EqualizedLinear(nf(0), 1 + config.label_size, gain=1.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        res = self.resolution
        if self.config.d_mirror_difference:
            # Linear, so it commutes with the fade's 2x2 average: the low path sees the same pair.
            images = torch.cat([images, images - images.flip(3)], dim=1)
        x = leaky_relu(self.fromrgb[str(res)](images))
        if res > 4:
            x = self.blocks[str(res)](x)
            if self.fading:
                low = leaky_relu(self.fromrgb[str(res // 2)](downsample2x(images)))
                x = fade(low, x, self.alpha)
        for lg in range(log2(res) - 1, 2, -1):
            x = self.blocks[str(2**lg)](x)
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = leaky_relu(self.conv4(x))
        x = leaky_relu(self.dense0(x.flatten(1)))
        return self.dense1(x)


def build_networks(config: NetworkConfig) -> tuple[Generator, Discriminator, Generator]:
    """G, D and G_ema of a config; G_ema starts as a copy of G and never takes gradients."""
    G = Generator(config)
    D = Discriminator(config)
    G_ema = Generator(config)
    G_ema.load_state_dict(G.state_dict())
    G_ema.eval().requires_grad_(False)
    return G, D, G_ema


def sampling_copy(G: Generator, dtype: torch.dtype, device: torch.device) -> Generator:
    """A frozen copy of G for sampling only: the same function, laid out for speed.

    Each layer's run-time scale is folded into its weights in fp32 (so bf16 weights are rounded
    once, from the same product autocast would round), the weights are cast to `dtype` and stored
    channels-last, so every activation stays channels-last and in `dtype` from the first conv to
    the image. Measured at 1024x1024, batch 4, on a 2-core AVX-512 BF16 EPYC (benchmarks/README.md,
    'Generation near the limit'): 0.23 s per image in bf16 against 0.35 s with autocast on the NCHW
    fp32 weights; fp32 0.37 s against 0.62 s.

    Each conv is frozen (`EqualizedConv2d.freeze_`: the upsampling kernel made once, on a CPU the
    activation fused into the conv's oneDNN call, `conv_act`) and pixel norm runs in place
    (`pixel_norm_`): no gradients ever flow through this copy. Those three made a bf16 G 1.6x
    faster at 1024x1024 (0.46 against 0.73 s per image, 2-core Xeon with AMX under load 3), and
    its images no further from fp32's (mean difference 0.0096 against 0.0103)."""
    import copy

    frozen = copy.deepcopy(G).requires_grad_(False).eval()
    with torch.no_grad():
        for m in frozen.modules():
            if isinstance(m, EqualizedConv2d):
                m.freeze_(dtype, device)
            elif isinstance(m, EqualizedLinear):
                m.weight.mul_(m.scale)
                m.scale = 1.0
            if isinstance(m, (Generator, GeneratorBlock)):
                m.norm_in_place = True
    return frozen.to(device=device, dtype=dtype, memory_format=torch.channels_last)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

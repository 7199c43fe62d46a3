"""The paper's building blocks: equalized learning rate, pixel norm, minibatch stddev, resampling.

Equalized learning rate (paper section 4.1): weights are stored as N(0, 1) and scaled at run time
by He's constant gain / sqrt(fan_in), so Adam's per-parameter step size is the same for every layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)


class EqualizedConv2d(nn.Module):
    """Conv2d with N(0, 1) weights scaled by gain / sqrt(in_channels * k * k) at run time."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, gain: float = SQRT2) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2

        # The transposed kernel of upsample_then_forward, made once by `freeze_` (a frozen copy
        # for sampling only); None while the weights train.
        self.frozen_up_kernel: torch.Tensor | None = None
        # Set by `freeze_` where oneDNN can run the activation after this conv in the same call
        # (`conv_act`).
        self.fuse_activation = False

    def scaled_weight(self) -> torch.Tensor:
        """The weight times its run-time scale (no copy once `freeze_` folded the scale in)."""
        return self.weight if self.scale == 1.0 else self.weight * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.scaled_weight(), self.bias, padding=self.padding)

    def upsample_then_forward(self, x: torch.Tensor) -> torch.Tensor:
        """forward(upsample2x(x)) in one stride-2 transposed convolution on the small input: the
        official code's fused `upscale2d_conv2d`. Exact up to float rounding, with 4 instead of 9
        multiply-adds per output pixel and channel pair; the gradient penalty's double backward
        of G's top block took 1.8x less time at 32x32 and 2.3x at 64x64 (2-core AVX2 EPYC)."""
        kernel = self.frozen_up_kernel
        if kernel is None:
            kernel = _up_kernel(self.scaled_weight())
        return F.conv_transpose2d(x, kernel, self.bias, stride=2, padding=1)

    @torch.no_grad()
    def freeze_(self, dtype: torch.dtype, device: torch.device) -> None:
        """Fold the run-time scale into the weight in fp32 and make the transposed kernel once, in
        `dtype` on `device`: for a sampling-only copy, whose weights never change. Building the
        kernel (slices, sums, a concatenation) at every call was 6% of a 1024x1024 bf16 G's time
        (2-core Xeon with AMX)."""
        self.weight.mul_(self.scale)
        self.scale = 1.0
        self.fuse_activation = device.type == "cpu" and dtype in FUSED_DTYPES and _ONEDNN_POINTWISE
        if self.weight.shape[-1] != 3:
            return  # a 1x1 conv (toRGB) is never upsampled into
        kernel = _up_kernel(self.weight).to(device=device, dtype=dtype)
        self.frozen_up_kernel = kernel.contiguous(memory_format=torch.channels_last)

    def forward_then_downsample(self, x: torch.Tensor) -> torch.Tensor:
        """downsample2x(forward(x)) in one stride-2 4x4 convolution: the official code's fused
        `conv2d_downscale2d` (exact up to rounding; 1.9x less time at 32x32 with the penalty)."""
        return F.conv2d(x, _four_taps(self.scaled_weight()) * 0.25, self.bias, stride=2, padding=1)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel_size={k}, scale={self.scale:.5g}"


# oneDNN's convolution with a post-op, the call torch.compile's CPU backend makes for a conv
# followed by an activation (private ops of PyTorch's CPU build; without them, or off a CPU, the
# activation runs on its own).
_ONEDNN_POINTWISE = torch.backends.mkldnn.is_available() and all(
    hasattr(torch.ops.mkldnn, op) for op in ("_convolution_pointwise", "_convolution_transpose_pointwise")
)
FUSED_DTYPES = (torch.float32, torch.bfloat16)


def conv_act(conv: EqualizedConv2d, x: torch.Tensor, slope: float, up: bool = False) -> torch.Tensor:
    """act(conv(x)), or act(conv.upsample_then_forward(x)) when `up`, where act is LeakyReLU with
    negative `slope` (ReLU at 0).

    A frozen conv on a CPU (`freeze_`, the sampling copy) runs both as one oneDNN call, the
    activation applied to each output while it is in registers (in fp32, before the rounding to
    bf16): at 1024x1024 in bf16 an activation was a separate pass over 134 MB, and G's 17 of them
    were 15% of its time (2-core Xeon with AMX); the fused upsampling conv took 113 ms against
    177 ms at 512 -> 1024, 16 channels, batch 4. Otherwise the activation runs in place after it."""
    if conv.fuse_activation and x.device.type == "cpu" and x.dtype == conv.weight.dtype:
        attr, scalars = ("relu", []) if slope == 0 else ("leaky_relu", [slope])
        if up:
            return torch.ops.mkldnn._convolution_transpose_pointwise(
                x, conv.frozen_up_kernel, conv.bias, [1, 1], [0, 0], [2, 2], [1, 1], 1, attr, scalars, ""
            )
        p = conv.padding
        return torch.ops.mkldnn._convolution_pointwise(
            x, conv.weight, conv.bias, [p, p], [1, 1], [1, 1], 1, attr, scalars, ""
        )
    y = conv.upsample_then_forward(x) if up else conv(x)
    return F.leaky_relu_(y, slope) if slope else torch.relu_(y)


def _up_kernel(weight: torch.Tensor) -> torch.Tensor:
    """upsample_then_forward's kernel: a transposed convolution scatters, so the 4x4 kernel is
    mirrored and stored [in, out, kh, kw]."""
    return _four_taps(weight, mirrored=True).transpose(0, 1)


def _four_taps(weight: torch.Tensor, mirrored: bool = False) -> torch.Tensor:
    """A 3x3 kernel [out, in, 3, 3] as the 4x4 kernel [w0, w0+w1, w1+w2, w2] in both spatial axes
    (the official code's padded sum of four shifted copies), mirrored in both when asked: what
    each 2x2 block of a 2x nearest-upsampled input, or each 2x2 average of an output, reads
    through the 3x3 kernel. Written with slices and concatenation, so that the ONNX exporter
    knows the kernel's shape."""
    for dim in (2, 3):
        a, b, c = (weight.narrow(dim, i, 1) for i in range(3))
        weight = torch.cat([c, b + c, a + b, a] if mirrored else [a, a + b, b + c, c], dim)
    return weight


class EqualizedLinear(nn.Module):
    """Linear layer with N(0, 1) weights scaled by gain / sqrt(in_features) at run time."""

    def __init__(self, in_features: int, out_features: int, gain: float = SQRT2) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight if self.scale == 1.0 else self.weight * self.scale, self.bias)

    def extra_repr(self) -> str:
        o, i = self.weight.shape
        return f"{i}, {o}, scale={self.scale:.5g}"


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x / sqrt(mean over channels of x**2 + eps) (paper section 4.2).

    The channel sum of squares is reduced in x's dtype: PyTorch accumulates bf16 and fp16 sums in
    fp32 (CPU and CUDA) and only rounds the per-pixel result, a 0.2% error below the rounding of
    the bf16 output itself. Asking for an fp32 result instead (dtype=) upcasts the whole activation
    first and made a bf16 generator 18% slower. fp16 is upcast because its squares overflow
    above 256."""
    src = x.float() if x.dtype == torch.float16 else x
    mean_square = src.square().sum(dim=1, keepdim=True).float() / x.shape[1]
    return x * torch.rsqrt(mean_square + eps).to(x.dtype)


# pixel_norm_ works through a channels-last activation in pieces of about this many bytes of fp32,
# so that each piece's squares, mean and scaling stay in cache instead of streaming the whole
# activation from memory three times. On the 2-core Xeon with AMX (bf16, batch 4): 1024x1024 with
# 16 channels 112 -> 39 ms, 512x512 43 -> 17 ms, 256x256 17 -> 8 ms, 128x128 6.7 -> 3.9 ms
# (256 KB pieces were slower at every size, 2 MB at most sizes).
PIXEL_NORM_CHUNK_BYTES = 1 << 20


def pixel_norm_(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """pixel_norm in place, for a network that never takes gradients (the sampling copy).

    Over the (pixels, channels) view of a channels-last x, piece by piece (PIXEL_NORM_CHUNK_BYTES):
    the piece in fp32, the channel mean of its squares as one matrix product with a column of 1/C,
    the piece scaled in fp32 and written back, rounded to x's dtype once. For bf16 that is more
    exact than pixel_norm (whose squares and product are bf16) and 2.9x faster at 1024x1024 than
    this function was as one bf16 pass (see the constant). fp16 (and non-channels-last input,
    which the view would copy) takes pixel_norm's path and is copied back."""
    if x.dtype == torch.float16 or not _channels_last_rows(x):
        return x.copy_(pixel_norm(x, eps))
    channels = x.shape[1]
    rows = x.movedim(1, -1).reshape(-1, channels)  # a view: channels are contiguous
    mean = torch.full((channels, 1), 1.0 / channels, device=x.device)
    for piece in rows.split(max(1, PIXEL_NORM_CHUNK_BYTES // (channels * 4))):
        f = piece.float()  # piece itself when x is fp32
        f.mul_(torch.mm(f.square(), mean).add_(eps).rsqrt_())
        if f is not piece:
            piece.copy_(f)
    return x


def _channels_last_rows(x: torch.Tensor) -> bool:
    """Whether x (N, C) or (N, C, H, W) holds each pixel's channels contiguously."""
    return x.stride(1) == 1 and (x.dim() == 2 or x.is_contiguous(memory_format=torch.channels_last))


def leaky_relu(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU 0.2, in place: every caller passes a fresh layer output that nothing else reads.

    With a positive slope autograd's backward reads the sign from the result, so in place is exact
    and saves an activation-sized write (8% of an fp32 G+D+penalty pass at 32x32 here)."""
    return F.leaky_relu_(x, 0.2)


def fade(low: torch.Tensor, new: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """lerp(low, new, alpha): a fade-in's blend of the old branch and the new one, in the wider of
    their two dtypes. CUDA autocast runs upsample_nearest2d in fp32 (its fp32 op list) and the
    convolutions in bf16/fp16, so G's branches arrive in different dtypes there, and a bare
    `torch.lerp` stopped the first fade-in of every bf16 and fp16 run on an H200 (issue 26). CPU
    autocast keeps both in bf16; where they match nothing is cast, so CPU results are unchanged."""
    dtype = torch.promote_types(low.dtype, new.dtype)
    return torch.lerp(low.to(dtype), new.to(dtype), alpha.to(dtype))


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsampling."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def downsample2x(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling (box filter)."""
    return F.avg_pool2d(x, 2)


def mbstd_group_size(batch: int, group_size: int) -> int:
    """The largest group size <= `group_size` that divides `batch`.

    The official code asserts divisibility; falling back to a divisor keeps a last batch of odd
    size, even of 1, finite (a group of 1 has zero spread, which gives sqrt(1e-8)).
    """
    g = max(1, min(group_size, batch))
    while batch % g:
        g -= 1
    return g


class MinibatchStdDev(nn.Module):
    """Appends the average standard deviation over groups of samples as one feature map (section 3).

    Each run of `group_size` consecutive samples forms a group; each sample gets its group's std,
    averaged over channels and pixels. (The official reshape groups samples i, i + M, i + 2M, ...;
    since a minibatch is in random order the two are the same in distribution, and consecutive
    groups survive a split of the minibatch over several GPUs unchanged.)
    """

    # Modes, for imported networks: "progan" (above); "official" (the TF code's strided groups
    # i, i + M, ...); "ganzoo" (pytorch_GAN_zoo: consecutive groups, the unbiased variance, the whole
    # batch as one group when the group size does not divide it, zeros for groups of one).
    MODES = ("progan", "official", "ganzoo")

    def __init__(self, group_size: int = 4, mode: str = "progan") -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"minibatch-stddev mode must be one of {self.MODES}, got {mode!r}")
        self.group_size = group_size
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if self.mode == "ganzoo":
            g = min(n, self.group_size)
            g = g if n % g == 0 else n
        else:
            g = mbstd_group_size(n, self.group_size)
        strided = self.mode == "official"
        y = x.float().reshape(*((g, n // g) if strided else (n // g, g)), c, h, w)
        gdim = 0 if strided else 1
        y = y - y.mean(dim=gdim, keepdim=True)
        if self.mode == "ganzoo":
            var = y.square().sum(dim=gdim) / (g - 1) if g > 1 else None
        else:
            var = y.square().mean(dim=gdim)
        if var is None:
            y = torch.zeros(n // g, device=x.device)
        else:
            y = torch.sqrt(var + 1e-8).mean(dim=(1, 2, 3))  # (groups,)
        y = (y.repeat(g) if strided else y.repeat_interleave(g)).reshape(n, 1, 1, 1)
        return torch.cat([x, y.expand(n, 1, h, w).to(x.dtype)], dim=1)

    def groups_survive_stacking(self, batch: int, copies: int) -> bool:
        """Whether `copies` batches of `batch` stacked into one call form exactly the groups that
        each batch forms alone (so one call of D on the stack equals separate calls)."""
        if self.mode == "official":  # strided groups would mix the stacked batches
            return False
        if self.mode == "ganzoo":
            g = min(batch, self.group_size)
            return batch % g == 0 and min(batch * copies, self.group_size) == g
        return mbstd_group_size(batch * copies, self.group_size) == mbstd_group_size(batch, self.group_size)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}" + (f", mode={self.mode}" if self.mode != "progan" else "")

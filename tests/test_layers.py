import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from progan import layers
from progan.layers import (
    EqualizedConv2d,
    EqualizedLinear,
    MinibatchStdDev,
    downsample2x,
    leaky_relu,
    mbstd_group_size,
    pixel_norm,
    pixel_norm_,
    upsample2x,
)


def test_equalized_conv_scales_weights_at_run_time():
    torch.manual_seed(0)
    conv = EqualizedConv2d(8, 5, 3)
    assert conv.scale == pytest.approx(math.sqrt(2) / math.sqrt(8 * 9))
    x = torch.randn(2, 8, 6, 6)
    expected = F.conv2d(x, conv.weight * math.sqrt(2) / math.sqrt(72), conv.bias, padding=1)
    torch.testing.assert_close(conv(x), expected)
    # The stored weights are N(0, 1), the bias starts at zero.
    big = EqualizedConv2d(64, 64, 3)
    assert abs(big.weight.std().item() - 1) < 0.02 and abs(big.weight.mean().item()) < 0.02
    assert torch.count_nonzero(big.bias) == 0


def test_equalized_linear_scale_and_gain():
    lin = EqualizedLinear(10, 4, gain=1.0)
    assert lin.scale == pytest.approx(1 / math.sqrt(10))
    x = torch.randn(3, 10)
    torch.testing.assert_close(lin(x), x @ (lin.weight / math.sqrt(10)).T + lin.bias)
    # Gradients reach the N(0, 1) weights multiplied by the scale (the point of equalization).
    lin(x).sum().backward()
    torch.testing.assert_close(lin.weight.grad, (x.sum(0) / math.sqrt(10)).expand(4, 10))


def test_pixel_norm_definition():
    x = torch.randn(4, 7, 3, 3) * 5
    expected = x / torch.sqrt((x**2).mean(dim=1, keepdim=True) + 1e-8)
    torch.testing.assert_close(pixel_norm(x), expected)
    assert torch.allclose((pixel_norm(x) ** 2).mean(dim=1), torch.ones(4, 3, 3), atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_pixel_norm_in_half_precision(dtype):
    # Large activations: fp16 squares of 300 overflow, so the norm must not square in fp16.
    x = torch.randn(4, 512, 4, 4) * 300
    expected = x / torch.sqrt((x.double() ** 2).mean(dim=1, keepdim=True)).float()
    out = pixel_norm(x.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["channels_last", "channels_last_pieces", "contiguous", "latent"])
def test_in_place_pixel_norm_is_pixel_norm_written_into_its_input(dtype, layout, monkeypatch):
    """The sampling copy's pixel_norm_: the definition (within x's rounding), written into x
    itself, on the channels-last path (a matrix product over the pixels, in one piece or in
    pieces of 7 pixels, the last one short) and on the fallbacks (fp16, whose squares overflow;
    NCHW, whose channel rows are not contiguous)."""
    if layout == "channels_last_pieces":
        monkeypatch.setattr(layers, "PIXEL_NORM_CHUNK_BYTES", 7 * 16 * 4)
    torch.manual_seed(0)
    x = (torch.randn(2, 16) if layout == "latent" else torch.randn(3, 16, 5, 5)) * 300
    if layout.startswith("channels_last"):
        x = x.contiguous(memory_format=torch.channels_last)
    x = x.to(dtype)
    expected = x.double() / torch.sqrt((x.double() ** 2).mean(dim=1, keepdim=True) + 1e-8)
    before = x.data_ptr()
    out = pixel_norm_(x)
    assert out is x and x.data_ptr() == before and x.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(x.double(), expected, rtol=tol, atol=tol)


def test_a_frozen_conv_upsamples_with_the_kernel_it_made_once():
    """freeze_ folds the scale into the weight and keeps upsample_then_forward's kernel: the same
    function as the training conv (and made once: changing the weight afterwards changes
    nothing, which is why only a sampling copy that never trains freezes)."""
    torch.manual_seed(1)
    conv = EqualizedConv2d(6, 4, 3)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 6, 8, 8)
    want_up, want = conv.upsample_then_forward(x), conv(x)
    conv.freeze_(torch.float32, torch.device("cpu"))
    assert conv.scale == 1.0 and conv.frozen_up_kernel is not None
    torch.testing.assert_close(conv.upsample_then_forward(x), want_up)
    torch.testing.assert_close(conv(x), want)
    with torch.no_grad():
        conv.weight.zero_()
    torch.testing.assert_close(conv.upsample_then_forward(x), want_up)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("slope", [0.2, 0.0])
@pytest.mark.parametrize("up", [False, True])
def test_a_frozen_conv_runs_its_activation_in_the_same_onednn_call(dtype, slope, up, monkeypatch):
    """conv_act on a frozen CPU conv is one oneDNN call with the activation as a post-op (counted
    here), and the same function as the conv then LeakyReLU / ReLU of a conv that trains: fp32 to
    float rounding; bf16 within one bf16 step of the output (the post-op rounds once, after the
    activation)."""
    from progan import layers

    if not layers._ONEDNN_POINTWISE:
        pytest.skip("this PyTorch build has no oneDNN pointwise convolution")
    torch.manual_seed(2)
    conv = EqualizedConv2d(8, 6, 3)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 8, 6, 6)
    y = conv.upsample_then_forward(x) if up else conv(x)
    want = F.leaky_relu(y, slope)
    frozen = copy.deepcopy(conv)
    frozen.freeze_(dtype, torch.device("cpu"))
    frozen.to(dtype=dtype, memory_format=torch.channels_last)
    assert frozen.fuse_activation
    calls = []
    name = "_convolution_transpose_pointwise" if up else "_convolution_pointwise"
    real = getattr(torch.ops.mkldnn, name)
    monkeypatch.setattr(torch.ops.mkldnn, name, lambda *a: calls.append(a[-3]) or real(*a))
    with torch.no_grad():
        got = layers.conv_act(frozen, x.to(dtype).contiguous(memory_format=torch.channels_last), slope, up=up)
    assert calls == ["relu" if slope == 0 else "leaky_relu"]
    tol = 1e-5 if dtype == torch.float32 else 2**-7 * want.abs().max().item()
    torch.testing.assert_close(got.float(), want, rtol=0, atol=tol)
    conv_ = copy.deepcopy(conv)  # a conv that trains: the activation runs after it, as before
    assert not conv_.fuse_activation
    torch.testing.assert_close(layers.conv_act(conv_, x, slope, up=up), want)


def test_in_place_leaky_relu_matches_the_definition_to_second_order():
    # Value, gradient and the gradient penalty's double backward (into a conv weight) are those of
    # the out-of-place definition, exactly; inputs include exact zeros.
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6).round().requires_grad_(True)
    w = torch.randn(4, 3, 3, 3).round().requires_grad_(True)  # integer conv outputs, many zeros
    grads = []
    for act in (leaky_relu, lambda h: torch.where(h > 0, h, 0.2 * h)):
        y = act(F.conv2d(x, w, padding=1))
        (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        (gw,) = torch.autograd.grad(gx.square().sum(), w)
        grads.append((y.detach(), gx.detach(), gw))
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)


def test_pixel_norm_of_zeros_is_finite():
    assert torch.isfinite(pixel_norm(torch.zeros(2, 3, 4, 4))).all()


def mbstd_reference(x: np.ndarray, group: int) -> np.ndarray:
    """Straight from the definition: each run of `group` consecutive samples is a group."""
    n = x.shape[0]
    out = np.empty(n)
    for i in range(n):
        start = i // group * group
        members = x[start : start + group]
        std = np.sqrt(((members - members.mean(axis=0)) ** 2).mean(axis=0) + 1e-8)
        out[i] = std.mean()
    return out


@pytest.mark.parametrize("n,group", [(8, 4), (4, 4), (12, 4), (6, 4), (16, 16)])
def test_minibatch_stddev_values(n, group):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 3, 4, 4)).astype(np.float32)
    y = MinibatchStdDev(group)(torch.from_numpy(x))
    assert y.shape == (n, 4, 4, 4)
    torch.testing.assert_close(y[:, :3], torch.from_numpy(x))
    g = mbstd_group_size(n, group)
    expected = mbstd_reference(x.astype(np.float64), g)
    for i in range(n):
        assert torch.allclose(y[i, 3], torch.full((4, 4), float(expected[i])), atol=1e-5)


def test_minibatch_stddev_known_batch():
    # Two samples in one group: constant maps 0 and 2 -> std 1 everywhere.
    x = torch.stack([torch.zeros(2, 4, 4), torch.full((2, 4, 4), 2.0)])
    y = MinibatchStdDev(2)(x)
    torch.testing.assert_close(y[:, 2], torch.full((2, 4, 4), math.sqrt(1 + 1e-8)))


@pytest.mark.parametrize("n", [1, 3, 5, 7])
def test_minibatch_stddev_odd_batches_are_finite(n):
    x = torch.randn(n, 3, 4, 4)
    y = MinibatchStdDev(4)(x)
    assert torch.isfinite(y).all()
    assert mbstd_group_size(n, 4) in (1, n) or n % mbstd_group_size(n, 4) == 0


def test_resampling():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    up = upsample2x(x)
    assert up.shape == (1, 1, 8, 8) and up[0, 0, 1, 1] == x[0, 0, 0, 0] and up[0, 0, 7, 6] == x[0, 0, 3, 3]
    down = downsample2x(x)
    torch.testing.assert_close(down[0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))
    torch.testing.assert_close(downsample2x(upsample2x(x)), x)


@pytest.mark.parametrize("res", [4, 8, 16])
def test_fused_resampling_convolutions_equal_resample_and_convolve(res):
    """G's upsample-then-conv and D's conv-then-pool as one stride-2 convolution (the official
    code's fused_scale): the same function, and the same gradients, second order included (the
    gradient penalty differentiates through D's gradient)."""
    from progan.layers import EqualizedConv2d, downsample2x, upsample2x

    torch.manual_seed(res)
    conv = EqualizedConv2d(5, 3, 3)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 5, res, res, requires_grad=True)
    for fused, plain in (
        (conv.upsample_then_forward, lambda t: conv(upsample2x(t))),
        (conv.forward_then_downsample, lambda t: downsample2x(conv(t))),
    ):
        outs = []
        for f in (fused, plain):
            y = f(x)
            (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
            (gw,) = torch.autograd.grad(g.square().sum(), conv.weight)
            outs.append((y, g, gw))
        for a, b in zip(*outs, strict=True):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())

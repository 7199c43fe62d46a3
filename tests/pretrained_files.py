"""Independent NumPy transcriptions of the original generators, and writers of their exact file formats.

Nothing here imports progan's networks. The forward passes are written from the official
networks.py / tfutil.py (TF `G_paper`), the Theano branch's network.py (`G_paper` of Lasagne
layers: true convolutions, WScaleLayer, LODSelectLayer) and pytorch_GAN_zoo's
progressive_conv_net.py / custom_layers.py (GNet). Convolutions run as 9 (or 16) shifted
matrix products in NHWC, so a 1024x1024 generator takes seconds.
"""

from __future__ import annotations

import contextlib
import pickle
import struct
import sys
import types

import numpy as np

try:  # OpenBLAS's threads on a busy 2-core machine make these small products ~8x slower
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - the transcriptions are still right, only slower
    threadpool_limits = None


def one_blas_thread():
    return threadpool_limits(1) if threadpool_limits else contextlib.nullcontext()


SQRT2 = np.sqrt(2.0)


# ---------------------------------------------------------------------------------------------
# Shared NumPy layers (NHWC float32)


def lrelu(x):
    return np.maximum(x * np.float32(0.2), x)


def pixel_norm(x, axis=-1):
    return x / np.sqrt(np.mean(np.square(x), axis=axis, keepdims=True) + np.float32(1e-8))


def correlate_same(x, w):
    """TF conv2d, padding SAME, stride 1: x NHWC, w HWIO (cross-correlation)."""
    k = w.shape[0]
    p = k // 2
    n, h, wd, c = x.shape
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    out = np.zeros((n, h, wd, w.shape[3]), np.float32)
    for dy in range(k):
        for dx in range(k):
            patch = np.ascontiguousarray(xp[:, dy : dy + h, dx : dx + wd, :]).reshape(-1, c)
            out += (patch @ np.ascontiguousarray(w[dy, dx])).reshape(n, h, wd, -1)
    return out


def upscale2d(x):
    return x.repeat(2, axis=1).repeat(2, axis=2)


def conv2d_transpose_stride2_same(x, w4):
    """TF conv2d_transpose, stride 2, padding SAME, 4x4 filter [h, w, out, in]: the adjoint of a
    stride-2 SAME conv2d of a 2H input (which pads one pixel before and one after), so input pixel
    (y, x) scatters w4[ky, kx] into output pixel (2y + ky - 1, 2x + kx - 1)."""
    n, h, wd, c = x.shape
    out = np.zeros((n, 2 * h + 2, 2 * wd + 2, w4.shape[2]), np.float32)
    flat = x.reshape(-1, c)
    for ky in range(4):
        for kx in range(4):
            contrib = (flat @ w4[ky, kx].T).reshape(n, h, wd, -1)
            out[:, ky : ky + 2 * h : 2, kx : kx + 2 * wd : 2, :] += contrib
    return out[:, 1 : 2 * h + 1, 1 : 2 * wd + 1, :]


# ---------------------------------------------------------------------------------------------
# Official TF G_paper (networks.py), 'linear' structure


def crop_valid(x, n):
    """Drop the last n rows and columns: what a SAME convolution of a top-left crop gets wrong."""
    return x[:, : x.shape[1] - n, : x.shape[2] - n, :]


def tf_g_forward(variables, kwargs, latents, labels=None, crop=None):
    """Images NCHW of the official TF G_paper, given its variables {name: array} and static_kwargs.

    crop=(res, size): from resolution `res` on, compute only the top-left corner (the input of
    that block cropped to size x size), dropping what the crop's edge corrupts after each layer;
    the result is the exact top-left corner of the full image (at lod 0). Keeps 1024 fast."""
    with one_blas_thread():
        return _tf_g_forward(variables, kwargs, latents, labels, crop)


def _tf_g_forward(variables, kwargs, latents, labels, crop):
    res_log2 = int(np.log2(kwargs["resolution"]))
    use_wscale = kwargs.get("use_wscale", True)
    use_pn = kwargs.get("use_pixelnorm", True)
    act = lrelu if kwargs.get("use_leakyrelu", True) else (lambda x: np.maximum(x, 0))  # tf.nn.relu
    cropping = False

    def w_of(name, gain, fan_in=None):
        w = variables[name + "/weight"].astype(np.float32)
        if fan_in is None:
            fan_in = np.prod(w.shape[:-1])
        return w * np.float32(gain / np.sqrt(fan_in)) if use_wscale else w

    def bias(x, name):
        return x + variables[name + "/bias"].astype(np.float32)

    def PN(x):
        return pixel_norm(x) if use_pn else x

    def block(x, res):
        nonlocal cropping
        name = f"{2**res}x{2**res}"
        if res == 2:
            if kwargs.get("normalize_latents", True):
                x = pixel_norm(x)
            w = w_of(f"{name}/Dense", SQRT2 / 4)
            c = w.shape[1] // 16
            x = (x @ w).reshape(-1, c, 4, 4).transpose(0, 2, 3, 1)  # NCHW reshape, then NHWC
            x = PN(act(bias(x, f"{name}/Dense")))
            return PN(act(bias(correlate_same(x, w_of(f"{name}/Conv", SQRT2)), f"{name}/Conv")))
        if f"{name}/Conv0_up/weight" in variables:
            w = variables[f"{name}/Conv0_up/weight"]
            w = w_of(f"{name}/Conv0_up", SQRT2, fan_in=9 * w.shape[3])
            w = np.pad(w, ((1, 1), (1, 1), (0, 0), (0, 0)))
            w = w[1:, 1:] + w[:-1, 1:] + w[1:, :-1] + w[:-1, :-1]
            x = conv2d_transpose_stride2_same(x, w)
            x = crop_valid(x, 2) if cropping else x  # output 2y+1 also reads input y+1
            x = PN(act(bias(x, f"{name}/Conv0_up")))
        else:
            x = correlate_same(upscale2d(x), w_of(f"{name}/Conv0", SQRT2))
            x = PN(act(bias(crop_valid(x, 1) if cropping else x, f"{name}/Conv0")))
        x = correlate_same(x, w_of(f"{name}/Conv1", SQRT2))
        return PN(act(bias(crop_valid(x, 1) if cropping else x, f"{name}/Conv1")))

    def torgb(x, res):
        name = f"ToRGB_lod{res_log2 - res}"
        return bias(correlate_same(x, w_of(name, 1.0)), name)

    lod_in = float(np.asarray(variables.get("lod", 0.0)))
    x = latents.astype(np.float32)
    if labels is not None and labels.shape[1]:
        x = np.concatenate([x, labels.astype(np.float32)], axis=1)
    x = block(x, 2)
    images = torgb(x, 2)
    for res in range(3, res_log2 + 1):
        lod = res_log2 - res
        if crop and 2**res == crop[0]:
            assert lod_in == 0.0
            cropping = True
            x = x[:, : crop[1], : crop[1], :]
        x = block(x, res)
        img = torgb(x, res)
        if cropping:  # at lod 0 each level's lerp takes its own img (t = 0)
            images = img
            continue
        images = upscale2d(images)
        t = np.clip(lod_in - lod, 0.0, 1.0)
        images = img + (images - img) * np.float32(t)
    return images.transpose(0, 3, 1, 2)


def tf_d_forward(variables, kwargs, images, mbstd=4):
    """Scores [N, 1 + label_size] of the official TF D_paper at lod 0, images NCHW; its block's
    second conv is `Conv1_down` (fused_scale: conv and 2x2 average in one stride-2 4x4 conv, then
    bias and lrelu) or `Conv1` (conv, bias, lrelu, then the 2x2 average)."""
    with one_blas_thread():
        return _tf_d_forward(variables, kwargs, images, mbstd)


def _tf_d_forward(variables, kwargs, images, mbstd):
    res_log2 = int(np.log2(kwargs["resolution"]))

    def w_of(name, gain=SQRT2):
        w = variables[name + "/weight"].astype(np.float32)
        if not kwargs.get("use_wscale", True):
            return w
        return w * np.float32(gain / np.sqrt(np.prod(w.shape[:-1])))

    def bias(x, name):
        return x + variables[name + "/bias"].astype(np.float32)

    x = images.transpose(0, 2, 3, 1).astype(np.float32)
    x = lrelu(bias(correlate_same(x, w_of("FromRGB_lod0")), "FromRGB_lod0"))
    for res in range(res_log2, 2, -1):
        name = f"{2**res}x{2**res}"
        x = lrelu(bias(correlate_same(x, w_of(f"{name}/Conv0")), f"{name}/Conv0"))
        if f"{name}/Conv1_down/weight" in variables:
            w = np.pad(w_of(f"{name}/Conv1_down"), ((1, 1), (1, 1), (0, 0), (0, 0)))
            w = (w[1:, 1:] + w[:-1, 1:] + w[1:, :-1] + w[:-1, :-1]) * np.float32(0.25)
            h = x.shape[1]  # TF conv2d stride 2, SAME, 4x4: output (y, x) reads input 2y-1 .. 2y+2
            xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
            taps = [(ky, kx) for ky in range(4) for kx in range(4)]
            x = sum(xp[:, ky : ky + h : 2, kx : kx + h : 2, :] @ w[ky, kx] for ky, kx in taps)
            x = lrelu(bias(x, f"{name}/Conv1_down"))
        else:
            x = lrelu(bias(correlate_same(x, w_of(f"{name}/Conv1")), f"{name}/Conv1"))
            n, h, wd, c = x.shape
            x = x.reshape(n, h // 2, 2, wd // 2, 2, c).mean(axis=(2, 4))  # downscale2d
    if mbstd > 1:  # minibatch_stddev_layer: sample n is member n % M of group n // M
        g = min(mbstd, x.shape[0])
        y = x.reshape(g, -1, *x.shape[1:])
        y = np.sqrt(np.mean(np.square(y - y.mean(axis=0, keepdims=True)), axis=0) + np.float32(1e-8))
        y = np.tile(y.mean(axis=(1, 2, 3), keepdims=True), (g, x.shape[1], x.shape[2], 1))
        x = np.concatenate([x, y], axis=3)
    x = lrelu(bias(correlate_same(x, w_of("4x4/Conv")), "4x4/Conv"))
    x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)  # the official code is NCHW
    x = lrelu(bias(x @ w_of("4x4/Dense0"), "4x4/Dense0"))
    return bias(x @ w_of("4x4/Dense1", 1.0), "4x4/Dense1")


def tf_g_variables(rng, resolution, channels=3, latent=512, labels=0, fmap_base=8192, fmap_max=512,
                   fused=True):  # fmt: skip
    """Random variables of a TF G_paper, named and shaped as the official code creates them."""

    def nf(stage):
        return min(int(fmap_base / (2.0**stage)), fmap_max)

    def r(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    res_log2 = int(np.log2(resolution))
    v = {"lod": np.float32(0.0)}
    v["4x4/Dense/weight"], v["4x4/Dense/bias"] = r(latent + labels, nf(1) * 16), r(nf(1))
    v["4x4/Conv/weight"], v["4x4/Conv/bias"] = r(3, 3, nf(1), nf(1)), r(nf(1))
    for res in range(3, res_log2 + 1):
        name = f"{2**res}x{2**res}"
        if fused:
            v[f"{name}/Conv0_up/weight"] = r(3, 3, nf(res - 1), nf(res - 2))
            v[f"{name}/Conv0_up/bias"] = r(nf(res - 1))
        else:
            v[f"{name}/Conv0/weight"] = r(3, 3, nf(res - 2), nf(res - 1))
            v[f"{name}/Conv0/bias"] = r(nf(res - 1))
        v[f"{name}/Conv1/weight"], v[f"{name}/Conv1/bias"] = r(3, 3, nf(res - 1), nf(res - 1)), r(nf(res - 1))
    for res in range(2, res_log2 + 1):
        v[f"ToRGB_lod{res_log2 - res}/weight"] = r(1, 1, nf(res - 1), channels)
        v[f"ToRGB_lod{res_log2 - res}/bias"] = r(channels)
    return v


def tf_d_variables(rng, resolution, channels=3, labels=0, fmap_base=8192, fmap_max=512, fused=True, mbstd=4):
    def nf(stage):
        return min(int(fmap_base / (2.0**stage)), fmap_max)

    def r(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    res_log2 = int(np.log2(resolution))
    v = {"lod": np.float32(0.0)}
    for res in range(res_log2, 1, -1):
        v[f"FromRGB_lod{res_log2 - res}/weight"] = r(1, 1, channels, nf(res - 1))
        v[f"FromRGB_lod{res_log2 - res}/bias"] = r(nf(res - 1))
    for res in range(res_log2, 2, -1):
        name = f"{2**res}x{2**res}"
        v[f"{name}/Conv0/weight"], v[f"{name}/Conv0/bias"] = r(3, 3, nf(res - 1), nf(res - 1)), r(nf(res - 1))
        conv1 = f"{name}/Conv1_down" if fused else f"{name}/Conv1"
        v[f"{conv1}/weight"], v[f"{conv1}/bias"] = r(3, 3, nf(res - 1), nf(res - 2)), r(nf(res - 2))
    v["4x4/Conv/weight"], v["4x4/Conv/bias"] = r(3, 3, nf(1) + (1 if mbstd > 1 else 0), nf(1)), r(nf(1))
    v["4x4/Dense0/weight"], v["4x4/Dense0/bias"] = r(nf(1) * 16, nf(0)), r(nf(0))
    v["4x4/Dense1/weight"], v["4x4/Dense1/bias"] = r(nf(0), 1 + labels), r(1 + labels)
    return v


# ---------------------------------------------------------------------------------------------
# Theano-era G_paper (original-theano-version network.py): Lasagne layers


def theano_g_forward(params, resolution, latents, crop=None):
    """Images NCHW of the Theano G_paper at cur_lod 0, from its flat param_values list
    (per layer: W, the WScaleLayer's scale, its bias); crop as in tf_g_forward."""
    with one_blas_thread():
        return _theano_g_forward(params, resolution, latents, crop)


def _theano_g_forward(params, resolution, latents, crop):
    it = iter(params)
    res_log2 = int(np.log2(resolution))

    def ws(v):  # WScaleLayer: output * scale + b, then the layer's nonlinearity
        s = np.float32(next(it))
        return v * s + next(it).astype(np.float32)

    def conv3(x, W):  # Conv2DLayer pad=1, flip_filters=True: a true convolution (flipped kernel)
        return correlate_same(x, W[:, :, ::-1, ::-1].transpose(2, 3, 1, 0))

    x = pixel_norm(latents.astype(np.float32))  # Glnorm
    W = next(it)  # G1a: 4x4 'full' convolution of the 1x1 latent: pixel (y, x) gets W[c, i, y, x]
    x = np.einsum("ni,ciyx->nyxc", x, W).astype(np.float32)
    x = pixel_norm(lrelu(ws(x)))
    x = pixel_norm(lrelu(ws(conv3(x, next(it)))))
    n = 0
    for res in range(3, res_log2 + 1):
        if crop and 2**res == crop[0]:
            x, n = x[:, : crop[1], : crop[1], :], 1
        x = upscale2d(x)
        x = pixel_norm(lrelu(ws(crop_valid(conv3(x, next(it)), n))))
        x = pixel_norm(lrelu(ws(crop_valid(conv3(x, next(it)), n))))
    W = next(it)  # Glod0, a NINLayer (in, out) on the last block: LODSelectLayer at cur_lod 0
    return ws(x @ W).transpose(0, 3, 1, 2)


def tf_fused_from_theano(params, resolution):
    """The TF variables of the same G as Theano `params`, with fused Conv0_up layers: legacy.py's
    conversion (flip, fold the scale), then each Conv0 kernel K (HWIO) written as the fused kernel
    whose nearest-up + convolution equivalent is K: mirrored, in [k, k, out, in]."""
    it = iter(params)
    res_log2 = int(np.log2(resolution))
    v = {"lod": np.float32(0.0)}

    def put(name, w, gain):
        he = gain / np.sqrt(np.prod(w.shape[:-1]))
        v[name + "/weight"] = (w * np.float32(next(it)) / np.float32(he)).astype(np.float32)
        v[name + "/bias"] = next(it)

    def conv(w):
        return w.transpose(2, 3, 1, 0)[::-1, ::-1]

    W = next(it)
    put("4x4/Dense", W.transpose(1, 0, 2, 3).reshape(W.shape[1], -1), SQRT2 / 4)
    put("4x4/Conv", conv(next(it)), SQRT2)
    for res in range(3, res_log2 + 1):
        name = f"{2**res}x{2**res}"
        put(f"{name}/Conv0_up", conv(next(it)), SQRT2)  # fan-in 9 * in either way
        w = v[f"{name}/Conv0_up/weight"]
        v[f"{name}/Conv0_up/weight"] = np.ascontiguousarray(w[::-1, ::-1].transpose(0, 1, 3, 2))
        put(f"{name}/Conv1", conv(next(it)), SQRT2)
    for lod in range(res_log2 - 1):
        put(f"ToRGB_lod{lod}", next(it)[np.newaxis, np.newaxis], 1.0)
    return v


def theano_params(rng, resolution, channels=3, latent=512, fmap_base=8192, fmap_max=512, kind="G"):
    """Random param_values of a Theano G_paper or D_paper in Lasagne's order and layouts."""

    def nf(stage):
        return min(int(fmap_base / (2.0**stage)), fmap_max)

    def layer(*shape):
        w = rng.standard_normal(shape, dtype=np.float32)
        scale = np.asarray(rng.uniform(0.01, 0.1), dtype=np.float32)  # a 0-d array, as Theano stores it
        return [w, scale, rng.standard_normal(shape[0] if len(shape) == 4 else shape[1]).astype(np.float32)]

    res_log2 = int(np.log2(resolution))
    p = []
    if kind == "G":
        p += layer(nf(1), latent, 4, 4) + layer(nf(1), nf(1), 3, 3)
        for res in range(3, res_log2 + 1):
            p += layer(nf(res - 1), nf(res - 2), 3, 3) + layer(nf(res - 1), nf(res - 1), 3, 3)
        for res in range(res_log2, 1, -1):
            p += layer(nf(res - 1), channels)  # NIN (in, out): the bias has `out` entries
    else:
        p += layer(channels, nf(res_log2 - 1))
        for res in range(res_log2, 2, -1):
            p += layer(nf(res - 1), nf(res - 1), 3, 3) + layer(nf(res - 2), nf(res - 1), 3, 3)
            p += layer(channels, nf(res - 2))
        p += layer(nf(1), nf(1) + 1, 3, 3) + layer(nf(0), nf(1), 4, 4) + layer(nf(0), 1)
    return p


# ---------------------------------------------------------------------------------------------
# pytorch_GAN_zoo GNet (progressive_conv_net.py, custom_layers.py)


def zoo_g_forward(sd, depths, latents, alpha=0.0, tanh=False):
    """Images NCHW of the GAN zoo's GNet from its state dict (NumPy arrays); `depths` = scales."""
    with one_blas_thread():
        return _zoo_g_forward(sd, depths, latents, alpha, tanh)


def _zoo_g_forward(sd, depths, latents, alpha, tanh):

    def c_of(w):
        return np.float32(np.sqrt(2.0 / np.prod(w.shape[1:])))  # He's constant on the output

    def conv(x, key):
        w, b = sd[key + ".module.weight"], sd[key + ".module.bias"]
        return (correlate_same(x, w.transpose(2, 3, 1, 0)) + b) * c_of(w)

    x = pixel_norm(latents.astype(np.float32))
    w, b = sd["formatLayer.module.weight"], sd["formatLayer.module.bias"]
    x = lrelu((x @ w.T + b) * c_of(w)).reshape(len(x), -1, 4, 4).transpose(0, 2, 3, 1)
    x = pixel_norm(x)
    x = pixel_norm(lrelu(conv(x, "groupScale0.0")))
    y = None
    n_scales = len(depths) - 1
    if alpha > 0 and n_scales == 1:
        y = upscale2d(conv(x, "toRGBLayers.0"))
    for s in range(n_scales):
        x = upscale2d(x)
        x = pixel_norm(lrelu(conv(x, f"scaleLayers.{s}.0")))
        x = pixel_norm(lrelu(conv(x, f"scaleLayers.{s}.1")))
        if alpha > 0 and s == n_scales - 2:
            y = upscale2d(conv(x, f"toRGBLayers.{s + 1}"))
    x = conv(x, f"toRGBLayers.{n_scales}")
    if alpha > 0:
        x = alpha * y + (1.0 - alpha) * x
    if tanh:
        x = np.tanh(x)
    return x.transpose(0, 3, 1, 2)


def zoo_state(rng, depths, latent=512, channels=3, labels=0, mbstd=False):
    """Random netG / netD state dicts (NumPy) with the GAN zoo's keys and shapes."""

    def lin(n_out, n_in):
        return (rng.standard_normal((n_out, n_in)).astype(np.float32),
                rng.standard_normal(n_out).astype(np.float32))  # fmt: skip

    def conv(n_out, n_in, k):
        return (rng.standard_normal((n_out, n_in, k, k)).astype(np.float32),
                rng.standard_normal(n_out).astype(np.float32))  # fmt: skip

    def put(sd, key, wb):
        sd[key + ".module.weight"], sd[key + ".module.bias"] = wb

    d0 = depths[0]
    g: dict = {}
    put(g, "formatLayer", lin(16 * d0, latent + labels))
    put(g, "groupScale0.0", conv(d0, d0, 3))
    put(g, "toRGBLayers.0", conv(channels, d0, 1))
    for i, d in enumerate(depths[1:]):
        put(g, f"scaleLayers.{i}.0", conv(d, depths[i], 3))
        put(g, f"scaleLayers.{i}.1", conv(d, d, 3))
        put(g, f"toRGBLayers.{i + 1}", conv(channels, d, 1))
    dd: dict = {}
    put(dd, "fromRGBLayers.0", conv(d0, channels, 1))
    put(dd, "groupScaleZero.0", conv(d0, d0 + (1 if mbstd else 0), 3))
    put(dd, "groupScaleZero.1", lin(d0, d0 * 16))
    put(dd, "decisionLayer", lin(1 + labels, d0))
    for i, d in enumerate(depths[1:]):
        put(dd, f"scaleLayers.{i}.0", conv(d, d, 3))
        put(dd, f"scaleLayers.{i}.1", conv(depths[i], d, 3))
        put(dd, f"fromRGBLayers.{i + 1}", conv(d, channels, 1))
    return g, dd


# ---------------------------------------------------------------------------------------------
# Writers of the exact on-disk formats


def fake_module(monkeypatch, dotted: str) -> types.ModuleType:
    """Register module `dotted` (and its parents) so that pickle can name classes in it."""
    parts = dotted.split(".")
    mod = None
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        mod = sys.modules.get(name) or types.ModuleType(name)
        monkeypatch.setitem(sys.modules, name, mod)
    return mod


def network_class(monkeypatch, module: str, name: str = "Network") -> type:
    """A class pickled as `module.name` whose pickled state is its `state` attribute."""
    mod = fake_module(monkeypatch, module)

    def getstate(self):
        return self.state

    cls = type(name, (), {"__getstate__": getstate, "__module__": module, "__qualname__": name})
    setattr(mod, name, cls)
    return cls


def network(cls: type, state: dict) -> object:
    obj = cls.__new__(cls)
    obj.state = state
    return obj


def tf_state(name: str, func: str, kwargs: dict, variables: dict) -> dict:
    """tfutil.Network.__getstate__ (version 2)."""
    return {"version": 2, "name": name, "static_kwargs": kwargs,
            "build_module_src": "import os\nos.system('touch SHOULD_NOT_EXIST')\n",
            "build_func_name": func, "variables": list(variables.items())}  # fmt: skip


class Py2Pickler(pickle._Pickler):
    """Protocol 2 the way Python 2 wrote it: str and bytes as py2 str (BINSTRING), Python 2 module
    names (copy_reg, __builtin__, numpy.core.multiarray)."""

    dispatch = dict(pickle._Pickler.dispatch)
    RENAMES = {"numpy._core.multiarray": "numpy.core.multiarray", "copyreg": "copy_reg",
               "builtins": "__builtin__"}  # fmt: skip

    def save_py2_str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None):
        name = name or obj.__qualname__
        module = self.RENAMES.get(obj.__module__, obj.__module__)
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii"))
        self.memoize(obj)


def write_py2_pickle(path, obj) -> None:
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(obj)


def theano_state(func: str, spec: dict, params: list, cur_lod: float = 0.0) -> dict:
    """network.Network.__getstate__ of the Theano branch."""
    return {"build_func_spec": {"func": func, **spec},
            "build_module_src": "import os\nos.system('touch SHOULD_NOT_EXIST')\n",
            "param_values": params,
            "toplevel_params": {"cur_lod": np.asarray(cur_lod, dtype=np.float32)}}  # fmt: skip

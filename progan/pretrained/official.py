"""The official ProGAN networks (tkarras/progressive_growing_of_gans): TF and Theano-era pickles.

TF format: `tfutil.Network` state `{version: 2, name, static_kwargs, build_module_src,
build_func_name, variables: [(name, ndarray)]}`, `G_paper` / `D_paper` variables in TF layouts
(conv HWIO, fused `Conv0_up` [k, k, out, in], dense [in, out], per-channel biases, equalized-lr
scale applied at run time).

Theano format (the published `karras2018iclr-*.pkl`): `network.Network` state `{build_func_spec,
param_values, toplevel_params}`; `param_values` lists weight, stored scale, bias, layer after
layer. It is turned into the TF format first, as the official `legacy.py` does: unfused
resampling, minibatch-stddev group 16, kernels flipped (Theano convolves), the stored scale folded
into the weight.

The TF variables then map onto progan's G_paper/D_paper exactly. The fused layers become plain
ones with rewritten kernels: a fused `Conv0_up` (kernel padded, four shifted copies summed,
transposed convolution with stride 2) equals nearest upsampling followed by a 3x3 convolution
with the kernel mirrored in both axes; a fused `Conv1_down` equals a 3x3 convolution followed by
2x2 average pooling with the kernel as it is. The 4x4 dense bias, one per feature map in TF, is
repeated over the 16 pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from progan.errors import UserError
from progan.networks import Discriminator, Generator, NetworkConfig

THEANO_FUNCS = {
    "G_paper": "G_paper",
    "G_progressive_8": "G_paper",
    "D_paper": "D_paper",
    "D_progressive_8": "D_paper",
}
# Defaults of the official build functions, for keyword arguments a file does not store.
TF_G_DEFAULTS = dict(num_channels=1, resolution=32, label_size=0, fmap_base=8192, fmap_decay=1.0,
                     fmap_max=512, latent_size=None, normalize_latents=True, use_wscale=True,
                     use_pixelnorm=True, pixelnorm_epsilon=1e-8, use_leakyrelu=True)  # fmt: skip
TF_D_DEFAULTS = dict(num_channels=1, resolution=32, label_size=0, fmap_base=8192, fmap_decay=1.0,
                     fmap_max=512, use_wscale=True, mbstd_group_size=4)  # fmt: skip
THEANO_DEFAULTS = dict(
    num_channels=1, resolution=32, label_size=0, fmap_base=4096, fmap_decay=1.0, fmap_max=256
)


@dataclass
class OfficialNetwork:
    """One network of an official pickle in the TF format (Theano ones converted)."""

    func: str  # "G_paper" or "D_paper"
    kwargs: dict
    variables: dict[str, np.ndarray]
    era: str  # "tf" or "theano"


def _array(value: object, what: str, source: str) -> np.ndarray:
    if isinstance(value, np.generic):  # a NumPy scalar (the TF 'lod' variable)
        value = np.asarray(value)
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
        raise UserError(
            f"{source}: {what} is not a numeric array; the file is not an official ProGAN network"
        )
    return value


def read_network(stub: object, source: str) -> OfficialNetwork | None:
    """An OfficialNetwork from a stub's state; None for a network that is not G_paper/D_paper."""
    state = getattr(stub, "state", None)
    if not isinstance(state, dict):
        raise UserError(f"{source}: a network without state; the file is not an official ProGAN pickle")
    # Either class may carry either state: the published karras2018iclr-*.pkl name tfutil.Network
    # with Theano-era state, which tfutil's import handlers (legacy.py) convert on load.
    if "version" in state:
        if state.get("version") != 2 or not isinstance(state.get("variables"), list):
            raise UserError(
                f"{source}: network state version {state.get('version')!r}; expected version 2 "
                "with 'variables' (the format of tkarras/progressive_growing_of_gans)"
            )
        func = str(state.get("build_func_name"))
        if func not in ("G_paper", "D_paper"):
            return None
        variables = {str(k): _array(v, str(k), source) for k, v in state["variables"]}
        return OfficialNetwork(func, dict(state.get("static_kwargs") or {}), variables, "tf")
    spec = state.get("build_func_spec")
    if not isinstance(spec, dict) or not isinstance(state.get("param_values"), list):
        raise UserError(
            f"{source}: a network state with neither 'variables' (TF) nor 'build_func_spec' and "
            "'param_values' (Theano); not an official ProGAN pickle"
        )
    if spec.get("func") not in THEANO_FUNCS:
        return None
    return theano_to_tf(state, source)


def theano_to_tf(state: dict, source: str) -> OfficialNetwork:
    """A Theano-era network state in the TF format (what the official legacy.py does on load)."""
    spec = dict(state["build_func_spec"])
    func = THEANO_FUNCS[spec.pop("func")]
    unsupported = {"label_size": 0, "use_batchnorm": False, "tanh_at_end": None, "mbstat_func": "Tstdeps",
                   "mbstat_avg": "all", "mbdisc_kernels": None, "use_layernorm": False}  # fmt: skip
    for key, expected in unsupported.items():
        if spec.pop(key, expected) != expected:
            raise UserError(
                f"{source}: a Theano network with {key}={state['build_func_spec'][key]!r}, which the "
                f"official TF code does not import either (only {key}={expected!r})"
            )
    spec.pop("use_gdrop", None)  # generalized dropout: no effect at test time
    kwargs = {**THEANO_DEFAULTS, **spec, "fused_scale": False, "mbstd_group_size": 16}
    res_log2 = int(np.log2(kwargs["resolution"]))
    use_wscale = kwargs.get("use_wscale", True)
    params = iter(state["param_values"])
    relu, linear = math.sqrt(2.0), 1.0
    out: dict[str, np.ndarray] = {}

    def nxt() -> np.ndarray:
        try:
            return np.asarray(_array(next(params), "a Theano parameter", source))
        except StopIteration:
            raise UserError(f"{source}: too few Theano parameters for a {func} at {2**res_log2}") from None

    def layer(name: str, gain: float, w: np.ndarray) -> None:
        # Views stay views (transposes, flips): progan's layout is copied once, at the end.
        if use_wscale:
            # Theano stored W / scale and multiplied the output by scale; TF multiplies the weight
            # by the He constant at run time, so the stored weight is W * scale / he.
            he = np.float32(gain / np.sqrt(np.prod(w.shape[:-1])))
            w = (w.astype(np.float32, copy=False) * np.float32(nxt())) / he
        out[name + "/weight"] = w.astype(np.float32, copy=False)
        out[name + "/bias"] = nxt().astype(np.float32)

    def conv(w: np.ndarray) -> np.ndarray:  # Theano OIHW, convolution -> TF HWIO, correlation
        return w.transpose(2, 3, 1, 0)[::-1, ::-1]

    if func == "G_paper":
        layer("4x4/Dense", relu / 4, _dense4(nxt()))
        layer("4x4/Conv", relu, conv(nxt()))
        for r in range(3, res_log2 + 1):
            layer(f"{2**r}x{2**r}/Conv0", relu, conv(nxt()))
            layer(f"{2**r}x{2**r}/Conv1", relu, conv(nxt()))
        for lod in range(res_log2 - 1):
            layer(f"ToRGB_lod{lod}", linear, nxt()[np.newaxis, np.newaxis])
    else:
        layer("FromRGB_lod0", relu, nxt()[np.newaxis, np.newaxis])
        for r in range(res_log2, 2, -1):
            layer(f"{2**r}x{2**r}/Conv0", relu, conv(nxt()))
            layer(f"{2**r}x{2**r}/Conv1", relu, conv(nxt()))
            layer(f"FromRGB_lod{res_log2 - (r - 1)}", relu, nxt()[np.newaxis, np.newaxis])
        layer("4x4/Conv", relu, conv(nxt()))
        w = nxt()  # a 4x4 'valid' convolution (convolving flips it) = a dense layer on the NCHW pixels
        layer("4x4/Dense0", relu, w[:, :, ::-1, ::-1].reshape(w.shape[0], -1).T)
        layer("4x4/Dense1", linear, nxt())
    if next(params, None) is not None:
        raise UserError(f"{source}: more Theano parameters than a {func} at {2**res_log2} has")
    lod = (state.get("toplevel_params") or {}).get("cur_lod", 0.0)
    out["lod"] = np.asarray(lod, dtype=np.float32)
    return OfficialNetwork(func, kwargs, out, "theano")


def _dense4(w: np.ndarray) -> np.ndarray:
    """G's first Theano layer, a 'full' 4x4 convolution (C, in, 4, 4) of the 1x1 latent, as a TF
    dense weight [in, C*16]: convolving a single pixel places W[c, i, y, x] at pixel (y, x)."""
    return w.transpose(1, 0, 2, 3).reshape(w.shape[1], -1)


def _kw(net: OfficialNetwork, key: str, defaults: dict) -> object:
    return net.kwargs.get(key, defaults.get(key))


def _nvars(variables: dict, prefix: str) -> int:
    return sum(1 for k in variables if k.startswith(prefix) and k.endswith("/weight"))


def config_from(G: OfficialNetwork, D: OfficialNetwork | None, source: str) -> NetworkConfig:
    """progan's NetworkConfig for an official G (and D), from its keyword arguments and shapes."""
    v = G.variables
    n_rgb = _nvars(v, "ToRGB_lod")
    if "4x4/Dense/weight" not in v or n_rgb == 0:
        raise UserError(
            f"{source}: no '4x4/Dense/weight' or 'ToRGB_lod0/weight'; not an official G_paper network"
        )
    resolution = 2 ** (n_rgb + 1)
    channels = int(v["ToRGB_lod0/weight"].shape[-1])
    label_size = int(_kw(G, "label_size", TF_G_DEFAULTS) or 0)
    in_features = int(v["4x4/Dense/weight"].shape[0])
    eps = float(_kw(G, "pixelnorm_epsilon", TF_G_DEFAULTS))
    if abs(eps - 1e-8) > 1e-12:
        raise UserError(f"{source}: pixelnorm_epsilon={eps}; progan's pixel norm uses the paper's 1e-8")
    if _kw(G, "resolution", TF_G_DEFAULTS) != resolution or _kw(G, "num_channels", TF_G_DEFAULTS) != channels:
        raise UserError(
            f"{source}: the stored resolution/num_channels ({_kw(G, 'resolution', TF_G_DEFAULTS)}, "
            f"{_kw(G, 'num_channels', TF_G_DEFAULTS)}) disagree with the variables ({resolution}, {channels})"
        )
    mbstd = int(_kw(D, "mbstd_group_size", TF_D_DEFAULTS)) if D is not None else 4
    try:
        return NetworkConfig(
            resolution=resolution,
            channels=channels,
            latent_size=in_features - label_size,
            label_size=label_size,
            fmap_base=int(_kw(G, "fmap_base", TF_G_DEFAULTS)),
            fmap_decay=float(_kw(G, "fmap_decay", TF_G_DEFAULTS)),
            fmap_max=int(_kw(G, "fmap_max", TF_G_DEFAULTS)),
            mbstd_group_size=mbstd,
            mbstd_mode="official",
            normalize_latents=bool(_kw(G, "normalize_latents", TF_G_DEFAULTS)),
            use_pixelnorm=bool(_kw(G, "use_pixelnorm", TF_G_DEFAULTS)),
            activation="lrelu" if _kw(G, "use_leakyrelu", TF_G_DEFAULTS) else "relu",
            # The D's block order: Conv1_down (fused_scale=True) pools before its activation.
            fused_scale=any("/Conv1_down/" in k for k in D.variables)
            if D is not None
            else any("/Conv0_up/" in k for k in G.variables),
        )
    except ValueError as e:
        raise UserError(f"{source}: progan cannot build this network ({e})") from None


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


class _Mapper:
    """Fills a progan module's state dict from TF variables, checking every name and shape."""

    def __init__(self, net: OfficialNetwork, module: torch.nn.Module, source: str) -> None:
        self.vars = dict(net.variables)
        self.vars.pop("lod", None)
        self.use_wscale = bool(net.kwargs.get("use_wscale", True))
        self.module = module
        self.expected = module.state_dict()
        self.state: dict[str, torch.Tensor] = {}
        self.source = source
        self.func = net.func

    def take(self, name: str) -> np.ndarray:
        if name not in self.vars:
            raise UserError(
                f"{self.source}: {self.func} has no variable '{name}'; the file is damaged or not ProGAN's"
            )
        return self.vars.pop(name)

    def put(self, key: str, value: np.ndarray, tf_name: str) -> None:
        t = _t(value)
        if t.shape != self.expected[key].shape:
            raise UserError(
                f"{self.source}: {self.func} variable '{tf_name}' has shape {tuple(value.shape)}, "
                f"but its settings need {tuple(self.expected[key].shape)} (after conversion)"
            )
        self.state[key] = t

    def layer(self, key: str, tf_name: str, to_oihw, bias=lambda b: b) -> None:
        w = to_oihw(self.take(tf_name + "/weight"))
        if not self.use_wscale:  # the stored weight is the effective one: undo progan's run-time scale
            w = w / self.module.get_submodule(key).scale
        self.put(key + ".weight", w, tf_name + "/weight")
        self.put(key + ".bias", bias(self.take(tf_name + "/bias")), tf_name + "/bias")

    def finish(self) -> dict[str, torch.Tensor]:
        if self.vars:
            raise UserError(
                f"{self.source}: unexpected {self.func} variables {sorted(self.vars)[:3]}; "
                "not a G_paper/D_paper network"
            )
        return self.state


def hwio(w: np.ndarray) -> np.ndarray:
    return w.transpose(3, 2, 0, 1)


def fused_up(w: np.ndarray) -> np.ndarray:
    # [k, k, out, in] of a transposed convolution -> OIHW of the equivalent convolution: mirrored.
    return w.transpose(2, 3, 0, 1)[:, :, ::-1, ::-1]


def generator_state(net: OfficialNetwork, G: Generator, source: str) -> dict[str, torch.Tensor]:
    m = _Mapper(net, G, source)
    res_log2 = int(math.log2(G.config.resolution))
    m.layer("dense", "4x4/Dense", lambda w: w.T, bias=lambda b: np.repeat(b, 16))
    m.layer("conv4", "4x4/Conv", hwio)
    for r in range(3, res_log2 + 1):
        name = f"{2**r}x{2**r}"
        if f"{name}/Conv0_up/weight" in m.vars:
            m.layer(f"blocks.{2**r}.conv0", f"{name}/Conv0_up", fused_up)
        else:
            m.layer(f"blocks.{2**r}.conv0", f"{name}/Conv0", hwio)
        m.layer(f"blocks.{2**r}.conv1", f"{name}/Conv1", hwio)
    for r in range(2, res_log2 + 1):
        m.layer(f"torgb.{2**r}", f"ToRGB_lod{res_log2 - r}", hwio)
    return m.finish()


def discriminator_state(net: OfficialNetwork, D: Discriminator, source: str) -> dict[str, torch.Tensor]:
    m = _Mapper(net, D, source)
    res_log2 = int(math.log2(D.config.resolution))
    for r in range(2, res_log2 + 1):
        m.layer(f"fromrgb.{2**r}", f"FromRGB_lod{res_log2 - r}", hwio)
    for r in range(3, res_log2 + 1):
        name = f"{2**r}x{2**r}"
        m.layer(f"blocks.{2**r}.conv0", f"{name}/Conv0", hwio)
        # A fused Conv1_down is a 3x3 convolution, then 2x2 average pooling: the same kernel.
        down = f"{name}/Conv1_down" if f"{name}/Conv1_down/weight" in m.vars else f"{name}/Conv1"
        m.layer(f"blocks.{2**r}.conv1", down, hwio)
    m.layer("conv4", "4x4/Conv", hwio)
    m.layer("dense0", "4x4/Dense0", lambda w: w.T)
    m.layer("dense1", "4x4/Dense1", lambda w: w.T)
    return m.finish()


def stage_of(net: OfficialNetwork, resolution: int) -> tuple[int, float]:
    """progan's (stage resolution, alpha) for the network's `lod` variable.

    The official output at lod = k + f (0 <= f < 1) is resolution / 2**k blended with the
    upsampled level below by f, which is progan's stage resolution / 2**k with alpha = 1 - f."""
    lod = float(np.asarray(net.variables.get("lod", 0.0)).reshape(()))
    lod = min(max(lod, 0.0), math.log2(resolution) - 2)
    k = math.floor(lod)
    return resolution // 2**k, 1.0 - (lod - k)

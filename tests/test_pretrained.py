"""progan import: official TF / Theano-era pickles and GAN zoo checkpoints give the original images."""

from __future__ import annotations

import contextlib
import os
import pickle

import numpy as np
import pretrained_files as pf
import pytest
import torch
from helpers import one_line_error, run_cli
from safetensors.torch import save_file

from progan.checkpoint import load_snapshot
from progan.directions import load_directions
from progan.errors import UserError
from progan.pretrained.importer import import_file, read_file

SMALL = dict(latent=16, fmap_base=64, fmap_max=16)


@contextlib.contextmanager
def torch_threads(n):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def assert_images_match(ours: torch.Tensor, reference: np.ndarray) -> None:
    """1e-4 relative to the images' scale (fp32 sums in another order differ by ~1e-6)."""
    ref = reference.astype(np.float32)
    scale = float(np.abs(ref).max())
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-4, atol=1e-4 * scale)


def write_tf_pickle(path, monkeypatch, G_vars, D_vars, G_kwargs, D_kwargs, cls_module="tfutil"):
    Network = pf.network_class(monkeypatch, cls_module)
    G = pf.network(Network, pf.tf_state("G", "G_paper", G_kwargs, G_vars))
    D = pf.network(Network, pf.tf_state("D", "D_paper", D_kwargs, D_vars))
    Gs = pf.network(Network, pf.tf_state("Gs", "G_paper", G_kwargs, G_vars))
    with open(path, "wb") as f:
        pickle.dump((G, D, Gs), f, protocol=4)  # misc.save_pkl: HIGHEST_PROTOCOL of Python 3.6
    return path


PLAIN = dict(use_wscale=False, use_leakyrelu=False, use_pixelnorm=False, normalize_latents=False)


@pytest.mark.parametrize(
    "fused,labels,resolution,lod,extra",
    [(True, 0, 16, 0.0, {}), (False, 0, 16, 0.0, {}), (True, 3, 32, 0.0, {}), (False, 2, 16, 0.25, {}),
     (True, 0, 8, 0.0, PLAIN)],
)  # fmt: skip
def test_tf_format_matches_the_official_g_paper(tmp_path, monkeypatch, fused, labels, resolution, lod, extra):
    rng = np.random.default_rng(1)
    kwargs = dict(num_channels=3, resolution=resolution, label_size=labels, fmap_base=64, fmap_max=16,
                  latent_size=16, fused_scale=fused, **extra)  # fmt: skip
    G_vars = pf.tf_g_variables(rng, resolution, labels=labels, fused=fused, **SMALL)
    G_vars["lod"] = np.float32(lod)
    if not extra.get("use_wscale", True):  # weights initialized at He's std instead of N(0, 1)
        G_vars = {k: v * np.float32(0.2) if k.endswith("weight") else v for k, v in G_vars.items()}
    D_vars = pf.tf_d_variables(rng, resolution, labels=labels, fused=fused, fmap_base=64, fmap_max=16)
    path = write_tf_pickle(tmp_path / "net.pkl", monkeypatch, G_vars, D_vars, kwargs, dict(kwargs))
    imp, snap_dir = import_file(path, tmp_path / "snap")
    assert imp.origin == "official-tf" and imp.G is not None and imp.D is not None
    assert not (tmp_path / "SHOULD_NOT_EXIST").exists() and not os.path.exists("SHOULD_NOT_EXIST")
    snap = load_snapshot(snap_dir)
    z = np.random.RandomState(5).randn(4, 16).astype(np.float32)
    lab = np.eye(labels, dtype=np.float32)[[i % labels for i in range(4)]] if labels else None
    with torch.no_grad():
        ours = snap.G_ema(torch.from_numpy(z), None if lab is None else torch.from_numpy(lab))
    assert_images_match(ours, pf.tf_g_forward(G_vars, kwargs, z, lab))
    # D imports with every weight in place and runs at the imported stage; at lod 0 it scores as
    # the official D_paper does, fused (act after the 2x2 average) or not (act before it).
    D = imp.D
    D.set_stage(*imp.stage)
    assert D.config.fused_scale == fused
    with torch.no_grad():
        scores = D(ours)
    assert scores.shape == (4, 1 + labels)
    if lod == 0.0:
        ref = pf.tf_d_forward(D_vars, kwargs, ours.numpy())
        np.testing.assert_allclose(scores.numpy(), ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())


def test_fused_downscale_equals_the_official_conv_then_pool():
    """Conv1_down: conv2d with the padded, summed, quartered kernel at stride 2 (TF) equals a 3x3
    convolution with the same kernel then 2x2 average pooling (progan's D)."""
    from progan.layers import EqualizedConv2d, downsample2x
    from progan.pretrained.official import hwio

    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 8, 8, 5)).astype(np.float32)
    w = rng.standard_normal((3, 3, 5, 4)).astype(np.float32)
    w4 = np.pad(w, ((1, 1), (1, 1), (0, 0), (0, 0)))
    w4 = (w4[1:, 1:] + w4[:-1, 1:] + w4[1:, :-1] + w4[:-1, :-1]) * 0.25
    # TF conv2d stride 2, SAME, 4x4 on 8x8: pads 1 before and 1 after; output (y, x) reads 2y-1..2y+2.
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = np.zeros((2, 4, 4, 4), np.float32)
    for ky in range(4):
        for kx in range(4):
            ref += xp[:, ky : ky + 8 : 2, kx : kx + 8 : 2, :] @ w4[ky, kx]
    conv = EqualizedConv2d(5, 4, 3)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(hwio(w))) / conv.scale)
        conv.bias.zero_()
        ours = downsample2x(conv(torch.from_numpy(x.transpose(0, 3, 1, 2))))
    np.testing.assert_allclose(ours.numpy(), ref.transpose(0, 3, 1, 2), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cls_module", ["network", "tfutil"])
def test_theano_format_matches_the_theano_g_paper(tmp_path, monkeypatch, cls_module):
    """Python 2 protocol-2 pickles of network.Network (or tfutil.Network carrying Theano state)."""
    rng = np.random.default_rng(3)
    spec = dict(num_channels=3, resolution=16, label_size=0, fmap_base=64, fmap_max=16, latent_size=16,
                use_wscale=True, tanh_at_end=None, use_gdrop=True, mbstat_avg="all")  # fmt: skip
    G = pf.theano_params(rng, 16, **SMALL, kind="G")
    D = pf.theano_params(rng, 16, **SMALL, kind="D")
    Network = pf.network_class(monkeypatch, cls_module)
    nets = tuple(pf.network(Network, pf.theano_state(f, spec, p)) for f, p in
                 (("G_paper", G), ("D_paper", D), ("G_paper", G)))  # fmt: skip
    pf.write_py2_pickle(tmp_path / "theano.pkl", nets)
    assert b"numpy.core.multiarray" in (tmp_path / "theano.pkl").read_bytes()[:2000]
    imp, snap_dir = import_file(tmp_path / "theano.pkl", tmp_path / "snap")
    assert imp.origin == "official-theano" and imp.config.mbstd_group_size == 16
    z = np.random.RandomState(0).randn(3, 16).astype(np.float32)
    with torch.no_grad():
        ours = load_snapshot(snap_dir).G_ema(torch.from_numpy(z))
    assert_images_match(ours, pf.theano_g_forward(G, 16, z))
    assert imp.D(ours).shape == (3, 1)


def test_official_1024_networks_reproduce_the_transcriptions(tmp_path, monkeypatch):
    """At 1024x1024 with the paper's feature maps: the Theano-era (G, D, Gs) of the published
    CelebA-HQ file, and a fused TF G_paper."""
    rng = np.random.default_rng(4)
    G = pf.theano_params(rng, 1024, kind="G")
    D = pf.theano_params(rng, 1024, kind="D")
    spec = dict(num_channels=3, resolution=1024, label_size=0, fmap_base=8192, fmap_max=512, latent_size=512)
    Network = pf.network_class(monkeypatch, "network")
    nets = tuple(pf.network(Network, pf.theano_state(f, spec, p)) for f, p in
                 (("G_paper", G), ("D_paper", D), ("G_paper", G)))  # fmt: skip
    path = tmp_path / "karras2018iclr-celebahq-1024x1024.pkl"
    pf.write_py2_pickle(path, nets)
    imp = read_file(path)
    assert imp.known is not None and imp.known.dataset == "CelebA-HQ" and not imp.warnings
    assert sum(p.numel() for p in imp.G_ema.parameters()) == pytest.approx(23.08e6, rel=0.002)
    z = np.random.RandomState(1000).randn(1, 512).astype(np.float32)
    with torch.no_grad(), torch_threads(2):
        ours = imp.G_ema(torch.from_numpy(z))
    assert ours.shape == (1, 3, 1024, 1024)
    # The transcription computes the top-left 258x258 corner from 16x16 on (the full 1024x1024
    # image in NumPy takes over half a minute here); it covers every layer and the zero padding.
    ref = pf.theano_g_forward(G, 1024, z, crop=(16, 4))
    assert ref.shape == (1, 3, 258, 258)
    assert_images_match(ours[:, :, :258, :258], ref)

    # The same generator as a fused TF G_paper (Conv0_up kernels = the mirrored convolutions, as the
    # test derives them), a pickle of Gs alone: it imports to the same weights, and the TF
    # transcription (transposed-convolution upscale) gives the same image.
    G_vars = pf.tf_fused_from_theano(G, 1024)
    kwargs = dict(num_channels=3, resolution=1024, label_size=0)
    write_tf_pickle(tmp_path / "tf.pkl", monkeypatch, G_vars, pf.tf_d_variables(rng, 8), kwargs, dict(kwargs))
    # (D at 8x8 does not fit a 1024 G: the import says so instead of guessing.)
    with pytest.raises(UserError, match="no variable 'FromRGB_lod8/weight'"):
        read_file(tmp_path / "tf.pkl")
    Network = pf.network_class(monkeypatch, "tfutil")
    with open(tmp_path / "gs.pkl", "wb") as f:
        pickle.dump(pf.network(Network, pf.tf_state("Gs", "G_paper", kwargs, G_vars)), f, protocol=4)
    tf_imp = read_file(tmp_path / "gs.pkl")
    assert "8x8/Conv0_up/weight" in G_vars and tf_imp.origin == "official-tf"
    for key, value in tf_imp.G_ema.state_dict().items():
        torch.testing.assert_close(value, imp.G_ema.state_dict()[key], rtol=1e-5, atol=1e-6)
    ref = pf.tf_g_forward(G_vars, kwargs, z, crop=(16, 4))
    assert ref.shape == (1, 3, 131, 131)  # the fused upscale loses one more edge pixel per level
    assert_images_match(ours[:, :, :131, :131], ref)


# ---------------------------------------------------------------------------------------------
# pytorch_GAN_zoo


def write_zoo(path, monkeypatch, depths, alpha=0.0, loss="WGANGP", mbstd=False, legacy=False, labels=0):
    rng = np.random.default_rng(7)
    g, d = pf.zoo_state(rng, depths, latent=16, labels=labels, mbstd=mbstd)
    avg, _ = pf.zoo_state(rng, depths, latent=16, labels=labels, mbstd=mbstd)
    Config = pf.network_class(monkeypatch, "models.utils.config", "BaseConfig")
    config = pf.network(Config, dict(depthScale0=depths[0], depthOtherScales=list(depths[1:]), alpha=alpha,
                                     latentVectorDim=16 + labels, noiseVectorDim=16, categoryVectorDim=labels,
                                     dimOutput=3, perChannelNormalization=True, miniBatchStdDev=mbstd,
                                     equalizedlR=True, leakyReluLeak=0.2, lossCriterion=loss,
                                     initBiasToZero=True))  # fmt: skip

    def tensors(sd):
        return {k: torch.from_numpy(v) for k, v in sd.items()}

    ckpt = {"config": config, "netG": tensors(g), "netD": tensors(d), "avgG": tensors(avg)}
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    return avg


@pytest.mark.parametrize("alpha,loss,legacy", [(0.0, "WGANGP", False), (0.3, "DCGAN", True)])
def test_ganzoo_checkpoint_matches_its_generator(tmp_path, monkeypatch, alpha, loss, legacy):
    depths = [16, 16, 8]
    avg = write_zoo(tmp_path / "zoo.pth", monkeypatch, depths, alpha=alpha, loss=loss, legacy=legacy)
    imp, snap_dir = import_file(tmp_path / "zoo.pth", tmp_path / "snap")
    assert imp.origin == "ganzoo" and imp.config.fmaps == [16, 16, 16, 8]
    assert imp.stage == (16, pytest.approx(1.0 - alpha))
    z = np.random.RandomState(3).randn(4, 16).astype(np.float32)
    with torch.no_grad():
        ours = load_snapshot(snap_dir).G_ema(torch.from_numpy(z))
    assert_images_match(ours, pf.zoo_g_forward(avg, depths, z, alpha=alpha, tanh=loss == "DCGAN"))
    assert imp.D(ours).shape == (4, 1)


# ---------------------------------------------------------------------------------------------
# Nothing in a file runs; bad files get one line


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_a_command_is_refused(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps((Evil(marker), 1, 2)))
    assert run_cli(["import", tmp_path / "evil.pkl", tmp_path / "out"]) == 2
    one_line_error(capsys, "refused class posix.system", "evil.pkl", "nothing in a file is run")
    assert not marker.exists() and not (tmp_path / "out").exists()
    # The same inside a GAN zoo checkpoint: torch.load(weights_only=True) refuses it.
    torch.save({"config": Evil(marker), "netG": {}}, tmp_path / "evil.pth")
    assert run_cli(["import", tmp_path / "evil.pth", tmp_path / "out"]) == 2
    one_line_error(capsys, "refused", "posix.system")
    assert not marker.exists()
    # A Theano state whose build_module_src would run a command: the stub never executes it.
    spec = dict(num_channels=3, resolution=8, fmap_base=64, fmap_max=16, latent_size=16)
    Network = pf.network_class(monkeypatch, "network")
    G = pf.theano_params(np.random.default_rng(0), 8, **SMALL, kind="G")
    state = pf.theano_state("G_paper", spec, G)
    state["build_module_src"] = f"import os\nos.system('touch {marker}')\n"
    pf.write_py2_pickle(tmp_path / "src.pkl", pf.network(Network, state))
    assert run_cli(["import", tmp_path / "src.pkl", tmp_path / "out"]) == 0
    assert not marker.exists()


def test_truncated_foreign_and_other_model_files_get_one_line(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    kwargs = dict(num_channels=3, resolution=8, fmap_base=64, fmap_max=16, latent_size=16)
    G_vars = pf.tf_g_variables(rng, 8, **SMALL)
    good = write_tf_pickle(tmp_path / "good.pkl", monkeypatch, G_vars, pf.tf_d_variables(rng, 8, fmap_base=64,
                           fmap_max=16), kwargs, dict(kwargs))  # fmt: skip
    data = good.read_bytes()
    (tmp_path / "cut.pkl").write_bytes(data[: len(data) // 2])
    assert run_cli(["import", tmp_path / "cut.pkl", tmp_path / "out"]) == 2
    one_line_error(capsys, "cut.pkl", "truncated", "download it again")
    (tmp_path / "foreign.pkl").write_bytes(pickle.dumps({"weights": np.zeros(3)}))
    assert run_cli(["import", tmp_path / "foreign.pkl", tmp_path / "out"]) == 2
    one_line_error(capsys, "foreign.pkl", "not an official ProGAN network", "(G, D, Gs)")
    save_file({"model.layer.weight": torch.zeros(3, 3)}, str(tmp_path / "other.safetensors"))
    assert run_cli(["import", tmp_path / "other.safetensors", tmp_path / "out"]) == 2
    one_line_error(capsys, "safetensors file, not a ProGAN network", "expected an official ProGAN .pkl")
    (tmp_path / "noise.bin").write_bytes(b"\x00\x01garbage" * 10)
    assert run_cli(["import", tmp_path / "noise.bin", tmp_path / "out"]) == 2
    one_line_error(capsys, "neither a pickle nor a torch checkpoint")
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "resnet.pth")
    assert run_cli(["import", tmp_path / "resnet.pth", tmp_path / "out"]) == 2
    one_line_error(capsys, "not a GAN zoo PGAN checkpoint")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# The command: import, generate with official latents and directions, evaluate


def test_import_then_generate_with_directions_and_evaluate(tmp_path, capsys, monkeypatch, tiny_store):
    rng = np.random.default_rng(0)
    kwargs = dict(num_channels=3, resolution=16, fmap_base=64, fmap_max=16, latent_size=16)
    G_vars = pf.tf_g_variables(rng, 16, **SMALL)
    D_vars = pf.tf_d_variables(rng, 16, fmap_base=64, fmap_max=16)
    src = tmp_path / "karras2018iclr-lsun-cat-256x256.pkl"
    write_tf_pickle(src, monkeypatch, G_vars, D_vars, kwargs, dict(kwargs))
    smile = rng.standard_normal((1, 16)).astype(np.float32)
    np.save(tmp_path / "boundary_smile.npy", smile)
    snap = tmp_path / "cat"
    assert run_cli(["import", src, snap, "--direction", f"smile={tmp_path / 'boundary_smile.npy'}"]) == 0
    out, err = capsys.readouterr()
    for needle in ("origin:     official ProGAN network, TF format", "16x16, 3 channels, unconditional",
                   "parameters: G_ema", ", D ", "direction:  smile"):  # fmt: skip
        assert needle in out, out
    # Named like a published file but not its structure: a warning, not a failure.
    assert "warning: named like the published karras2018iclr-lsun-cat-256x256.pkl" in err
    stored = load_directions(snap)["smile"]
    np.testing.assert_allclose(stored[0].numpy(), smile[0] / np.linalg.norm(smile), rtol=1e-6)

    assert run_cli(["generate", snap, "--seeds", "1000,7", "--latents", "official",
                    "--outdir", tmp_path / "a", "--precision", "fp32"]) == 0  # fmt: skip
    assert run_cli(["generate", snap, "--seeds", "1000,7", "--latents", "official", "--direction", "smile=+2",
                    "--outdir", tmp_path / "b", "--precision", "fp32"]) == 0  # fmt: skip
    z = np.random.RandomState(1000).randn(1, 16).astype(np.float32)  # as the official scripts draw it
    expected = pf.tf_g_forward(G_vars, kwargs, z)[0]
    expected = np.clip(np.rint((expected + 1) * 127.5), 0, 255).transpose(1, 2, 0)
    from PIL import Image

    got = np.asarray(Image.open(tmp_path / "a" / "seed1000.png"), dtype=np.float64)
    assert np.abs(got - expected).max() <= 1  # rounding at .5 may differ by one level
    moved = np.asarray(Image.open(tmp_path / "b" / "seed1000.png"), dtype=np.float64)
    assert np.abs(moved - got).mean() > 1
    moved_z = z[0] + 2 * smile[0] / np.linalg.norm(smile)
    exp_moved = pf.tf_g_forward(G_vars, kwargs, moved_z[None])[0]
    exp_moved = np.clip(np.rint((exp_moved + 1) * 127.5), 0, 255).transpose(1, 2, 0)
    assert np.abs(moved - exp_moved).max() <= 1
    # The official import_example.py: RandomState(1000).randn(1000, L)[[477, 56, ...]] -> img0, img1, ...
    assert run_cli(["generate", snap, "--seeds", "477,56", "--latents", "official-stream", "--stream-seed",
                    "1000", "--outdir", tmp_path / "c", "--precision", "fp32"]) == 0  # fmt: skip
    row = np.random.RandomState(1000).randn(1000, 16)[[56]].astype(np.float32)
    exp_row = np.clip(np.rint((pf.tf_g_forward(G_vars, kwargs, row)[0] + 1) * 127.5), 0, 255).transpose(
        1, 2, 0
    )
    assert (
        np.abs(np.asarray(Image.open(tmp_path / "c" / "seed0056.png"), dtype=np.float64) - exp_row).max() <= 1
    )
    assert (
        run_cli(["generate", snap, "--seeds", "1", "--direction", "age=1", "--grid", tmp_path / "g.png"]) == 2
    )
    one_line_error(capsys, "no direction 'age'", "smile")

    assert run_cli(["evaluate", snap, "--data", tiny_store.path, "--metrics", "swd", "--num", "16",
                    "--out", tmp_path / "eval"]) == 0  # fmt: skip
    assert "swd" in capsys.readouterr().out.lower()

    # An unknown file name: imported by structure, with a warning.
    os.rename(src, tmp_path / "mine.pkl")
    assert run_cli(["import", tmp_path / "mine.pkl", tmp_path / "mine"]) == 0
    assert "is not one of the published files" in capsys.readouterr().err


def test_minibatch_stddev_modes_match_the_official_and_zoo_layers():
    """D's minibatch-stddev as the TF code (strided groups) and the GAN zoo (consecutive groups,
    unbiased variance, whole batch when 4 does not divide it) compute it."""
    from progan.layers import MinibatchStdDev

    def tf_layer(x, group_size):  # networks.py minibatch_stddev_layer
        g = min(group_size, x.shape[0])
        s = x.shape
        y = x.reshape(g, -1, *s[1:])
        y = y - y.mean(axis=0, keepdims=True)
        y = np.sqrt(np.square(y).mean(axis=0) + 1e-8).mean(axis=(1, 2, 3), keepdims=True)
        y = np.tile(y, (g, 1, s[2], s[3]))
        return np.concatenate([x, y], axis=1)

    def zoo_layer(x, sub=4):  # mini_batch_stddev_module.py miniBatchStdDev
        n, c, h, w = x.shape
        sub = min(n, sub)
        sub = sub if n % sub == 0 else n
        groups = n // sub
        y = x.reshape(-1, sub, c, h, w).var(axis=1, ddof=1)
        y = np.sqrt(y + 1e-8).reshape(groups, -1).mean(axis=1)
        y = np.repeat(y, sub)[:, None, None, None] * np.ones((1, 1, h, w))
        return np.concatenate([x, y], axis=1)

    x = np.random.default_rng(0).standard_normal((8, 5, 4, 4))
    for n in (8, 6):
        xt = torch.from_numpy(x[:n]).float()
        np.testing.assert_allclose(
            MinibatchStdDev(4, "ganzoo")(xt).numpy(), zoo_layer(x[:n]), rtol=1e-5, atol=1e-6
        )
    xt = torch.from_numpy(x).float()
    np.testing.assert_allclose(
        MinibatchStdDev(4, "official")(xt).numpy(), tf_layer(x, 4), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        MinibatchStdDev(16, "official")(xt).numpy(), tf_layer(x, 16), rtol=1e-5, atol=1e-6
    )
    assert not np.allclose(MinibatchStdDev(4)(xt).numpy(), tf_layer(x, 4))  # progan's own grouping

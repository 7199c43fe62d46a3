"""progan import: official TF / Theano-era pickles and GAN zoo checkpoints give the original images."""

from __future__ import annotations

import contextlib
import os
import pickle

import numpy as np
import pytest
import torch

from progan.checkpoint import load_snapshot
from progan.cli import main
from progan.errors import UserError
from progan.pretrained.importer import import_file, read_file
from tests import pretrained_files as pf

SMALL = dict(latent=16, fmap_base=64, fmap_max=16)


def run_cli(argv):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    return e.value.code


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


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


@pytest.mark.parametrize(
    "fused,labels,resolution,lod",
    [(True, 0, 16, 0.0), (False, 0, 16, 0.0), (True, 3, 32, 0.0), (False, 2, 16, 0.25)],
)
def test_tf_format_matches_the_official_g_paper(tmp_path, monkeypatch, fused, labels, resolution, lod):
    rng = np.random.default_rng(1)
    kwargs = dict(num_channels=3, resolution=resolution, label_size=labels, fmap_base=64, fmap_max=16,
                  latent_size=16, fused_scale=fused)  # fmt: skip
    G_vars = pf.tf_g_variables(rng, resolution, labels=labels, fused=fused, **SMALL)
    G_vars["lod"] = np.float32(lod)
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
    # D imports with every weight in place and runs at the imported stage.
    D = imp.D
    D.set_stage(*imp.stage)
    assert D(ours).shape == (4, 1 + labels)


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

    G_vars = pf.tf_g_variables(rng, 1024, fused=True)
    kwargs = dict(num_channels=3, resolution=1024, label_size=0)
    write_tf_pickle(tmp_path / "tf.pkl", monkeypatch, G_vars, pf.tf_d_variables(rng, 8), kwargs, dict(kwargs))
    # (D at 8x8 does not fit a 1024 G: the import says so instead of guessing.)
    with pytest.raises(UserError, match="no variable 'FromRGB_lod8/weight'"):
        read_file(tmp_path / "tf.pkl")
    Network = pf.network_class(monkeypatch, "tfutil")
    with open(tmp_path / "gs.pkl", "wb") as f:
        pickle.dump(pf.network(Network, pf.tf_state("Gs", "G_paper", kwargs, G_vars)), f, protocol=4)
    imp = read_file(tmp_path / "gs.pkl")
    with torch.no_grad(), torch_threads(2):
        ours = imp.G_ema(torch.from_numpy(z))
    ref = pf.tf_g_forward(G_vars, kwargs, z, crop=(16, 4))
    assert ref.shape == (1, 3, 131, 131)  # the fused upscale loses one more edge pixel per level
    assert_images_match(ours[:, :, :131, :131], ref)

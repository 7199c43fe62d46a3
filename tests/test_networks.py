import dataclasses

import pytest
import torch

from progan.layers import downsample2x, upsample2x
from progan.networks import Discriminator, Generator, NetworkConfig, count_parameters

SMALL = dict(latent_size=16, fmap_base=128, fmap_max=32)


def test_feature_maps_follow_the_paper():
    cfg = NetworkConfig()
    assert [cfg.nf(s) for s in range(1, 10)] == [512, 512, 512, 512, 256, 128, 64, 32, 16]


def test_parameter_counts_at_1024_match_the_paper():
    cfg = NetworkConfig(resolution=1024)
    # Paper table 2: 23.1 M parameters in each network.
    assert count_parameters(Generator(cfg)) == pytest.approx(23.08e6, rel=0.002)
    assert count_parameters(Discriminator(cfg)) == pytest.approx(23.08e6, rel=0.002)


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_at_every_resolution(channels):
    cfg = NetworkConfig(resolution=1024, channels=channels, **SMALL)
    G, D = Generator(cfg), Discriminator(cfg)
    z = torch.randn(2, 16)
    for lg in range(2, 11):
        res = 2**lg
        for alpha in (0.5, 1.0):
            G.set_stage(res, alpha)
            D.set_stage(res, alpha)
            with torch.no_grad():
                images = G(z)
                assert images.shape == (2, channels, res, res)
                assert D(images).shape == (2, 1)


def test_conditional_networks():
    cfg = NetworkConfig(resolution=16, label_size=5, **SMALL)
    G, D = Generator(cfg), Discriminator(cfg)
    labels = torch.eye(5)[:3]
    images = G(torch.randn(3, 16), labels)
    assert images.shape == (3, 3, 16, 16)
    assert D(images).shape == (3, 6)
    # The label changes the image.
    other = G(torch.randn(3, 16), torch.eye(5)[[4, 4, 4]])
    assert not torch.allclose(images, other)
    with pytest.raises(ValueError, match="conditional"):
        G(torch.randn(3, 16))


def test_generator_output_is_linear():
    # No tanh: scaling ToRGB's weights scales the output without saturating at 1.
    cfg = NetworkConfig(resolution=8, **SMALL)
    G = Generator(cfg)
    with torch.no_grad():
        G.torgb["8"].weight.mul_(100)
        assert G(torch.randn(4, 16)).abs().max() > 1.5


@pytest.mark.parametrize("res", [8, 16, 32])
def test_generator_fade_in_continuity(res):
    torch.manual_seed(0)
    G = Generator(NetworkConfig(resolution=32, **SMALL))
    z = torch.randn(4, 16)
    with torch.no_grad():
        G.set_stage(res // 2, 1.0)
        small = G(z)
        G.set_stage(res, 0.0)
        grown = G(z)
        G.set_stage(res, 1e-4)
        nudged = G(z)
    torch.testing.assert_close(grown, upsample2x(small))
    assert (nudged - grown).abs().max() < 1e-2  # continuous in alpha


@pytest.mark.parametrize("res", [8, 16, 32])
def test_discriminator_fade_in_continuity(res):
    torch.manual_seed(0)
    D = Discriminator(NetworkConfig(resolution=32, **SMALL))
    x = torch.randn(4, 3, res, res)
    with torch.no_grad():
        D.set_stage(res // 2, 1.0)
        small = D(downsample2x(x))
        D.set_stage(res, 0.0)
        grown = D(x)
        D.set_stage(res, 1e-4)
        nudged = D(x)
    torch.testing.assert_close(grown, small)
    assert (nudged - grown).abs().max() < 1e-2


def test_alpha_one_uses_only_the_new_block():
    torch.manual_seed(0)
    G = Generator(NetworkConfig(resolution=16, **SMALL))
    z = torch.randn(2, 16)
    G.set_stage(16, 1.0)
    before = G(z)
    with torch.no_grad():
        G.torgb["8"].weight.add_(1.0)  # the previous ToRGB no longer matters
    torch.testing.assert_close(G(z), before)


def test_stage_validation():
    G = Generator(NetworkConfig(resolution=16, **SMALL))
    with pytest.raises(ValueError):
        G.set_stage(32)
    with pytest.raises(ValueError):
        G.set_stage(12)
    with pytest.raises(ValueError):
        NetworkConfig(resolution=48)
    with pytest.raises(ValueError):
        NetworkConfig(resolution=2048)


def _paper_twin(mirrored: Discriminator) -> Discriminator:
    """A paper D with every weight of `mirrored`, its fromRGB layers keeping the image's half."""
    paper = Discriminator(dataclasses.replace(mirrored.config, d_mirror_difference=False))
    state = mirrored.state_dict()
    c = mirrored.config.channels
    for res, layer in mirrored.fromrgb.items():
        # Equalized learning rate: the run-time He constant follows the fan-in (6 against 3).
        ratio = layer.scale / paper.fromrgb[res].scale
        state[f"fromrgb.{res}.weight"] = state[f"fromrgb.{res}.weight"][:, :c] * ratio
    paper.load_state_dict(state)
    return paper


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_mirror_difference_d_sees_only_what_breaks_the_symmetry(alpha):
    # The opt-in D (issue 29) reads [x, x - flip(x)]. On a mirror-symmetric image the second half is
    # zero, so it scores the image as a paper D with the same weights does; recolour one side (one
    # eye) and the two disagree. Checked in the fade too, where the low path sees the pair pooled.
    torch.manual_seed(0)
    mirrored = Discriminator(NetworkConfig(resolution=16, d_mirror_difference=True, **SMALL))
    assert mirrored.fromrgb["16"].weight.shape[1] == 6 and mirrored.fromrgb["8"].weight.shape[1] == 6
    paper = _paper_twin(mirrored)
    half = torch.randn(4, 3, 16, 8)
    symmetric = torch.cat([half, half.flip(3)], dim=3)
    one_side = symmetric.clone()
    one_side[:, :, 5:8, 2:5] += 1.0  # one "eye" recoloured
    with torch.no_grad():
        for D in (mirrored, paper):
            D.set_stage(16, alpha)
        torch.testing.assert_close(mirrored(symmetric), paper(symmetric))
        assert (mirrored(one_side) - paper(one_side)).abs().min() > 1e-4


def test_mirror_difference_is_off_by_default_and_stays_the_papers_d():
    cfg = NetworkConfig(resolution=16, **SMALL)
    assert not cfg.d_mirror_difference
    assert Discriminator(cfg).fromrgb["16"].weight.shape[1] == 3
    # Snapshots saved before the option are paper Ds.
    saved = {k: v for k, v in cfg.to_dict().items() if k != "d_mirror_difference"}
    assert NetworkConfig.from_dict(saved).d_mirror_difference is False

import torch
import torch.nn.functional as F

from progan.loss import LossConfig, discriminator_loss, generator_loss, gradient_penalty, label_loss
from progan.networks import Discriminator, NetworkConfig


def make_D(label_size=0):
    torch.manual_seed(0)
    D = Discriminator(
        NetworkConfig(resolution=8, label_size=label_size, latent_size=8, fmap_base=64, fmap_max=16)
    )
    D.set_stage(8, 0.7)
    return D


def test_gradient_penalty_matches_direct_autograd():
    D = make_D()
    reals, fakes = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    mix = torch.rand(4, 1, 1, 1)
    gp = gradient_penalty(D, reals, fakes, mix, target=1.0)
    # As the official code: the gradient of the summed scores at the interpolates, one norm per
    # sample (the mbstd layer couples the samples of a batch, and the official penalty keeps that).
    x = (reals * (1 - mix) + fakes * mix).requires_grad_(True)
    (g_sum,) = torch.autograd.grad(D(x)[:, 0].sum(), x)
    torch.testing.assert_close(gp, (g_sum.flatten(1).norm(dim=1) - 1.0) ** 2)
    assert gp.shape == (4,)


def test_gradient_penalty_without_batch_coupling_equals_per_sample_norms():
    D = make_D()
    D.mbstd = None  # no cross-sample term: per-sample gradients are exact
    D.conv4 = torch.nn.Conv2d(16, 16, 3, padding=1)
    reals, fakes = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    mix = torch.rand(3, 1, 1, 1)
    gp = gradient_penalty(D, reals, fakes, mix, target=750.0)
    for i in range(3):
        xi = (reals[i : i + 1] + (fakes[i : i + 1] - reals[i : i + 1]) * mix[i]).requires_grad_(True)
        (g,) = torch.autograd.grad(D(xi)[0, 0], xi)
        torch.testing.assert_close(gp[i], (g.norm() - 750.0) ** 2)


def test_discriminator_loss_terms():
    D = make_D()
    cfg = LossConfig()
    reals, fakes = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    mix = torch.rand(4, 1, 1, 1)
    loss, stats = discriminator_loss(D, reals, fakes, None, mix, cfg)
    r, f = D(reals)[:, 0], D(fakes)[:, 0]
    gp = gradient_penalty(D, reals, fakes, mix)
    expected = (f - r + 10.0 * gp + 0.001 * r**2).mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(stats["D/gradient_penalty"], gp.mean())
    # The penalty depends on D's weights: D's update sees it (create_graph).
    loss.backward()
    assert all(p.grad is not None for p in D.parameters() if p.requires_grad and p.dim() > 1)


def test_lazy_penalty_is_weighted_by_its_interval_and_absent_between():
    # StyleGAN2's lazy regularization applied to WGAN-GP: one D update in k carries k * lambda * gp,
    # the others none; over k updates the penalty's weight is the paper's lambda per update.
    D = make_D()
    cfg = LossConfig(gp_interval=3)
    reals, fakes = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    mix = torch.rand(4, 1, 1, 1)
    r, f = D(reals)[:, 0], D(fakes)[:, 0]
    gp = gradient_penalty(D, reals, fakes, mix)
    lazy, stats = discriminator_loss(D, reals, fakes, None, mix, cfg, penalize=True)
    torch.testing.assert_close(lazy, (f - r + 3 * 10.0 * gp + 0.001 * r**2).mean())
    torch.testing.assert_close(stats["D/gradient_penalty"], gp.mean())
    bare, stats = discriminator_loss(D, reals, fakes, None, mix, cfg, penalize=False)
    torch.testing.assert_close(bare, (f - r + 0.001 * r**2).mean())
    assert "D/gradient_penalty" not in stats  # the tick's mean is over the penalized updates only
    # The paper's setting (interval 1, every update penalized) is the loss of test_discriminator_loss_terms.
    every, _ = discriminator_loss(D, reals, fakes, None, mix, LossConfig())
    torch.testing.assert_close(every, (f - r + 10.0 * gp + 0.001 * r**2).mean())


def test_generator_loss_is_minus_score():
    D = make_D()
    fakes = torch.randn(4, 3, 8, 8)
    loss, _ = generator_loss(D, fakes, None, LossConfig())
    torch.testing.assert_close(loss, -D(fakes)[:, 0].mean())


def test_acgan_term_one_hot_and_multi_hot():
    logits = torch.randn(5, 4)
    onehot = torch.eye(4)[[0, 1, 2, 3, 0]]
    torch.testing.assert_close(
        label_loss(logits, onehot, False), F.cross_entropy(logits, onehot.argmax(1), reduction="none")
    )
    multi = torch.tensor([[1, 0, 1, 0]] * 5, dtype=torch.float32)
    torch.testing.assert_close(
        label_loss(logits, multi, True),
        F.binary_cross_entropy_with_logits(logits, multi, reduction="none").sum(1),
    )


def test_conditional_losses_add_the_label_terms():
    D = make_D(label_size=3)
    cfg = LossConfig()
    reals, fakes = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    labels = torch.eye(3)[[0, 1, 2, 0]]
    mix = torch.rand(4, 1, 1, 1)
    with_labels, _ = discriminator_loss(D, reals, fakes, labels, mix, cfg)
    without, _ = discriminator_loss(D, reals, fakes, None, mix, cfg)
    ce = label_loss(D(reals)[:, 1:], labels, False) + label_loss(D(fakes)[:, 1:], labels, False)
    torch.testing.assert_close(with_labels - without, ce.mean())
    g_with, _ = generator_loss(D, fakes, labels, cfg)
    g_without, _ = generator_loss(D, fakes, None, cfg)
    torch.testing.assert_close(g_with - g_without, label_loss(D(fakes)[:, 1:], labels, False).mean())


def test_gradient_penalty_is_invariant_to_loss_scale():
    D = make_D()
    reals, fakes = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    mix = torch.rand(4, 1, 1, 1)
    plain = gradient_penalty(D, reals, fakes, mix)
    torch.testing.assert_close(gradient_penalty(D, reals, fakes, mix, loss_scale=torch.tensor(1024.0)), plain)


def test_one_call_on_reals_and_fakes_equals_two_calls_whenever_it_is_used():
    from progan.layers import MinibatchStdDev
    from progan.loss import scores_of_reals_and_fakes

    D = make_D()
    # (batch, group size, mode) -> does stacking keep each batch's minibatch-stddev groups?
    cases = {(4, 4, "progan"): True, (6, 4, "progan"): False, (3, 4, "progan"): True,
             (16, 4, "ganzoo"): True, (2, 4, "ganzoo"): False, (8, 4, "official"): False}  # fmt: skip
    for (n, g, mode), stacked in cases.items():
        D.mbstd = MinibatchStdDev(g, mode)
        assert D.mbstd.groups_survive_stacking(n, 2) is stacked, (n, g, mode)
        reals, fakes = torch.randn(n, 3, 8, 8), torch.randn(n, 3, 8, 8)
        real_out, fake_out = scores_of_reals_and_fakes(D, reals, fakes, D)
        torch.testing.assert_close(real_out, D(reals), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fake_out, D(fakes), rtol=1e-5, atol=1e-5)

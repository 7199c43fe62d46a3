"""WGAN-GP with the drift term (paper section A.1 / official `D_wgangp_acgan`), plus the AC-GAN term.

D loss = D(fake) - D(real) + lambda / target**2 * (||grad D(mix)|| - target)**2 + eps_drift * D(real)**2
G loss = -D(fake)
The penalty may be lazy (LossConfig.gp_interval): on one D update in k, weighted k, none on the
others; k = 1 is the paper's.
With labels, D's extra outputs are class logits trained with cross-entropy on reals and fakes
(weight `cond_weight`); G is penalised on its fakes' logits. One-hot labels use softmax
cross-entropy as the official code; multi-hot attributes use per-attribute sigmoid cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LossConfig:
    wgan_lambda: float = 10.0
    wgan_target: float = 1.0
    wgan_epsilon: float = 0.001  # drift
    cond_weight: float = 1.0
    multi_hot: bool = False
    # Lazy gradient penalty: the penalty on one D update in `gp_interval`, weighted by gp_interval
    # so that its expected strength per update is unchanged (StyleGAN2's lazy regularization,
    # Karras et al. 2020 section 3.1). 1, the default, is the paper's penalty on every update. On a
    # 2-core CPU, 4 trains 1.33x the img/s at 8x8 and 1.21x at 32x32, but gave no better samples in
    # the same time (benchmarks/README.md, "Lazy gradient penalty").
    gp_interval: int = 1


def gradient_penalty(
    D: nn.Module,
    reals: torch.Tensor,
    fakes: torch.Tensor,
    mix: torch.Tensor,
    target: float = 1.0,
    loss_scale: torch.Tensor | float = 1.0,
) -> torch.Tensor:
    """Per-sample (||dD/dx at x = lerp(real, fake, mix)|| - target)**2, shape (N,).

    `mix` is (N, 1, 1, 1) uniform in [0, 1]. The gradient is taken of sum(D score) so each sample's
    gradient is its own; create_graph so that D's update sees the penalty's dependence on D.
    With fp16, `loss_scale` lifts this inner gradient out of fp16's underflow range and is divided
    out again in fp32, as the official code does.
    """
    mixed = torch.lerp(reals.detach().float(), fakes.detach().float(), mix).requires_grad_(True)
    scores = D(mixed)[:, 0]
    (grad,) = torch.autograd.grad(scores.float().sum() * loss_scale, mixed, create_graph=True)
    norms = (grad.float() / loss_scale).square().sum(dim=(1, 2, 3)).sqrt()
    return (norms - target).square()


def label_loss(logits: torch.Tensor, labels: torch.Tensor, multi_hot: bool) -> torch.Tensor:
    """Per-sample AC-GAN cross-entropy, shape (N,)."""
    logits = logits.float()
    if multi_hot:
        return F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").sum(dim=1)
    return -(labels.float() * F.log_softmax(logits, dim=1)).sum(dim=1)


def scores_of_reals_and_fakes(
    D: nn.Module, reals: torch.Tensor, fakes: torch.Tensor, D_eager: nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    """D's fp32 outputs for reals and for fakes, from one call on both stacked when D's minibatch
    stddev groups stay the same (one call of twice the batch is faster, most at small resolutions:
    fewer kernel launches and larger matrix products), else from two calls."""
    mbstd = getattr(D_eager, "mbstd", None)
    n = reals.shape[0]
    if fakes.shape[0] == n and (mbstd is None or mbstd.groups_survive_stacking(n, 2)):
        out = D(torch.cat([reals, fakes.to(reals.dtype)])).float()
        return out[:n], out[n:]
    return D(reals).float(), D(fakes).float()


def discriminator_loss(
    D: nn.Module,
    reals: torch.Tensor,
    fakes: torch.Tensor,
    labels: torch.Tensor | None,
    mix: torch.Tensor,
    cfg: LossConfig,
    D_gp: nn.Module | None = None,
    loss_scale: torch.Tensor | float = 1.0,
    penalize: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """D's scalar loss and detached per-term means for logging (no host sync).

    `penalize`: whether this update carries the gradient penalty (every update when
    `cfg.gp_interval` is 1; see LossConfig). The penalty's logged mean is that of the updates
    that carry it.

    `D_gp` is the module used for the gradient penalty when `D` is a compiled wrapper: the
    penalty's double backward needs the eager module.
    """
    real_out, fake_out = scores_of_reals_and_fakes(D, reals, fakes.detach(), D_gp or D)
    real_scores, fake_scores = real_out[:, 0], fake_out[:, 0]
    drift = real_scores.square()
    loss = fake_scores - real_scores + drift * cfg.wgan_epsilon
    if penalize:
        gp = gradient_penalty(D_gp or D, reals, fakes, mix, cfg.wgan_target, loss_scale)
        loss = loss + gp * (cfg.gp_interval * cfg.wgan_lambda / cfg.wgan_target**2)
    if labels is not None and real_out.shape[1] > 1:
        cond = label_loss(real_out[:, 1:], labels, cfg.multi_hot) + label_loss(
            fake_out[:, 1:], labels, cfg.multi_hot
        )
        loss = loss + cond * cfg.cond_weight
    stats = {
        "D/loss": loss.mean().detach(),
        "D/real_score": real_scores.mean().detach(),
        "D/fake_score": fake_scores.mean().detach(),
        "D/wasserstein": (real_scores - fake_scores).mean().detach(),
    }
    if penalize:
        stats["D/gradient_penalty"] = gp.mean().detach()
    return loss.mean(), stats


def generator_loss(
    D: nn.Module, fakes: torch.Tensor, labels: torch.Tensor | None, cfg: LossConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    fake_out = D(fakes).float()
    loss = -fake_out[:, 0]
    if labels is not None and fake_out.shape[1] > 1:
        loss = loss + label_loss(fake_out[:, 1:], labels, cfg.multi_hot) * cfg.cond_weight
    return loss.mean(), {"G/loss": loss.mean().detach()}

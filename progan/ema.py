"""G_ema, the moving average of the generator's weights that every sample grid, `generate` and the
metrics use.

Two rules:

* **Half-life in images with a ramp-up** (the default; as stylegan2-ada-pytorch's `ema_kimg` and
  `ema_rampup`): one update of `batch` images uses beta = 0.5 ** (batch / ema_nimg), where
  ema_nimg = min(half_life_kimg * 1000, images_since_start * rampup). The average therefore
  forgets half of its past every `half_life_kimg` thousand images, and early on (while
  images_since_start * rampup is shorter) it follows G more closely.
* **Aware of progressive growing**: `images_since_start` is counted per resolution, from the
  moment that resolution starts fading in (0 for the first resolution). The new block's layers
  start as G's random initial weights in G_ema too; with one global clock their average would
  still be mostly those initial weights long after G has trained them (a fixed beta 0.999 keeps
  0.999**374 = 69% of them after 374 updates). Restarting the ramp-up for them makes their lag
  at most rampup * age, and never more than the half-life.
* **Annealed with the learning rate**: while a timed run's learning rate ramps down to 0
  (progan.schedule `lr_factor`), the half-life shrinks by the same factor, so that G_ema ends on
  the annealed G instead of averaging it with the iterates of the full rate. The ramp-down does
  the averaging's job there: measured by benchmarks/quality_budget.py without this rule, G_ema
  ended 2% to 18% worse than G in three of four runs, its older layers averaged over the full
  rate's steps.

`--ema-beta` keeps the paper's fixed per-step beta (the `paper` preset's rule, 0.999) for every
layer instead. The state of either rule is a pure function of the schedule and the images shown,
so resuming a run restores it exactly without storing anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from progan.errors import UserError
from progan.networks import Generator

# Defaults of the half-life rule. 10 kimg is the paper's 0.999 per step at minibatch 16 expressed
# in images (16 / log2(1 / 0.999) = 11.1 kimg); 0.05 is stylegan2-ada-pytorch's ramp-up.
EMA_KIMG = 10.0
EMA_RAMPUP = 0.05
PAPER_EMA_BETA = 0.999


@dataclass(frozen=True)
class EmaRule:
    """How G_ema follows G: a fixed per-step `beta`, or a half-life in kimg with a ramp-up."""

    beta: float | None = None  # fixed beta per update (the paper); None: half-life rule
    half_life_kimg: float = EMA_KIMG
    rampup: float | None = EMA_RAMPUP  # None or 0: no ramp-up

    def __post_init__(self) -> None:
        if self.beta is not None and not 0.0 <= self.beta < 1.0:
            raise ValueError(f"ema beta must be in [0, 1), got {self.beta}")
        if self.half_life_kimg <= 0:
            raise ValueError(f"ema half-life must be positive, got {self.half_life_kimg} kimg")
        if self.rampup is not None and self.rampup < 0:
            raise ValueError(f"ema ramp-up must be >= 0, got {self.rampup}")

    def beta_for(self, batch: int, nimg_since_start: float, lr_factor: float = 1.0) -> float:
        """beta of one update of `batch` images for layers whose resolution began `nimg_since_start`
        images ago (counted before this update), with the learning rate at `lr_factor` of its own."""
        if self.beta is not None:
            return self.beta
        return half_life_beta(batch, nimg_since_start, self.half_life_kimg, self.rampup, lr_factor)

    def describe(self) -> str:
        if self.beta is not None:
            return f"fixed beta {self.beta:g} per update"
        ramp = f", ramp-up {self.rampup:g}" if self.rampup else ""
        return f"half-life {self.half_life_kimg:g} kimg per resolution{ramp}"


def ema_rule(beta: float | None, half_life_kimg: float, rampup: float | None, preset: str) -> EmaRule:
    """A run's rule: --ema-beta if given, the paper's fixed 0.999 for the `paper` preset, else the
    half-life rule. UserError on values out of range."""
    if beta is None and preset == "paper":
        beta = PAPER_EMA_BETA
    try:
        return EmaRule(beta=beta, half_life_kimg=half_life_kimg, rampup=rampup)
    except ValueError as e:
        raise UserError(f"{e}; use --ema-beta in [0, 1), or --ema-kimg > 0 and --ema-rampup >= 0") from e


def half_life_beta(
    batch: int, nimg_since_start: float, half_life_kimg: float, rampup: float | None, lr_factor: float = 1.0
) -> float:
    """beta = 0.5 ** (batch / ema_nimg), ema_nimg = min(half-life, nimg_since_start * rampup) * lr_factor
    in images.

    At nimg_since_start = 0 with a ramp-up, or at a learning rate ramped down to 0, beta is 0:
    G_ema takes G's weights as they are."""
    ema_nimg = half_life_kimg * 1000.0
    if rampup:
        ema_nimg = min(ema_nimg, max(nimg_since_start, 0.0) * rampup)
    ema_nimg *= lr_factor
    if ema_nimg <= 0:
        return 0.0
    return 0.5 ** (batch / ema_nimg)


def parameter_resolution(name: str) -> int:
    """The resolution whose fade-in brings a generator parameter into use.

    `blocks.R.*` and `torgb.R.*` belong to R; the latent's dense layer and the 4x4 conv to 4.
    """
    parts = name.split(".")
    if parts[0] in ("blocks", "torgb"):
        return int(parts[1])
    if parts[0] in ("dense", "conv4"):
        return 4
    raise ValueError(f"generator parameter {name!r} belongs to no resolution")


class EmaUpdater:
    """Updates G_ema from G after every G step, one group of tensors per resolution.

    Layers of resolutions not yet in use receive no gradient, so G never changes them and their
    G_ema copies stay equal: they are skipped, which also saves the work at small resolutions.
    """

    def __init__(self, G: Generator, G_ema: Generator, rule: EmaRule) -> None:
        self.rule = rule
        g = dict(G.named_parameters())
        groups: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        for name, p_ema in G_ema.named_parameters():
            ema, src = groups.setdefault(parameter_resolution(name), ([], []))
            ema.append(p_ema)
            src.append(g[name])
        self.groups = dict(sorted(groups.items()))

    @torch.no_grad()
    def update(
        self, nimg: int, batch: int, resolution: int, starts: dict[int, float], lr_factor: float = 1.0
    ) -> None:
        """One update after a G step at stage `resolution`, `nimg` images shown before this step;
        `starts[R]` is the number of images shown when resolution R began fading in; `lr_factor`
        the learning rate's ramp-down factor at this step."""
        for res, (ema, src) in self.groups.items():
            if res > resolution:
                break
            beta = self.rule.beta_for(batch, nimg - starts[res], lr_factor)
            torch._foreach_lerp_(ema, src, 1.0 - beta)

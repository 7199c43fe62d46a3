"""G_ema, the moving average of the generator's weights that every sample grid, `generate` and the
metrics use.

The default rule, in three parts:

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
* **The mean over the learning rate's ramp-down** (`rampdown="average"`, the default): while a
  timed run's learning rate ramps down to 0 (progan.schedule `lr_factor`), once it is down to half
  (the second half of the ramp-down's images, EMA_AVERAGE_FROM), G_ema is the running mean of G's
  weights after each update: the update with k updates before it in that half uses
  beta = k / (k + 1), so the first takes G as it is and the last leaves the mean of them all
  (Polyak-Ruppert tail averaging, or SWA). Why: the GAN's last iterates still oscillate at the
  coarse scales, and their mean cancels some of that. A half-life over the ramp-down averages in
  the iterates of the full rate, one that shrinks with the rate ends on the last iterate alone,
  and the mean over the whole ramp-down takes in iterates from just after the last fade-in; in
  benchmarks/README.md the mean over the second half scored best of these.
  A deadline refit (progan.planner) moves the ramp-down's end and so its midpoint: the mean is
  over the updates since the midpoint as it stands.
  `rampdown="anneal"` (runs saved before the mean) shrinks the half-life with the rate instead,
  so that G_ema ends on the annealed G.

The other rule: `--ema-beta` keeps the paper's fixed per-step beta (the `paper` preset's, 0.999)
for every layer, ramp-down or not. The state of either rule is a pure function of the schedule
and the images shown, so resuming a run restores it exactly without storing anything.
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
# What the half-life rule does while the learning rate ramps down: the first is the default.
EMA_RAMPDOWN_RULES = ("average", "anneal")
# The share of the ramp-down's images after which "average" takes the mean (0.5: the second half,
# from where the rate is down to half).
EMA_AVERAGE_FROM = 0.5


@dataclass(frozen=True)
class EmaRule:
    """How G_ema follows G: a fixed per-step `beta`, or a half-life in kimg with a ramp-up."""

    beta: float | None = None  # fixed beta per update (the paper); None: half-life rule
    half_life_kimg: float = EMA_KIMG
    rampup: float | None = EMA_RAMPUP  # None or 0: no ramp-up
    rampdown: str = EMA_RAMPDOWN_RULES[0]  # over the lr ramp-down: "average" or "anneal"

    def __post_init__(self) -> None:
        if self.beta is not None and not 0.0 <= self.beta < 1.0:
            raise ValueError(f"ema beta must be in [0, 1), got {self.beta}")
        if self.half_life_kimg <= 0:
            raise ValueError(f"ema half-life must be positive, got {self.half_life_kimg} kimg")
        if self.rampup is not None and self.rampup < 0:
            raise ValueError(f"ema ramp-up must be >= 0, got {self.rampup}")
        if self.rampdown not in EMA_RAMPDOWN_RULES:
            raise ValueError(
                f"ema ramp-down rule must be one of {', '.join(EMA_RAMPDOWN_RULES)}, got {self.rampdown!r}"
            )

    def beta_for(
        self,
        batch: int,
        nimg_since_start: float,
        lr_factor: float = 1.0,
        nimg_in_average: float | None = None,
    ) -> float:
        """beta of one update of `batch` images for layers whose resolution began `nimg_since_start`
        images ago, with the learning rate at `lr_factor` of its own and the mean over its ramp-
        down begun `nimg_in_average` images ago (None or < 0: not begun), all counted before this
        update."""
        if self.beta is not None:
            return self.beta
        if self.rampdown == "average" and nimg_in_average is not None and nimg_in_average >= 0:
            # The updates before this one since the mean began, whatever its offset within a
            # minibatch (the final resolution's minibatch is constant).
            earlier = nimg_in_average // batch
            return earlier / (earlier + 1)
        factor = lr_factor if self.rampdown == "anneal" else 1.0
        return half_life_beta(batch, nimg_since_start, self.half_life_kimg, self.rampup, factor)

    def describe(self) -> str:
        if self.beta is not None:
            return f"fixed beta {self.beta:g} per update"
        ramp = f", ramp-up {self.rampup:g}" if self.rampup else ""
        over = "the mean of G over its second half" if self.rampdown == "average" else "annealed"
        return f"half-life {self.half_life_kimg:g} kimg per resolution{ramp}; over the lr ramp-down {over}"


def ema_rule(
    beta: float | None,
    half_life_kimg: float,
    rampup: float | None,
    preset: str,
    rampdown: str = EMA_RAMPDOWN_RULES[0],
) -> EmaRule:
    """A run's rule: --ema-beta if given, the paper's fixed 0.999 for the `paper` preset, else the
    half-life rule. UserError on values out of range."""
    if beta is None and preset == "paper":
        beta = PAPER_EMA_BETA
    try:
        return EmaRule(beta=beta, half_life_kimg=half_life_kimg, rampup=rampup, rampdown=rampdown)
    except ValueError as e:
        rules = "|".join(EMA_RAMPDOWN_RULES)
        fix = f"use --ema-beta in [0, 1), or --ema-kimg > 0, --ema-rampup >= 0 and --ema-rampdown {rules}"
        raise UserError(f"{e}; {fix}") from e


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
        self,
        nimg: int,
        batch: int,
        resolution: int,
        starts: dict[int, float],
        lr_factor: float = 1.0,
        average_start: int | None = None,
    ) -> None:
        """One update after a G step at stage `resolution`, `nimg` images shown before this step;
        `starts[R]` is the number of images shown when resolution R began fading in; `lr_factor`
        the learning rate's ramp-down factor at this step, and `average_start` the images shown
        when the mean over the ramp-down begins (None: the run has no ramp-down)."""
        in_average = None if average_start is None else nimg - average_start
        for res, (ema, src) in self.groups.items():
            if res > resolution:
                break
            beta = self.rule.beta_for(batch, nimg - starts[res], lr_factor, in_average)
            torch._foreach_lerp_(ema, src, 1.0 - beta)

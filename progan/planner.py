"""Training for a time: `progan train --minutes N` turns a wall-clock budget into a schedule in kimg.

A short calibration measures images per second at every resolution (stable, and fading in), then
`plan_schedule` gives every phase the same number of images, as the paper's schedule does (its
CelebA-HQ run shows 800k images while fading in each resolution and 800k more while it is stable):
a phase of K images at 4x4 stable; each later resolution fades in for K/2 and trains stable for
K/2; the last one fades in for K/2 and then trains stable for 3K/2 (twice a phase in all). K is
the largest that fits the time at the measured speeds, so a resolution's share of the time grows
with its cost per image.

Why images, not time: an earlier plan gave every resolution the same time. On a 2-core CPU the
demo's 32x32 steps are 14x slower than its 4x4 ones, so 4x4 got 36 kimg while 16x16 and 32x32
got about 4 kimg each, too few updates for faces (6 minutes, AVX2 EPYC). A GAN needs about as
many updates at a new resolution as at the last one; equal images give it that.

The plan is stored in the run's options (and so in every snapshot): resume continues the same
schedule. The budget is also a deadline: the loop stops when it is spent, whatever the speed did
in the meantime, and writes the final snapshot and grids in the time set aside for them.
"""

from __future__ import annotations

import math

# Shares of the budget: calibration, the final snapshot and grids, and the ticks' grids, logs and
# snapshots during training (which the speeds measured on bare steps do not include).
CALIBRATION_SHARE = 0.04
FINAL_RESERVE_SHARE = 0.02
TICK_OVERHEAD_SHARE = 0.03
MIN_FINAL_RESERVE_S = 2.0
MAX_FINAL_RESERVE_S = 60.0


def resolutions(start: int, final: int) -> list[int]:
    return [start * 2**i for i in range(int(math.log2(final // start)) + 1)]


def final_reserve(budget_s: float) -> float:
    """Seconds kept at the end of a timed run for the final snapshot and sample grids."""
    return min(max(FINAL_RESERVE_SHARE * budget_s, MIN_FINAL_RESERVE_S), MAX_FINAL_RESERVE_S)


def calibration_seconds(budget_s: float, start: int, final: int) -> float:
    """Timed seconds per speed measurement: CALIBRATION_SHARE of the budget over all of them."""
    measurements = 2 * len(resolutions(start, final)) - 1  # each resolution stable, all but the first fading
    return CALIBRATION_SHARE * budget_s / measurements


def plan_schedule(
    stable_speed: dict[int, float],
    fade_speed: dict[int, float],
    seconds: float,
    start: int,
    final: int,
) -> dict:
    """Per-phase kimg for `seconds` of training from `start` to `final` resolution at the given img/s.

    Returns {"training_kimgs", "transition_kimgs", "total_kimg"} (the Schedule's per-phase fields):
    phase p trains start * 2**p stable, then fades in the next resolution.
    """
    if seconds <= 0:
        raise ValueError(f"no time left to train ({seconds:.1f} s)")
    res = resolutions(start, final)
    for r in res:
        if stable_speed.get(r, 0) <= 0 or (r != start and fade_speed.get(r, 0) <= 0):
            raise ValueError(f"no measured speed at {r}x{r}")
    # Seconds per image of each phase, in phase order, times its share of K.
    cost = 1.0 / stable_speed[start] if len(res) > 1 else 2.0 / stable_speed[start]
    for r in res[1:]:
        stable_share = 1.5 if r == res[-1] else 0.5
        cost += 0.5 / fade_speed[r] + stable_share / stable_speed[r]
    k = seconds / cost / 1000  # kimg per phase
    training = [k] + [k / 2] * (len(res) - 2) if len(res) > 1 else []
    transition = [k / 2] * (len(res) - 1)
    final_stable = 1.5 * k if len(res) > 1 else 2 * k
    total = sum(training) + sum(transition) + final_stable
    return {"training_kimgs": training, "transition_kimgs": transition, "total_kimg": total}


def training_seconds(budget_s: float, spent_s: float) -> float:
    """Seconds of steps to plan for, after `spent_s` (set-up and calibration) of a budget."""
    return (budget_s - spent_s - final_reserve(budget_s)) * (1.0 - TICK_OVERHEAD_SHARE)

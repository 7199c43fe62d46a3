"""Training for a time: `progan train --minutes N` turns a wall-clock budget into a schedule in kimg.

A short calibration measures images per second at every resolution (stable, and fading in), then
`plan_schedule` splits the time into the paper's phases: a phase of images at 4x4 stable; each
later resolution fades in for half a phase and trains stable for half a phase; the last one
fades in for half a phase and then trains stable for one and a half (twice a phase in all).
The final resolution's phase is K images; a resolution r gets K * sqrt(speed_r / speed_final)
(IMAGES_EXPONENT 0.5), so a cheap resolution gets more images but not all the time it could
buy. K is the largest that fits the time at the measured speeds.

Why this middle way, measured by benchmarks/quality_budget.py (Fashion-MNIST 32x32, latent 512,
128 feature maps, 20 CPU minutes on one thread, lr 0.002, seed 0; SWD of G_ema, 10,000 images):

* the same images in every phase, as the paper's schedule (800k per fade and per stable phase
  on CelebA-HQ): 11 kimg in all, 2.2 at 4x4; SWD 73.5, and G_ema worse than G at the end;
* images growing with the square root of the speed: 26 kimg, 13 at 4x4, 3.5 at 32x32; SWD 43.7;
* the same time in every phase: 66 kimg, 46 at 4x4 but 2.3 at 32x32; SWD 54.8, G_ema worse than
  G at the end. (It had also given the 7-minute demo too few updates at 32x32 for faces.)

Over the final resolution's stable images (LR_RAMPDOWN_SHARE of them) the learning rate anneals
to 0 along half a cosine, as budgeted training does: at a rate that still moves the weights a lot
per step, the last step's G is a noisy draw. In the same benchmark (seed 0, the square-root plan)
G_ema's SWD was 34.8 with it, 38.4 and 43.7 in two runs without; with lr 0.003 it was 46.2.
These are single runs, and two runs of one seed in the 2-thread setting ended at 28.7 and 46.7.

The calibration is short and noisy (the same 16x16 step measured 26.5 and 35.7 img/s in two runs),
so the plan can end minutes early or late. Once the final resolution trains stable, every tick
fits the run's total to the deadline at the speed measured in that phase so far, ticks' grids and
snapshots included (`fit_total_to_deadline`); the ramp-down stretches or shrinks with it. Without
that, a 20-minute run whose calibration ran slow did its plan in 1013 s and stopped.

The plan is stored in the run's options (and so in every snapshot): resume continues the same
schedule, with its total as last fitted. The budget is also a deadline: the loop stops when it is
spent, whatever the speed did in the meantime, and writes the final snapshot and grids in the time
set aside for them.
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
# How a resolution's images per phase grow with its speed: 0 gives every phase the same images
# (the paper's schedule), 1 the same time.
IMAGES_EXPONENT = 0.5
# The learning rate's cosine ramp-down to 0 at the end of a timed run, as a share of the final
# resolution's stable images (0: none).
LR_RAMPDOWN_SHARE = 1.0


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
    exponent: float | None = None,
) -> dict:
    """Per-phase kimg for `seconds` of training from `start` to `final` resolution at the given img/s.

    Phase p trains start * 2**p stable, then fades in the next resolution. A resolution r gets
    K * (speed_r / speed_final) ** exponent images per phase (IMAGES_EXPONENT when None), split
    as described in the module docstring, with K the largest that fits the time.

    Returns {"training_kimgs", "transition_kimgs", "total_kimg", "lr_rampdown_kimg"} (the
    Schedule's per-phase fields; the ramp-down is LR_RAMPDOWN_SHARE of the last stable images).
    """
    if seconds <= 0:
        raise ValueError(f"no time left to train ({seconds:.1f} s)")
    exponent = IMAGES_EXPONENT if exponent is None else exponent
    res = resolutions(start, final)
    for r in res:
        if stable_speed.get(r, 0) <= 0 or (r != start and fade_speed.get(r, 0) <= 0):
            raise ValueError(f"no measured speed at {r}x{r}")
    # Images per phase of each resolution in units of K (one speed per resolution, the stable one,
    # so that a noisy fade measurement moves only the time, not the split).
    scale = {r: (stable_speed[r] / stable_speed[final]) ** exponent for r in res}
    if len(res) == 1:
        k = seconds / (2.0 / stable_speed[start]) / 1000
        return {"training_kimgs": [], "transition_kimgs": [], "total_kimg": 2 * k,
                "lr_rampdown_kimg": LR_RAMPDOWN_SHARE * 2 * k}  # fmt: skip
    cost = scale[start] / stable_speed[start]  # seconds per K images, phase by phase
    for r in res[1:]:
        stable_share = 1.5 if r == res[-1] else 0.5
        cost += scale[r] * (0.5 / fade_speed[r] + stable_share / stable_speed[r])
    k = seconds / cost / 1000  # kimg per phase at the final resolution
    training = [k * scale[start]] + [k / 2 * scale[r] for r in res[1:-1]]
    transition = [k / 2 * scale[r] for r in res[1:]]
    final_stable = 1.5 * k
    total = sum(training) + sum(transition) + final_stable
    return {"training_kimgs": training, "transition_kimgs": transition, "total_kimg": total,
            "lr_rampdown_kimg": LR_RAMPDOWN_SHARE * final_stable}  # fmt: skip


def fit_total_to_deadline(
    kimg: float, kimg_measured: float, seconds_measured: float, seconds_left: float
) -> float:
    """The total kimg that ends a run at its deadline: `kimg` done, and `seconds_left` more at the
    speed of the last `kimg_measured` kimg, which took `seconds_measured`."""
    if seconds_measured <= 0 or kimg_measured <= 0:
        raise ValueError("no speed measured to fit the total to")
    return kimg + kimg_measured / seconds_measured * max(seconds_left, 0.0)


def rescale_rampdown(schedule_total: float, rampdown: float, stable_start: float, new_total: float) -> float:
    """The ramp-down's length for a final stable phase from `stable_start` that now ends at
    `new_total` instead of `schedule_total`: the same share of that phase (all of it, by default,
    so the ramp's start does not move)."""
    length = schedule_total - stable_start
    share = rampdown / length if length > 0 else 1.0
    return min(share, 1.0) * max(new_total - stable_start, 0.0)


def training_seconds(budget_s: float, spent_s: float) -> float:
    """Seconds of steps to plan for, after `spent_s` (set-up and calibration) of a budget."""
    return (budget_s - spent_s - final_reserve(budget_s)) * (1.0 - TICK_OVERHEAD_SHARE)

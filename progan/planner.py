"""Training for a time: `progan train --minutes N` turns a wall-clock budget into a schedule in kimg.

A short calibration measures images per second at every resolution (stable, and fading in), then
`plan_schedule` splits the time: equal time per resolution, twice as much at the last one, and
each fade-in half of a regular phase (so a middle resolution gets half its time fading in and
half stable). With 4x4 -> 32x32 that is 5 units of time T: 4x4 stable T; 8x8 and 16x16 each
fade T/2 + stable T/2; 32x32 fades T/2 and then trains stable for 3T/2. Each phase's length in
kimg is its time multiplied by the speed measured for it.

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
    unit = seconds / (len(res) + 1)  # one unit per resolution, two for the last
    training, transition = [], []
    for i, r in enumerate(res[:-1]):
        stable_s = unit if i == 0 else unit / 2
        training.append(stable_s * stable_speed[r] / 1000)
        transition.append(unit / 2 * fade_speed[res[i + 1]] / 1000)
    last = res[-1]
    final_stable_s = (2 * unit if len(res) == 1 else 1.5 * unit) * stable_speed[last] / 1000
    total = sum(training) + sum(transition) + final_stable_s
    return {"training_kimgs": training, "transition_kimgs": transition, "total_kimg": total}


def training_seconds(budget_s: float, spent_s: float) -> float:
    """Seconds of steps to plan for, after `spent_s` (set-up and calibration) of a budget."""
    return (budget_s - spent_s - final_reserve(budget_s)) * (1.0 - TICK_OVERHEAD_SHARE)

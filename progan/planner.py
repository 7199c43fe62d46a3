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
import sys
import time
from collections.abc import Callable

import torch

from progan.errors import UserError
from progan.schedule import Schedule

# A timed run's calibration stops measuring after this share of the budget (the resolutions left are
# estimated), and at least this share is planned for training whatever the set-up took; a fading
# step costs about this share of a stable one's speed (the lower resolution's to/from-RGB too).
CALIBRATION_LIMIT_SHARE = 0.08
MIN_PLANNED_SHARE = 0.1
FADE_SPEED_ESTIMATE = 0.85
# Timed runs use the time their plan left over: they fit the final phase to the deadline (with a
# ramp-down), or train at the last resolution past the plan's kimg until it (plans without one).
# Tests switch this off to check that a resumed run follows the same plan exactly.
TIMED_RUNS_TRAIN_TO_DEADLINE = True
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
    final_share: float | None = None,
) -> dict:
    """Per-phase kimg for `seconds` of training from `start` to `final` resolution at the given img/s.

    Phase p trains start * 2**p stable, then fades in the next resolution. A resolution r gets
    K * (speed_r / speed_final) ** exponent images per phase (IMAGES_EXPONENT when None), split
    as described in the module docstring, with K the largest that fits the time.

    `final_share` (in (0, 1)), when given, fixes the final resolution's share of the time instead:
    its fade and stable phases get that share at its speeds (one K for them), and the earlier
    phases the rest, split among themselves as above (another K). Fine detail that exists only
    at the final resolution (a 64x64 portrait's 2-3 pixel irises) is learned there alone.

    Returns {"training_kimgs", "transition_kimgs", "total_kimg", "lr_rampdown_kimg"} (the
    Schedule's per-phase fields; the ramp-down is LR_RAMPDOWN_SHARE of the last stable images).
    """
    if seconds <= 0:
        raise ValueError(f"no time left to train ({seconds:.1f} s)")
    if final_share is not None and not 0 < final_share < 1:
        raise ValueError(f"the final resolution's share of the time must lie in (0, 1), not {final_share}")
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
    # Seconds per K images, phase by phase: the resolutions before the final one, and the final.
    cost_before = scale[start] / stable_speed[start]
    for r in res[1:-1]:
        cost_before += scale[r] * (0.5 / fade_speed[r] + 0.5 / stable_speed[r])
    cost_final = 0.5 / fade_speed[final] + 1.5 / stable_speed[final]
    if final_share is None:
        k = k_before = seconds / (cost_before + cost_final) / 1000  # kimg per phase at the final resolution
    else:
        k = final_share * seconds / cost_final / 1000
        k_before = (1 - final_share) * seconds / cost_before / 1000
    training = [k_before * scale[start]] + [k_before / 2 * scale[r] for r in res[1:-1]]
    transition = [k_before / 2 * scale[r] for r in res[1:-1]] + [k / 2]
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


def estimate_unmeasured(stable: dict[int, float], fade: dict[int, float], res: list[int]) -> None:
    """Fill in the speeds a calibration out of time did not measure: a quarter of the resolution
    below's per doubling (four times the pixels), and fading FADE_SPEED_ESTIMATE of stable."""
    for prev, r in zip(res, res[1:], strict=False):
        stable.setdefault(r, stable[prev] / 4)
        fade.setdefault(r, stable[r] * FADE_SPEED_ESTIMATE)


def process_seconds() -> float:
    """The process's CPU seconds per intra-op thread: the `cpu` clock of timed runs."""
    return time.process_time() / torch.get_num_threads()


# Measures img/s (stable, fading) at every resolution: (seconds per measurement, limit) -> speeds.
Measure = Callable[[float, float], tuple[dict[int, float], dict[int, float]]]


class TimeBudget:
    """A run's clock (`wall` or `cpu`) and, for a timed run (--minutes), its budget: calibration
    and plan (`plan`), the deadline (`out_of_time`), and the fitting of the final phase to the
    deadline as the run goes (`start`, `step_at`, `tick_clock`, `refit`).

    `elapsed_before` is the time earlier sessions of a resumed run took; the deadline counts it."""

    def __init__(self, minutes: float | None, clock: str) -> None:
        self.now = time.time if clock == "wall" else process_seconds
        self.session_start = self.now()  # the clock starts when the trainer does
        self.minutes = minutes
        self.seconds = None if minutes is None else minutes * 60
        self.clock = clock
        self.elapsed_before = 0.0
        self.fits_deadline = False  # whether ticks refit the total to the deadline (see start)
        self.final_since: tuple[int, float] | None = (
            None  # (nimg, clock) at the final resolution's first step
        )
        self.stable_since: tuple[int, float] | None = None  # and at its stable phase's first tick
        self.fit_from_nimg = 0  # the images the tick's speed is measured from

    @property
    def deadline(self) -> float | None:
        """When a timed run stops on its clock (its final snapshot and grids fit in the rest)."""
        if self.seconds is None:
            return None
        return self.session_start - self.elapsed_before + self.seconds - final_reserve(self.seconds)

    def elapsed(self) -> float:
        """Seconds the run has taken on its clock, earlier sessions (before resumes) included."""
        return self.elapsed_before + self.now() - self.session_start

    def out_of_time(self) -> bool:
        return self.deadline is not None and self.now() >= self.deadline

    def plan(
        self, measure: Measure, start: int, final: int, is_main: bool, share: Callable,
        final_share: float | None = None,
    ) -> dict:  # fmt: skip
        """Calibrate with `measure` and plan the schedule for the rest of the budget.

        Every rank measures (the steps average gradients); rank 0 (`is_main`) plans, and `share`
        hands its plan, or its one-line error, to every rank, so that all run one schedule (plans
        from each rank's own clock differed, 0.6865 against 0.6576 kimg, and the ranks changed
        resolution at different steps). `final_share`: see `plan_schedule`."""
        budget = self.seconds
        stable, fade = measure(calibration_seconds(budget, start, final), CALIBRATION_LIMIT_SHARE * budget)
        plan: dict = {}
        if is_main:
            # Never refuse to start for want of time: on a machine far busier than its calibration
            # allowed for, plan a short schedule and let the deadline end the run on time.
            seconds = max(
                training_seconds(budget, self.now() - self.session_start), MIN_PLANNED_SHARE * budget
            )
            try:
                plan = {
                    **plan_schedule(stable, fade, seconds, start, final, final_share=final_share),
                    "budget_seconds": budget,
                    "planned_training_seconds": seconds,
                    "clock": self.clock,
                    "img_per_sec": {str(r): v for r, v in stable.items()},
                    "fade_img_per_sec": {str(r): v for r, v in fade.items()},
                }
            except ValueError as e:
                plan = {
                    "error": f"--minutes {self.minutes:g} leaves {e} after calibration; give it more minutes"
                }
        plan = share(plan)
        if "error" in plan:
            raise UserError(plan["error"])
        return plan

    def start(self, schedule: Schedule, fixed_total: bool) -> int:
        """The images to train to at the start of a session. A timed run with a ramp-down fits its
        total to the deadline at every tick of the final resolution's stable phase, from the speed
        measured since that phase's first tick (or, until a tick is past it, since the final
        resolution's first step in this session). One without (planned before it) trains at its
        last resolution until the deadline: when the calibration underestimated the speed (a
        busy spell), the time is used rather than left over."""
        timed = self.deadline is not None and not fixed_total and TIMED_RUNS_TRAIN_TO_DEADLINE
        self.fits_deadline = timed and schedule.lr_rampdown_kimg > 0
        if timed and schedule.lr_rampdown_kimg == 0:
            return sys.maxsize  # past a ramp-down's end the rate is 0; without one, until the deadline
        return int(schedule.total_kimg * 1000)

    def step_at(self, nimg: int, at_final_resolution: bool) -> None:
        if self.fits_deadline and self.final_since is None and at_final_resolution:
            self.final_since = (nimg, self.now())

    def tick_clock(self, nimg: int, fading: bool) -> dict[str, float]:
        """This rank's seconds left and seconds measured at a tick of the final stable phase (the
        tick's all-reduce averages them over ranks, so that every rank fits alike), else {}."""
        if not self.fits_deadline or self.final_since is None or fading:
            return {}
        now = self.now()
        self.fit_from_nimg, from_time = self.stable_since or self.final_since
        self.stable_since = self.stable_since or (nimg, now)
        return {"seconds_left": self.deadline - now, "seconds_measured": now - from_time}

    def refit(self, schedule: Schedule, plan: dict | None, nimg: int, seconds_left: float,
              seconds_measured: float, final_batch: int) -> int:  # fmt: skip
        """Refit the schedule's total (and its ramp-down with it) so that the final stable phase ends
        at the deadline; the plan follows, so snapshots resume the fitted schedule. Returns the
        new total in images (never less than one more step)."""
        kimg = nimg / 1000
        total = fit_total_to_deadline(
            kimg, (nimg - self.fit_from_nimg) / 1000, seconds_measured, seconds_left
        )
        total = max(total, kimg + final_batch / 1000)
        schedule.lr_rampdown_kimg = rescale_rampdown(
            schedule.total_kimg, schedule.lr_rampdown_kimg, schedule.growth_done_kimg(), total
        )
        schedule.total_kimg = total
        if plan is not None:
            plan.setdefault("planned_total_kimg", plan["total_kimg"])
            plan.update(total_kimg=total, lr_rampdown_kimg=schedule.lr_rampdown_kimg)
        return int(total * 1000)

"""The training schedule, measured in images shown (kimg), and its presets.

A phase is `training_kimg` at a stable resolution followed by `transition_kimg` fading in the next
one (official `TrainingSchedule`). During a fade the new resolution's minibatch and learning rate
apply, as in the official code where both are looked up at the resolution being trained.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

PRESETS: dict[str, dict] = {
    # The paper's CelebA-HQ run: 800k + 800k images per resolution, minibatch 16 cut at 256+ to fit.
    "paper": dict(
        training_kimg=800, transition_kimg=800, total_kimg=19000,
        minibatch_default=16, minibatch={256: 14, 512: 6, 1024: 3},
    ),
    # The official TF code's v2 presets (total minibatch over all GPUs, and learning rates).
    "v2-1gpu": dict(
        training_kimg=600, transition_kimg=600, total_kimg=12000, minibatch_default=4,
        minibatch={4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4},
        lr={1024: 0.0015},
    ),
    "v2-2gpu": dict(
        training_kimg=600, transition_kimg=600, total_kimg=12000, minibatch_default=8,
        minibatch={4: 256, 8: 256, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8},
        lr={512: 0.0015, 1024: 0.002},
    ),
    "v2-4gpu": dict(
        training_kimg=600, transition_kimg=600, total_kimg=12000, minibatch_default=16,
        minibatch={4: 512, 8: 256, 16: 128, 32: 64, 64: 32, 128: 16},
        lr={256: 0.0015, 512: 0.002, 1024: 0.003},
    ),
    "v2-8gpu": dict(
        training_kimg=600, transition_kimg=600, total_kimg=12000, minibatch_default=32,
        minibatch={4: 512, 8: 256, 16: 128, 32: 64, 64: 32},
        lr={128: 0.0015, 256: 0.002, 512: 0.003, 1024: 0.003},
    ),
    # A laptop-CPU schedule: short phases for small data sets at 32-64 px (the demo uses it). lr
    # 0.002, the demo's (it gave faces where 0.001 gave faint ones); in 20 CPU minutes on
    # Fashion-MNIST (benchmarks/quality_budget.py, equal images per phase) G_ema's SWD was 114 at
    # 0.001 before the fused layers and 73.5 at 0.002 with them (the two changes not separated).
    "cpu": dict(
        training_kimg=6, transition_kimg=6, total_kimg=60, minibatch_default=16,
        minibatch={4: 32, 8: 32, 16: 16, 32: 16}, lr_default=0.002,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Stage:
    """Where the schedule stands at a given number of images shown."""

    resolution: int
    alpha: float  # 1.0 when stable, 0 -> 1 while `resolution` fades in
    minibatch: int
    lr: float

    @property
    def fading(self) -> bool:
        return self.alpha < 1.0


@dataclass
class Schedule:
    final_resolution: int
    training_kimg: float = 600
    transition_kimg: float = 600
    total_kimg: float = 12000
    start_resolution: int = 4
    minibatch_default: int = 16
    minibatch: dict[int, int] = field(default_factory=dict)
    lr_default: float = 0.001
    lr: dict[int, float] = field(default_factory=dict)
    # Per-phase lengths (the time planner's schedules): phase p trains start_resolution * 2**p for
    # training_kimgs[p], then fades in the next resolution for transition_kimgs[p]. When given,
    # they replace the uniform training_kimg / transition_kimg.
    training_kimgs: list[float] | None = None
    transition_kimgs: list[float] | None = None
    # The learning rate anneals to 0 over the last lr_rampdown_kimg before total_kimg (half a
    # cosine; the time planner's schedules). 0: the paper's constant rate.
    lr_rampdown_kimg: float = 0.0

    def __post_init__(self) -> None:
        # JSON round trips turn int keys into strings.
        self.minibatch = {int(k): int(v) for k, v in self.minibatch.items()}
        self.lr = {int(k): float(v) for k, v in self.lr.items()}
        if (self.training_kimgs is None) != (self.transition_kimgs is None):
            raise ValueError("training_kimgs and transition_kimgs go together")
        if self.training_kimgs is not None:
            self.training_kimgs = [float(k) for k in self.training_kimgs]
            self.transition_kimgs = [float(k) for k in self.transition_kimgs]
            if min(self.training_kimgs + self.transition_kimgs, default=0) < 0:
                raise ValueError("phase lengths must be >= 0")
        if self.lr_rampdown_kimg < 0:
            raise ValueError(f"lr_rampdown_kimg must be >= 0, got {self.lr_rampdown_kimg}")
        if (
            self.training_kimg < 0
            or self.transition_kimg < 0
            or self.training_kimg + self.transition_kimg <= 0
        ):
            raise ValueError("training_kimg and transition_kimg must be >= 0 with a positive sum")

    @classmethod
    def from_preset(
        cls,
        name: str,
        final_resolution: int,
        batch: int | None = None,
        lr: float | None = None,
        **overrides,
    ) -> Schedule:
        """A preset's schedule; `overrides` replace its fields, `batch` and `lr` replace its
        per-resolution tables by one value for every resolution."""
        if name not in PRESETS:
            raise KeyError(name)
        params = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
        if batch:
            params.update(minibatch={}, minibatch_default=batch)
        if lr:
            params.update(lr={}, lr_default=lr)
        return cls(final_resolution=final_resolution, **params)

    def batch_at(self, resolution: int) -> int:
        return self.minibatch.get(resolution, self.minibatch_default)

    def lr_at(self, resolution: int) -> float:
        return self.lr.get(resolution, self.lr_default)

    def lr_factor(self, kimg: float) -> float:
        """The ramp-down's factor on the learning rate at `kimg`: 1 until total_kimg -
        lr_rampdown_kimg, then 0.5 * (1 + cos(pi * t)) with t going 0 -> 1 until total_kimg, 0 past it."""
        if self.lr_rampdown_kimg <= 0:
            return 1.0
        t = (kimg - self.lr_rampdown_point_kimg()) / self.lr_rampdown_kimg
        return 0.5 * (1.0 + math.cos(math.pi * min(max(t, 0.0), 1.0)))

    def lr_rampdown_point_kimg(self, share: float = 0.0) -> float | None:
        """kimg at which the ramp-down has covered `share` of its images (0: where it starts, 0.5:
        where the rate is down to half); None without a ramp-down."""
        if self.lr_rampdown_kimg <= 0:
            return None
        return self.total_kimg - (1.0 - share) * self.lr_rampdown_kimg

    def phases(self) -> list[tuple[float, float]]:
        """(stable kimg, fade-in kimg) of every phase before the final resolution's stable one."""
        steps = int(math.log2(self.final_resolution // self.start_resolution))
        if self.training_kimgs is not None:
            if len(self.training_kimgs) < steps or len(self.transition_kimgs) < steps:
                raise ValueError(f"a per-phase schedule to {self.final_resolution} needs {steps} phases")
            return list(zip(self.training_kimgs[:steps], self.transition_kimgs[:steps], strict=True))
        return [(self.training_kimg, self.transition_kimg)] * steps

    def fade_start_kimg(self, resolution: int) -> float:
        """kimg at which `resolution` starts fading in (0 for the first resolution)."""
        kimg = 0.0
        res = self.start_resolution
        for stable, fade in self.phases():
            if res >= resolution:
                break
            kimg += stable + fade if res * 2 < resolution else stable
            res *= 2
        return kimg

    def at(self, kimg: float) -> Stage:
        stage = self._at_growth(kimg)
        if self.lr_rampdown_kimg > 0:
            stage = replace(stage, lr=stage.lr * self.lr_factor(kimg))
        return stage

    def _at_growth(self, kimg: float) -> Stage:
        if self.training_kimgs is not None:
            return self._at_phases(kimg)
        phase_dur = self.training_kimg + self.transition_kimg
        phase = int(math.floor(kimg / phase_dur))
        phase_kimg = kimg - phase * phase_dur
        stable = self.start_resolution * 2**phase
        if stable >= self.final_resolution:
            res, alpha = self.final_resolution, 1.0
        elif phase_kimg < self.training_kimg:
            res, alpha = stable, 1.0
        else:
            res, alpha = stable * 2, (phase_kimg - self.training_kimg) / self.transition_kimg
        return Stage(res, alpha, self.batch_at(res), self.lr_at(res))

    def _at_phases(self, kimg: float) -> Stage:
        res, rest = self.start_resolution, kimg
        for stable, fade in self.phases():
            if rest < stable:
                break
            rest -= stable
            if rest < fade:
                res, alpha = res * 2, rest / fade
                return Stage(res, alpha, self.batch_at(res), self.lr_at(res))
            rest -= fade
            res *= 2
        return Stage(res, 1.0, self.batch_at(res), self.lr_at(res))

    def growth_done_kimg(self) -> float:
        """kimg at which the final resolution is fully faded in."""
        return sum(stable + fade for stable, fade in self.phases())

    def to_dict(self) -> dict:
        return asdict(self)

"""The training loop: data -> D step -> G step -> G_ema -> tick (measure, metrics, report, grids,
snapshot, stop).

Read top to bottom: `Trainer` builds the runtime objects of a resolved run (progan.runspec) or of
a snapshot (`Trainer.from_snapshot`), then `run` takes steps until the schedule's total kimg.
What a tick reports goes through progan.reporter; what a snapshot holds, through progan.checkpoint.
All randomness comes from one torch.Generator and the loader's NumPy generator, both saved in
every snapshot, so a resumed run continues bit for bit where it stopped.
"""

from __future__ import annotations

import gc
import os
import re
import signal
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from progan import checkpoint as ckpt
from progan import distributed
from progan.data.loader import BatchLoader, to_model_range
from progan.data.store import LOCK_FILE, hold_lock, open_store, remove_stale_temporaries
from progan.device import CompiledOrEager, autocast, pick_device, setup_device
from progan.ema import EMA_AVERAGE_FROM, EmaUpdater
from progan.errors import UserError, writing
from progan.images import save_grid, save_strip
from progan.layers import downsample2x, upsample2x
from progan.loss import discriminator_loss, generator_loss
from progan.networks import build_networks
from progan.planner import (
    calibration_seconds,
    final_reserve,
    fit_total_to_deadline,
    plan_schedule,
    rescale_rampdown,
    training_seconds,
)
from progan.planner import resolutions as planner_resolutions
from progan.reporter import STATS_FILE, Reporter, TickRecord, peak_memory_gb, truncate_stats
from progan.runspec import (
    RunSpec,
    TrainOptions,
    apply_plan,
    resolve_resume,
    resolve_run,
    run_name,
)
from progan.sampling import grid_seeds, images_for_seeds, labels_for
from progan.schedule import Stage


def make_optimizer(module: torch.nn.Module, lr: float, device: torch.device) -> torch.optim.Adam:
    # Fused Adam honours `found_inf`, which skips a step with non-finite gradients on the device
    # itself, without reading the flag back to the host.
    return torch.optim.Adam(
        module.parameters(), lr=lr, betas=(0.0, 0.99), eps=1e-8, fused=device.type in ("cpu", "cuda")
    )


def flag_nonfinite(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """1.0 when any gradient holds inf/nan, else 0.0, as a device tensor (no host sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device if params else "cpu")
    total = torch.stack(torch._foreach_norm(grads)).sum()
    return (~torch.isfinite(total)).float()


def fade_reals(reals: torch.Tensor, stage: Stage) -> torch.Tensor:
    """Blend reals with their 2x2-box-downsampled-then-upsampled copy by (1 - alpha) while fading."""
    if not stage.fading:
        return reals
    return torch.lerp(upsample2x(downsample2x(reals)), reals, stage.alpha)


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


def process_seconds() -> float:
    """The process's CPU seconds per intra-op thread: the `cpu` clock of timed runs."""
    return time.process_time() / torch.get_num_threads()


def new_run_dir(outdir: Path, name: str) -> Path:
    outdir.mkdir(parents=True, exist_ok=True)
    ids = [int(m.group(1)) for p in outdir.iterdir() if (m := re.match(r"^(\d{5})-", p.name))]
    run_dir = outdir / f"{max(ids, default=-1) + 1:05d}-{name}"
    run_dir.mkdir()
    return run_dir


class Trainer:
    """Holds the networks, optimizers and counters of one run; `run()` trains to total_kimg.

    Built from a resolved `RunSpec` (progan.runspec): `Trainer(resolve_run(opts))` starts a run,
    `Trainer.from_snapshot(path, overrides)` resumes one. Given plain TrainOptions it resolves them.
    """

    def __init__(
        self, spec: RunSpec | TrainOptions, resume: str | None = None, overrides: dict | None = None
    ) -> None:
        started = {"wall": time.time(), "cpu": process_seconds()}  # a timed run's clock starts here
        if not isinstance(spec, RunSpec):
            world_size = distributed.world_size_from_environment()
            if resume:
                spec = resolve_resume(resume, overrides, world_size)
            else:
                spec = resolve_run(spec, world_size=world_size)
        self.spec = spec
        opts = self.opts = spec.options
        self.config, self.schedule, self.loss_cfg = spec.network, spec.schedule, spec.loss
        self.precision = spec.precision  # --precision auto resolved
        self._now = time.time if opts.clock == "wall" else process_seconds
        self.session_start = started[opts.clock]
        self.elapsed_before = 0.0  # seconds of this run before a resume
        self.ctx = ctx = distributed.from_environment(pick_device(opts.device).type)
        spec.check_world_size(ctx.world_size)
        self.device = setup_device(
            opts.device, ctx.local_rank if ctx.distributed else None, opts.deterministic
        )
        torch.manual_seed(opts.seed)  # weight init
        self.store = open_store(opts.data)

        self.G, self.D, self.G_ema = build_networks(self.config)
        # Channels-last is the layout oneDNN (CPU) and cuDNN (tensor cores) convolve fastest; the
        # convolutions follow their weights' layout, so converting the modules is enough.
        self.memory_format = torch.channels_last if opts.channels_last else torch.contiguous_format
        for m in (self.G, self.D, self.G_ema):
            m.to(self.device, memory_format=self.memory_format)
        stage = self.schedule.at(0)
        self.opt_G = make_optimizer(self.G, stage.lr, self.device)
        self.opt_D = make_optimizer(self.D, stage.lr, self.device)
        for m in (self.G, self.D, self.G_ema):
            distributed.broadcast_parameters(m, ctx)
        self.loader = BatchLoader(self.store, opts.seed, opts.mirror, ctx.rank, ctx.world_size)
        self.gen = torch.Generator(self.device).manual_seed(opts.seed)
        labels = self.store.labels if self.config.label_size else None
        self.all_labels = (
            None if labels is None else torch.from_numpy(np.array(labels, dtype=np.float32)).to(self.device)
        )
        self.nimg = 0
        self.tick = 0
        self.d_steps = 0  # D updates so far: which of them carry a lazy gradient penalty
        self.resolution = 0  # the stage resolution of the last step, 0 before the first
        self.skipped = torch.zeros((), device=self.device)
        # fp16 needs loss scaling; bf16 has fp32's exponent range and does not.
        self.scaler = None
        if self.precision == "fp16":
            self.scaler = torch.amp.GradScaler(self.device.type)
            self.scaler.scale(torch.zeros((), device=self.device))  # creates the scale tensor
        self.phase: tuple[int, bool] | None = None  # (resolution, fading) the networks are set to
        self.G_fwd = CompiledOrEager(self.G) if opts.compile else self.G
        self.D_fwd = CompiledOrEager(self.D) if opts.compile else self.D

        self.ema = EmaUpdater(self.G, self.G_ema, spec.ema)
        self.g_params = list(self.G.parameters())
        self.d_params = list(self.D.parameters())
        if opts.minutes is not None and opts.plan is None:
            self._plan_for_time()
        # Images shown when each resolution starts fading in: the clock of its layers' G_ema.
        starts = {r: self.schedule.fade_start_kimg(r) for r in self.ema.groups if r <= self.config.resolution}
        self.ema_starts = {r: round(kimg * 1000) for r, kimg in starts.items()}

        self._lock = None
        if spec.resume is not None:
            self.run_dir = spec.resume.parent
            if ctx.is_main:
                self._lock = RunLock(self.run_dir)
            self._restore(spec.resume)
            if ctx.is_main:
                # What a killed run left behind: its temporary folders, and stats lines of ticks
                # after this snapshot (they are trained again, and logged again).
                remove_leftovers(self.run_dir)
                truncate_stats(self.run_dir / STATS_FILE, self.tick)
        else:
            run_dir = None
            if ctx.is_main:
                run_dir = new_run_dir(Path(opts.outdir), run_name(opts))
                self._lock = RunLock(run_dir)
                ckpt.write_json_atomic(run_dir / "options.json", spec.to_dict())
            # Only rank 0 writes in it; the others name it (a rank's out-of-memory message).
            self.run_dir = Path(distributed.rank_zero_object(str(run_dir), ctx))
        self.deadline = None
        if opts.minutes is not None:
            budget = opts.minutes * 60
            self.deadline = self.session_start - self.elapsed_before + budget - final_reserve(budget)

    # ----------------------------------------------------------------------------------------
    # training for a time

    def _plan_for_time(self) -> None:
        """A new timed run: measure speeds, plan the schedule for the rest of opts.minutes, and keep
        the plan in the options (options.json, every snapshot), so that resume continues it.

        Every rank takes the calibration's steps (they average gradients), but rank 0's clock
        decides how many, and rank 0 alone plans and hands its plan to the others: plans from each
        rank's own clock differed (0.6865 against 0.6576 kimg), and the ranks then changed
        resolution at different steps and their collectives broke."""
        opts = self.opts
        budget = opts.minutes * 60
        start, final = self.schedule.start_resolution, self.config.resolution
        stable, fade = self.measure_speeds(
            calibration_seconds(budget, start, final), limit_s=CALIBRATION_LIMIT_SHARE * budget
        )
        plan: dict = {}
        if self.ctx.is_main:
            # Never refuse to start for want of time: on a machine far busier than its calibration
            # allowed for, plan a short schedule and let the deadline end the run on time.
            spent = self._now() - self.session_start
            seconds = max(training_seconds(budget, spent), MIN_PLANNED_SHARE * budget)
            try:
                lengths = plan_schedule(stable, fade, seconds, start, final)
                plan = {
                    **lengths,
                    "budget_seconds": budget,
                    "planned_training_seconds": seconds,
                    "clock": opts.clock,
                    "img_per_sec": {str(r): v for r, v in stable.items()},
                    "fade_img_per_sec": {str(r): v for r, v in fade.items()},
                }
            except ValueError as e:
                plan = {
                    "error": f"--minutes {opts.minutes:g} leaves {e} after calibration; give it more minutes"
                }
        plan = distributed.rank_zero_object(plan, self.ctx)
        if "error" in plan:
            raise UserError(plan["error"])
        opts.plan = plan
        apply_plan(self.schedule, opts.plan)

    def measure_speeds(
        self, seconds_each: float, limit_s: float = float("inf")
    ) -> tuple[dict[int, float], dict[int, float]]:
        """img/s of training steps at every resolution, stable and fading in (alpha 0.5).

        Past `limit_s` of calibration, the resolutions left are estimated from the last one
        measured (a quarter of its speed per doubling: four times the pixels).

        The steps run on this trainer's networks with throw-away optimizers; weights, random state,
        data order and counters are put back afterwards, so the run starts as if never measured."""
        saved = {
            "models": [{k: v.clone() for k, v in m.state_dict().items()} for m in self._models().values()],
            "gen": self.gen.get_state(),
            "loader": self.loader.state_dict(),
            "skipped": self.skipped.clone(),
            "d_steps": self.d_steps,
            "optimizers": (self.opt_G, self.opt_D),
        }
        stable: dict[int, float] = {}
        fade: dict[int, float] = {}
        start = self.schedule.start_resolution
        self.ema_starts = dict.fromkeys(self.ema.groups, 0)
        resolutions = planner_resolutions(start, self.config.resolution)
        give_up = self._synced_time() + limit_s
        try:
            for res in resolutions:
                for alpha, out in ((0.5, fade), (1.0, stable)):
                    first_fade = alpha < 1 and res == start  # nothing fades in at the start
                    if first_fade or (stable and self._rank_zero_says(self._synced_time() > give_up)):
                        continue
                    stage = Stage(res, alpha, self.schedule.batch_at(res), self.schedule.lr_at(res))
                    out[res] = self._steps_per_second(stage, seconds_each) * stage.minibatch
        finally:
            for m, sd in zip(self._models().values(), saved["models"], strict=True):
                m.load_state_dict(sd)
            self.gen.set_state(saved["gen"])
            self.loader.load_state_dict(saved["loader"])
            self.skipped = saved["skipped"]
            self.d_steps = saved["d_steps"]
            self.opt_G, self.opt_D = saved["optimizers"]
        for prev, res in zip(resolutions, resolutions[1:], strict=False):
            stable.setdefault(res, stable[prev] / 4)
            fade.setdefault(res, stable[res] * FADE_SPEED_ESTIMATE)
        return stable, fade

    def _steps_per_second(self, stage: Stage, seconds: float) -> float:
        self.opt_G = make_optimizer(self.G, stage.lr, self.device)
        self.opt_D = make_optimizer(self.D, stage.lr, self.device)
        self._enter_phase(stage)
        # The first steps at a shape set up kernels and memory: not timed. One whole cycle of the lazy
        # penalty (gp_interval D updates, the first penalized), so both kinds of update are set up;
        # the timed steps are whole cycles too, so that the speed is the run's average one.
        interval = self.loss_cfg.gp_interval
        self.d_steps = 0
        for _ in range(interval):
            self.step(stage, {})
        self.d_steps = 0
        steps, t0 = 0, self._synced_time()
        while steps < 2 or steps % interval or self._rank_zero_says(self._synced_time() - t0 < seconds):
            self.step(stage, {})
            steps += 1
        return steps / (self._synced_time() - t0)

    def _rank_zero_says(self, flag: bool) -> bool:
        return distributed.rank_zero_says(flag, self.ctx, self.device)

    def _synced_time(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return self._now()

    def elapsed_seconds(self) -> float:
        """Seconds this run has taken so far on its clock, earlier sessions (before resumes) included."""
        return self.elapsed_before + self._now() - self.session_start

    @classmethod
    def from_snapshot(cls, path: str | Path, overrides: dict | None = None) -> Trainer:
        """Resume the run of a snapshot (or of a run directory's newest one); `overrides` may change
        only RESUME_OVERRIDABLE options."""
        return cls(resolve_resume(path, overrides, distributed.world_size_from_environment()))

    # ----------------------------------------------------------------------------------------
    # state

    def training_state(self) -> ckpt.TrainingState:
        stage = self.schedule.at(self.nimg / 1000)
        return ckpt.TrainingState(
            nimg=self.nimg,
            tick=self.tick,
            resolution_trained=self.resolution,
            stage={"resolution": stage.resolution, "alpha": stage.alpha},
            network=self.config,
            options=self.opts.to_dict(),
            schedule=self.schedule.to_dict(),
            label_names=self.store.label_names if self.config.label_size else [],
            loader=self.loader.state_json(),
            loader_tensors=self.loader.state_tensors(),
            rng=self.gen.get_state(),
            skipped=self.skipped,
            precision_chosen={"precision": self.precision, "reason": self.spec.precision_reason},
            elapsed_seconds=self.elapsed_seconds(),
            d_steps=self.d_steps,
            scaler={} if self.scaler is None else self.scaler.state_dict(),
        )

    def _models(self) -> dict[str, torch.nn.Module]:
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G_opt": self.opt_G, "D_opt": self.opt_D}

    def save(self) -> Path:
        return ckpt.save_training_snapshot(
            self.run_dir, self._models(), self._optimizers(), self.training_state()
        )

    def _restore(self, snapshot: Path) -> None:
        state = ckpt.load_training_snapshot(snapshot, self._models(), self._optimizers())
        try:
            self.gen.set_state(state.rng)
        except RuntimeError:  # saved on another device type (CPU <-> CUDA states differ)
            self.gen.manual_seed(self.opts.seed + state.nimg)
            print(
                f"warning: {snapshot} saved its random state on another kind of device; reseeded, so "
                "this run continues correctly but not bit for bit as it would have there",
                file=sys.stderr,
            )
        try:
            self.loader.load_state(state.loader, state.loader_tensors)
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(
                f"{snapshot / ckpt.STATE_FILE}: the data loader's state is damaged ({e}); "
                "use another snapshot"
            ) from e
        if self.scaler is not None and state.scaler:
            self.scaler.load_state_dict({**self.scaler.state_dict(), **state.scaler})
        self.skipped = state.skipped.to(self.device)
        self.nimg = state.nimg
        self.tick = state.tick
        self.d_steps = state.d_steps
        self.resolution = state.resolution_trained
        self.elapsed_before = state.elapsed_seconds

    # ----------------------------------------------------------------------------------------
    # one step

    def _set_stage(self, stage: Stage) -> None:
        if stage.resolution != self.resolution:
            if self.resolution:
                self._on_grow(self.resolution)
                # Adam's moments are reset when a new resolution starts fading in (paper, TF code).
                self.opt_G = make_optimizer(self.G, stage.lr, self.device)
                self.opt_D = make_optimizer(self.D, stage.lr, self.device)
            self.resolution = stage.resolution
        for opt in (self.opt_G, self.opt_D):
            for group in opt.param_groups:
                group["lr"] = stage.lr
        self._enter_phase(stage)

    def _enter_phase(self, stage: Stage) -> None:
        """Put the networks at `stage`; with --compile, a new phase (resolution, fading) starts
        compiling afresh (CompiledOrEager.new_phase)."""
        for m in (self.G, self.D, self.G_ema):
            m.set_stage(stage.resolution, stage.alpha)
        phase = (stage.resolution, stage.fading)
        if self.opts.compile and phase != self.phase:
            CompiledOrEager.new_phase()
        self.phase = phase

    # Every rank draws the random numbers of the whole global minibatch and keeps its own slice, so
    # that a run's randomness does not depend on how many ranks share it.

    def _local(self, x: torch.Tensor) -> torch.Tensor:
        if not self.ctx.distributed:
            return x
        n = x.shape[0] // self.ctx.world_size
        return x[self.ctx.rank * n : (self.ctx.rank + 1) * n]

    def _latents(self, n: int) -> torch.Tensor:
        return self._local(torch.randn(n, self.config.latent_size, generator=self.gen, device=self.device))

    def _random_labels(self, n: int) -> torch.Tensor | None:
        if self.all_labels is None:
            return None
        idx = torch.randint(len(self.all_labels), (n,), generator=self.gen, device=self.device)
        return self._local(self.all_labels[idx])

    def _update(
        self, opt: torch.optim.Optimizer, loss_of: Callable[[], tuple[torch.Tensor, dict]], params: list
    ) -> tuple[torch.Tensor, dict]:
        """Forward (`loss_of()`: the loss and its stats), backward, average over ranks, then an Adam
        step unless a gradient is non-finite.

        Returns the skip flag as a device tensor, and the stats; nothing here waits for the device.
        With --compile, a backward that fails to compile (AOTAutograd compiles it at the first
        backward) ends compilation with one line, like a forward, and the update runs again eagerly
        on the same inputs.
        """
        try:
            loss, stats = loss_of()
            self._backward(opt, loss, params)
        except torch.OutOfMemoryError:
            raise
        except Exception as e:
            compiled = [
                f for f in (self.G_fwd, self.D_fwd) if isinstance(f, CompiledOrEager) and not f.failed
            ]
            if not compiled:
                raise
            names = " and ".join(type(f.module).__name__ for f in compiled)
            for i, f in enumerate(compiled):
                f.give_up(e, say=i == 0, what=names)
            loss, stats = loss_of()
            self._backward(opt, loss, params)
        distributed.average_gradients(params, self.ctx)
        found = flag_nonfinite(params)
        opt.found_inf = found
        opt.step()
        return found, stats

    def _backward(self, opt: torch.optim.Optimizer, loss: torch.Tensor, params: list) -> None:
        opt.zero_grad(set_to_none=True)
        # inputs=params: no gradient for the gradient penalty's interpolated images, a leaf that
        # would otherwise receive one.
        if self.scaler is not None:  # fp16: dynamic loss scaling
            self.scaler.scale(loss).backward(inputs=params)
            self.scaler.unscale_(opt)
        else:
            loss.backward(inputs=params)

    def step(self, stage: Stage, stats: dict[str, torch.Tensor]) -> None:
        """One D update and one G update on a minibatch of `stage.minibatch` images."""
        n = stage.minibatch
        amp = autocast(self.device, self.precision)
        images, labels = self.loader.next(stage.resolution, n)
        if self.device.type == "cuda":
            images = images.pin_memory()  # so that the copy below overlaps with compute
        reals = fade_reals(to_model_range(images, self.device), stage)
        labels = None if self.all_labels is None else labels.to(self.device, non_blocking=True)

        # Discriminator.
        with torch.no_grad(), amp:
            fakes = self.G_fwd(self._latents(n), labels).float()
        mix = self._local(torch.rand(n, 1, 1, 1, generator=self.gen, device=self.device))
        penalize = self.d_steps % self.loss_cfg.gp_interval == 0

        def loss_D() -> tuple[torch.Tensor, dict]:
            with amp:
                loss_scale = 1.0 if self.scaler is None else self.scaler._scale
                return discriminator_loss(self.D_fwd, reals, fakes, labels, mix, self.loss_cfg, D_gp=self.D,
                                          loss_scale=loss_scale, penalize=penalize)  # fmt: skip

        skipped, d_stats = self._update(self.opt_D, loss_D, self.d_params)
        self.d_steps += 1

        # Generator (D's weights frozen so that no gradient is computed for them).
        self.D.requires_grad_(False)
        g_labels = self._random_labels(n)
        latents = self._latents(n)

        def loss_G() -> tuple[torch.Tensor, dict]:
            with amp:
                return generator_loss(self.D_fwd, self.G_fwd(latents, g_labels), g_labels, self.loss_cfg)

        g_skipped, g_stats = self._update(self.opt_G, loss_G, self.g_params)
        skipped = skipped + g_skipped
        self.D.requires_grad_(True)
        if self.scaler is not None:
            self.scaler.update()

        # G_ema <- lerp(G, G_ema, beta), once per G update, with each resolution's own beta (and
        # over the second half of the learning rate's ramp-down, the mean of G's iterates).
        lr_factor = self.schedule.lr_factor(self.nimg / 1000)
        average_kimg = self.schedule.lr_rampdown_point_kimg(EMA_AVERAGE_FROM)
        average_start = None if average_kimg is None else round(average_kimg * 1000)
        self.ema.update(self.nimg, n, stage.resolution, self.ema_starts, lr_factor, average_start)

        self.skipped += skipped
        for key, value in {**d_stats, **g_stats}.items():
            stats[key] = stats.get(key, 0.0) + value
        stats["count"] = stats.get("count", 0) + 1
        stats["gp_count"] = stats.get("gp_count", 0) + int(penalize)

    # ----------------------------------------------------------------------------------------
    # pictures

    def _fakes_uint8(self) -> torch.Tensor:
        """The grid's samples: seeds 0..grid_size-1 through the one sampling path, in fp32, so that
        `progan generate RUN --seeds 0-63` shows the same faces."""
        seeds = grid_seeds(self.opts.grid_size)
        labels = labels_for(self.config.label_size, seeds, None, self.spec.label_names)
        return images_for_seeds(self.G_ema, seeds, labels, batch=32, device=self.device)

    def save_fakes(self, path: Path) -> tuple[Path, torch.Tensor]:
        images = self._fakes_uint8()
        return save_grid(images, path, min_cell=self.config.resolution), images

    def _on_grow(self, finished_resolution: int) -> None:
        """Keep one grid per resolution, taken just before the next one starts fading in."""
        if self.ctx.is_main:
            self.save_fakes(self.run_dir / f"growth-{finished_resolution:04d}.png")

    def save_growth_strip(self) -> Path:
        grids = sorted(self.run_dir.glob("growth-*.png"))
        return save_strip(grids, self.run_dir / "growth.png")

    # ----------------------------------------------------------------------------------------
    # the loop

    def run(self) -> Path:
        """Train to the schedule's total (the run directory's lock is released at the end)."""
        try:
            return self._run()
        finally:
            if self._lock is not None:
                self._lock.release()

    def _run(self) -> Path:
        """Train to the schedule's total. The loop reads in sections: step; on a tick: measure,
        metrics, report, grids, snapshot, stop."""
        opts = self.opts
        start_nimg = self.nimg
        main = self.ctx.is_main
        total_nimg = int(self.schedule.total_kimg * 1000)
        timed = self.deadline is not None and opts.total_kimg is None
        if timed and TIMED_RUNS_TRAIN_TO_DEADLINE and self.schedule.lr_rampdown_kimg == 0:
            # A timed run without a ramp-down (planned before it) trains at its last resolution
            # until the deadline: when the calibration underestimated the speed (a busy spell), the
            # time is used rather than left over. Past a ramp-down's end the rate is 0.
            total_nimg = sys.maxsize
        # A timed run with a ramp-down fits its total to the deadline at every tick of the final
        # resolution's stable phase, from the speed measured since that phase's first tick (or,
        # until a tick is past it, since the final resolution's first step in this session).
        fit_to_deadline = timed and TIMED_RUNS_TRAIN_TO_DEADLINE and self.schedule.lr_rampdown_kimg > 0
        final = self.config.resolution
        final_since: tuple[int, float] | None = None  # (nimg, clock) at that first step
        stable_since: tuple[int, float] | None = None  # and at that first tick
        reporter = Reporter(self.run_dir, self.schedule.total_kimg, self.nimg, opts.progress, main)
        if main and not (self.run_dir / "reals.png").exists():
            n = min(opts.grid_size, self.store.count)
            reals = torch.from_numpy(self.store.images(self.config.resolution)[:n].copy())
            save_grid(reals, self.run_dir / "reals.png")
        stats: dict = {}
        tick_start_nimg, tick_start_time = self.nimg, time.time()
        next_tick_nimg = self.nimg + int(opts.tick_kimg * 1000)
        interrupted = forced = out_of_memory = out_of_time = False
        stop = StopRequests().install()
        reporter.started()
        if main:
            print(f"Precision: {self.precision} ({self.spec.precision_reason})", flush=True)
        try:
            while self.nimg < total_nimg:
                # Step (a timed run stops at its deadline, whatever the speed did; ranks agree at a tick).
                if self._out_of_time() and not self.ctx.distributed:
                    out_of_time = True
                    break
                stage = self.schedule.at(self.nimg / 1000)
                if fit_to_deadline and final_since is None and stage.resolution == final:
                    final_since = (self.nimg, self._now())
                self._set_stage(stage)
                self.step(stage, stats)
                self.nimg += stage.minibatch
                if stop.requested and not self.ctx.distributed:
                    interrupted = True
                    break
                reporter.progress(self.nimg, stage)
                if self.nimg < next_tick_nimg and self.nimg < total_nimg:
                    continue

                # Tick: measure (ranks agree to stop through the tick's one all-reduce: they get a
                # signal at different steps, and an extra collective made gloo abort now and then).
                self.tick += 1
                stats["stop"] = torch.tensor(float(stop.requested), device=self.device)
                stats["out_of_time"] = torch.tensor(float(self._out_of_time()), device=self.device)
                if fit_to_deadline and final_since is not None and not stage.fading:
                    now = self._now()
                    from_nimg, from_time = stable_since or final_since
                    stable_since = stable_since or (self.nimg, now)
                    # Each rank's own clock; the tick's all-reduce averages them, so all fit alike.
                    stats["seconds_left"] = torch.tensor(self.deadline - now, device=self.device)
                    stats["seconds_measured"] = torch.tensor(now - from_time, device=self.device)
                record, stop_agreed = self._measure_tick(
                    stats, stage, time.time() - tick_start_time, self.nimg - tick_start_nimg
                )
                if self.deadline_fit is not None and self.deadline_fit[1] > 0:
                    kimg_measured = (self.nimg - from_nimg) / 1000
                    total_nimg = self._fit_total_to_deadline(kimg_measured, *self.deadline_fit)
                    reporter.set_total(self.schedule.total_kimg)
                stats = {}
                if main:
                    # Metrics before the report, so that the tick's one record holds them.
                    if self._metrics_due():
                        record.metrics = self._metrics()
                    reporter.tick(record, self.nimg, stage)
                    if opts.image_ticks > 0 and self.tick % opts.image_ticks == 0:
                        path, _ = self.save_fakes(self.run_dir / f"fakes{ckpt.kimg_tag(self.nimg)}.png")
                        reporter.image("fakes", path, self.nimg)
                    if self._snapshot_due():
                        self.save()
                else:
                    reporter.tick(record, self.nimg, stage)
                if stop_agreed:
                    interrupted = True
                    break
                if self.out_of_time_agreed:
                    out_of_time = True
                    break
                next_tick_nimg = self.nimg + int(opts.tick_kimg * 1000)
                tick_start_nimg, tick_start_time = self.nimg, time.time()
        except KeyboardInterrupt:  # a second Ctrl-C, raised wherever the loop was
            interrupted = forced = True
        except torch.OutOfMemoryError:
            out_of_memory = True
        finally:
            reporter.close_bar()
            stop.uninstall()
        if out_of_memory:
            self._snapshot_after_out_of_memory(reporter)
        if not main:
            distributed.barrier(self.ctx)
            return self.run_dir
        snap = self.run_dir / ckpt.snapshot_name(self.nimg)
        if self.nimg != start_nimg or not (snap / ckpt.STATE_FILE).is_file():
            snap = self.save()  # (not again when a resume only finishes a killed run's final grids)
        if interrupted:
            print(
                f"Interrupted: snapshot written to {snap}; resume with 'progan train --resume {self.run_dir}'"
            )
        else:
            final = self.run_dir / "fakes-final.png"
            self.save_fakes(final)
            self.save_fakes(self.run_dir / f"growth-{self.resolution:04d}.png")
            strip = self.save_growth_strip()
            why = f" (the {opts.minutes:g}-minute budget)" if out_of_time else ""
            print(
                f"Done: {self.nimg / 1000:g} kimg{why}. Samples: {final}  Growth: {strip}  Snapshot: {snap}"
            )
        reporter.close(forced=forced)
        distributed.barrier(self.ctx)
        return self.run_dir

    def _fit_total_to_deadline(
        self, kimg_measured: float, seconds_left: float, seconds_measured: float
    ) -> int:
        """Refit the schedule's total (and its ramp-down with it) so that the final stable phase ends
        at the deadline; the plan in the options follows, so snapshots resume the fitted schedule.
        Returns the new total in images (never less than one more step)."""
        schedule, plan = self.schedule, self.opts.plan
        kimg = self.nimg / 1000
        total = fit_total_to_deadline(kimg, kimg_measured, seconds_measured, seconds_left)
        total = max(total, kimg + schedule.batch_at(self.config.resolution) / 1000)
        schedule.lr_rampdown_kimg = rescale_rampdown(
            schedule.total_kimg, schedule.lr_rampdown_kimg, schedule.growth_done_kimg(), total
        )
        schedule.total_kimg = total
        if plan is not None:
            plan.setdefault("planned_total_kimg", plan["total_kimg"])
            plan.update(total_kimg=total, lr_rampdown_kimg=schedule.lr_rampdown_kimg)
        return int(total * 1000)

    def _out_of_time(self) -> bool:
        return self.deadline is not None and self._now() >= self.deadline

    def _snapshot_after_out_of_memory(self, reporter: Reporter) -> None:
        """Save what there is, then say which --batch to resume with.

        Out of memory mostly strikes at the first step of a new resolution, possibly many ticks after
        the last snapshot. The weights are whole (an optimizer step either ran or did not), so
        they are saved; at worst the resumed run repeats the D update of the step that failed."""
        stage = self.schedule.at(self.nimg / 1000)
        res, batch = stage.resolution, stage.minibatch
        gc.collect()  # the failed step's graph, now unreferenced
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        # On another rank than 0 the process ends with this line, and the launcher (`--gpus`,
        # torchrun) stops the other ranks, which wait in a collective for this one: the run resumes
        # from its last snapshot.
        where = f" on rank {self.ctx.rank}" if self.ctx.distributed else ""
        saved = "the last snapshot"
        if self.ctx.is_main:
            saved = f"snapshot written to {self.save()}"
        reporter.close()
        raise UserError(
            f"out of {self.device.type.upper()} memory{where} at {res}x{res} with minibatch {batch}; "
            f"{saved}; resume with 'progan train --resume {self.run_dir} --batch {max(batch // 2, 1)}' "
            f"(or a smaller --batch)"
        )

    def _measure_tick(
        self, stats: dict, stage: Stage, elapsed: float, images: int
    ) -> tuple[TickRecord, bool]:
        """The tick's statistics averaged over ranks (the one host sync per tick), and whether any
        rank asked to stop."""
        count = max(stats.pop("count", 1), 1)
        # The penalty's sum is over the updates that carried it (one in gp_interval).
        gp_count = max(stats.pop("gp_count", 1), 1)
        keys = sorted(stats)
        # Sums over the tick's steps are divided by their count; the tick's own values are not.
        per_tick = ("stop", "out_of_time", "seconds_left", "seconds_measured")
        divisors = torch.tensor(
            [1.0 if k in per_tick else float(gp_count if k == "D/gradient_penalty" else count) for k in keys]
        )
        means = torch.stack([torch.as_tensor(stats[k], dtype=torch.float32) for k in keys])
        means = means / divisors.to(means.device)
        distributed.all_reduce_mean_([means], self.ctx)
        values = dict(zip(keys, means.tolist(), strict=True))
        stop_agreed = values.pop("stop", 0.0) > 0
        self.out_of_time_agreed = values.pop("out_of_time", 0.0) > 0
        seconds_left = values.pop("seconds_left", None)
        seconds_measured = values.pop("seconds_measured", None)
        self.deadline_fit = None if seconds_left is None else (seconds_left, seconds_measured)
        record = TickRecord(
            tick=self.tick,
            kimg=round(self.nimg / 1000, 3),
            resolution=stage.resolution,
            alpha=round(stage.alpha, 4),
            minibatch=stage.minibatch,
            lr=stage.lr,
            loss_G=values.get("G/loss"),
            loss_D=values.get("D/loss"),
            gradient_penalty=values.get("D/gradient_penalty"),
            wasserstein=values.get("D/wasserstein"),
            img_per_sec=round(images / max(elapsed, 1e-9), 2),
            sec_per_kimg=round(elapsed / max(images / 1000, 1e-9), 3),
            skipped_updates=int(self.skipped.item()),
            peak_memory_gb=round(peak_memory_gb(self.device), 3),
            timestamp=time.time(),
        )
        return record, stop_agreed

    def _snapshot_due(self) -> bool:
        # The last tick's snapshot is written after the loop, with the final grids.
        every = self.opts.snapshot_ticks
        last = self.nimg >= int(self.schedule.total_kimg * 1000)
        return every > 0 and self.tick % every == 0 and not last

    def _metrics_due(self) -> bool:
        opts = self.opts
        if not opts.metrics:
            return False
        if opts.metrics_every:
            return self.tick % opts.metrics_every == 0
        return self._snapshot_due()

    def _metrics(self) -> dict:
        from progan.metrics.evaluate import compute_metrics

        results = compute_metrics(
            self.opts.metrics,
            self.G_ema,
            self.opts.data,
            self.opts.metrics_num,
            self.device,
            seed=self.opts.seed,
            inception_weights=self.opts.inception_weights,
        )
        return {f"metric/{k}": v for k, v in results.items()}


class RunLock:
    """An exclusive lock on a run directory while a trainer uses it (flock on RUN/.lock): a second
    trainer on the same run fails at once instead of both writing snapshots and stats. The kernel
    drops the lock when the process dies, so a killed run can be resumed at once."""

    def __init__(self, run_dir: Path) -> None:
        path = run_dir / LOCK_FILE
        with writing(path):
            self.fd = hold_lock(path)
        if self.fd is None:
            try:
                pid = path.read_text().strip() or "?"
            except OSError:
                pid = "?"
            raise UserError(
                f"run {run_dir} is in use by another trainer (process {pid}); wait for it to finish or "
                f"stop it, then resume"
            )
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        # Released with the trainer even when it is dropped without finishing (tests, errors).
        self._finalizer = weakref.finalize(self, _unlock, path, self.fd)

    def release(self) -> None:
        self._finalizer()


def _unlock(path: Path, fd: int) -> None:
    path.unlink(missing_ok=True)  # before closing: a waiting trainer then locks a fresh file
    os.close(fd)


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Remove the temporary snapshot folders and files that killed writers left in `run_dir` (the
    caller holds the run's lock, so no writer of this run is alive)."""
    removed = remove_stale_temporaries(run_dir, ".snapshot-*.tmp-*", owner_gone=True)
    for tmp in run_dir.glob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


class StopRequests:
    """Ctrl-C (SIGINT) and SIGTERM (what schedulers and `kill` send) ask training to stop at the next
    step boundary, where it writes a snapshot and exits cleanly.

    The handler only sets a flag: raising KeyboardInterrupt from it could land inside TensorBoard's
    writer while it holds a lock, and the final snapshot or exit would then hang. A second Ctrl-C
    raises KeyboardInterrupt for someone who does not want to wait for the current step."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def install(self) -> StopRequests:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                break
        return self

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True


def train(spec: RunSpec | TrainOptions, resume: str | None = None, overrides: dict | None = None) -> Path:
    """Train a resolved run, a new run from options, or resume one (with `overrides` of
    RESUME_OVERRIDABLE options)."""
    return Trainer(spec, resume, overrides).run()

"""The training loop: data -> D step -> G step -> G_ema -> tick (measure, metrics, report, grids,
snapshot, stop).

Read top to bottom: `Trainer(spec)` builds the runtime objects of a resolved run (progan.runspec:
`resolve_run` for a new run, `resolve_resume` for a snapshot, or `Trainer.from_snapshot`), then
`run` takes steps until the schedule's total kimg, in the `# Section`s of `_run`. A timed run's
clock, plan and deadline are one `planner.TimeBudget`; the run directory's lock, leftovers and
stop signals live in progan.rundir. What a tick reports goes through progan.reporter; what a
snapshot holds, through progan.checkpoint. All randomness comes from one torch.Generator and the
loader's NumPy generator, both saved in every snapshot, so a resumed run continues bit for bit
where it stopped.
"""

from __future__ import annotations

import gc
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from progan import checkpoint as ckpt
from progan import distributed
from progan.data.loader import BatchLoader, to_model_range
from progan.data.store import open_store
from progan.device import CompiledOrEager, autocast, pick_device, setup_device
from progan.ema import EMA_AVERAGE_FROM, EmaUpdater
from progan.errors import UserError
from progan.images import save_grid, save_strip
from progan.layers import downsample2x, upsample2x
from progan.loss import discriminator_loss, generator_loss
from progan.networks import build_networks
from progan.planner import TimeBudget, estimate_unmeasured
from progan.planner import resolutions as planner_resolutions
from progan.reporter import STATS_FILE, Reporter, TickRecord, peak_memory_gb, truncate_stats
from progan.rundir import RunLock, StopRequests, interrupted_status, new_run_dir, remove_leftovers
from progan.runspec import RunSpec, apply_plan, resolve_resume, run_name
from progan.sampling import grid_seeds, images_for_seeds, labels_for
from progan.schedule import Stage


def make_optimizer(module: torch.nn.Module, lr: float, device: torch.device) -> torch.optim.Adam:
    # Fused Adam honours `found_inf`, which skips a step with non-finite gradients on the device
    # itself, without reading the flag back to the host.
    return torch.optim.Adam(
        module.parameters(), lr=lr, betas=(0.0, 0.99), eps=1e-8, fused=device.type in ("cpu", "cuda")
    )


def learning_rates(t: Trainer, lr: float) -> tuple[float, float]:
    """G's and D's learning rates for the schedule's `lr`: G's is `lr`, D's --d-lr-ratio times it."""
    return lr, lr * t.opts.d_lr_ratio


def make_optimizers(t: Trainer, lr: float) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """G's and D's Adam at their `learning_rates`."""
    g_lr, d_lr = learning_rates(t, lr)
    return make_optimizer(t.G, g_lr, t.device), make_optimizer(t.D, d_lr, t.device)


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


@dataclass
class TickAgreement:
    """What the ranks agree on at a tick (through its one all-reduce): stop (any rank got a signal),
    out of time (any rank's clock), and the deadline fit's seconds (averaged), when measured."""

    stop: bool = False
    out_of_time: bool = False
    seconds_left: float | None = None
    seconds_measured: float | None = None


def tick_means(stats: dict, ctx: distributed.Context) -> tuple[dict[str, float], TickAgreement]:
    """A tick's sums (and its own values) as means over its steps and over the ranks, in one flat
    all-reduce: the tick's one host sync."""
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
    distributed.all_reduce_mean_([means], ctx)
    values = dict(zip(keys, means.tolist(), strict=True))
    agreed = TickAgreement(
        stop=values.pop("stop", 0.0) > 0,
        out_of_time=values.pop("out_of_time", 0.0) > 0,
        seconds_left=values.pop("seconds_left", None),
        seconds_measured=values.pop("seconds_measured", None),
    )
    return values, agreed


class Trainer:
    """Holds the networks, optimizers and counters of one run; `run()` trains to total_kimg.

    Built from a resolved `RunSpec` only (progan.runspec): `Trainer(resolve_run(opts))` starts a
    run, `Trainer.from_snapshot(path, overrides)` resumes one.
    """

    def __init__(self, spec: RunSpec) -> None:
        opts = spec.options
        self.budget = TimeBudget(opts.minutes, opts.clock)  # a timed run's clock starts here
        self.spec, self.opts = spec, opts
        self.config, self.schedule, self.loss_cfg = spec.network, spec.schedule, spec.loss
        self.precision = spec.precision  # --precision auto resolved
        self.ctx = ctx = distributed.from_environment(pick_device(opts.device).type)
        spec.check_world_size(ctx.world_size)
        local_rank = ctx.local_rank if ctx.distributed else None
        self.device = setup_device(opts.device, local_rank, opts.deterministic)
        torch.manual_seed(opts.seed)  # weight init
        self.store = open_store(opts.data)

        # Networks, optimizers, data, randomness. Channels-last is the layout oneDNN (CPU) and cuDNN
        # (tensor cores) convolve fastest; convolutions follow their weights' layout.
        self.G, self.D, self.G_ema = build_networks(self.config)
        self.memory_format = torch.channels_last if opts.channels_last else torch.contiguous_format
        for m in (self.G, self.D, self.G_ema):
            m.to(self.device, memory_format=self.memory_format)
            distributed.broadcast_parameters(m, ctx)
        self.opt_G, self.opt_D = make_optimizers(self, self.schedule.at(0).lr)
        self.g_params, self.d_params = list(self.G.parameters()), list(self.D.parameters())
        self.loader = BatchLoader(self.store, opts.seed, opts.mirror, ctx.rank, ctx.world_size)
        self.gen = torch.Generator(self.device).manual_seed(opts.seed)
        labels = self.store.labels if self.config.label_size else None
        self.all_labels = (
            None if labels is None else torch.from_numpy(np.array(labels, np.float32)).to(self.device)
        )
        self.ema = EmaUpdater(self.G, self.G_ema, spec.ema)
        # fp16 needs loss scaling; bf16 has fp32's exponent range and does not.
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        if self.scaler is not None:
            self.scaler.scale(torch.zeros((), device=self.device))  # creates the scale tensor
        self.phase: tuple[int, bool] | None = None  # (resolution, fading) the networks are set to
        self.G_fwd = CompiledOrEager(self.G) if opts.compile else self.G
        self.D_fwd = CompiledOrEager(self.D) if opts.compile else self.D

        # Counters (a resume restores them).
        self.nimg = 0
        self.tick = 0
        self.stop_signal: int | None = None  # the signal that stopped run(), if one did
        self.d_steps = 0  # D updates so far: which of them carry a lazy gradient penalty
        self.resolution = 0  # the stage resolution of the last step, 0 before the first
        self.skipped = torch.zeros((), device=self.device)
        self.ema_starts: dict[int, int] = {}

        # A new timed run plans its schedule (kept in the options, so that resume continues it).
        if opts.minutes is not None and opts.plan is None:
            start, final = self.schedule.start_resolution, self.config.resolution
            share = lambda plan: distributed.rank_zero_object(plan, ctx)  # noqa: E731
            measure = lambda seconds, limit: measure_speeds(self, seconds, limit)  # noqa: E731
            opts.plan = self.budget.plan(measure, start, final, ctx.is_main, share, opts.final_share)
            apply_plan(self.schedule, opts.plan)
        # Images shown when each resolution starts fading in: the clock of its layers' G_ema.
        starts = {r: self.schedule.fade_start_kimg(r) for r in self.ema.groups if r <= self.config.resolution}
        self.ema_starts = {r: round(kimg * 1000) for r, kimg in starts.items()}

        # The run directory: rank 0 holds its lock and writes in it; the others only name it.
        self._lock: RunLock | None = None
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
            self.run_dir = Path(distributed.rank_zero_object(str(run_dir), ctx))

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
            nimg=self.nimg, tick=self.tick, resolution_trained=self.resolution,
            stage={"resolution": stage.resolution, "alpha": stage.alpha}, network=self.config,
            options=self.opts.to_dict(), schedule=self.schedule.to_dict(),
            label_names=self.store.label_names if self.config.label_size else [],
            loader=self.loader.state_json(), loader_tensors=self.loader.state_tensors(),
            rng=self.gen.get_state(), skipped=self.skipped,
            precision_chosen={"precision": self.precision, "reason": self.spec.precision_reason},
            elapsed_seconds=self.budget.elapsed(), d_steps=self.d_steps,
            scaler={} if self.scaler is None else self.scaler.state_dict(),
        )  # fmt: skip

    def _models(self) -> dict[str, torch.nn.Module]:
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema}

    def save(self) -> Path:
        optimizers = {"G_opt": self.opt_G, "D_opt": self.opt_D}
        return ckpt.save_training_snapshot(self.run_dir, self._models(), optimizers, self.training_state())

    def _restore(self, snapshot: Path) -> None:
        optimizers = {"G_opt": self.opt_G, "D_opt": self.opt_D}
        state = ckpt.load_training_snapshot(snapshot, self._models(), optimizers)
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
        self.nimg, self.tick, self.d_steps = state.nimg, state.tick, state.d_steps
        self.resolution, self.budget.elapsed_before = state.resolution_trained, state.elapsed_seconds

    # ----------------------------------------------------------------------------------------
    # one step

    def _set_stage(self, stage: Stage) -> None:
        if stage.resolution != self.resolution:
            if self.resolution:
                self._on_grow(self.resolution)
                # Adam's moments are reset when a new resolution starts fading in (paper, TF code).
                self.opt_G, self.opt_D = make_optimizers(self, stage.lr)
            self.resolution = stage.resolution
        for opt, lr in zip((self.opt_G, self.opt_D), learning_rates(self, stage.lr), strict=True):
            for group in opt.param_groups:
                group["lr"] = lr
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
        n = x.shape[0] // self.ctx.world_size  # one rank: all of it
        return x[self.ctx.rank * n : (self.ctx.rank + 1) * n]

    def _latents(self, n: int) -> torch.Tensor:
        return self._local(torch.randn(n, self.config.latent_size, generator=self.gen, device=self.device))

    def _random_labels(self, n: int) -> torch.Tensor | None:
        if self.all_labels is None:
            return None
        idx = torch.randint(len(self.all_labels), (n,), generator=self.gen, device=self.device)
        return self._local(self.all_labels[idx])

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

        skipped, d_stats = update(self, self.opt_D, loss_D, self.d_params)
        self.d_steps += 1

        # Generator (D's weights frozen so that no gradient is computed for them).
        self.D.requires_grad_(False)
        g_labels = self._random_labels(n)
        latents = self._latents(n)

        def loss_G() -> tuple[torch.Tensor, dict]:
            with amp:
                return generator_loss(self.D_fwd, self.G_fwd(latents, g_labels), g_labels, self.loss_cfg)

        g_skipped, g_stats = update(self, self.opt_G, loss_G, self.g_params)
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

    def save_fakes(self, path: Path) -> tuple[Path, torch.Tensor]:
        """The grid of seeds 0..grid_size-1 through the one sampling path, in fp32, so that
        `progan generate RUN --seeds 0-63` shows the same faces; returns (path, images)."""
        seeds = grid_seeds(self.opts.grid_size)
        labels = labels_for(self.config.label_size, seeds, None, self.spec.label_names)
        images = images_for_seeds(self.G_ema, seeds, labels, batch=32, device=self.device)
        return save_grid(images, path, min_cell=self.config.resolution), images

    def _on_grow(self, finished_resolution: int) -> None:
        """Keep one grid per resolution, taken just before the next one starts fading in."""
        if self.ctx.is_main:
            self.save_fakes(self.run_dir / f"growth-{finished_resolution:04d}.png")

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
        """Train to the schedule's total, in sections: set up; step; on a tick: measure, fit the
        deadline, metrics, report, grids, snapshot, stop; then the end's snapshot and grids."""
        opts, main, start_nimg = self.opts, self.ctx.is_main, self.nimg

        # Set up: the total (a timed run's, see TimeBudget.start), the reporter, the reals' grid.
        total_nimg = self.budget.start(self.schedule, fixed_total=opts.total_kimg is not None)
        reporter = Reporter(self.run_dir, self.schedule.total_kimg, self.nimg, opts.progress, main)
        if main and not (self.run_dir / "reals.png").exists():
            n = min(opts.grid_size, self.store.count)
            save_grid(
                torch.from_numpy(self.store.images(self.config.resolution)[:n].copy()),
                self.run_dir / "reals.png",
            )
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
                if self.budget.out_of_time() and not self.ctx.distributed:
                    out_of_time = True
                    break
                stage = self.schedule.at(self.nimg / 1000)
                self.budget.step_at(self.nimg, stage.resolution == self.config.resolution)
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
                stats["out_of_time"] = torch.tensor(float(self.budget.out_of_time()), device=self.device)
                for key, value in self.budget.tick_clock(self.nimg, stage.fading).items():
                    stats[key] = torch.tensor(value, device=self.device)
                elapsed, images = time.time() - tick_start_time, self.nimg - tick_start_nimg
                record, agreed = self._measure_tick(stats, stage, elapsed, images)
                stats = {}

                # Fit the deadline: the final stable phase's total, at the speed measured so far.
                if agreed.seconds_measured is not None and agreed.seconds_measured > 0:
                    last_batch = self.schedule.batch_at(self.config.resolution)
                    total_nimg = self.budget.refit(self.schedule, opts.plan, self.nimg, agreed.seconds_left,
                                                   agreed.seconds_measured, last_batch)  # fmt: skip
                    reporter.set_total(self.schedule.total_kimg)

                # Metrics, report, grids, snapshot (rank 0; metrics first, so that the tick's one
                # record holds them).
                if metrics_due(self):  # every rank generates a share of the images
                    record.metrics = tick_metrics(self)
                reporter.tick(record, self.nimg, stage)
                if main and opts.image_ticks > 0 and self.tick % opts.image_ticks == 0:
                    path, _ = self.save_fakes(self.run_dir / f"fakes{ckpt.kimg_tag(self.nimg)}.png")
                    reporter.image("fakes", path, self.nimg)
                if main and self._snapshot_due():
                    self.save()

                # Stop, when the ranks agreed to.
                if agreed.stop or agreed.out_of_time:
                    interrupted, out_of_time = agreed.stop, not agreed.stop
                    break
                next_tick_nimg = self.nimg + int(opts.tick_kimg * 1000)
                tick_start_nimg, tick_start_time = self.nimg, time.time()
        except KeyboardInterrupt:  # a second Ctrl-C, raised wherever the loop was
            interrupted = forced = True
            stop.signum = stop.signum or signal.SIGINT
        except torch.OutOfMemoryError:
            out_of_memory = True
        finally:
            reporter.close_bar()
            stop.uninstall()
        if interrupted:  # a rank that the others' signal stopped (by agreement) reports SIGTERM
            self.stop_signal = stop.signum or signal.SIGTERM
        if out_of_memory:
            stop_out_of_memory(self, reporter)

        # The end: rank 0 writes the final snapshot and grids while the others wait.
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
            strip = save_strip(sorted(self.run_dir.glob("growth-*.png")), self.run_dir / "growth.png")
            why = f" (the {opts.minutes:g}-minute budget)" if out_of_time else ""
            print(
                f"Done: {self.nimg / 1000:g} kimg{why}. Samples: {final}  Growth: {strip}  Snapshot: {snap}"
            )
        reporter.close(forced=forced)
        distributed.barrier(self.ctx)
        return self.run_dir

    def _measure_tick(
        self, stats: dict, stage: Stage, elapsed: float, images: int
    ) -> tuple[TickRecord, TickAgreement]:
        """The tick's statistics averaged over ranks (the one host sync per tick), and what the
        ranks agree on."""
        values, agreed = tick_means(stats, self.ctx)
        record = TickRecord(
            tick=self.tick, kimg=round(self.nimg / 1000, 3), resolution=stage.resolution,
            alpha=round(stage.alpha, 4), minibatch=stage.minibatch, lr=stage.lr, loss_G=values.get("G/loss"),
            loss_D=values.get("D/loss"), gradient_penalty=values.get("D/gradient_penalty"),
            wasserstein=values.get("D/wasserstein"), img_per_sec=round(images / max(elapsed, 1e-9), 2),
            sec_per_kimg=round(elapsed / max(images / 1000, 1e-9), 3),
            skipped_updates=int(self.skipped.item()), peak_memory_gb=round(peak_memory_gb(self.device), 3),
            timestamp=time.time(),
        )  # fmt: skip
        return record, agreed

    def _snapshot_due(self) -> bool:
        # The last tick's snapshot is written after the loop, with the final grids.
        every = self.opts.snapshot_ticks
        last = self.nimg >= int(self.schedule.total_kimg * 1000)
        return every > 0 and self.tick % every == 0 and not last


# The step's update, the tick's metrics, out of memory, and a timed run's calibration: functions
# of a trainer.


def metrics_due(t: Trainer) -> bool:
    """Whether this tick measures the metrics: every --metrics-every ticks, else with snapshots."""
    if not t.opts.metrics:
        return False
    if t.opts.metrics_every:
        return t.tick % t.opts.metrics_every == 0
    return t._snapshot_due()


def tick_metrics(t: Trainer) -> dict:
    from progan.metrics.evaluate import compute_metrics

    o = t.opts
    results = compute_metrics(o.metrics, t.G_ema, o.data, o.metrics_num, t.device, seed=o.seed,
                              inception_weights=o.inception_weights, ctx=t.ctx)  # fmt: skip
    return {f"metric/{k}": v for k, v in results.items()}


def update(
    t: Trainer, opt: torch.optim.Optimizer, loss_of: Callable[[], tuple[torch.Tensor, dict]], params: list
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
        _backward(t, opt, loss, params)
    except torch.OutOfMemoryError:
        raise
    except Exception as e:
        compiled = [f for f in (t.G_fwd, t.D_fwd) if isinstance(f, CompiledOrEager) and not f.failed]
        if not compiled:
            raise
        names = " and ".join(type(f.module).__name__ for f in compiled)
        for i, f in enumerate(compiled):
            f.give_up(e, say=i == 0, what=names)
        loss, stats = loss_of()
        _backward(t, opt, loss, params)
    distributed.average_gradients(params, t.ctx)
    found = flag_nonfinite(params)
    opt.found_inf = found
    opt.step()
    return found, stats


def _backward(t: Trainer, opt: torch.optim.Optimizer, loss: torch.Tensor, params: list) -> None:
    opt.zero_grad(set_to_none=True)
    # inputs=params: no gradient for the gradient penalty's interpolated images, a leaf that
    # would otherwise receive one.
    if t.scaler is not None:  # fp16: dynamic loss scaling
        t.scaler.scale(loss).backward(inputs=params)
        t.scaler.unscale_(opt)
    else:
        loss.backward(inputs=params)


def stop_out_of_memory(t: Trainer, reporter: Reporter) -> None:
    """Save what there is, then say which --batch to resume with.

    Out of memory mostly strikes at the first step of a new resolution, possibly many ticks after
    the last snapshot. The weights are whole (an optimizer step either ran or did not), so
    they are saved; at worst the resumed run repeats the D update of the step that failed."""
    stage = t.schedule.at(t.nimg / 1000)
    res, batch = stage.resolution, stage.minibatch
    gc.collect()  # the failed step's graph, now unreferenced
    if t.device.type == "cuda":
        torch.cuda.empty_cache()
    # On another rank than 0 the process ends with this line, and the launcher (`--gpus`,
    # torchrun) stops the other ranks, which wait in a collective for this one: the run resumes
    # from its last snapshot.
    where = f" on rank {t.ctx.rank}" if t.ctx.distributed else ""
    saved = "the last snapshot"
    if t.ctx.is_main:
        saved = f"snapshot written to {t.save()}"
    reporter.close()
    raise UserError(
        f"out of {t.device.type.upper()} memory{where} at {res}x{res} with minibatch {batch}; "
        f"{saved}; resume with 'progan train --resume {t.run_dir} --batch {max(batch // 2, 1)}' "
        f"(or a smaller --batch)"
    )


def measure_speeds(
    t: Trainer, seconds_each: float, limit_s: float = float("inf")
) -> tuple[dict[int, float], dict[int, float]]:
    """A timed run's calibration (planner.TimeBudget.plan calls it): img/s of `t`'s training
    steps at every resolution, stable and fading in (alpha 0.5); past `limit_s` of calibration,
    the resolutions left are estimated (planner.estimate_unmeasured).

    The steps run on the trainer's networks with throw-away optimizers; weights, random state,
    data order and counters are put back afterwards, so the run starts as if never measured.
    Rank 0's clock decides how many steps every rank takes (their steps average gradients)."""
    saved = ([{k: v.clone() for k, v in m.state_dict().items()} for m in t._models().values()],
             t.gen.get_state(), t.loader.state_dict(), t.skipped.clone(), t.d_steps,
             (t.opt_G, t.opt_D))  # fmt: skip
    stable: dict[int, float] = {}
    fade: dict[int, float] = {}
    start = t.schedule.start_resolution
    t.ema_starts = dict.fromkeys(t.ema.groups, 0)
    resolutions = planner_resolutions(start, t.config.resolution)
    give_up = _synced_time(t) + limit_s
    try:
        for res in resolutions:
            for alpha, out in ((0.5, fade), (1.0, stable)):
                first_fade = alpha < 1 and res == start  # nothing fades in at the start
                if first_fade or (stable and _rank_zero_says(t, _synced_time(t) > give_up)):
                    continue
                stage = Stage(res, alpha, t.schedule.batch_at(res), t.schedule.lr_at(res))
                out[res] = _steps_per_second(t, stage, seconds_each) * stage.minibatch
    finally:
        for m, sd in zip(t._models().values(), saved[0], strict=True):
            m.load_state_dict(sd)
        t.gen.set_state(saved[1])
        t.loader.load_state_dict(saved[2])
        t.skipped, t.d_steps, (t.opt_G, t.opt_D) = saved[3], saved[4], saved[5]
    estimate_unmeasured(stable, fade, resolutions)
    return stable, fade


def _steps_per_second(t: Trainer, stage: Stage, seconds: float) -> float:
    t.opt_G, t.opt_D = make_optimizers(t, stage.lr)
    t._enter_phase(stage)
    # The first steps at a shape set up kernels and memory: not timed. One whole cycle of the lazy
    # penalty (gp_interval D updates, the first penalized), so both kinds of update are set up;
    # the timed steps are whole cycles too, so that the speed is the run's average one.
    interval = t.loss_cfg.gp_interval
    t.d_steps = 0
    for _ in range(interval):
        t.step(stage, {})
    t.d_steps = 0
    steps, t0 = 0, _synced_time(t)
    while steps < 2 or steps % interval or _rank_zero_says(t, _synced_time(t) - t0 < seconds):
        t.step(stage, {})
        steps += 1
    return steps / (_synced_time(t) - t0)


def _rank_zero_says(t: Trainer, flag: bool) -> bool:
    return distributed.rank_zero_says(flag, t.ctx, t.device)


def _synced_time(t: Trainer) -> float:
    if t.device.type == "cuda":
        torch.cuda.synchronize(t.device)
    return t.budget.now()


def train(spec: RunSpec) -> Path:
    """Train a resolved run (progan.runspec.resolve_run or resolve_resume) to its end."""
    return Trainer(spec).run()


def train_status(spec: RunSpec) -> int:
    """Train a resolved run; the command's exit status: 0 when it ran to its end, 128 + the
    signal when SIGINT or SIGTERM stopped it (at a step boundary, with a snapshot written)."""
    trainer = Trainer(spec)
    trainer.run()
    return interrupted_status(trainer.stop_signal)

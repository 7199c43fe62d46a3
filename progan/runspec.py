"""A training run, resolved before anything is built.

`TrainOptions` is what the user asks for; `resolve_run` (a new run) and `resolve_resume` (a
snapshot plus the options that may change) turn it, the dataset store and the preset into a
`RunSpec`: the options with every default filled in, the network config, the schedule and the
loss config, checked completely (metric names and the minibatch split over ranks included).
Nothing here builds a network or touches the run directory, so `progan train --dry-run` prints a
spec and exits, and tests check specs without training. `Trainer(spec)` builds the runtime
objects from a spec.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import InitVar, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from progan import checkpoint as ckpt
from progan.checks import Field, check_fields, resolution_error
from progan.data.store import Store, open_store
from progan.device import check_precision, pick_device, resolve_precision
from progan.ema import EMA_KIMG, EMA_RAMPDOWN_RULES, EMA_RAMPUP, EmaRule, ema_rule
from progan.errors import UserError
from progan.loss import LossConfig
from progan.networks import NetworkConfig
from progan.planner import final_reserve
from progan.schedule import PRESETS, Schedule

# The network fields a user chooses; resolution, channels and label size come from the store.
NETWORK_OPTIONS = (
    "latent_size", "fmap_base", "fmap_decay", "fmap_max", "mbstd_group_size", "fused_scale",
    "d_mirror_difference",
)  # fmt: skip


@dataclass
class TrainOptions:
    """Everything that defines a run; saved as options.json and in every snapshot.

    The network's own fields live in `network` (a NetworkConfig); `TrainOptions(latent_size=...,
    fmap_base=...)` sets them too. Its resolution, channels and label size are filled in from
    the store when the run is resolved.
    """

    data: str = ""
    outdir: str = "runs"
    name: str = ""
    resolution: int = 0  # 0: the store's resolution
    preset: str = "cpu"
    training_kimg: float | None = None  # None: the preset's
    transition_kimg: float | None = None
    total_kimg: float | None = None
    batch: int | None = None  # one minibatch for every resolution, overriding the preset's table
    lr: float | None = None  # one learning rate for every resolution
    # D's learning rate as a multiple of G's (the schedule's); 1 is the paper. Above 1, the two
    # time-scale update rule (Heusel et al. 2017): a critic that follows G faster.
    d_lr_ratio: float = 1.0
    network: NetworkConfig = field(default_factory=NetworkConfig)
    conditional: bool = True  # use the store's labels when it has any
    mirror: bool = False
    # G_ema: a half-life in kimg with a ramp-up, restarted for each resolution's layers when it
    # starts fading in (progan.ema); ema_beta, when set, is a fixed beta per update instead (the
    # paper's 0.999 is the `paper` preset's default). Over a timed run's learning-rate ramp-down,
    # ema_rampdown: "average" (the mean of G's iterates) or "anneal" (runs saved before it).
    ema_beta: float | None = None
    ema_kimg: float = EMA_KIMG
    ema_rampup: float | None = EMA_RAMPUP
    ema_rampdown: str = EMA_RAMPDOWN_RULES[0]
    # The loss's weights; its gradient penalty's interval is gp_interval (progan.loss.LossConfig),
    # the one home of that setting.
    loss: dict = field(
        default_factory=lambda: {k: v for k, v in asdict(LossConfig()).items() if k != "gp_interval"}
    )
    gp_interval: int = LossConfig.gp_interval
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 where the hardware runs it fast, else fp32 (device.choose_precision)
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False
    tick_kimg: float = 4.0
    snapshot_ticks: int = 10
    image_ticks: int = 5
    grid_size: int = 64
    metrics: list[str] = field(default_factory=list)
    metrics_every: int = 0  # ticks; 0 = only with snapshots
    metrics_num: int = 2048
    inception_weights: str | None = None  # for fid/kid/is/pr during training
    progress: bool = True
    # Train for a time instead of a kimg total: the budget in minutes, and the schedule planned for
    # it from measured speeds (progan.planner), fixed when the run starts and kept on resume.
    minutes: float | None = None
    plan: dict | None = None
    # The final resolution's share of a timed run's training time (None: the planner's own split).
    final_share: float | None = None
    # The clock of --minutes: "wall", or "cpu" (the process's CPU seconds per thread: what the run
    # would take on an otherwise idle machine; benchmarks on a shared machine use it).
    clock: str = "wall"
    latent_size: InitVar[int | None] = None
    fmap_base: InitVar[int | None] = None
    fmap_decay: InitVar[float | None] = None
    fmap_max: InitVar[int | None] = None
    mbstd_group_size: InitVar[int | None] = None
    fused_scale: InitVar[bool | None] = None
    d_mirror_difference: InitVar[bool | None] = None

    def __post_init__(
        self, latent_size, fmap_base, fmap_decay, fmap_max, mbstd_group_size, fused_scale, d_mirror_difference
    ) -> None:
        if isinstance(self.network, dict):
            self.network = NetworkConfig.from_dict(self.network)
        given = dict(latent_size=latent_size, fmap_base=fmap_base, fmap_decay=fmap_decay, fmap_max=fmap_max,
                     mbstd_group_size=mbstd_group_size, fused_scale=fused_scale,
                     d_mirror_difference=d_mirror_difference)  # fmt: skip
        given = {k: v for k, v in given.items() if v is not None}
        if given:
            self.network = dataclasses.replace(self.network, **given)

    @classmethod
    def from_dict(cls, d: dict) -> TrainOptions:
        """Options from options.json or a snapshot, also from before `network` held the network
        fields (they were flat then)."""
        known = {f.name for f in fields(cls)} | set(NETWORK_OPTIONS)
        d = {k: v for k, v in d.items() if k in known}
        if "fused_scale" not in d and "fused_scale" not in (d.get("network") or {}):
            d["fused_scale"] = False  # saved before the option: the paper-order D (NetworkConfig.from_dict)
        d.setdefault("ema_rampdown", "anneal")  # saved before the option: G_ema annealed with the lr
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


def option_default(name: str):
    """The default of a TrainOptions field or network option: the one place the CLI's help reads."""
    if name in NETWORK_OPTIONS:
        return getattr(NetworkConfig(), name)
    f = {f.name: f for f in fields(TrainOptions)}[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


# What a finished run has beyond its last snapshot: a run killed before writing them resumes to.
FINAL_FILES = ("fakes-final.png", "growth.png")

# Options that may change when a run is resumed; everything else is fixed by the snapshot. `lr`
# (like `batch`) replaces the per-resolution table from the resumed step on: a fine-tune at a
# lower rate. Adam's moments carry over; its step size follows the new rate at once.
RESUME_OVERRIDABLE = {
    "total_kimg", "batch", "lr", "tick_kimg", "snapshot_ticks", "image_ticks", "device", "precision",
    "progress", "metrics", "metrics_every", "metrics_num", "inception_weights", "deterministic",
    "channels_last", "compile", "minutes",
}  # fmt: skip


@dataclass
class RunSpec:
    """A resolved run: what `Trainer` builds, what options.json holds, what --dry-run prints."""

    options: TrainOptions
    network: NetworkConfig
    schedule: Schedule
    loss: LossConfig
    label_names: list[str] = field(default_factory=list)
    resume: Path | None = None  # the snapshot a resumed run continues from
    start_nimg: int = 0  # images already shown (resume)
    world_size: int = 1
    ema: EmaRule = field(default_factory=EmaRule)
    precision: str = "fp32"  # what --precision (auto included) resolved to on this machine
    precision_reason: str = ""

    def to_dict(self) -> dict:
        """options.json: the options, the precision chosen, the network and the schedule."""
        return {
            **self.options.to_dict(),
            "precision_chosen": {"precision": self.precision, "reason": self.precision_reason},
            "network": self.network.to_dict(),
            "schedule": self.schedule.to_dict(),
        }

    def describe(self) -> str:
        """A readable summary: the run, its network per resolution and its schedule, phase by phase."""
        o, n, s = self.options, self.network, self.schedule
        downscale = "fused (official code)" if n.fused_scale else "after the activation (paper)"
        if n.d_mirror_difference:
            downscale += ", D also sees the image minus its mirror image (not the paper)"
        head = f"resume {self.resume} at {self.start_nimg / 1000:g} kimg" if self.resume else "new run"
        lines = [
            f"{head}: data {o.data}, {n.resolution}x{n.resolution}, {n.channels} channel(s), "
            + (
                f"{n.label_size} label(s) ({'multi-hot' if self.loss.multi_hot else 'one-hot'})"
                if n.label_size
                else "unconditional"
            ),  # fmt: skip
            f"device {o.device}, precision {o.precision} -> {self.precision} ({self.precision_reason}), "
            f"ranks {self.world_size}, seed {o.seed}, x-flips {'on' if o.mirror else 'off'}",
            f"network: latent {n.latent_size}, fmap_base {n.fmap_base}, fmap_max {n.fmap_max}, "
            f"fmap_decay {n.fmap_decay:g}, mbstd group {n.mbstd_group_size}, "
            f"D downscale {downscale}",
            f"loss: {', '.join(f'{k} {v}' for k, v in asdict(self.loss).items())}",
            "learning rates: "
            + (
                "G and D as in the table (paper)"
                if o.d_lr_ratio == 1
                else f"G as in the table, D {o.d_lr_ratio:g}x G's (two time-scales, not the paper)"
            ),
            f"G_ema: {self.ema.describe()}",
            (
                f"schedule (preset {o.preset}): {s.training_kimg:g} kimg stable + {s.transition_kimg:g} kimg "
                f"fade-in per resolution, {s.total_kimg:g} kimg in all"
                if s.training_kimgs is None
                else f"schedule planned for {o.minutes:g} minutes: {s.total_kimg:g} kimg in all"
            ),
            "  resolution  fades in at kimg  stable at kimg  minibatch  lr      feature maps",
        ]
        phases = s.phases()
        res, k = s.start_resolution, 0
        while res <= n.resolution:
            fade = "-" if k == 0 else f"{s.fade_start_kimg(res):g}"
            stable = f"{0 if k == 0 else s.fade_start_kimg(res) + phases[k - 1][1]:g}"
            lg = int(math.log2(res))
            lines.append(
                f"  {res:<10d}  {fade:<16s}  {stable:<14s}  {s.batch_at(res):<9d}  {s.lr_at(res):<6g}  "
                f"{n.nf(lg - 1)}"
            )
            res, k = res * 2, k + 1
        lines.append(
            f"output: {o.outdir}/NNNNN-{run_name(o)}; tick {o.tick_kimg:g} kimg, snapshot every "
            f"{o.snapshot_ticks} ticks, grid every {o.image_ticks} ticks ({o.grid_size} samples)"
        )
        if o.metrics:
            every = f"every {o.metrics_every} ticks" if o.metrics_every else "with snapshots"
            lines.append(f"metrics: {','.join(o.metrics)} {every}, {o.metrics_num} images")
        return "\n".join(lines)

    def check_world_size(self, world_size: int) -> None:
        """Every minibatch of the schedule must split evenly over the ranks."""
        res = self.schedule.start_resolution
        while res <= self.network.resolution:
            batch = self.schedule.batch_at(res)
            res *= 2
            if batch % world_size:
                raise UserError(
                    f"minibatch {batch} at {res // 2}x{res // 2} does not split over {world_size} ranks; "
                    f"pass --batch with a multiple of {world_size}"
                )


def apply_plan(schedule: Schedule, plan: dict, total_kimg: float | None = None) -> None:
    """Give `schedule` the per-phase lengths of a time plan (progan.planner) and its total, unless
    a total is given (--kimg on resume)."""
    schedule.training_kimgs = [float(k) for k in plan["training_kimgs"]]
    schedule.transition_kimgs = [float(k) for k in plan["transition_kimgs"]]
    schedule.total_kimg = float(plan["total_kimg"] if total_kimg is None else total_kimg)
    # Plans from before the ramp-down have none, and resume as planned.
    schedule.lr_rampdown_kimg = float(plan.get("lr_rampdown_kimg", 0.0))


# The kinds and ranges of the options, checked before a run starts (and for a resumed run's
# state.json): a bad value fails at once with one line, not hours later.
OPTION_FIELDS = {
    "data": Field("str"), "outdir": Field("str"), "name": Field("str"),
    "resolution": Field("int", 0, 1024), "preset": Field("str"),
    "training_kimg": Field("float", 1e-3, 1e9, optional=True),
    "transition_kimg": Field("float", 1e-3, 1e9, optional=True),
    "total_kimg": Field("float", 1e-3, 1e9, optional=True),
    "batch": Field("int", 1, 2**16, optional=True), "lr": Field("float", 1e-12, 1e3, optional=True),
    "d_lr_ratio": Field("float", 1e-3, 1e3),
    "conditional": Field("bool"), "mirror": Field("bool"),
    "ema_beta": Field("float", 0.0, below=1.0, optional=True),
    "ema_kimg": Field("float", 0.0, 1e9), "ema_rampup": Field("float", 0.0, 1e3, optional=True),
    "ema_rampdown": Field("str"),
    "minutes": Field("float", 1e-3, 1e9, optional=True), "plan": Field("dict", optional=True),
    "final_share": Field("float", 0.0, below=1.0, optional=True),
    "loss": Field("dict"), "gp_interval": Field("int", 1, 1024),
    "seed": Field("int", 0, 2**63 - 1), "device": Field("str"),
    "precision": Field("str"), "channels_last": Field("bool"), "compile": Field("bool"),
    "deterministic": Field("bool"), "tick_kimg": Field("float", 1e-3, 1e9),
    "snapshot_ticks": Field("int", 0, 2**31), "image_ticks": Field("int", 0, 2**31),
    "grid_size": Field("int", 1, 4096), "metrics_every": Field("int", 0, 2**31),
    "metrics_num": Field("int", 1, 2**24), "inception_weights": Field("str", optional=True),
    "progress": Field("bool"),
}  # fmt: skip
NETWORK_OPTION_FIELDS = {
    "latent_size": Field("int", 1, 8192), "fmap_base": Field("int", 1, 2**20),
    "fmap_decay": Field("float", 1e-6, 16), "fmap_max": Field("int", 1, 8192),
    "mbstd_group_size": Field("int", 0, 1024), "fused_scale": Field("bool"),
    "d_mirror_difference": Field("bool"),
}  # fmt: skip


def check_options(values: dict, where: str | None = None) -> None:
    """UserError for the first option of `values` out of its kind or range: command-line options
    (`where` None) or the options of `where`, a state.json (the network's may be nested under
    "network", as TrainOptions.to_dict writes them). Options a value lacks (older snapshots) take
    their defaults, so only those present are checked."""
    fix = "see 'progan train --help'" if where is None else "the file is damaged; use another snapshot"
    label = "options" if where is None else f"{where} options"
    if not isinstance(values, dict):
        check_fields(values, {}, label, fix)
    flat = {**values, **(values.get("network") if isinstance(values.get("network"), dict) else {})}
    spec = {**OPTION_FIELDS, **NETWORK_OPTION_FIELDS}
    spec = {k: f for k, f in spec.items() if k in flat}
    check_fields(flat, spec, label, fix, option_names=where is None)


def run_name(opts: TrainOptions) -> str:
    return opts.name or f"{Path(opts.data).name}-{opts.resolution}"


def _check_options(opts: TrainOptions) -> None:
    check_options({k: v for k, v in opts.to_dict().items() if k != "metrics"})
    metrics = opts.metrics
    if opts.preset not in PRESETS:
        raise UserError(f"unknown preset '{opts.preset}'; choose one of {', '.join(PRESETS)}")
    # A bad device name, or fp16 where it cannot run, fails here, before anything is built.
    device = pick_device(opts.device)
    check_precision(resolve_precision(opts.precision, device)[0], device.type)
    if opts.clock not in ("wall", "cpu"):
        raise UserError(f"unknown clock '{opts.clock}'; use wall or cpu")
    if opts.clock == "cpu" and device.type == "cuda":
        raise UserError(
            "--clock cpu counts this process's CPU seconds, not a GPU's work; "
            "use --clock wall (the default) on a GPU"
        )
    if opts.minutes is not None and opts.plan is None:
        flags = {
            "total_kimg": "--kimg",
            "training_kimg": "--training-kimg",
            "transition_kimg": "--transition-kimg",
        }
        fixed = [flag for key, flag in flags.items() if getattr(opts, key) is not None]
        if fixed:
            raise UserError(f"--minutes plans the schedule itself; drop {fixed[0]}")
    # Its upper bound (below 1) is its Field's, checked above; a Field's lower bound is inclusive.
    if opts.final_share is not None and (opts.minutes is None or opts.final_share <= 0):
        raise UserError(
            f"--final-share {opts.final_share:g} needs --minutes and a share between 0 and 1 "
            "(0.8: the final resolution trains for 80% of the time)"
        )
    opts.metrics = []
    if metrics:
        from progan.metrics.evaluate import INCEPTION, parse_metrics

        opts.metrics = parse_metrics(metrics)
        weights = opts.inception_weights
        if INCEPTION & set(opts.metrics) and weights and not Path(weights).is_file():
            raise UserError(f"--inception-weights {weights} is not a file; give the weights' path")
    if opts.metrics_num < 2:
        raise UserError(f"--metrics-num {opts.metrics_num} is too small; use at least a few hundred images")


def resolve_run(
    opts: TrainOptions, store: Store | None = None, world_size: int = 1, new_run: bool = True
) -> RunSpec:
    """The spec of a new run from its options and its store (opened here when not given)."""
    # A copy: the caller's options stay as given. `metrics` may still be the CLI's "swd,msssim".
    metrics = opts.metrics if isinstance(opts.metrics, str) else list(opts.metrics)
    opts = dataclasses.replace(opts, network=opts.network, metrics=metrics, loss=dict(opts.loss))
    _check_options(opts)
    outdir = Path(opts.outdir)
    if new_run and outdir.exists() and not outdir.is_dir():
        raise UserError(f"--outdir {outdir} is a file; pass a folder for the run directories")
    if store is None:
        if not opts.data:
            raise UserError("no dataset: pass --data STORE (make one with 'progan prepare')")
        store = open_store(opts.data)
        store.check()  # a damaged level fails now, not hours in when its resolution begins
    resolution = opts.resolution or store.resolution
    if (problem := resolution_error(resolution)) is not None:
        raise UserError(f"--resolution {problem}; try 32 or 128")
    if resolution > store.resolution:
        raise UserError(
            f"--resolution {resolution} exceeds the store's {store.resolution}; "
            f"prepare the data with --resolution {resolution}"
        )
    opts.resolution = resolution
    label_size = store.label_size if opts.conditional else 0
    opts.network = dataclasses.replace(
        opts.network, resolution=resolution, channels=store.channels, label_size=label_size
    )
    try:
        schedule = Schedule.from_preset(
            opts.preset, resolution, training_kimg=opts.training_kimg, transition_kimg=opts.transition_kimg,
            total_kimg=opts.total_kimg, batch=opts.batch, lr=opts.lr,
        )  # fmt: skip
    except ValueError as e:
        raise UserError(f"{e}; check --training-kimg and --transition-kimg") from e
    if opts.plan is not None:
        apply_plan(schedule, opts.plan, opts.total_kimg)
    loss = {**opts.loss, "gp_interval": opts.gp_interval}
    if label_size:
        # One-hot classes take the softmax AC-GAN term, attributes (several or none set) the sigmoid one.
        loss["multi_hot"] = bool((np.asarray(store.labels).sum(axis=1) != 1).any())
    spec = RunSpec(
        options=opts,
        network=opts.network,
        schedule=schedule,
        loss=LossConfig(**loss),
        label_names=list(store.label_names) if label_size else [],
        world_size=world_size,
        ema=ema_rule(opts.ema_beta, opts.ema_kimg, opts.ema_rampup, opts.preset, opts.ema_rampdown),
    )
    spec.precision, spec.precision_reason = resolve_precision(opts.precision, pick_device(opts.device))
    spec.check_world_size(world_size)
    return spec


def resolve_resume(path: str | Path, overrides: dict | None = None, world_size: int = 1) -> RunSpec:
    """The spec of a resumed run: the snapshot's options with `overrides` (RESUME_OVERRIDABLE only)."""
    (snapshot,) = ckpt.find_snapshots(path)
    state = ckpt.read_state(snapshot, for_training=True)  # refuses inference snapshots too
    fixed = sorted(set(overrides or {}) - RESUME_OVERRIDABLE)
    if fixed:
        raise UserError(
            f"--{fixed[0].replace('_', '-')} cannot change when resuming (the snapshot fixes it); "
            f"drop it, or start a new run without --resume"
        )
    check_options(state["options"], str(snapshot / ckpt.STATE_FILE))
    check_options(overrides or {})
    try:
        opts = TrainOptions.from_dict({**state["options"], **(overrides or {})})
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{snapshot} holds no valid run options ({e}); use another snapshot") from e
    spec = resolve_run(opts, world_size=world_size, new_run=False)
    saved = ckpt.load_config(state, snapshot)
    if saved != spec.network:
        raise UserError(
            f"{snapshot}'s network ({saved}) no longer matches its store {opts.data}; "
            "resume with the store it was trained on"
        )
    spec.resume, spec.start_nimg = snapshot, int(state["nimg"])
    spent = float(state.get("elapsed_seconds", 0.0))
    if opts.minutes is not None and spent >= opts.minutes * 60 - final_reserve(opts.minutes * 60):
        raise UserError(
            f"{snapshot} has used its {opts.minutes:g}-minute budget; to go on, resume with "
            f"--minutes M for a total budget M above {spent / 60:.1f}"
        )
    done_kimg = spec.start_nimg / 1000
    finished = all((snapshot.parent / f).is_file() for f in FINAL_FILES)
    # A timed run ends by its budget (checked above), not by its planned kimg.
    if opts.minutes is None and done_kimg >= spec.schedule.total_kimg and finished:
        raise UserError(
            f"{snapshot} has already trained its {done_kimg:g} kimg; to go on, resume with "
            f"--kimg N for a total N above {done_kimg:g}"
        )
    return spec

import itertools
import json
from pathlib import Path

import pytest
import torch
from helpers import run_cli, stopped_after_tick, tiny_spec
from safetensors.torch import load_file

import progan.planner as planner
import progan.training as training
from progan.planner import (
    IMAGES_EXPONENT,
    LR_RAMPDOWN_SHARE,
    final_reserve,
    fit_total_to_deadline,
    plan_schedule,
    rescale_rampdown,
    training_seconds,
)
from progan.runspec import apply_plan
from progan.schedule import Schedule
from progan.training import Trainer

STABLE = {4: 1000.0, 8: 500.0, 16: 200.0, 32: 100.0}  # img/s
FADE = {8: 400.0, 16: 160.0, 32: 80.0}


def seconds_per_resolution(s: Schedule, step: float = 0.005) -> dict[int, float]:
    """The seconds `s` spends at each resolution at the STABLE / FADE speeds, walked `step` kimg
    at a time."""
    seconds = {r: 0.0 for r in STABLE}
    k_now = 0.0
    while k_now < s.total_kimg - 1e-9:
        st = s.at(k_now)
        seconds[st.resolution] += step * 1000 / (FADE[st.resolution] if st.fading else STABLE[st.resolution])
        k_now += step
    return seconds


@pytest.mark.parametrize("exponent", [0.0, 0.5, 1.0])
def test_plan_images_per_phase_grow_with_speed_twice_at_the_last(exponent):
    plan = plan_schedule(STABLE, FADE, seconds=500.0, start=4, final=32, exponent=exponent)
    # Resolution r gets w_r = (speed_r / speed_32) ** exponent phases' worth of K images: 4x4 K w_4;
    # 8x8 and 16x16 fade K w_r / 2 + stable K w_r / 2; 32x32 fades K/2 and trains stable 3K/2.
    w = {r: (STABLE[r] / STABLE[32]) ** exponent for r in STABLE}
    seconds_per_image = {
        4: w[4] / 1000,
        8: w[8] * (0.5 / 400 + 0.5 / 500),
        16: w[16] * (0.5 / 160 + 0.5 / 200),
        32: 0.5 / 80 + 1.5 / 100,
    }
    k = 500.0 / sum(seconds_per_image.values()) / 1000
    assert plan["training_kimgs"] == pytest.approx([k * w[4], k / 2 * w[8], k / 2 * w[16]])
    assert plan["transition_kimgs"] == pytest.approx([k / 2 * w[8], k / 2 * w[16], k / 2])
    assert plan["total_kimg"] == pytest.approx(k * (w[4] + w[8] + w[16] + 2))
    # The learning rate anneals over the last stable images (a share of 3K/2).
    assert LR_RAMPDOWN_SHARE > 0
    assert plan["lr_rampdown_kimg"] == pytest.approx(LR_RAMPDOWN_SHARE * 1.5 * k)
    # Walked through with the pure Schedule at the measured speeds, the plan takes the time given,
    # and each resolution gets the time its images cost.
    s = Schedule(32, **plan)
    seconds = seconds_per_resolution(s)
    assert sum(seconds.values()) == pytest.approx(500.0, rel=0.01)
    assert seconds == pytest.approx({r: k * 1000 * c for r, c in seconds_per_image.items()}, rel=0.02)
    before_32 = sum(plan["training_kimgs"]) + sum(plan["transition_kimgs"][:2])
    assert s.fade_start_kimg(32) == pytest.approx(before_32)
    if exponent == 0.0:  # the paper's shape: the same images in every phase
        assert plan["training_kimgs"][1] == pytest.approx(plan["transition_kimgs"][2])
    if exponent == 1.0:  # the same stable time in every phase before the last
        stable = zip(plan["training_kimgs"], (4, 8, 16), strict=True)
        stable_seconds = [kimg / STABLE[r] for kimg, r in stable]
        assert stable_seconds[1] == pytest.approx(stable_seconds[2]) == pytest.approx(stable_seconds[0] / 2)


@pytest.mark.parametrize("final_share", [0.5, 0.8])
def test_plan_final_share_gives_the_final_resolution_that_share_of_the_time(final_share):
    plan = plan_schedule(STABLE, FADE, seconds=500.0, start=4, final=32, final_share=final_share)
    # Walked through with the pure Schedule at the measured speeds: the final resolution's fade and
    # stable phases take the share, the earlier resolutions the rest.
    s = Schedule(32, **plan)
    seconds = seconds_per_resolution(s)
    assert sum(seconds.values()) == pytest.approx(500.0, rel=0.01)
    assert seconds[32] == pytest.approx(final_share * 500.0, rel=0.02)
    # The earlier phases keep the default plan's proportions among themselves; the final one its
    # shape (a fade of K/2, 3K/2 stable).
    default = plan_schedule(STABLE, FADE, seconds=500.0, start=4, final=32)
    before = plan["training_kimgs"] + plan["transition_kimgs"][:-1]
    before_default = default["training_kimgs"] + default["transition_kimgs"][:-1]
    ratio = before[0] / before_default[0]
    assert before == pytest.approx([ratio * x for x in before_default])
    assert plan["lr_rampdown_kimg"] == pytest.approx(LR_RAMPDOWN_SHARE * 3 * plan["transition_kimgs"][-1])
    with pytest.raises(ValueError, match="share"):
        plan_schedule(STABLE, FADE, seconds=500.0, start=4, final=32, final_share=1.0)


def test_plan_single_resolution_and_errors():
    assert plan_schedule({4: 100.0}, {}, 10.0, 4, 4) == {
        "training_kimgs": [], "transition_kimgs": [], "total_kimg": pytest.approx(1.0),
        "lr_rampdown_kimg": pytest.approx(LR_RAMPDOWN_SHARE * 1.0),
    }  # fmt: skip
    with pytest.raises(ValueError):
        plan_schedule(STABLE, {8: 1.0}, 100.0, 4, 32)  # no fade speed at 16
    with pytest.raises(ValueError):
        plan_schedule(STABLE, FADE, -1.0, 4, 32)
    assert training_seconds(600, 30) == pytest.approx((600 - 30 - final_reserve(600)) * 0.97)


def test_plans_from_before_the_ramp_down_keep_a_constant_rate():
    plan = plan_schedule(STABLE, FADE, seconds=500.0, start=4, final=32)
    s = Schedule(32)
    apply_plan(s, plan)
    assert s.lr_rampdown_kimg == plan["lr_rampdown_kimg"] > 0
    assert s.at(s.total_kimg - 1e-6).lr < 1e-6 * s.lr_default
    old = {k: v for k, v in plan.items() if k != "lr_rampdown_kimg"}  # an options.json of an older run
    apply_plan(s, old)
    assert s.lr_rampdown_kimg == 0 and s.at(s.total_kimg - 1e-6).lr == s.lr_default


def test_fit_to_the_deadline_keeps_the_ramp_downs_start():
    # 3 kimg done; the last 0.5 kimg took 50 s (10 img/s); 120 s left: 1.2 kimg more.
    assert fit_total_to_deadline(3.0, 0.5, 50.0, 120.0) == pytest.approx(4.2)
    assert fit_total_to_deadline(3.0, 0.5, 50.0, -5.0) == 3.0  # past the deadline: nothing more
    with pytest.raises(ValueError):
        fit_total_to_deadline(3.0, 0.0, 0.0, 120.0)
    # A plan whose final stable phase runs 2 -> 4 kimg with a ramp-down over all of it, refitted to
    # end at 5: the ramp-down is 3 kimg and still starts at 2, so the rate is continuous there.
    plan = plan_schedule(STABLE, FADE, seconds=500.0, start=4, final=32)
    s = Schedule(32)
    apply_plan(s, plan)
    start = s.growth_done_kimg()
    assert s.total_kimg - s.lr_rampdown_kimg == pytest.approx(start)  # LR_RAMPDOWN_SHARE 1
    new_total = s.total_kimg * 1.5
    s.lr_rampdown_kimg = rescale_rampdown(s.total_kimg, s.lr_rampdown_kimg, start, new_total)
    s.total_kimg = new_total
    assert s.total_kimg - s.lr_rampdown_kimg == pytest.approx(start)
    assert s.lr_factor(start) == 1.0 and s.lr_factor(new_total) == 0.0
    assert s.lr_factor((start + new_total) / 2) == pytest.approx(0.5)
    # A ramp-down over half the final stable phase stays half of it.
    assert rescale_rampdown(4.0, 1.0, 2.0, 6.0) == pytest.approx(2.0)


def _fixed_speeds(monkeypatch, factor=1.0):
    # Calibration replaced by given speeds, so that the plan (and the weights) are reproducible.
    stable = {4: 500.0 * factor, 8: 400.0 * factor, 16: 200.0 * factor}
    fade = {8: 300.0 * factor, 16: 150.0 * factor}
    monkeypatch.setattr(training, "measure_speeds", lambda t, seconds, limit_s: (stable, fade))
    monkeypatch.setattr(planner, "training_seconds", lambda budget, spent: 1.0)
    monkeypatch.setattr(planner, "MIN_PLANNED_SHARE", 0.0)
    monkeypatch.setattr(planner, "TIMED_RUNS_TRAIN_TO_DEADLINE", False)


def test_calibration_leaves_the_run_untouched(tiny_store, tmp_path):
    t = Trainer(tiny_spec(tiny_store, tmp_path))
    before = {k: v.clone() for k, v in t.G.state_dict().items()}
    rng, order = t.gen.get_state(), t.loader.state_dict()
    stable, fade = training.measure_speeds(t, 0.0)
    assert sorted(stable) == [4, 8, 16] and sorted(fade) == [8, 16]
    assert all(v > 0 for v in [*stable.values(), *fade.values()])
    assert all(torch.equal(before[k], v) for k, v in t.G.state_dict().items())
    assert torch.equal(t.gen.get_state(), rng) and t.loader.state_dict() == order
    assert not t.opt_G.state
    # Out of calibration time after the first measurement: the rest is estimated, a quarter per doubling.
    stable, fade = training.measure_speeds(t, 0.0, limit_s=0.0)
    assert stable[16] == pytest.approx(stable[4] / 16) and fade[8] == pytest.approx(stable[8] * 0.85)


def test_timed_run_plans_then_resumes_the_same_plan(tiny_store, tmp_path, monkeypatch):
    _fixed_speeds(monkeypatch)
    common = ["--data", str(tiny_store.path), "--outdir", str(tmp_path), "--batch", "8", "--latent-size",
              "16", "--fmap-base", "64", "--fmap-max", "16", "--tick-kimg", "0.04", "--snapshot-ticks", "4",
              "--image-ticks", "0", "--grid-size", "8", "--precision", "fp32", "--no-progress"]  # fmt: skip
    assert run_cli(["train", *common, "--minutes", "10", "--name", "full"]) == 0
    full = tmp_path / "00000-full"
    options = json.loads((full / "options.json").read_text())
    plan = options["plan"]
    # 1 s of training: 4x4 K w4 at 500/s, 8x8 K w8 / 2 at 300/s + K w8 / 2 at 400/s, 16x16 K/2 at
    # 150/s + 3K/2 at 200/s, with w_r = (speed_r / 200) ** IMAGES_EXPONENT.
    w4, w8 = (500 / 200) ** IMAGES_EXPONENT, (400 / 200) ** IMAGES_EXPONENT
    k = 1.0 / (w4 / 500 + w8 * (0.5 / 300 + 0.5 / 400) + 0.5 / 150 + 1.5 / 200) / 1000
    assert plan["training_kimgs"] == pytest.approx([k * w4, k / 2 * w8])
    assert plan["transition_kimgs"] == pytest.approx([k / 2 * w8, k / 2])
    assert plan["total_kimg"] == pytest.approx(k * (w4 + w8 + 2))
    assert options["schedule"]["training_kimgs"] == plan["training_kimgs"]

    # The same run stopped halfway (a signal, at tick 4, in the 8x8 fade) and resumed: the same
    # weights at the end.
    with stopped_after_tick(monkeypatch, lambda t: t.tick == 4):
        assert run_cli(["train", *common, "--minutes", "10", "--name", "half"]) == 143  # 128 + SIGTERM
    half = tmp_path / "00001-half"
    _fixed_speeds(monkeypatch, factor=3.0)  # a resume must not re-plan
    assert run_cli(["train", "--resume", str(half), "--no-progress"]) == 0
    state = json.loads(sorted(half.glob("snapshot-*"))[-1].joinpath("state.json").read_text())
    assert state["options"]["plan"] == plan and 0 < state["elapsed_seconds"] < 600
    a = load_file(str(sorted(full.glob("snapshot-*"))[-1] / "model.safetensors"))
    b = load_file(str(sorted(half.glob("snapshot-*"))[-1] / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_timed_run_stops_at_its_deadline(tiny_store, tmp_path, monkeypatch):
    # Speeds measured far too high: the plan is longer than the budget, the deadline ends it on time.
    # A fake CPU clock (0.05 s per reading) makes this independent of the machine's load.
    _fixed_speeds(monkeypatch, factor=1000.0)
    readings = itertools.count()
    monkeypatch.setattr(planner, "process_seconds", lambda: next(readings) * 0.05)
    opts = tiny_spec(tiny_store, tmp_path, minutes=0.05, clock="cpu", training_kimg=None,
                     transition_kimg=None, total_kimg=None, snapshot_ticks=0, image_ticks=0)  # fmt: skip
    t = Trainer(opts)
    deadline = 0.05 * 60 - final_reserve(3)  # 1 s after the start
    run_dir = t.run()
    state = json.loads(sorted(run_dir.glob("snapshot-*"))[-1].joinpath("state.json").read_text())
    assert deadline <= state["elapsed_seconds"] < deadline + 0.5
    assert 0 < state["nimg"] < t.schedule.total_kimg * 1000
    assert (run_dir / "fakes-final.png").is_file()
    with pytest.raises(SystemExit):  # the budget is spent: resume says how to go on
        from progan.cli import main

        main(["train", "--resume", str(run_dir), "--no-progress"])


@pytest.mark.parametrize("rampdown", [0.0, LR_RAMPDOWN_SHARE])
def test_timed_run_uses_the_time_left_after_its_plan(tiny_store, tmp_path, monkeypatch, rampdown):
    # Speeds measured far too low (a busy spell during calibration). Without a ramp-down (plans
    # before it), the last resolution trains on past the planned kimg until the deadline (fake
    # clock, 0.01 s per reading). With one, every tick of the final stable phase fits the total to
    # the deadline: the run trains far past its plan and ends about at the deadline with its
    # learning rate about 0, and its snapshot holds the fitted schedule for a resume.
    _fixed_speeds(monkeypatch, factor=0.3)  # a plan of a few ticks; the fake clock runs ~800 img/s
    monkeypatch.setattr(planner, "TIMED_RUNS_TRAIN_TO_DEADLINE", True)
    monkeypatch.setattr(planner, "LR_RAMPDOWN_SHARE", rampdown)
    readings = itertools.count()
    monkeypatch.setattr(planner, "process_seconds", lambda: next(readings) * 0.01)
    opts = tiny_spec(tiny_store, tmp_path, minutes=0.05, clock="cpu", training_kimg=None,
                     transition_kimg=None, total_kimg=None, snapshot_ticks=0, image_ticks=0)  # fmt: skip
    t = Trainer(opts)
    run_dir = t.run()
    state = json.loads(sorted(run_dir.glob("snapshot-*"))[-1].joinpath("state.json").read_text())
    assert state["stage"]["resolution"] == 16
    deadline = 0.05 * 60 - final_reserve(3)
    if rampdown:
        plan = state["options"]["plan"]
        assert state["nimg"] > 3 * plan["planned_total_kimg"] * 1000
        s = t.schedule
        assert plan["total_kimg"] == s.total_kimg and plan["lr_rampdown_kimg"] == s.lr_rampdown_kimg
        assert s.total_kimg - s.lr_rampdown_kimg == pytest.approx(s.growth_done_kimg())  # ramp start kept
        assert t.schedule.lr_factor(state["nimg"] / 1000) < 0.05
        assert 0.8 * deadline < state["elapsed_seconds"] < deadline + 0.1
    else:
        assert state["nimg"] > t.schedule.total_kimg * 1000
        assert deadline <= state["elapsed_seconds"]


def test_minutes_refuses_fixed_lengths(tiny_store, tmp_path):
    from progan.errors import UserError

    with pytest.raises(UserError, match="drop --kimg"):
        tiny_spec(tiny_store, tmp_path, minutes=1.0, training_kimg=None, transition_kimg=None)
    # --final-share plans a timed run's split: without --minutes, or outside (0, 1), it is refused.
    with pytest.raises(UserError, match="--final-share 0.8 needs --minutes"):
        tiny_spec(tiny_store, tmp_path, final_share=0.8)
    timed = dict(minutes=1.0, total_kimg=None, training_kimg=None, transition_kimg=None)
    for share, why in ((1.0, "--final-share is 1.0, must be below 1"), (0.0, "--final-share 0 needs")):
        with pytest.raises(UserError, match=why):
            tiny_spec(tiny_store, tmp_path, final_share=share, **timed)
    spec = tiny_spec(tiny_store, tmp_path, final_share=0.8, **timed)
    assert spec.options.final_share == 0.8


def _timed_rank_worker(store_path: str, outdir: str) -> None:
    import os
    import time
    from types import SimpleNamespace

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    if rank == 1:  # rank 1's clock runs 3x faster: its own calibration would plan another schedule
        planner.process_seconds = lambda: 3 * time.process_time()
    t = Trainer(tiny_spec(SimpleNamespace(path=store_path), outdir, minutes=0.05, clock="cpu", batch=16,
                             training_kimg=None, transition_kimg=None, total_kimg=None, snapshot_ticks=0,
                             image_ticks=0, device="cpu"))  # fmt: skip
    t.run()
    (Path(outdir) / f"rank-{rank}.json").write_text(json.dumps({"plan": t.opts.plan, "nimg": t.nimg}))


def test_timed_run_on_two_ranks_runs_rank_zeros_plan_to_the_end(tiny_store, tmp_path):
    from progan import distributed

    distributed.launch(2, _timed_rank_worker, str(tiny_store.path), str(tmp_path / "runs"))
    ranks = [json.loads((tmp_path / "runs" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] and ranks[0]["nimg"] > 0
    (run_dir,) = (tmp_path / "runs").glob("0*")
    assert (run_dir / "fakes-final.png").is_file()
    assert json.loads((run_dir / "options.json").read_text())["plan"]["budget_seconds"] == 3.0

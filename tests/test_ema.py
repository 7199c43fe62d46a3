import json
import math

import pytest
import torch
from helpers import stopped_after_tick, tiny_spec
from safetensors.torch import load_file

from progan import training
from progan.ema import EmaRule, ema_rule, half_life_beta, parameter_resolution
from progan.networks import Generator, NetworkConfig
from progan.schedule import Schedule, Stage
from progan.training import Trainer


def test_half_life_beta_definition():
    # Without ramp-up: after half_life_kimg * 1000 images, in updates of any size, half is left.
    for batch in (8, 16, 64):
        beta = half_life_beta(batch, 10**9, half_life_kimg=10.0, rampup=None)
        assert beta ** (10_000 / batch) == pytest.approx(0.5, rel=1e-9)
    # The paper's 0.999 at minibatch 16 is a half-life of 16 * ln 2 / -ln 0.999 = 11.08 kimg.
    hl = 16 * math.log(2) / -math.log(0.999) / 1000
    assert half_life_beta(16, 10**9, hl, None) == pytest.approx(0.999, abs=1e-12)


def test_rampup_caps_the_half_life_by_age():
    # ema_nimg = min(half-life, age * rampup): a resolution 2,000 images old averages over 100.
    assert half_life_beta(16, 2000, 10.0, 0.05) == pytest.approx(0.5 ** (16 / 100))
    assert half_life_beta(16, 10**7, 10.0, 0.05) == pytest.approx(0.5 ** (16 / 10_000))
    assert half_life_beta(16, 0, 10.0, 0.05) == 0.0  # a new resolution's layers: G_ema takes G
    assert half_life_beta(16, 0, 10.0, 0) == pytest.approx(0.5 ** (16 / 10_000))  # 0: no ramp-up
    assert EmaRule(beta=0.999).beta_for(16, 0) == 0.999


def test_parameter_resolution_covers_every_generator_parameter():
    G = Generator(NetworkConfig(resolution=32, channels=1, latent_size=8, fmap_base=32, fmap_max=8))
    groups = {}
    for name, _ in G.named_parameters():
        groups.setdefault(parameter_resolution(name), []).append(name)
    assert sorted(groups) == [4, 8, 16, 32]
    assert set(groups[4]) == {"dense.weight", "dense.bias", "conv4.weight", "conv4.bias",
                              "torgb.4.weight", "torgb.4.bias"}  # fmt: skip
    assert all(n.startswith(("blocks.16.", "torgb.16.")) for n in groups[16])


def _lag_of_new_layers(rule: EmaRule, steps_per_phase: int, batch: int = 16) -> float:
    """Simulate one scalar weight per resolution that G moves 0 -> 1 the moment its resolution starts
    (as training moves freshly initialised layers); return how far G_ema's 32x32 weight is from G's
    one half-life (or the ramp-up's shorter one) after 32x32 started."""
    kimg = steps_per_phase * batch / 1000
    sched = Schedule(32, training_kimg=kimg, transition_kimg=kimg)
    starts = {r: sched.fade_start_kimg(r) * 1000 for r in (4, 8, 16, 32)}
    ema = {r: 0.0 for r in starts}
    nimg = 0
    while nimg < starts[32] + rule.half_life_kimg * 1000:
        res = sched.at(nimg / 1000).resolution
        for r in starts:
            if r <= res:  # as EmaUpdater: lerp(ema, G, 1 - beta) with G = 1 for a started resolution
                beta = rule.beta_for(batch, nimg - starts[r])
                ema[r] += (1.0 - ema[r]) * (1.0 - beta)
        nimg += batch
    return 1.0 - ema[32]


def test_new_resolution_catches_up_within_one_half_life():
    # Per-resolution clock: after one half-life since 32x32 began, at most half the initial weight is
    # left (the ramp-up makes it far less); a global clock with a fixed beta of 0.999 keeps more.
    rule = EmaRule(half_life_kimg=6.0, rampup=0.05)
    assert _lag_of_new_layers(rule, steps_per_phase=374) < 1e-6
    assert _lag_of_new_layers(EmaRule(half_life_kimg=6.0, rampup=None), steps_per_phase=374) == pytest.approx(
        0.5, abs=0.01
    )
    assert _lag_of_new_layers(EmaRule(beta=0.999), steps_per_phase=374) > 0.5


def test_ema_rule_from_options(tiny_store, tmp_path):
    from progan.errors import UserError
    from progan.runspec import TrainOptions, resolve_run

    assert ema_rule(None, 10.0, 0.05, "cpu").beta is None
    assert ema_rule(None, 10.0, 0.05, "paper").beta == 0.999  # the paper keeps its fixed beta
    assert ema_rule(0.99, 10.0, 0.05, "paper").beta == 0.99
    assert resolve_run(TrainOptions(data=str(tiny_store.path))).ema.half_life_kimg == 10.0
    with pytest.raises(UserError, match="ema"):
        resolve_run(TrainOptions(data=str(tiny_store.path), ema_beta=1.5))
    # Over the ramp-down: the mean for new runs; runs saved before the option keep the annealing.
    new = TrainOptions(data=str(tiny_store.path))
    assert resolve_run(new).ema.rampdown == "average"
    assert TrainOptions.from_dict(new.to_dict()).ema_rampdown == "average"
    saved_before = {k: v for k, v in new.to_dict().items() if k != "ema_rampdown"}
    assert TrainOptions.from_dict(saved_before).ema_rampdown == "anneal"
    with pytest.raises(UserError, match=r"got 'swa'; .*--ema-rampdown average\|anneal"):
        resolve_run(TrainOptions(data=str(tiny_store.path), ema_rampdown="swa"))


def test_updater_lerps_each_resolution_with_its_own_beta(tiny_store, tmp_path):
    t = Trainer(tiny_spec(tiny_store, tmp_path, ema_kimg=0.1, ema_rampup=0.5))
    assert t.ema_starts == {4: 0, 8: 80, 16: 240}  # 80 images per stable phase and per fade
    stage = Stage(8, 0.5, 8, 1e-3)
    t._set_stage(stage)
    t.nimg = 160
    before = {n: p.clone() for n, p in t.G_ema.named_parameters()}
    t.step(stage, {})
    g = dict(t.G.named_parameters())
    for name, p in t.G_ema.named_parameters():
        res = parameter_resolution(name)
        if res == 16:  # not in use yet: G did not move it, G_ema equal
            assert torch.equal(p, g[name]) and torch.equal(p, before[name])
            continue
        beta = half_life_beta(8, 160 - t.ema_starts[res], 0.1, 0.5)
        torch.testing.assert_close(p, before[name] + (g[name] - before[name]) * (1 - beta))


def test_half_life_anneals_with_the_learning_rate():
    # The "anneal" rule: ema_nimg = min(half-life, age * rampup) * lr_factor, the window shrinks
    # with the ramp-down.
    assert half_life_beta(16, 2000, 10.0, 0.05, 0.5) == pytest.approx(0.5 ** (16 / 50))
    assert half_life_beta(16, 10**7, 10.0, 0.05, 0.25) == pytest.approx(0.5 ** (16 / 2500))
    assert half_life_beta(16, 10**7, 10.0, 0.05, 0.0) == 0.0  # the rate at 0: G_ema takes G
    anneal = EmaRule(rampdown="anneal")
    assert anneal.beta_for(16, 2000, 0.5, 160) == half_life_beta(16, 2000, 10.0, 0.05, 0.5)
    assert EmaRule(beta=0.999).beta_for(16, 2000, 0.0, 160) == 0.999  # the paper's fixed beta stays


def test_ramp_down_average_counts_the_updates_before_this_one():
    # The default "average" rule: beta = k / (k + 1), k the updates since the mean began,
    # whatever the start's offset within a minibatch; before it (None or < 0) the half-life rule
    # at the full rate, whatever lr_factor says.
    rule = EmaRule()
    assert rule.rampdown == "average"
    for in_rampdown, k in ((0, 0), (5, 0), (15, 0), (16, 1), (31, 1), (40, 2), (16 * 99, 99)):
        assert rule.beta_for(16, 10**7, 0.3, in_rampdown) == pytest.approx(k / (k + 1))
    for before in (None, -1, -1000):
        assert rule.beta_for(16, 2000, 0.3, before) == half_life_beta(16, 2000, 10.0, 0.05)
    assert EmaRule(beta=0.999).beta_for(16, 2000, 0.3, 32) == 0.999  # the paper's fixed beta stays
    with pytest.raises(ValueError, match="anneal"):
        EmaRule(rampdown="swa")


def _ramp_down_trainer(tiny_store, outdir, rule: str) -> Trainer:
    """A trainer whose learning rate ramps down over its last 0.1 of 0.6 kimg."""
    t = Trainer(tiny_spec(tiny_store, outdir, ema_kimg=0.1, ema_rampup=0.5, ema_rampdown=rule))
    t.schedule.lr_rampdown_kimg = 0.1
    t.schedule.total_kimg = 0.6
    return t


def _ramp_down_run(tiny_store, tmp_path, rule: str) -> tuple[Trainer, list, list]:
    """The ramp-down trainer's run: the lr factor and the start of the mean the trainer gave each
    G_ema update, and G's weights after every update from that start."""
    t = _ramp_down_trainer(tiny_store, tmp_path / rule, rule)
    seen, iterates, original = [], [], t.ema.update

    def update(nimg, batch, resolution, starts, lr_factor=1.0, average_start=None):
        seen.append((nimg, lr_factor, average_start))
        if nimg >= average_start:
            iterates.append({n: p.detach().clone() for n, p in t.G.named_parameters()})
        original(nimg, batch, resolution, starts, lr_factor, average_start)

    t.ema.update = update
    t.run()
    return t, seen, iterates


def test_timed_run_ends_with_g_ema_the_mean_of_g_over_the_ramp_downs_second_half(tiny_store, tmp_path):
    # Each update gets the schedule's lr factor at that step and the start of the mean, the ramp-
    # down's midpoint (0.55 kimg: 0.5 to 0.6). The updates at 552, 560, ..., 592 images shown (8
    # per update; 544 < 550) are its 6, and G_ema ends as the mean of G after each of them, which
    # is not G itself.
    t, seen, iterates = _ramp_down_run(tiny_store, tmp_path, "average")
    assert [f for _, f, _ in seen] == [pytest.approx(_sched().lr_factor(n / 1000)) for n, _, _ in seen]
    assert {start for _, _, start in seen} == {550}
    assert [n for n, _, _ in seen if n >= 550] == list(range(552, 600, 8)) and len(iterates) == 6
    for name, p in t.G_ema.named_parameters():
        mean = torch.stack([it[name] for it in iterates]).mean(0)
        torch.testing.assert_close(p, mean, rtol=1e-5, atol=1e-6)
    assert _distance(t.G_ema, t.G) > 1e-3


def _distance(a: torch.nn.Module, b: torch.nn.Module) -> float:
    other = dict(b.named_parameters())
    return sum(float((p - other[n]).detach().square().sum()) for n, p in a.named_parameters()) ** 0.5


def test_timed_run_with_anneal_ends_with_g_ema_on_the_annealed_g(tiny_store, tmp_path):
    # The "anneal" rule (runs saved before the mean): the half-life shrinks with the lr factor, so
    # over the last steps G_ema converges to G. The same run with the factor withheld from G_ema
    # (G trains identically) ends with G_ema many times farther from G.
    t, seen, _ = _ramp_down_run(tiny_store, tmp_path, "anneal")
    assert seen[0][1] == 1.0 and 0.0 < seen[-1][1] < 0.1
    annealed = _distance(t.G_ema, t.G)
    t2 = _ramp_down_trainer(tiny_store, tmp_path / "plain", "anneal")
    withheld = t2.ema.update
    t2.ema.update = lambda nimg, batch, res, starts, *_: withheld(nimg, batch, res, starts)
    t2.run()
    assert 0 < annealed < _distance(t2.G_ema, t2.G) / 20  # measured: 0.0097 against 1.53


def _sched() -> Schedule:
    return Schedule(16, training_kimg=0.08, transition_kimg=0.08, total_kimg=0.6, lr_rampdown_kimg=0.1)


def test_resume_in_the_ramp_down_continues_the_mean(tiny_store, tmp_path, monkeypatch):
    # A plan whose learning rate ramps down over its last 0.16 of 0.56 kimg (the mean from 0.48),
    # stopped at 0.52 kimg, within the mean, and resumed: the mean restarts nowhere, the weights
    # match.
    plan = {"training_kimgs": [0.08, 0.08], "transition_kimgs": [0.08, 0.08], "total_kimg": 0.56,
            "lr_rampdown_kimg": 0.16}  # fmt: skip

    def options(name: str):
        return tiny_spec(tiny_store, tmp_path, name=name, plan=plan, total_kimg=None, deterministic=True,
                            snapshot_ticks=1, image_ticks=0)  # fmt: skip

    full = training.train(options("full"))
    with stopped_after_tick(monkeypatch, lambda t: t.nimg == 520):
        half = training.train(options("half"))
    assert json.loads(sorted(half.glob("snapshot-*"))[-1].joinpath("state.json").read_text())["nimg"] == 520
    Trainer.from_snapshot(half).run()
    a = load_file(str(sorted(full.glob("snapshot-*"))[-1] / "model.safetensors"))
    b = load_file(str(sorted(half.glob("snapshot-*"))[-1] / "model.safetensors"))
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)

import math

import pytest
import torch

from progan.ema import EmaRule, ema_rule, half_life_beta, parameter_resolution
from progan.networks import Generator, NetworkConfig
from progan.schedule import Schedule, Stage
from progan.training import Trainer
from tests.test_training import tiny_options


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


def test_updater_lerps_each_resolution_with_its_own_beta(tiny_store, tmp_path):
    t = Trainer(tiny_options(tiny_store, tmp_path, ema_kimg=0.1, ema_rampup=0.5))
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
    # ema_nimg = min(half-life, age * rampup) * lr_factor: the window shrinks with the ramp-down.
    assert half_life_beta(16, 2000, 10.0, 0.05, 0.5) == pytest.approx(0.5 ** (16 / 50))
    assert half_life_beta(16, 10**7, 10.0, 0.05, 0.25) == pytest.approx(0.5 ** (16 / 2500))
    assert half_life_beta(16, 10**7, 10.0, 0.05, 0.0) == 0.0  # the rate at 0: G_ema takes G
    assert EmaRule().beta_for(16, 2000, 0.5) == half_life_beta(16, 2000, 10.0, 0.05, 0.5)
    assert EmaRule(beta=0.999).beta_for(16, 2000, 0.0) == 0.999  # the paper's fixed beta stays


def test_timed_run_ends_with_g_ema_on_the_annealed_g(tiny_store, tmp_path):
    # A schedule with a ramp-down to its total: each update's beta uses the schedule's lr factor at
    # that step, so over the last steps G_ema converges to G. The same run with the factor withheld
    # from G_ema (G trains identically) ends with G_ema many times farther from G.
    def run(anneal: bool, name: str) -> tuple[list, float]:
        t = Trainer(tiny_options(tiny_store, tmp_path / name, ema_kimg=0.1, ema_rampup=0.5))
        t.schedule.lr_rampdown_kimg = 0.1
        t.schedule.total_kimg = 0.6
        seen, original = [], t.ema.update

        def update(nimg, batch, resolution, starts, lr_factor=1.0):
            seen.append((nimg, lr_factor))
            original(nimg, batch, resolution, starts, lr_factor if anneal else 1.0)

        t.ema.update = update
        t.run()
        g = dict(t.G.named_parameters())
        squares = (float((p - g[n]).detach().square().sum()) for n, p in t.G_ema.named_parameters())
        distance = sum(squares) ** 0.5
        return seen, distance

    seen, annealed = run(True, "annealed")
    assert [f for _, f in seen] == [pytest.approx(_sched().lr_factor(n / 1000)) for n, _ in seen]
    assert seen[0][1] == 1.0 and 0.0 < seen[-1][1] < 0.1
    _, plain = run(False, "plain")
    assert 0 < annealed < plain / 20  # measured: 0.0097 against 1.53


def _sched() -> Schedule:
    return Schedule(16, training_kimg=0.08, transition_kimg=0.08, total_kimg=0.6, lr_rampdown_kimg=0.1)

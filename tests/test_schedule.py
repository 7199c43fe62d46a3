import pytest

from progan.schedule import PRESETS, Schedule


@pytest.mark.parametrize(
    "kimg,res,alpha,batch",
    [
        (0, 4, 1.0, 16),
        (799.9, 4, 1.0, 16),
        (800, 8, 0.0, 16),
        (1200, 8, 0.5, 16),
        (1600, 8, 1.0, 16),
        (2400, 16, 0.0, 16),
        (8800, 256, 0.0, 14),  # 256 fades in from 8800 kimg with minibatch 14
        (10400, 512, 0.0, 6),
        (12000, 1024, 0.0, 3),
        (12400, 1024, 0.5, 3),
        (12800, 1024, 1.0, 3),
        (19000, 1024, 1.0, 3),
    ],
)
def test_paper_preset(kimg, res, alpha, batch):
    s = Schedule.from_preset("paper", 1024)
    st = s.at(kimg)
    assert (st.resolution, st.minibatch, st.lr) == (res, batch, 0.001)
    assert st.alpha == pytest.approx(alpha)
    assert s.total_kimg == 19000


@pytest.mark.parametrize(
    "preset,kimg,res,alpha,batch,lr",
    [
        ("v2-1gpu", 0, 4, 1.0, 128, 0.001),
        ("v2-1gpu", 900, 8, 0.5, 128, 0.001),
        ("v2-1gpu", 4500, 64, 0.5, 32, 0.001),
        ("v2-1gpu", 9600, 1024, 1.0, 4, 0.0015),
        ("v2-2gpu", 0, 4, 1.0, 256, 0.001),
        ("v2-2gpu", 8100, 512, 0.5, 8, 0.0015),
        ("v2-2gpu", 11000, 1024, 1.0, 8, 0.002),
        ("v2-4gpu", 0, 4, 1.0, 512, 0.001),
        ("v2-4gpu", 6900, 256, 0.5, 16, 0.0015),
        ("v2-4gpu", 11000, 1024, 1.0, 16, 0.003),
        ("v2-8gpu", 1200, 8, 1.0, 256, 0.001),
        ("v2-8gpu", 5700, 128, 0.5, 32, 0.0015),
        ("v2-8gpu", 8100, 512, 0.5, 32, 0.003),
    ],
)
def test_v2_presets(preset, kimg, res, alpha, batch, lr):
    st = Schedule.from_preset(preset, 1024).at(kimg)
    assert (st.resolution, st.minibatch, st.lr) == (res, batch, lr)
    assert st.alpha == pytest.approx(alpha)


def test_v2_totals_and_phase_lengths():
    for name in ("v2-1gpu", "v2-2gpu", "v2-4gpu", "v2-8gpu"):
        s = Schedule.from_preset(name, 1024)
        assert (s.training_kimg, s.transition_kimg, s.total_kimg) == (600, 600, 12000)
        assert s.growth_done_kimg() == 8 * 1200


def test_smaller_final_resolution_stops_growing():
    s = Schedule.from_preset("cpu", 32, training_kimg=10, transition_kimg=10)
    assert s.at(59.9).resolution == 32 and s.at(59.9).alpha < 1
    assert s.at(60).resolution == 32 and s.at(60).alpha == 1.0
    assert s.at(1000).resolution == 32


def test_alpha_is_linear_in_images_shown():
    s = Schedule(final_resolution=64, training_kimg=10, transition_kimg=20)
    alphas = [s.at(10 + k).alpha for k in range(0, 20, 5)]
    assert alphas == pytest.approx([0.0, 0.25, 0.5, 0.75])


def test_overrides_and_json_round_trip():
    s = Schedule.from_preset("paper", 256, total_kimg=50, training_kimg=None)
    assert s.total_kimg == 50 and s.training_kimg == 800
    d = {k: ({str(a): b for a, b in v.items()} if isinstance(v, dict) else v) for k, v in s.to_dict().items()}
    assert Schedule(**d) == s
    assert set(PRESETS) >= {"paper", "v2-1gpu", "v2-2gpu", "v2-4gpu", "v2-8gpu", "cpu"}


def test_per_phase_schedule_and_fade_starts():
    s = Schedule(32, training_kimgs=[10, 5, 5], transition_kimgs=[5, 5, 5], total_kimg=60)
    expect = {0: (4, 1.0), 9.9: (4, 1.0), 10: (8, 0.0), 12.5: (8, 0.5), 15: (8, 1.0), 20: (16, 0.0),
              30: (32, 0.0), 34: (32, 0.8), 35: (32, 1.0), 59: (32, 1.0)}  # fmt: skip
    for kimg, (res, alpha) in expect.items():
        st = s.at(kimg)
        assert (st.resolution, st.alpha) == (res, pytest.approx(alpha)), kimg
    assert [s.fade_start_kimg(r) for r in (4, 8, 16, 32)] == [0, 10, 20, 30]
    assert s.growth_done_kimg() == 35
    assert Schedule(**s.to_dict()).at(12.5) == s.at(12.5)  # JSON round trip
    paper = Schedule.from_preset("paper", 1024)
    assert [paper.fade_start_kimg(r) for r in (4, 8, 16, 1024)] == [0, 800, 2400, 12000]


def test_lr_ramp_down_is_half_a_cosine_to_zero_at_the_total():
    s = Schedule(32, training_kimgs=[10, 5, 5], transition_kimgs=[5, 5, 5], total_kimg=60, lr_default=0.002,
                 lr_rampdown_kimg=20)  # fmt: skip
    # Constant until total - 20 kimg, then 0.5 * (1 + cos(pi * t)), t = (kimg - 40) / 20; 0 from the total on.
    for kimg, factor in {
        0: 1,
        39.9: 1,
        40: 1,
        45: (1 + 2**-0.5) / 2,
        50: 0.5,
        55: (1 - 2**-0.5) / 2,
        60: 0,
        70: 0,
    }.items():
        assert s.lr_factor(kimg) == pytest.approx(factor, abs=1e-12), kimg
        assert s.at(kimg).lr == pytest.approx(0.002 * factor, abs=1e-15), kimg
    # The ramp-down scales the learning rate only: growth and minibatch are those without it.
    plain = Schedule(
        32, training_kimgs=[10, 5, 5], transition_kimgs=[5, 5, 5], total_kimg=60, lr_default=0.002
    )
    for kimg in (0, 12.5, 34, 50, 59):
        a, b = s.at(kimg), plain.at(kimg)
        assert (a.resolution, a.alpha, a.minibatch) == (b.resolution, b.alpha, b.minibatch)
    assert plain.lr_factor(59.9) == 1.0 and Schedule(**s.to_dict()) == s
    with pytest.raises(ValueError, match="lr_rampdown_kimg"):
        Schedule(32, lr_rampdown_kimg=-1)

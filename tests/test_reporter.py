"""The reporter: one record per tick feeds stats.jsonl, the console line and TensorBoard."""

import json

import torch

from progan.reporter import Reporter, TickRecord
from progan.schedule import Stage


def record(**kw) -> TickRecord:
    base = dict(tick=3, kimg=0.12, resolution=8, alpha=0.5, minibatch=16, lr=0.001, loss_G=-1.5, loss_D=2.25,
                gradient_penalty=0.125, wasserstein=0.5, img_per_sec=123.4, sec_per_kimg=8.1,
                skipped_updates=0, peak_memory_gb=1.5, timestamp=1.0)  # fmt: skip
    return TickRecord(**{**base, **kw})


def test_a_record_is_one_stats_line_one_console_line_and_scalars():
    r = record(metrics={"metric/swd_avg": 12.5})
    line = r.to_json()
    assert line["tick"] == 3 and line["metric/swd_avg"] == 12.5 and "metrics" not in line
    assert r.console_line() == (
        "tick 3    kimg 0.120     res 8    alpha 0.500 G -1.500   D 2.250    gp 0.1250  img/s 123.4   "
        "skipped 0 mem 1.50GB"
    )
    scalars = r.scalars()
    assert scalars["progress/loss_G"] == -1.5 and scalars["metric/swd_avg"] == 12.5
    assert "progress/tick" not in scalars and "progress/timestamp" not in scalars
    # A tick without a loss (no step of that kind ran) leaves it out of the console and TensorBoard.
    empty = record(loss_G=None)
    assert " G " not in empty.console_line() and "progress/loss_G" not in empty.scalars()


def test_reporter_appends_one_line_per_tick(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rep = Reporter(tmp_path, total_kimg=0.2, start_nimg=0, progress=False, main=True)
    rep.tick(record(tick=1), 40, Stage(8, 0.5, 16, 0.001))
    rep.tick(record(tick=2, metrics={"metric/msssim": 0.25}), 80, Stage(8, 0.75, 16, 0.001))
    rep.image("fakes", _png(tmp_path), 80)
    rep.close()
    lines = [json.loads(x) for x in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert [x["tick"] for x in lines] == [1, 2] and lines[1]["metric/msssim"] == 0.25
    assert capsys.readouterr().out.count("tick ") == 2
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert {"progress/loss_D", "metric/msssim"} <= set(events.Tags()["scalars"])
    assert "fakes" in events.Tags()["images"]
    # Other ranks write nothing.
    other = Reporter(tmp_path / "rank1", total_kimg=0.2, start_nimg=0, progress=False, main=False)
    other.tick(record(), 40, Stage(8, 0.5, 16, 0.001))
    other.close()
    assert not (tmp_path / "rank1").exists()


def _png(tmp_path):
    from progan.images import save_grid

    return save_grid(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), tmp_path / "g.png")

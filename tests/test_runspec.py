"""The run spec: resolved and checked before anything is built."""

import dataclasses
import json

import numpy as np
import pytest
from helpers import TINY_NET, run_cli

from progan.errors import UserError
from progan.networks import NetworkConfig
from progan.runspec import RESUME_OVERRIDABLE, TrainOptions, option_default, resolve_run


def test_a_spec_is_resolved_without_building_anything(tiny_store, tmp_path):
    opts = TrainOptions(data=str(tiny_store.path), outdir=str(tmp_path / "runs"), batch=8, lr=0.002,
                        total_kimg=2, **TINY_NET)  # fmt: skip
    spec = resolve_run(opts)
    assert spec.network == NetworkConfig(resolution=16, channels=3, label_size=0, **TINY_NET)
    assert spec.options.network == spec.network and spec.options.resolution == 16
    assert spec.schedule.batch_at(4) == spec.schedule.batch_at(16) == 8 and spec.schedule.lr_at(16) == 0.002
    assert spec.schedule.total_kimg == 2 and not spec.loss.multi_hot
    assert not (tmp_path / "runs").exists()  # nothing made
    text = spec.describe()
    for needle in ("16x16", "latent 16", "fmap_base 64", "preset cpu", "2 kimg in all"):
        assert needle in text, text
    # The original options are left as they were.
    assert opts.resolution == 0 and opts.network.resolution == 1024


def test_network_options_live_in_the_network_config():
    opts = TrainOptions(latent_size=32, fmap_max=8)
    assert opts.network.latent_size == 32 and opts.network.fmap_max == 8
    d = opts.to_dict()
    assert d["network"]["latent_size"] == 32 and "latent_size" not in d
    assert TrainOptions.from_dict(d).network == opts.network
    # Options of runs written before the network had its own field: flat.
    legacy = {k: v for k, v in d.items() if k != "network"} | {"latent_size": 32, "fmap_max": 8}
    # ... and before fused_scale: they trained the paper-order D, which a resume must keep.
    assert opts.network.fused_scale
    assert TrainOptions.from_dict(legacy).network == dataclasses.replace(opts.network, fused_scale=False)
    assert TrainOptions.from_dict({**d, "network": {**d["network"], "fused_scale": False}}).network == (
        dataclasses.replace(opts.network, fused_scale=False)
    )
    assert option_default("latent_size") == 512 and option_default("tick_kimg") == 4.0


def test_everything_is_checked_up_front(tiny_store, tmp_path):
    base = dict(data=str(tiny_store.path), outdir=str(tmp_path), **TINY_NET)
    with pytest.raises(UserError, match="unknown metric.*swdd"):
        resolve_run(TrainOptions(**base, metrics=["swdd"]))
    with pytest.raises(UserError, match="unknown preset"):
        resolve_run(TrainOptions(**base, preset="fast"))
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        resolve_run(TrainOptions(**base, precision="fp16", device="cpu"))
    with pytest.raises(UserError, match="unknown precision"):
        resolve_run(TrainOptions(**base, precision="fp8", device="cpu"))
    with pytest.raises(UserError, match="exceeds the store's 16"):
        resolve_run(TrainOptions(**base, resolution=32))
    with pytest.raises(UserError, match="does not split over 3 ranks"):
        resolve_run(TrainOptions(**base, batch=8), world_size=3)
    with pytest.raises(UserError, match="--inception-weights .* is not a file"):
        resolve_run(TrainOptions(**base, metrics=["fid"], inception_weights=str(tmp_path / "none.pt")))
    assert list(tmp_path.iterdir()) == [tiny_store.path]


def test_labels_decide_the_loss(tmp_path):
    from progan.data.store import write_store

    images = np.zeros((6, 1, 8, 8), np.uint8)
    multi = np.array([[1, 1], [0, 0], [1, 0]] * 2, np.float32)
    store = write_store(tmp_path / "attrs", images, labels=multi, label_names=["smiling", "blond"])
    spec = resolve_run(TrainOptions(data=str(store.path)))
    assert spec.network.label_size == 2 and spec.loss.multi_hot and spec.label_names == ["smiling", "blond"]
    spec = resolve_run(TrainOptions(data=str(store.path), conditional=False))
    assert spec.network.label_size == 0 and spec.label_names == []


def test_the_penalty_interval_is_the_papers_unless_given(tiny_store, tmp_path):
    base = dict(data=str(tiny_store.path), outdir=str(tmp_path / "runs"), **TINY_NET)
    for preset in ("cpu", "paper"):
        assert resolve_run(TrainOptions(preset=preset, **base)).loss.gp_interval == 1
    spec = resolve_run(TrainOptions(gp_interval=4, **base))
    assert spec.loss.gp_interval == 4 and spec.options.gp_interval == 4
    # options.json holds the interval in one place, not also among the loss's weights.
    saved = spec.options.to_dict()
    assert saved["gp_interval"] == 4 and "gp_interval" not in saved["loss"]
    assert resolve_run(TrainOptions.from_dict(saved)).loss.gp_interval == 4
    # Options saved before the lazy penalty resume with the penalty on every update, as they trained.
    del saved["gp_interval"]
    assert resolve_run(TrainOptions.from_dict(saved)).loss.gp_interval == 1
    with pytest.raises(UserError, match="--gp-interval is 0, below 1"):
        resolve_run(TrainOptions(gp_interval=0, **base))


def test_dry_run_prints_the_spec_and_makes_nothing(tiny_store, tmp_path, capsys):
    out = tmp_path / "runs"
    assert (
        run_cli(["train", "--data", tiny_store.path, "--outdir", out, "--dry-run", "--latent-size", "16"])
        == 0
    )
    text = capsys.readouterr().out
    assert "new run" in text and "latent 16" in text and "16x16" in text
    assert "D downscale fused (official code)" in text
    assert not out.exists()
    argv = ["train", "--data", tiny_store.path, "--outdir", out, "--dry-run", "--no-fused-scale"]
    assert run_cli(argv) == 0
    text = capsys.readouterr().out
    assert "D downscale after the activation (paper)" in text and "mirror image" not in text
    assert run_cli([*argv[:-1], "--d-mirror-difference"]) == 0
    assert "D also sees the image minus its mirror image (not the paper)" in capsys.readouterr().out
    assert run_cli([*argv[:-1], "--d-lr-ratio", "3"]) == 0
    assert "D 3x G's (two time-scales, not the paper)" in capsys.readouterr().out
    # A typo in a metric name fails at once, not at the first metric tick.
    assert run_cli(["train", "--data", tiny_store.path, "--metrics", "swd,fdi"]) == 2
    assert "unknown metric(s) fdi" in capsys.readouterr().err


def test_resume_dry_run_and_refusals(tiny_store, tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["--data", tiny_store.path, "--outdir", out, "--kimg", "0.016", "--batch", "8",
            "--tick-kimg", "0.016",
            "--latent-size", "16", "--fmap-base", "64", "--fmap-max", "16", "--no-progress"]  # fmt: skip
    assert run_cli(["train", *args]) == 0
    (run,) = out.iterdir()
    options = json.loads((run / "options.json").read_text())
    assert options["network"]["latent_size"] == 16 and options["schedule"]["total_kimg"] == 0.016
    capsys.readouterr()
    assert run_cli(["train", "--resume", run, "--kimg", "0.032", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "resume" in text and "at 0.016 kimg" in text and "0.032 kimg in all" in text
    assert "inception_weights" in RESUME_OVERRIDABLE


def test_help_shows_the_dataclass_defaults(capsys):
    assert run_cli(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 512)" in text and "(default: 4.0)" in text and "(default: 2048)" in text


def test_one_resolution_rule_everywhere(tmp_path, capsys):
    from progan.checks import resolution_error
    from progan.data.store import check_resolution

    assert [r for r in (2, 3, 4, 48, 1024, 2048) if resolution_error(r) is None] == [4, 1024]
    with pytest.raises(UserError, match="2048 is not a power of two from 4 to 1024"):
        check_resolution(2048)
    (tmp_path / "src").mkdir()
    # The store refuses what training would refuse later (it used to accept -r 2048).
    assert run_cli(["prepare", tmp_path / "src", tmp_path / "dest", "-r", "2048", "--quiet"]) == 2
    assert "2048 is not a power of two from 4 to 1024" in capsys.readouterr().err
    assert not (tmp_path / "dest").exists()
    assert run_cli(["train", "--data", tmp_path, "--resolution", "2048"]) == 2
    assert "2048 is not a power of two from 4 to 1024" in capsys.readouterr().err

"""compute_metrics and `progan evaluate` with a stand-in generator and snapshots the test builds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import TinyInception, run_cli_output, tiny_snapshot, tiny_torchscript
from torch import nn

import progan
from progan.checkpoint import snapshot_name
from progan.data.store import write_store
from progan.metrics import evaluate as E


class FakeG(nn.Module):
    """Smooth random images from z; `spread` scales how much they vary (0: mode collapse)."""

    def __init__(self, resolution=32, channels=3, spread=1.0, label_size=0):
        super().__init__()
        self.resolution, self.channels, self.latent_size, self.label_size = (
            resolution,
            channels,
            16,
            label_size,
        )
        self.spread = spread
        torch.manual_seed(1)
        self.proj = nn.Linear(16, channels * 16)

    def forward(self, z, labels=None):
        if self.label_size:
            assert labels is not None and labels.shape == (z.shape[0], self.label_size)
        base = torch.tanh(self.proj(z * self.spread)).view(-1, self.channels, 4, 4)
        return nn.functional.interpolate(base, size=(self.resolution,) * 2, mode="bicubic").clamp(-1, 1)


def reals(n, channels=3, r=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, channels, 4, 4, generator=g)
    x = nn.functional.interpolate(base, size=(r, r), mode="bicubic").clamp(0, 1)
    return (x * 255).round().to(torch.uint8).numpy()


@pytest.fixture
def store(tmp_path):
    return write_store(tmp_path / "store", reals(96))


def test_compute_metrics_swd_msssim(store, tmp_path):
    cache = tmp_path / "cache"
    good = E.compute_metrics(["swd", "msssim"], FakeG(), store.path, 64, "cpu", seed=0, cache_dir=cache)
    assert set(good) == {"swd_32", "swd_16", "swd_avg", "msssim"}
    assert len(list(cache.glob("swd-*"))) == 1  # reals' descriptors cached ...
    again = E.compute_metrics(["swd"], FakeG(), store.path, 64, "cpu", seed=0, cache_dir=cache)
    assert again["swd_avg"] == pytest.approx(good["swd_avg"])  # ... reused, same numbers
    assert len(list(cache.glob("swd-*"))) == 1
    collapsed = E.compute_metrics(
        ["swd", "msssim"], FakeG(spread=0.02), store.path, 64, "cpu", cache_dir=cache
    )
    assert collapsed["swd_avg"] > good["swd_avg"]
    assert collapsed["msssim"] > good["msssim"]


def test_compute_metrics_small_and_conditional(store, tmp_path):
    assert E.compute_metrics(["swd", "msssim"], FakeG(resolution=8), store.path, 8, "cpu") == {}
    out = E.compute_metrics(["msssim"], FakeG(label_size=3), None, 8, "cpu", cache_dir=tmp_path)
    assert 0 < out["msssim"] <= 1
    with pytest.raises(progan.errors.UserError, match="--data STORE"):
        E.compute_metrics(["swd"], FakeG(), None, 8, "cpu")
    with pytest.raises(progan.errors.UserError, match="unknown metric"):
        E.compute_metrics(["swd", "bogus"], FakeG(), store.path, 8, "cpu")
    with pytest.raises(progan.errors.UserError, match="channels"):
        E.compute_metrics(["swd"], FakeG(channels=1), store.path, 8, "cpu")


def test_grey_generator_and_fidelity_extractor(tmp_path):

    pytest.importorskip("torchmetrics")
    grey = write_store(tmp_path / "grey", reals(64, channels=1))
    ext = E.fidelity.ModuleExtractor(TinyInception(), name="custom")
    out = E.compute_metrics(
        ["swd", "fid", "kid", "pr"],
        FakeG(channels=1),
        grey.path,
        48,
        "cpu",
        feature_extractor=ext,
        cache_dir=tmp_path,
    )
    assert {"swd_avg", "fid", "kid_mean", "precision", "recall"} <= set(out)
    assert out["fid"] > 0 and 0 <= out["precision"] <= 1


@pytest.fixture
def fake_run(tmp_path, monkeypatch, store):
    """A run with three real snapshots (trained on `store`, by their options) whose G_ema evaluate
    gets as a FakeG of known diversity."""
    run = tmp_path / "runs" / "00001-test"
    spreads = {10_000: 0.05, 20_000: 0.5, 30_000: 1.0}
    for nimg in spreads:
        tiny_snapshot(run / snapshot_name(nimg), 32, nimg=nimg, options={"data": str(store.path)})
    real_load = E.load_snapshot

    def load_snapshot(path):
        snap = real_load(path)
        snap.G_ema = FakeG(spread=spreads[snap.state["nimg"]]).eval()
        return snap

    monkeypatch.setattr(E, "load_snapshot", load_snapshot)
    monkeypatch.setenv("PROGAN_CACHE_DIR", str(tmp_path / "cache"))
    return run


def test_evaluate_run_writes_jsonl_plots_table(fake_run, capsys):
    code, out, err = run_cli_output(
        ["evaluate", str(fake_run), "--metrics", "swd,msssim", "--num", "48"], capsys
    )
    assert code == 0, err
    lines = [json.loads(x) for x in (fake_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in lines] == [10.0, 20.0, 30.0]
    assert all({"swd_avg", "swd_32", "swd_16", "msssim"} <= set(r) for r in lines)
    assert lines[0]["msssim"] > lines[-1]["msssim"]  # the low-spread snapshot is less diverse
    for group in ("swd", "msssim"):
        png = fake_run / f"metrics-{group}.png"
        assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    assert "snapshot-000020" in out and "swd_avg" in out and "msssim" in out
    # one snapshot again: its record is updated in place, not duplicated
    code, _, err = run_cli_output(
        ["evaluate", str(fake_run / "snapshot-000020"), "--metrics", "swd", "--num", "32"], capsys
    )
    assert code == 0, err
    lines = [json.loads(x) for x in (fake_run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and lines[1]["num"] == 32 and "msssim" in lines[1]


def test_evaluate_fid_with_weights_file(fake_run, tmp_path, capsys):
    pytest.importorskip("torchmetrics")

    weights = tiny_torchscript(tmp_path / "inception.pt")
    argv = ["evaluate", str(fake_run / "snapshot-000030"), "--metrics", "fid,kid,is,pr", "--num", "40"]
    code, out, err = run_cli_output(argv + ["--inception-weights", str(weights)], capsys)
    assert code == 0, err
    rec = json.loads((fake_run / "metrics.jsonl").read_text().splitlines()[0])
    assert {"fid", "kid_mean", "kid_std", "is_mean", "precision", "recall"} <= set(rec)
    assert list((tmp_path / "cache" / "metrics").glob("features-*.npy"))  # reals' features cached
    code, _, err = run_cli_output(argv + ["--inception-weights", str(tmp_path / "missing.pt")], capsys)
    assert code == 2 and "missing.pt: no such file" in err and "weights-inception-2015-12-05" in err
    assert len(err.strip().splitlines()) == 1


def test_evaluate_store_noise_floor(store, tmp_path, capsys):
    code, out, err = run_cli_output(
        ["evaluate", str(store.path), "--metrics", "swd", "--num", "40", "--cache-dir", str(tmp_path / "c")],
        capsys,
    )
    assert code == 0, err
    assert "reals-vs-reals" in out and "swd_avg" in out
    code, _, err = run_cli_output(["evaluate", str(store.path), "--metrics", "fid", "--num", "40"], capsys)
    assert code == 2 and "noise floor" in err


def test_evaluate_errors(tmp_path, capsys):
    code, _, err = run_cli_output(["evaluate", str(tmp_path), "--metrics", "swd,nope"], capsys)
    assert code == 2 and "unknown metric" in err
    code, _, err = run_cli_output(["evaluate", str(tmp_path / "absent"), "--metrics", "swd"], capsys)
    assert code == 2 and "does not exist" in err


def test_real_indices():
    idx = E.real_indices(100, 30, seed=0)
    other = E.real_indices(100, 30, seed=0, offset=1)
    assert len(set(idx)) == 30 and not set(idx) & set(other)
    assert len(E.real_indices(10, 30, seed=0)) == 30  # with replacement for small stores
    assert np.all(np.diff(idx) > 0)


def _shared_metrics_worker(store_path: str, out: str, cache: str) -> None:
    from progan import distributed

    torch.set_num_threads(1)
    ctx = distributed.from_environment("cpu")
    ext = E.fidelity.ModuleExtractor(TinyInception(), name="custom")
    got = E.compute_metrics(["swd", "msssim", "fid", "kid"], FakeG(), store_path, 70, "cpu", seed=3,
                            batch_size=8, feature_extractor=ext, cache_dir=cache, ctx=ctx)  # fmt: skip
    with open(f"{out}-{ctx.rank}.json", "w") as f:
        json.dump(got, f)


def test_metrics_shared_across_ranks_are_those_of_one_process(store, tmp_path):
    # Issue 26 point 5: ranks share the generated images (9 batches of 8 and one of 6 over 2
    # ranks: the last round has one batch); rank 0 gets exactly one process's numbers (the SWD
    # patch centres drawn in the same order), the other rank returns nothing.
    pytest.importorskip("torchmetrics")
    from progan import distributed

    ext = E.fidelity.ModuleExtractor(TinyInception(), name="custom")
    one = E.compute_metrics(["swd", "msssim", "fid", "kid"], FakeG(), store.path, 70, "cpu", seed=3,
                            batch_size=8, feature_extractor=ext, cache_dir=tmp_path / "c1")  # fmt: skip
    distributed.launch(
        2, _shared_metrics_worker, str(store.path), str(tmp_path / "out"), str(tmp_path / "c2")
    )
    shared = json.loads((tmp_path / "out-0.json").read_text())
    assert json.loads((tmp_path / "out-1.json").read_text()) == {}
    assert set(shared) == set(one) and {"swd_avg", "msssim", "fid", "kid_mean"} <= set(one)
    for key in one:
        assert shared[key] == pytest.approx(one[key], rel=1e-6, abs=1e-9), key

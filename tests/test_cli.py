import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import make_tiny_store, one_line_error, run_cli, tiny_train_args
from PIL import Image


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    # Trained once for the module: the tests that use it only read it (or check it is unchanged).
    store = make_tiny_store(tmp_path_factory.mktemp("store") / "store")
    out = tmp_path_factory.mktemp("runs")
    assert run_cli(["train", *tiny_train_args(store.path, out, kimg=0.4)]) == 0
    (run_dir,) = out.iterdir()
    return run_dir


def test_train_then_generate(trained_run, tmp_path):
    snap = sorted(trained_run.glob("snapshot-*"))[-1]
    assert (
        run_cli(
            ["generate", snap, "--seeds", "0-5", "--outdir", tmp_path / "a", "--grid", tmp_path / "g.png"]
        )
        == 0
    )
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == [f"seed{i:04d}.png" for i in range(6)]
    img = np.asarray(Image.open(tmp_path / "a" / "seed0003.png"))
    assert img.shape == (16, 16, 3)
    assert Image.open(tmp_path / "g.png").size[0] >= 3 * 16
    # Same seed, same image: alone, in another batch, from the run directory.
    assert (
        run_cli(["generate", trained_run, "--seeds", "3,1", "--outdir", tmp_path / "b", "--batch", "1"]) == 0
    )
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b" / "seed0003.png")), img)
    # Different seeds differ.
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "a" / "seed0001.png")), img)


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "progan", "--help"], capture_output=True, text=True, check=True
    )
    for cmd in ("train", "generate", "demo"):
        assert cmd in out.stdout


def test_bad_arguments(capsys, tmp_path):
    assert run_cli(["train", "--bogus"]) == 2
    one_line_error(capsys, "unrecognized arguments")
    assert run_cli(["train", "--data", tmp_path, "--resolution", "48"]) == 2
    one_line_error(capsys, "48 is not a power of two")
    assert run_cli(["train"]) == 2
    one_line_error(capsys, "--data")
    assert run_cli(["generate", tmp_path / "nothing", "--grid", tmp_path / "g.png"]) == 2
    one_line_error(capsys, "does not exist")
    assert run_cli(["generate", tmp_path, "--seeds", "5-1", "--grid", tmp_path / "g.png"]) == 2
    one_line_error(capsys, "backwards")


def test_not_a_store_and_empty_store(capsys, tmp_path):
    assert run_cli(["train", "--data", tmp_path]) == 2
    one_line_error(capsys, "not a progan dataset store", "progan prepare")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "dataset.json").write_text(
        json.dumps({"format": "progan-store", "format_version": 1, "count": 0})
    )
    assert run_cli(["train", "--data", empty]) == 2
    one_line_error(capsys, "holds no images")
    assert run_cli(["train", "--data", empty / "dataset.json"]) == 2
    one_line_error(capsys, "is a file, not a progan dataset store", f"pass its folder, {empty}")


def test_store_resolution_too_small(capsys, tiny_store, tmp_path):
    assert run_cli(["train", "--data", tiny_store.path, "--resolution", "64", "--outdir", tmp_path]) == 2
    one_line_error(capsys, "exceeds the store's 16")
    assert list(tmp_path.iterdir()) == [tiny_store.path]  # no run directory was created


def test_foreign_and_broken_snapshots(capsys, trained_run, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "state.json").write_text(json.dumps({"hello": 1}))
    assert run_cli(["generate", foreign, "--grid", tmp_path / "g.png"]) == 2
    one_line_error(capsys, "not a progan snapshot")
    (foreign / "state.json").write_text("not json {")
    assert run_cli(["generate", foreign, "--grid", tmp_path / "g.png"]) == 2
    one_line_error(capsys, "not valid JSON")
    snap = sorted(trained_run.glob("snapshot-*"))[-1]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "state.json").write_bytes((snap / "state.json").read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)
    assert run_cli(["generate", broken, "--grid", tmp_path / "g.png"]) == 2
    one_line_error(capsys, "safetensors")
    assert not (tmp_path / "g.png").exists()


def test_resume_refuses_fixed_options_and_changes_nothing(capsys, trained_run):
    before = {p: p.stat().st_mtime_ns for p in trained_run.rglob("*")}
    assert run_cli(["train", "--resume", trained_run, "--latent-size", "64"]) == 2
    one_line_error(capsys, "--latent-size cannot change when resuming")
    assert {p: p.stat().st_mtime_ns for p in trained_run.rglob("*")} == before


def test_resume_of_a_finished_run_says_how_to_go_on(capsys, trained_run):
    before = {p: p.stat().st_mtime_ns for p in trained_run.rglob("*")}
    assert run_cli(["train", "--resume", trained_run, "--no-progress"]) == 2
    one_line_error(capsys, "has already trained its 0.4 kimg", "--kimg N for a total N above 0.4")
    assert {p: p.stat().st_mtime_ns for p in trained_run.rglob("*")} == before


def test_out_of_memory_snapshots_and_names_the_batch(capsys, tiny_store, tmp_path, monkeypatch):
    import torch

    from progan.training import Trainer

    real_step, calls = Trainer.step, {"n": 0}

    def step(self, stage, stats):
        calls["n"] += 1
        if calls["n"] == 6:  # 5 steps of 8 images done, 1 tick of 40, no snapshot yet
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        real_step(self, stage, stats)

    monkeypatch.setattr(Trainer, "step", step)
    args = tiny_train_args(tiny_store.path, tmp_path / "runs", snapshot_ticks=100)
    assert run_cli(["train", *args]) == 2
    (run_dir,) = (tmp_path / "runs").iterdir()
    one_line_error(capsys, "out of CPU memory at 4x4 with minibatch 8", "snapshot written", "--batch 4'")
    assert [p.name for p in run_dir.glob("snapshot-*")] == ["snapshot-000000.040"]
    monkeypatch.setattr(Trainer, "step", real_step)
    assert run_cli(["train", "--resume", run_dir, "--batch", "4", "--kimg", "0.08", "--no-progress"]) == 0
    state = json.loads((run_dir / "snapshot-000000.080" / "state.json").read_text())
    assert state["options"]["batch"] == 4


def test_generate_labels_for_conditional_model(capsys, tmp_path):
    from progan.data.store import write_store

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(16, 1, 8, 8), dtype=np.uint8)
    labels = np.eye(2, dtype=np.float32)[np.arange(16) % 2]
    store = write_store(tmp_path / "s", images, labels=labels, label_names=["cat", "dog"])
    assert run_cli(["train", *tiny_train_args(store.path, tmp_path / "runs", kimg=0.08)]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_cli(["generate", run_dir, "--seeds", "0", "--label", "dog", "--outdir", tmp_path / "dog"]) == 0
    assert run_cli(["generate", run_dir, "--seeds", "0", "--label", "0", "--outdir", tmp_path / "cat"]) == 0
    a = np.asarray(Image.open(tmp_path / "dog" / "seed0000.png"))
    b = np.asarray(Image.open(tmp_path / "cat" / "seed0000.png"))
    assert not np.array_equal(a, b)
    capsys.readouterr()
    assert run_cli(["generate", run_dir, "--label", "bird", "--grid", tmp_path / "x.png"]) == 2
    one_line_error(capsys, "'bird' is not a label", "cat, dog")
    assert os.listdir(tmp_path / "dog") == ["seed0000.png"]


def test_sigterm_writes_a_snapshot_and_exits_143(tiny_store, tmp_path):
    import signal

    args = tiny_train_args(tiny_store.path, tmp_path / "runs", kimg=1000, snapshot_ticks=1000)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "progan", "train", *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        for line in proc.stdout:  # wait until training is under way
            if line.startswith("tick 2"):
                break
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143 and "Interrupted: snapshot written" in out  # 128 + SIGTERM
    (run_dir,) = (tmp_path / "runs").iterdir()
    snaps = list(run_dir.glob("snapshot-*"))
    assert len(snaps) == 1 and (snaps[0] / "model.safetensors").is_file()
    state = json.loads((snaps[0] / "state.json").read_text())
    assert state["nimg"] >= 80


def test_sampling_commands_follow_the_one_precision_rule(capsys, trained_run, tmp_path):
    # progan.device.check_precision: fp16 needs CUDA, in generate as in train.
    assert (
        run_cli(
            ["generate", trained_run, "--precision", "fp16", "--device", "cpu", "--grid", tmp_path / "g.png"]
        )
        == 2
    )
    one_line_error(capsys, "--precision fp16 needs a CUDA GPU; use --precision bf16")
    assert not (tmp_path / "g.png").exists()
    assert (
        run_cli(
            ["generate", trained_run, "--precision", "bf16", "--device", "cpu", "--grid", tmp_path / "g.png"]
        )
        == 0
    )

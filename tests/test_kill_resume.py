"""Issue 13: a run killed with SIGKILL at any moment (mid-tick, inside a snapshot write, between
the final snapshot and the final grids) and resumed each time ends bit-identical to a run that was
never stopped, with one stats line per tick and no temporary folders left; a second trainer on a
run in use is refused.

The killed runs are forked children of the test process (no interpreter start, no torch import),
each killing itself with SIGKILL at a chosen moment through a patched function."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli
from PIL import Image
from safetensors.torch import load_file

import progan.checkpoint as ckpt
from progan.data.store import write_store
from progan.training import Trainer

# 8x8 from 4x4: 12 steps of 8 images, a tick every 2 steps (6 ticks), a snapshot every 2 ticks.
ARGS = ["--kimg", "0.096", "--training-kimg", "0.024", "--transition-kimg", "0.024", "--batch", "8",
        "--latent-size", "8", "--fmap-base", "16", "--fmap-max", "8", "--tick-kimg", "0.016",
        "--snapshot-ticks", "2", "--image-ticks", "100", "--grid-size", "4", "--no-progress",
        "--device", "cpu"]  # fmt: skip


def _killed_child(argv, patch) -> None:
    """Run `progan argv` in a forked child that `patch` arranges to SIGKILL itself; wait for it."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            patch()
            run_cli(argv)
        finally:
            os._exit(99)  # not killed: the wait below fails the test
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


def _kill_on_call(obj, name, when) -> None:
    real, calls = getattr(obj, name), {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if when(calls["n"], args):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    setattr(obj, name, wrapper)


def _ticks(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


def _leftovers(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir() if ".tmp" in p.name)


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(1)
    return write_store(tmp_path / "store", rng.integers(0, 256, (24, 3, 8, 8), dtype=np.uint8)).path


def test_sigkill_at_any_moment_then_resume_is_bit_identical(store, tmp_path):
    assert run_cli(["train", "--data", store, "--outdir", tmp_path / "a", *ARGS]) == 0
    (whole,) = (tmp_path / "a").iterdir()

    out = tmp_path / "b"
    # 1. Inside the second snapshot's write (its weights written, its optimizer state not): a torn
    #    temporary folder, and stats lines for ticks 3 and 4 that the resume trains again.
    _killed_child(["train", "--data", store, "--outdir", out, *ARGS],
                  lambda: _kill_on_call(ckpt, "save_file", lambda n, a: n == 4))  # fmt: skip
    (run,) = out.iterdir()
    assert [p.name for p in run.glob("snapshot-*")] == ["snapshot-000000.032"]
    assert _leftovers(run) and [t["tick"] for t in _ticks(run)] == [1, 2, 3, 4]

    # 2. In the middle of a tick (the 3rd step after resuming from tick 2).
    _killed_child(["train", "--resume", run, "--no-progress"],
                  lambda: _kill_on_call(Trainer, "step", lambda n, a: n == 3))  # fmt: skip
    assert not _leftovers(run)  # the resume removed the torn snapshot folder
    assert [t["tick"] for t in _ticks(run)] == [1, 2, 3]

    # 3. After the final snapshot, before the final grids: resume finishes the run, not refuses it.
    final_grid = lambda n, a: a[1].name == "fakes-final.png"  # noqa: E731
    _killed_child(["train", "--resume", run, "--no-progress"],
                  lambda: _kill_on_call(Trainer, "save_fakes", final_grid))  # fmt: skip
    assert (run / "snapshot-000000.096").is_dir() and not (run / "fakes-final.png").exists()

    # A second trainer on a run in use is refused; the finishing resume then runs.
    holder = Trainer.from_snapshot(run, {"progress": False})
    assert run_cli(["train", "--resume", run, "--no-progress"]) == 2
    holder._lock.release()
    assert run_cli(["train", "--resume", run, "--no-progress"]) == 0

    # The same run as one that was never stopped: every snapshot, every stats line, the grids.
    snaps = sorted(p.name for p in run.glob("snapshot-*"))
    assert snaps == sorted(p.name for p in whole.glob("snapshot-*"))
    for name in snaps:
        for f in (ckpt.MODEL_FILE, ckpt.OPTIM_FILE):
            a, b = load_file(str(whole / name / f)), load_file(str(run / name / f))
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (name, f)
    ticks, expected = _ticks(run), _ticks(whole)
    assert [t["tick"] for t in ticks] == [1, 2, 3, 4, 5, 6]
    for t, e in zip(ticks, expected, strict=True):
        assert (t["kimg"], t["loss_G"], t["loss_D"]) == (e["kimg"], e["loss_G"], e["loss_D"])
    for name in ("fakes-final.png", "growth.png"):
        assert np.array_equal(np.asarray(Image.open(run / name)), np.asarray(Image.open(whole / name)))
    assert not _leftovers(run)
    # Finished now: a further resume says how to go on, and changes nothing.
    assert run_cli(["train", "--resume", run, "--no-progress"]) == 2

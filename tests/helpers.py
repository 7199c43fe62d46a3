"""Helpers shared by the test modules: running the CLI, tiny stores, options and snapshots written in
the real formats, archives, and a stand-in feature network.

Every test module imports them one way, by this module's bare name (pytest puts tests/ on sys.path):
`from helpers import run_cli, tiny_snapshot`. The larger fakes live beside it and are imported the
same way: `faces_fakes` (describe's measurements and generators), `face_variants` (real photos with
one trait changed), `pretrained_files` (the original generators' file formats). conftest.py holds
the fixtures only.
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from progan import distributed
from progan.checkpoint import save_inference_snapshot, snapshot_name
from progan.cli import main
from progan.data.store import write_store
from progan.networks import Generator, NetworkConfig
from progan.runspec import RunSpec, TrainOptions, resolve_run
from progan.training import Trainer

# ---------------------------------------------------------------------------------------------
# The command line


def run_cli(argv) -> int:
    """Run `progan argv` in this process; its exit code."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    return e.value.code


def train_to_the_end(argv, capfd) -> None:
    """Run `progan train argv` (any number of ranks) and check that it trained to its total.

    A run that SIGINT or SIGTERM stops writes an earlier snapshot and exits 128 + the signal; the
    two multi-rank tests once read the missing final snapshot instead (FileNotFoundError) when an
    outer `timeout` signalled their process group and such a run still exited 0. The interruption
    is named here. capfd, not capsys: ranks print from
    their own processes."""
    capfd.readouterr()
    code = run_cli(["train", *argv])
    out = capfd.readouterr().out
    finished = [line for line in out.splitlines() if line.startswith(("Done:", "Interrupted:"))]
    assert code == 0 and finished and finished[-1].startswith("Done:"), (code, finished or out[-2000:])


def run_cli_output(argv, capsys) -> tuple[int, str, str]:
    """Run `progan argv` in this process: (exit code, stdout, stderr)."""
    code = run_cli(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(capsys, *needles: str) -> str:
    """The one line a failed command wrote to stderr, checked to hold every needle."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


# ---------------------------------------------------------------------------------------------
# A tiny store and tiny training runs

TINY_NET = dict(latent_size=16, fmap_base=64, fmap_max=16)


def make_tiny_store(path):
    """40 random 16x16 RGB images with a smooth structure, as a store at `path`."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:16, 0:16] / 15.0
    images = np.empty((40, 3, 16, 16), dtype=np.uint8)
    for i in range(40):
        a, b, c = rng.random(3)
        images[i] = (255 * np.stack([a * x, b * y, c * (1 - x) * y])).astype(np.uint8)
    return write_store(path, images)


def tiny_train_args(store, outdir, **extra) -> list[str]:
    """`progan train` arguments for a 4x4 -> 16x16 run of 0.48 kimg on a tiny store."""
    args = dict(
        data=store, outdir=outdir, training_kimg=0.08, transition_kimg=0.08, kimg=0.48, batch=8,
        latent_size=TINY_NET["latent_size"], fmap_base=TINY_NET["fmap_base"], fmap_max=TINY_NET["fmap_max"],
        tick_kimg=0.04, snapshot_ticks=2, image_ticks=4, grid_size=8,
        precision="fp32",  # the same numbers on every CPU (auto picks bf16 on some)
    )  # fmt: skip
    args.update(extra)
    out = []
    for k, v in args.items():
        flag = f"--{k.replace('_', '-')}"
        out += [flag] if v is True else [flag, str(v)]
    return out + ["--no-progress"]


def tiny_options(store, outdir, **kw) -> TrainOptions:
    """The TrainOptions of `tiny_train_args`, for tests that drive a Trainer directly."""
    base = dict(data=str(store.path), outdir=str(outdir), training_kimg=0.08, transition_kimg=0.08,
                total_kimg=0.48, batch=8, tick_kimg=0.04, snapshot_ticks=2, image_ticks=4, grid_size=8,
                progress=False, precision="fp32", **TINY_NET)  # fmt: skip
    # fp32 pinned: the same numbers on every CPU (auto would pick bf16 on some; see test_device.py).
    base.update(kw)
    return TrainOptions(**base)


def tiny_spec(store, outdir, **kw) -> RunSpec:
    """tiny_options resolved, as `progan train` resolves a run (with the ranks of the environment):
    what a Trainer takes."""
    ranks = distributed.world_size_from_environment()
    return resolve_run(tiny_options(store, outdir, **kw), world_size=ranks)


@contextmanager
def stopped_after_tick(monkeypatch, when: Callable[[Trainer], bool]) -> Iterator[None]:
    """Runs trained inside stop as on a signal, after the first tick for which `when(trainer)` holds."""
    original = Trainer._measure_tick

    def measure_then_stop(self, stats, *args):
        if when(self):
            stats["stop"] = torch.ones(())
        return original(self, stats, *args)

    monkeypatch.setattr(Trainer, "_measure_tick", measure_then_stop)
    yield
    monkeypatch.setattr(Trainer, "_measure_tick", original)


# ---------------------------------------------------------------------------------------------
# Tiny snapshots, in the real snapshot format


def tiny_snapshot(
    dest: Path, resolution: int, label_names: list[str] | None = None, seed: int = 0, *,
    nimg: int = 0, stage: tuple[int, float] | None = None, options: dict | None = None,
    fmap_base: int = 32, fmap_max: int = 8,
) -> Path:  # fmt: skip
    """A random G_ema saved as a snapshot at `dest` (faces need not be faces for these tests).

    `stage` = (resolution, alpha) places it mid-training, as a training snapshot records its stage.
    """
    torch.manual_seed(seed)
    config = NetworkConfig(
        resolution=resolution, latent_size=16, fmap_base=fmap_base, fmap_max=fmap_max,
        label_size=len(label_names or []),
    )  # fmt: skip
    G = Generator(config).eval()  # at its random start, faces already differ clearly between latents
    return save_inference_snapshot(
        dest, config, G, nimg=nimg, label_names=label_names or [], stage=stage, options=options
    )


def tiny_run(
    run_dir: Path, resolution: int = 8, label_names: list[str] | None = None, nimg: int = 1000,
    seed: int = 0, alpha: float = 1.0, stage_resolution: int | None = None,
) -> Path:  # fmt: skip
    """A run directory holding one snapshot (after `nimg` images) of a small random G_ema; the
    snapshot's path. `stage_resolution` / `alpha` place it mid-training."""
    stage = (stage_resolution or resolution, alpha) if stage_resolution or alpha < 1 else None
    return tiny_snapshot(
        run_dir / snapshot_name(nimg), resolution, label_names, seed, nimg=nimg, stage=stage, fmap_base=64,
        fmap_max=16,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Image files and archives


def png_bytes(image: np.ndarray) -> bytes:
    """An HxWxC uint8 array encoded as PNG."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def write_archive(path: Path, members: dict[str, bytes]) -> Path:
    """`members` (name -> bytes) as a zip, tar or tar.gz archive, by the suffix of `path`."""
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w") as z:
            for name, data in members.items():
                z.writestr(name, data)
    else:
        with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as t:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return path


# ---------------------------------------------------------------------------------------------
# A stand-in for NVIDIA's Inception


class TinyInception(nn.Module):
    """Stands in for NVIDIA's TorchScript Inception: same call convention, 16-d features."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3, stride=2)
        self.fc = nn.Linear(16, 10)

    def forward(
        self, x: torch.Tensor, return_features: bool = False, no_output_bias: bool = False
    ) -> torch.Tensor:
        x = x.float() / 127.5 - 1.0
        f = torch.relu(self.conv(x)).mean(dim=(2, 3))
        if return_features:
            return f
        logits = f @ self.fc.weight.t()
        if not no_output_bias:
            logits = logits + self.fc.bias
        return torch.softmax(logits, dim=1)


def tiny_torchscript(path):
    torch.jit.script(TinyInception()).save(str(path))
    return path


# ---------------------------------------------------------------------------------------------
# Which TCP addresses a process listens on (Linux /proc), for the localhost-only tests

LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


def listening_addresses(pid: int | None = None) -> list[str]:
    """Hex local addresses (as /proc/net/tcp{,6} write them) of the sockets `pid` listens on."""
    pid = pid or os.getpid()
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for line in list(f)[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    found.append(cols[1].split(":")[0])
    return found


@contextmanager
def served_app(app, port: int | None = None) -> Iterator[str]:
    """`app` behind uvicorn on 127.0.0.1 (a free port unless given) in a thread, a real socket (a
    client can go away, a browser can connect); yields its URL and stops the server after."""
    import socket
    import threading
    import time

    import uvicorn

    if port is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not srv.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)

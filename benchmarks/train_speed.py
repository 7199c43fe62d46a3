"""Training and generation speed of progan against the PyPI package pro-gan-pth 3.4, side by side.

    python benchmarks/train_speed.py                      # ~4 min: peer, progan fp32 and bf16
    python benchmarks/train_speed.py --seconds 60 --json train_speed.json
    python benchmarks/train_speed.py --skip-peer --precisions bf16

The architecture of issue 5: latent 512, 128 feature maps at every level, stabilized 32x32
(alpha = 1, no fade), WGAN-GP (lambda 10, drift 0.001), minibatch 16, `--threads` intra-op
threads (2). Contenders, each in its own worker process:

* progan, once per precision: a training call is `Trainer.step` (one D and one G update on 16
  images read from a store, the G_ema update included; channels-last); a generation call is
  `G_ema(z)` on 16 latents under no_grad and the precision's autocast. Its networks are the
  default ones: G's upsample and conv in one transposed convolution (the same function), D's
  conv and downscale in one strided convolution before the activation (the official code's
  `fused_scale`); `--paper-d` adds a worker with the paper's D order (`--no-fused-scale`),
  the order the peer uses. Every worker penalizes every D update, as the paper and the peer do;
  `--lazy-gp` adds one with a lazy penalty (`progan train --gp-interval 4`: one D update in 4,
  weighted 4), whose call is one whole cycle of 4 steps (64 images);
* pro-gan-pth 3.4 (`peer_pro_gan_pth.py`, run by the peer's own venv): one iteration of its
  `ProGAN.train` loop at depth 5 (4 -> 32) with 128 maps (`optimize_discriminator` with its
  `WganGP`, the EMA `update_average`, `optimize_generator`), fp32, its only precision, 16 images;
  a generation call is its shadow generator on 16 latents under no_grad.

Timing. The workers are started one after another (build, one step, FLOP count, `--warmup`
calls) and then wait for commands on a pipe; only one of them computes at any moment. The
orchestrator hands out time slices round-robin (`--slice` seconds each, rotating the order),
first training calls, then generation calls, until every contender has `--seconds` of timed
calls and at least `--min-calls`. A busy spell of a shared machine therefore hits every
contender alike, and the ratios hold up where back-to-back runs would not. img/s is the batch
over the *median* call time (mean and best are kept in the JSON); "cores used" is the CPU time of
the worker's threads per wall second while training: `--threads` when they had their cores to
themselves, less when other load took them.

Peak RSS is each worker's own high-water mark (VmHWM, read when it exits). FLOPs per image are
counted with torch's flop formulas on one real call of each contender (convolutions, their
backward including the gradient penalty's double backward, matmuls); achieved FLOP/s is set
against the machine's peak measured in the same run, before and after the contenders: the best
call of a 128 -> 128 3x3 convolution at 32x32, channels-last, batch 16 and 64, in fp32 and bf16.

The peer venv (torch pinned to this venv's version, numpy, pro-gan-pth 3.4 with --no-deps) is
created under ~/.cache/progan-bench/peer-venv when missing; `--peer-python` names another.
pro-gan-pth is never a dependency of progan. This module imports only the standard library at
the top, so that the peer helper can use its worker loop and FLOP counter from the peer's venv.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEER_PACKAGE = "pro-gan-pth==3.4"
PEER_NAME = "pro-gan-pth 3.4 fp32"
DEFAULT_PEER_VENV = Path.home() / ".cache" / "progan-bench" / "peer-venv"

# The benchmark's architecture and workload (issue 5).
LATENT = 512
FMAPS = 128
RESOLUTION = 32
BATCH = 16
GEN_BATCH = 16
LAZY_GP_INTERVAL = 4  # --lazy-gp: `progan train --gp-interval 4`
WGAN_LAMBDA = 10.0
WGAN_DRIFT = 0.001

TARGETS = (("progan bf16", "train", 4.0), ("progan fp32", "train", 1.3), ("progan bf16", "gen", 5.0))


# ------------------------------------------------------------------------------------------------
# worker side, shared with peer_pro_gan_pth.py (stdlib at import time; torch imported inside)


def peak_rss_mib() -> float:
    """This process's resident-set high-water mark in MiB (VmHWM; ru_maxrss as a fallback).

    VmHWM belongs to the address space, which exec replaces, so it is the worker's own peak
    (Linux carries ru_maxrss across exec, where it can be the parent's size instead).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def count_flops(fn) -> tuple[float, dict[str, float]]:
    """FLOPs of one call of `fn`, by aten op, with torch's registered flop formulas.

    A bare dispatch mode rather than `FlopCounterMode`, whose module tracker fails on
    `torch.autograd.grad` of a leaf (the gradient penalty) in torch 2.13.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    counts: dict[str, float] = {}

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                name = str(func._overloadpacket)
                counts[name] = counts.get(name, 0) + formula(*args, **kwargs, out_val=out)
            return out

    with Counter():
        fn()
    return float(sum(counts.values())), counts


def worker_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--resolution", type=int, default=RESOLUTION)
    return p.parse_args(argv)


def take_stdout():
    """The worker's answer channel: the original stdout, moved aside before anything is
    imported, with file descriptor 1 pointed at stderr so that no stray print gets into it."""
    sys.stdout.flush()
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return proto


def serve(proto, name: str, train_step, generate, a: argparse.Namespace, train_images: int = BATCH) -> None:
    """The worker loop: count FLOPs, warm up, report ready, then run timed calls on command.

    `train_images`: the images one training call trains on (BATCH, or a whole cycle of a lazy
    gradient penalty: several steps of BATCH).

    Commands (one a line on stdin): `train`, `gen`, `quit`; each answer is one JSON line on
    `proto` (from `take_stdout`).
    """
    import torch

    train_step()  # first call: allocations, oneDNN primitive creation
    train_flops, train_ops = count_flops(train_step)
    gen_flops, _ = count_flops(generate)
    for _ in range(a.warmup):
        train_step()
    for _ in range(a.warmup):
        generate()
    ready = {
        "contender": name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "train_images_per_call": train_images,
        "train_gflop_per_img": train_flops / train_images / 1e9,
        "gen_gflop_per_img": gen_flops / GEN_BATCH / 1e9,
        "train_gflop_by_op": {k: v / train_images / 1e9 for k, v in train_ops.items()},
    }
    proto.write(json.dumps(ready) + "\n")
    calls = {"train": train_step, "gen": generate}
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        t0, c0 = time.perf_counter(), time.process_time()
        calls[cmd]()
        proto.write(json.dumps({"s": time.perf_counter() - t0, "cpu": time.process_time() - c0}) + "\n")
    proto.write(json.dumps({"peak_rss_mib": peak_rss_mib()}) + "\n")


def worker_progan(a: argparse.Namespace) -> None:
    proto = take_stdout()
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch

    from progan.data.store import write_store
    from progan.device import autocast
    from progan.runspec import TrainOptions, resolve_run
    from progan.schedule import Stage
    from progan.training import Trainer

    torch.set_num_threads(a.threads)
    res = a.resolution
    with tempfile.TemporaryDirectory(prefix="progan-bench-") as tmp:
        images = np.random.default_rng(0).integers(0, 256, (512, 3, res, res), dtype=np.uint8)
        write_store(Path(tmp) / "store", images)
        del images
        opts = TrainOptions(
            data=str(Path(tmp) / "store"), outdir=str(Path(tmp) / "runs"), latent_size=LATENT,
            fmap_base=FMAPS * 32, fmap_max=FMAPS, batch=BATCH, precision=a.precision,
            channels_last=True, progress=False, resolution=res, conditional=False,
            device="cpu", fused_scale=not a.paper_order_d,
            # The paper's and the peer's penalty on every D update, or with --lazy-gp on one in
            # LAZY_GP_INTERVAL (progan's --gp-interval); a call is then one whole cycle of it.
            gp_interval=LAZY_GP_INTERVAL if a.lazy_gp else 1,
        )  # fmt: skip
        opts.loss = {**opts.loss, "wgan_lambda": WGAN_LAMBDA, "wgan_epsilon": WGAN_DRIFT}
        t = Trainer(resolve_run(opts))
        nf = {t.config.nf(s) for s in range(res.bit_length() - 1)}
        if nf != {FMAPS}:
            raise SystemExit(f"progan's feature maps are {sorted(nf)}, expected {FMAPS} everywhere")
        stage = Stage(res, 1.0, BATCH, 0.001)
        t._set_stage(stage)
        stats: dict = {}
        gen = torch.Generator().manual_seed(1)

        def train_step() -> None:
            for _ in range(opts.gp_interval):
                t.step(stage, stats)
            stats.clear()

        def generate() -> None:
            z = torch.randn(GEN_BATCH, LATENT, generator=gen)
            with torch.no_grad(), autocast(t.device, a.precision):
                t.G_ema(z).float()

        name = progan_name(a.precision, a.paper_order_d, a.lazy_gp)
        serve(proto, name, train_step, generate, a, train_images=BATCH * opts.gp_interval)


def worker_peak(a: argparse.Namespace) -> None:
    """The machine's peak: the best call of a 3x3 convolution (128 -> 128 maps, 32x32,
    channels-last, batch 16 and 64) in fp32 and bf16. Prints one JSON line."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(a.threads)
    c, r = FMAPS, RESOLUTION
    out: dict = {"torch": torch.__version__}
    for prec, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        for n in (16, 64):
            x = torch.randn(n, c, r, r).to(dtype=dtype, memory_format=torch.channels_last)
            w = torch.randn(c, c, 3, 3).to(dtype=dtype, memory_format=torch.channels_last)
            conv = functools.partial(F.conv2d, x, w, torch.randn(c).to(dtype), padding=1)
            times = []
            with torch.no_grad():
                for _ in range(a.warmup):
                    conv()
                start = time.perf_counter()
                while len(times) < a.min_calls or time.perf_counter() - start < a.seconds:
                    t0 = time.perf_counter()
                    conv()
                    times.append(time.perf_counter() - t0)
            # The best call: a peak is what the machine can do, not what it does on average.
            tflop_s = 2 * n * c * c * 9 * r * r / min(times) / 1e12
            if tflop_s > out.get(prec, {}).get("tflop_s", 0.0):
                out[prec] = {"tflop_s": tflop_s, "batch": n}
    print(json.dumps(out))


# ------------------------------------------------------------------------------------------------
# the orchestrator (imports no torch: it stays small and out of the measurements)


class Worker:
    """One contender's process, driven over its stdin/stdout."""

    def __init__(self, name: str, cmd: list[str], env: dict) -> None:
        self.name = name
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env, text=True, bufsize=1
        )
        self.info = self._read()
        self.train_images = self.info.get("train_images_per_call", BATCH)  # the peer's: BATCH
        self.calls: dict[str, list[dict]] = {"train": [], "gen": []}

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.log.seek(0)
            sys.stderr.write(self.log.read()[-6000:])
            raise SystemExit(f"{self.name}: worker exited ({self.proc.returncode})")
        return json.loads(line)

    def call(self, kind: str) -> float:
        self.proc.stdin.write(kind + "\n")
        self.calls[kind].append(self._read())
        return self.calls[kind][-1]["s"]

    def timed(self, kind: str) -> float:
        return sum(c["s"] for c in self.calls[kind])

    def quit(self) -> float:
        self.proc.stdin.write("quit\n")
        rss = self._read()["peak_rss_mib"]
        self.proc.wait()
        return rss

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def summary(calls: list[dict], images: int) -> dict:
    times = [c["s"] for c in calls]
    return {
        "img_s": images / statistics.median(times),
        "img_s_mean": images * len(times) / sum(times),
        "img_s_best": images / min(times),
        "cores_used": sum(c["cpu"] for c in calls) / sum(times),
        "calls": len(times),
        "seconds": sum(times),
        "call_s": [round(t, 4) for t in times],
        "call_cores": [round(c["cpu"] / c["s"], 2) for c in calls],
    }


def interleave(workers: list[Worker], kind: str, seconds: float, min_calls: int, slice_s: float) -> None:
    """Round-robin time slices until every worker has `seconds` of calls and `min_calls` calls."""
    rnd = 0
    while True:
        todo = [w for w in workers if w.timed(kind) < seconds or len(w.calls[kind]) < min_calls]
        if not todo:
            return
        shift = rnd % len(todo)
        for w in todo[shift:] + todo[:shift]:
            spent = 0.0
            while spent < slice_s:
                spent += w.call(kind)
        rnd += 1


def torch_version_here() -> str:
    from importlib.metadata import version

    return version("torch").split("+")[0]


def ensure_peer_python(venv: Path) -> Path:
    python = venv / "bin" / "python"
    ready = venv / ".progan-bench-ready"  # written last: a half-made venv is made again
    if ready.exists():
        return python
    print(f"creating the peer venv {venv} (torch, numpy, {PEER_PACKAGE} --no-deps) ...", file=sys.stderr)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, f"torch=={torch_version_here()}", "numpy"], check=True)
    subprocess.run([*pip, "--no-deps", PEER_PACKAGE], check=True)
    ready.write_text(PEER_PACKAGE + "\n")
    return python


def measure_peak(env: dict, threads: int, seconds: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "peak", "--threads", str(threads),
           "--seconds", str(seconds), "--warmup", "2", "--min-calls", "5"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit("peak measurement failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ratio(row: dict, peer: dict | None, key: str) -> float:
    if peer is None:
        return float("nan")
    if key == "rss":
        return row["peak_rss_mib"] / peer["peak_rss_mib"]
    return row[key]["img_s"] / peer[key]["img_s"]


def table(rows: list[dict], peak: dict, peer: dict | None) -> str:
    widths = [22, 11, 10, 12, 13, 9, 12, 10, 10, 10]

    def line(cells: list[str]) -> str:
        return " ".join(
            f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    head = line(["contender", "train img/s", "gen img/s", "peak RSS MiB", "train TFLOP/s", "% of peak",
                 "train x peer", "gen x peer", "RSS x peer", "cores used"])  # fmt: skip
    lines = [head, "-" * len(head)]
    for r in rows:
        prec = "bf16" if "bf16" in r["contender"] else "fp32"
        cells = [
            r["contender"],
            f"{r['train']['img_s']:.2f}",
            f"{r['gen']['img_s']:.1f}",
            f"{r['peak_rss_mib']:.0f}",
            f"{r['train_tflop_s']:.3f}",
            f"{100 * r['train_tflop_s'] / peak[prec]['tflop_s']:.0f}%",
            *(f"{ratio(r, peer, key):.2f}x" if peer else "-" for key in ("train", "gen", "rss")),
            f"{r['train']['cores_used']:.2f}",
        ]
        lines.append(line(cells))
    return "\n".join(lines)


def targets(rows: list[dict], peer: dict) -> list[str]:
    """Issue 5's targets: train >= 4x (bf16) and >= 1.3x (fp32), generation >= 5x (bf16), RSS <= peer's."""
    out = []
    by_name = {r["contender"]: r for r in rows}
    for name, key, goal in TARGETS:
        if name in by_name:
            x = ratio(by_name[name], peer, key)
            out.append(f"{name} {key} {x:.2f}x (>= {goal:g}x: {'met' if x >= goal else 'NOT met'})")
    for r in rows:
        if r is not peer:
            ok = r["peak_rss_mib"] <= peer["peak_rss_mib"]
            out.append(f"{r['contender']} RSS {'<=' if ok else '>'} peer's ({'met' if ok else 'NOT met'})")
    return out


def progan_name(precision: str, paper_order_d: bool, lazy_gp: bool = False) -> str:
    return f"progan {precision}" + (" paper-order D" if paper_order_d else "") + (" lazy GP" * lazy_gp)


def progan_commands(a: argparse.Namespace, this: str, common: list[str]) -> list[tuple[str, list[str]]]:
    """One progan worker per precision; with --paper-d, each also with the paper-order D; with
    --lazy-gp, each also with the lazy gradient penalty."""
    out = []
    for prec in (s.strip() for s in a.precisions.split(",") if s.strip()):
        cmd = [sys.executable, this, "--worker", "progan", "--precision", prec, *common]
        out.append((progan_name(prec, False), cmd))
        if a.paper_d:
            out.append((progan_name(prec, True), [*cmd, "--paper-order-d"]))
        if a.lazy_gp:
            out.append((progan_name(prec, False, True), [*cmd, "--lazy-gp"]))
    return out


def per_resolution(a: argparse.Namespace, env: dict, this: str) -> None:
    """Training img/s of every contender at each of `--resolutions` (stable, alpha 1), interleaved
    as in the main measurement, one resolution after another; ratios to the peer per resolution."""
    resolutions = [int(r) for r in a.resolutions.split(",")]
    peer_python = None if a.skip_peer else a.peer_python or str(ensure_peer_python(a.peer_venv))
    results: dict[int, dict[str, dict]] = {}
    for res in resolutions:
        common = ["--threads", str(a.threads), "--warmup", str(a.warmup), "--resolution", str(res)]
        commands = (
            []
            if peer_python is None
            else [(PEER_NAME, [peer_python, str(HERE / "peer_pro_gan_pth.py"), *common])]
        )
        commands += progan_commands(a, this, common)
        workers: list[Worker] = []
        try:
            for name, cmd in commands:
                print(f"{res}x{res}: starting {name} ...", file=sys.stderr)
                workers.append(Worker(name, cmd, env))
            interleave(workers, "train", a.seconds, a.min_calls, a.slice)
            results[res] = {w.name: summary(w.calls["train"], w.train_images) for w in workers}
            for w in workers:
                w.quit()
        finally:
            for w in workers:
                w.kill()
        row = results[res]
        print(f"{res}x{res}: " + ", ".join(f"{k} {v['img_s']:.1f} img/s" for k, v in row.items()), flush=True)
    names = list(next(iter(results.values())))
    head = "| resolution | " + " | ".join(f"{n} img/s" for n in names)
    if peer_python:
        head += " | " + " | ".join(f"{n} x peer" for n in names if n != PEER_NAME)
    lines = [head + " | cores used |", "| ---: " * (head.count("|") + 1) + "|"]
    for res, row in results.items():
        cells = [f"{res}x{res}", *(f"{row[n]['img_s']:.1f}" for n in names)]
        if peer_python:
            cells += [f"{row[n]['img_s'] / row[PEER_NAME]['img_s']:.2f}x" for n in names if n != PEER_NAME]
        cells.append(" / ".join(f"{row[n]['cores_used']:.2f}" for n in names))
        lines.append("| " + " | ".join(cells) + " |")
    print(f"\ntraining img/s per stable resolution ({a.threads} threads, latent {LATENT}, {FMAPS} maps, "
          f"batch {BATCH}, median call, interleaved; {cpu_name()}):")  # fmt: skip
    print("\n".join(lines))
    if a.json:
        a.json.write_text(json.dumps({"threads": a.threads, "seconds": a.seconds, "cpu": cpu_name(),
                                      "per_resolution": results}, indent=1))  # fmt: skip


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds per measurement (default 20)")
    p.add_argument("--slice", type=float, default=1.0, help="seconds per turn in the round-robin (default 1)")
    p.add_argument(
        "--threads", type=int, default=2, help="torch intra-op threads in every worker (default 2)"
    )
    p.add_argument("--precisions", default="fp32,bf16", help="progan precisions (default fp32,bf16)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls of each kind per worker (default 3)")
    p.add_argument("--min-calls", type=int, default=5, help="timed calls at least, however long (default 5)")
    p.add_argument("--skip-peer", action="store_true", help="measure progan only")
    p.add_argument(
        "--paper-d",
        action="store_true",
        help="also measure progan with the paper-order D (--no-fused-scale), the peer's D order",
    )
    p.add_argument("--paper-order-d", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--lazy-gp",
        action="store_true",
        help="add a progan worker per precision with a lazy gradient penalty (--gp-interval 4)",
    )
    p.add_argument("--peer-python", help=f"python of a venv with {PEER_PACKAGE} (default: create one)")
    p.add_argument("--peer-venv", type=Path, default=DEFAULT_PEER_VENV, help="where to create the peer venv")
    p.add_argument("--json", type=Path, help="write every number to this file")
    p.add_argument(
        "--resolutions",
        help="e.g. 4,8,16,32,64,128: training speed at each stable resolution, every contender side by side",
    )
    p.add_argument("--resolution", type=int, default=RESOLUTION, help=argparse.SUPPRESS)
    p.add_argument("--worker", choices=["progan", "peak"], help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        {"progan": worker_progan, "peak": worker_peak}[a.worker](a)
        return

    this = str(Path(__file__).resolve())
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    env.pop("PYTHONPATH", None)
    common = ["--threads", str(a.threads), "--warmup", str(a.warmup)]
    commands: list[tuple[str, list[str]]] = []
    if a.resolutions:
        per_resolution(a, env, this)
        return
    if not a.skip_peer:
        peer_python = a.peer_python or str(ensure_peer_python(a.peer_venv))
        commands.append((PEER_NAME, [peer_python, str(HERE / "peer_pro_gan_pth.py"), *common]))
    commands += progan_commands(a, this, common)

    peak_seconds = max(1.0, a.seconds / 8)
    print(f"measuring the machine's peak ({a.threads} threads) ...", file=sys.stderr)
    peaks = [measure_peak(env, a.threads, peak_seconds)]
    workers: list[Worker] = []
    try:
        for name, cmd in commands:
            print(f"starting {name} (build, FLOP count, warm-up) ...", file=sys.stderr)
            workers.append(Worker(name, cmd, env))
        for kind in ("train", "gen"):
            print(f"timing {kind}, interleaved ...", file=sys.stderr)
            interleave(workers, kind, a.seconds, a.min_calls, a.slice)
        rss = {w.name: w.quit() for w in workers}
    finally:
        for w in workers:
            w.kill()
    print("measuring the machine's peak again ...", file=sys.stderr)
    peaks.append(measure_peak(env, a.threads, peak_seconds))
    # The better of the two per precision: other load only ever lowers a peak.
    peak = {prec: max((pk[prec] for pk in peaks), key=lambda x: x["tflop_s"]) for prec in ("fp32", "bf16")}

    rows = []
    for w in workers:
        r = {**w.info, "train": summary(w.calls["train"], w.train_images)}
        r["gen"] = summary(w.calls["gen"], GEN_BATCH)
        r["peak_rss_mib"] = rss[w.name]
        r["train_tflop_s"] = r["train"]["img_s"] * r["train_gflop_per_img"] / 1e3
        r["gen_tflop_s"] = r["gen"]["img_s"] * r["gen_gflop_per_img"] / 1e3
        rows.append(r)
    peer = next((r for r in rows if r["contender"] == PEER_NAME), None)

    print(
        f"\nprogan vs {PEER_PACKAGE}: {RESOLUTION}x{RESOLUTION} stabilized (alpha 1), latent {LATENT}, "
        f"{FMAPS} maps, WGAN-GP, batch {BATCH} (generation batch {GEN_BATCH}), {a.threads} threads, "
        f">= {a.seconds:g} s of calls per measurement, interleaved; img/s from the median call; {cpu_name()}"
    )
    print(
        f"machine peak (best call of a 128->128 3x3 conv, 32x32, channels-last): "
        f"fp32 {peak['fp32']['tflop_s']:.3f} TFLOP/s, bf16 {peak['bf16']['tflop_s']:.3f} TFLOP/s"
    )
    for r in rows:
        print(
            f"FLOPs per image, {r['contender']}: train {r['train_gflop_per_img']:.2f} GFLOP, "
            f"generation {r['gen_gflop_per_img']:.3f} GFLOP"
        )
    print(table(rows, peak, peer))
    print(
        f"(% of peak: train FLOP/s over the peak of the same precision; cores used: CPU seconds per "
        f"wall second while training, {a.threads} when the threads had their cores to themselves)"
    )
    if peer is not None:
        print("targets: " + "; ".join(targets(rows, peer)))
        by_name = {r["contender"]: r for r in rows}
        best = [
            f"{name} {key} {by_name[name][key]['img_s_best'] / peer[key]['img_s_best']:.2f}x"
            for name, key, _ in TARGETS
            if name in by_name
        ]
        print("the same ratios from each contender's best call: " + "; ".join(best))
    busy = [r["contender"] for r in rows if r["train"]["cores_used"] < 0.85 * a.threads]
    if busy:
        print(
            f"warning: {', '.join(busy)} used fewer than {a.threads} cores while training: the machine was "
            "busy; the ratios hold only roughly (re-run on a quiet machine)",
            file=sys.stderr,
        )
    versions = {r["torch"] for r in rows} | {pk["torch"] for pk in peaks}
    if len(versions) > 1:
        print(f"warning: the contenders ran different torch versions: {sorted(versions)}", file=sys.stderr)
    if a.json:
        run = {"seconds": a.seconds, "slice": a.slice, "threads": a.threads, "batch": BATCH}
        run.update(gen_batch=GEN_BATCH, warmup=a.warmup, min_calls=a.min_calls, cpu=cpu_name())
        out = {"run": run, "peak": peak, "peak_runs": peaks, "results": rows}
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

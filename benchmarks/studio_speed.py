"""Speed of the studio (`progan serve`) and of video generation (`progan video`) on this machine.

    python benchmarks/studio_speed.py                     # ~5 min on 2 quiet CPU cores
    python benchmarks/studio_speed.py --resolutions 32 --precisions fp32 --json out.json

Networks: the paper's G (latent 512, fmap_base 8192, fmap_max 512; about 12.6 GFLOP per face at
32x32 and 56 at 256x256) with random weights (speed does not depend on their values), written as
snapshots and served by the real app: uvicorn on 127.0.0.1 in a thread, requests from httpx over
TCP, as a browser sends them.

* first page: the wall time from sending the 32 thumbnail requests of the page's first grid
  (`size=128`, or the full size below 128) at once until the last PNG has arrived, on a server
  that has just started (first request of the process included). (Since issue 28 the page asks
  for its faces in one streamed request, `/faces`, which `--first-page-1024` times; this figure is
  the single-face path's);
* faces/s: `--rounds` rounds of 32 concurrent full-resolution requests (new seeds every round),
  faces per wall second; the batches the model ran are reported (one model serves all requests);
* video frames/s: `interpolation_video` (1x1 grid, batch 32) streamed into an H.264 mp4 through
  `write_video`, frames per wall second, generation and encoding together.

Each figure is the median of `--repeats` runs (1 by default: a page at 256x256 takes most of a
minute on two cores). The machine is shared: compare numbers from one run.

    python benchmarks/studio_speed.py --first-page-1024             # issue 28: ~3-10 min on 2 cores

`--first-page-1024` (issue 28, point 4): the official-size CelebA-HQ G_paper (random weights, an
official-format pickle through `progan import`'s function: benchmarks/official_size.py) served by
`progan serve SNAPSHOT` in a process of its own, default options (`--precision auto`), as a user
runs it. The page's one request, `GET /api/models/<id>/faces?seeds=0,..,31&size=128`, is sent by
httpx over TCP as soon as the server answers `/api/models`, and the arrival of each NDJSON line is
timed: time to the first face and to the 32nd. Each of `--repeats` (3 here by default) rounds
starts a fresh server, so each is the first page of a studio just opened; the median is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from progan.checkpoint import save_inference_snapshot  # noqa: E402
from progan.networks import Generator, NetworkConfig  # noqa: E402
from progan.studio.app import Studio, create_app  # noqa: E402
from progan.video import interpolation_video, write_video  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(studio: Studio):
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(studio), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.01)
    return srv, thread, f"http://127.0.0.1:{port}"


async def fetch(base: str, urls: list[str]) -> float:
    import httpx

    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=None) as client:
        t = time.perf_counter()
        responses = await asyncio.gather(*[client.get(u) for u in urls])
        elapsed = time.perf_counter() - t
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    return elapsed


def bench_serve(snapshot: Path, resolution: int, precision: str, rounds: int, state: Path) -> dict:
    studio = Studio([snapshot], state, precision=precision)
    (mid,) = studio.models
    srv, thread, base = start_server(studio)
    try:
        thumb = min(resolution, 128)
        page = [f"/api/models/{mid}/face.png?seed={s}&size={thumb}" for s in range(32)]
        first = asyncio.run(fetch(base, page))
        batches_before = len(studio.models[mid].batcher.batches)
        times = []
        for r in range(rounds):
            urls = [f"/api/models/{mid}/face.png?seed={1000 + 32 * r + s}" for s in range(32)]
            times.append(asyncio.run(fetch(base, urls)))
        batches = studio.models[mid].batcher.batches[batches_before:]
        return {"first_page_s": first, "faces_per_s": 32 * rounds / sum(times),
                "mean_batch": sum(batches) / max(len(batches), 1)}  # fmt: skip
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        studio.close()


def seconds_per_face(G: Generator, precision: str) -> float:
    """One face through G (after one warm-up face): the probe that decides whether to go on."""
    from progan.device import autocast

    z = torch.randn(1, G.config.latent_size)
    times = []
    with torch.no_grad(), autocast(torch.device("cpu"), precision):
        for _ in range(2):
            t = time.perf_counter()
            G(z)
            times.append(time.perf_counter() - t)
    return times[-1]


def bench_video(G: Generator, precision: str, frames: int, out: Path) -> float:
    t = time.perf_counter()
    total, it = interpolation_video(G, frames / 30, 30.0, (1, 1), 1.0, 0, batch=32, precision=precision)
    write_video(it, out, 30.0, total=total, progress=False)
    return total / (time.perf_counter() - t)


def report(row: dict, rows: list[dict], args: argparse.Namespace) -> None:
    """Print a row as it ends and rewrite the JSON file, so a long run stopped early keeps its rows."""
    print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2))


def first_page(base: str, mid: str, seeds: list[int], size: int) -> dict:
    """Stream one page of faces; seconds from sending the request to each face's line."""
    import httpx

    url = f"{base}/api/models/{mid}/faces?seeds={','.join(map(str, seeds))}&size={size}"
    arrived = []
    start = time.perf_counter()
    with httpx.stream("GET", url, timeout=None) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line:
                item = json.loads(line)
                assert "png" in item, item
                arrived.append(time.perf_counter() - start)
    assert len(arrived) == len(seeds), f"{len(arrived)} of {len(seeds)} faces arrived"
    return {"first_face_s": arrived[0], "last_face_s": arrived[-1], "arrivals_s": arrived}


def first_page_official(repeats: int, workdir: str | None, device: str = "cpu") -> list[dict]:
    """The first page of 32 faces of the official-size network, each round on a fresh `progan
    serve` process (see the module docstring)."""
    import httpx

    from progan.device import sampling_precision

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from official_size import official_size_snapshot

    work = Path(workdir or tempfile.mkdtemp(prefix="studio_speed-"))
    t = time.perf_counter()
    snapshot = official_size_snapshot(work)
    print(f"official-size snapshot at {snapshot} ({time.perf_counter() - t:.0f} s); torch "
          f"{torch.__version__}, {os.cpu_count()} CPUs, --precision auto = "
          f"{sampling_precision('auto', device)}", flush=True)  # fmt: skip
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rows = []
    for r in range(repeats):
        port = free_port()
        load_before = os.getloadavg()[0]
        cmd = [sys.executable, "-m", "progan", "serve", str(snapshot), "--port", str(port),
               "--state-dir", str(work / "state"), "--device", device]  # fmt: skip
        server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            t = time.perf_counter()
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"{' '.join(cmd)} exited with {server.returncode}")
                try:
                    models = httpx.get(f"{base}/api/models", timeout=5).json()
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            startup = time.perf_counter() - t
            row = first_page(base, models[0]["id"], list(range(32)), 128)
        finally:
            server.terminate()
            server.wait(timeout=30)
        row.update(
            round=r + 1, server_start_s=startup, load_before=load_before, load_after=os.getloadavg()[0]
        )
        rows.append(row)
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()
                          if k != "arrivals_s"}), flush=True)  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolutions", default="32,256")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--repeats", type=int, help="runs per figure, the median kept (1; 3 for --first-page-1024)"
    )
    ap.add_argument(
        "--first-page-1024",
        action="store_true",
        help="time the first page of 32 faces of the official-size network (issue 28)",
    )
    ap.add_argument("--workdir", help="--first-page-1024: keep the imported snapshot here (made once)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--max-face-seconds", type=float, default=5.0,
                    help="skip the rest for a network/precision slower than this per face")  # fmt: skip
    ap.add_argument("--device", default="cpu", help="--first-page-1024: serve's --device (gpu_check.sh)")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.first_page_1024:
        rows = first_page_official(args.repeats or 3, args.workdir, args.device)
        if args.json:
            Path(args.json).write_text(json.dumps({"rows": rows}, indent=2))
        first = statistics.median(r["first_face_s"] for r in rows)
        last = statistics.median(r["last_face_s"] for r in rows)
        print("\n| rounds | first face (s, median) | 32nd face (s, median) | each round: first / 32nd (s) "
              "| load average before each |")  # fmt: skip
        print("| ---: | ---: | ---: | --- | --- |")
        each = ", ".join(f"{r['first_face_s']:.1f} / {r['last_face_s']:.1f}" for r in rows)
        loads = ", ".join(f"{r['load_before']:.1f}" for r in rows)
        print(f"| {len(rows)} | {first:.1f} | {last:.1f} | {each} | {loads} |")
        return
    args.repeats = args.repeats or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for res in map(int, args.resolutions.split(",")):
            torch.manual_seed(0)
            config = NetworkConfig(resolution=res)
            G = Generator(config).eval()
            snap = save_inference_snapshot(tmp / f"run{res}" / "snapshot-000000", config, G)
            for precision in args.precisions.split(","):
                per_face = seconds_per_face(G, precision)
                if per_face > args.max_face_seconds:
                    # e.g. bf16 on a CPU without native bf16 instructions: a page would take 32x this
                    row = {"resolution": res, "precision": precision, "seconds_per_face": per_face}
                    rows.append(row)
                    report(row, rows, args)
                    continue
                runs = [
                    bench_serve(snap, res, precision, args.rounds, tmp / "state") for _ in range(args.repeats)
                ]
                frames = 60 if res <= 64 else 8
                fps = [bench_video(G, precision, frames, tmp / "v.mp4") for _ in range(args.repeats)]
                row = {
                    "resolution": res, "precision": precision, "seconds_per_face": per_face,
                    "first_page_s": statistics.median(r["first_page_s"] for r in runs),
                    "faces_per_s": statistics.median(r["faces_per_s"] for r in runs),
                    "mean_batch": statistics.median(r["mean_batch"] for r in runs),
                    "video_fps": statistics.median(fps),
                }  # fmt: skip
                rows.append(row)
                report(row, rows, args)
    print("\n| network | precision | one face (s) | first page of 32 (s) | faces/s served | mean batch "
          "| video frames/s |")  # fmt: skip
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        if "first_page_s" not in r:
            print(f"| {r['resolution']}x{r['resolution']} | {r['precision']} | {r['seconds_per_face']:.2f} | "
                  "not run (too slow) | | | |")  # fmt: skip
            continue
        print(f"| {r['resolution']}x{r['resolution']} | {r['precision']} | {r['seconds_per_face']:.2f} | "
              f"{r['first_page_s']:.1f} | {r['faces_per_s']:.2f} | {r['mean_batch']:.1f} | "
              f"{r['video_fps']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()

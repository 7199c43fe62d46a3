"""Speed of the studio (`progan serve`) and of video generation (`progan video`) on this machine.

    python benchmarks/studio_speed.py                     # ~5 min on 2 quiet CPU cores
    python benchmarks/studio_speed.py --resolutions 32 --precisions fp32 --json out.json

Networks: the paper's G (latent 512, fmap_base 8192, fmap_max 512; about 12.6 GFLOP per face at
32x32 and 56 at 256x256) with random weights (speed does not depend on their values), written as
snapshots and served by the real app: uvicorn on 127.0.0.1 in a thread, requests from httpx over
TCP, as a browser sends them.

* first page: the wall time from sending the 32 thumbnail requests of the page's first grid
  (`size=128`, or the full size below 128) at once until the last PNG has arrived, on a server
  that has just started (first request of the process included);
* faces/s: `--rounds` rounds of 32 concurrent full-resolution requests (new seeds every round),
  faces per wall second; the batches the model ran are reported (one model serves all requests);
* video frames/s: `interpolation_video` (1x1 grid, batch 32) streamed into an H.264 mp4 through
  `write_video`, frames per wall second, generation and encoding together.

Each figure is the median of `--repeats` runs (1 by default: a page at 256x256 takes most of a
minute on two cores). The machine is shared: compare numbers from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolutions", default="32,256")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--max-face-seconds", type=float, default=5.0,
                    help="skip the rest for a network/precision slower than this per face")  # fmt: skip
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
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

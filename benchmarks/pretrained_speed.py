"""Speed and memory of 1024x1024 generation with a network of the official size (issue 10, point 8).

    python benchmarks/pretrained_speed.py                           # CPU: fp32 and bf16, batch 1 and 8
    python benchmarks/pretrained_speed.py --device cuda --repeats 20 --batches 1,8,32
    python benchmarks/pretrained_speed.py --json pretrained_speed.json

The generator is the official CelebA-HQ G_paper's architecture (NetworkConfig() defaults: 1024x1024,
fmap_base 8192, fmap_max 512, latent 512; 23.1 M parameters) with random weights, so no download is
needed and the numbers are those of an imported karras2018iclr-celebahq-1024x1024.pkl. Each
(precision, batch) runs in a fresh worker process through progan.sampling.iter_images, the path
`progan generate` takes (latents -> G_ema under the precision's autocast -> uint8 on the CPU): one
warm-up call at batch 1, then `--repeats` timed calls. img/s = batch / median call time. Peak memory
is the worker's high-water RSS (VmHWM) on the CPU, with the RSS after building the network beside
it, and torch.cuda.max_memory_allocated on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def vm_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def worker(
    precision: str,
    batch: int,
    device_name: str,
    repeats: int,
    warmup: bool = True,
    channels_last: bool = False,
) -> dict:
    import torch

    from progan.device import configure_device
    from progan.networks import Generator, NetworkConfig, count_parameters
    from progan.sampling import iter_images, latents_for_seeds

    device = torch.device(device_name)
    configure_device(device)
    G = Generator(NetworkConfig()).to(device).eval().requires_grad_(False)
    if channels_last:  # `generate` runs NCHW; on CPUs without AVX-512 bf16 this layout matters (README)
        G = G.to(memory_format=torch.channels_last)
    built_kib = vm_kib("VmRSS")
    if warmup:
        list(iter_images(G, latents_for_seeds([0], 512), batch=1, device=device, precision=precision))
    z = latents_for_seeds(list(range(batch)), 512)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        images = list(iter_images(G, z, batch=batch, device=device, precision=precision))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    assert images[0].shape == (batch, 3, 1024, 1024)
    out = {
        "precision": precision,
        "batch": batch,
        "layout": "channels_last" if channels_last else "NCHW",
        "device": str(device),
        "params": count_parameters(G),
        "call_s": times,
        "img_per_s": batch / statistics.median(times),
        "threads": torch.get_num_threads(),
        "built_rss_mib": built_kib / 1024,
        "peak_rss_mib": vm_kib("VmHWM") / 1024,
    }
    if device.type == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def print_table(results: list[dict], device: str) -> None:
    import torch

    print(f"\ntorch {torch.__version__}, device {device}, {results[0]['threads']} threads, "
          f"G_paper 1024x1024, {results[0]['params'] / 1e6:.2f} M parameters\n")  # fmt: skip
    gpu = device.startswith("cuda")
    head = "| precision | layout | batch | img/s | s/img | calls (s) | RSS after build MiB | peak RSS MiB |"
    print(head + (" peak CUDA MiB |" if gpu else ""))
    print("| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |" + (" ---: |" if gpu else ""))
    for r in results:
        calls = ", ".join(f"{t:.2f}" for t in r["call_s"])
        row = (f"| {r['precision']} | {r.get('layout', 'NCHW')} | {r['batch']} | {r['img_per_s']:.3f} | "
               f"{1 / r['img_per_s']:.2f} | {calls} | "
               f"{r['built_rss_mib']:.0f} | {r['peak_rss_mib']:.0f} |")  # fmt: skip
        print(row + (f" {r['peak_cuda_mib']:.0f} |" if gpu else ""))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per measurement (default: 2)")
    parser.add_argument(
        "--no-warmup", dest="warmup", action="store_false", help="skip the batch-1 warm-up call"
    )
    parser.add_argument(
        "--json", help="also write the results here (JSON lines, one per measurement, as they end)"
    )
    parser.add_argument(
        "--worker", nargs=3, metavar=("PRECISION", "BATCH", "REPEATS"), help=argparse.SUPPRESS
    )
    parser.add_argument("--channels-last", action="store_true", help="G's weights channels-last")
    parser.add_argument(
        "--table", metavar="JSONL", help="print the table of a --json file (several runs) and exit"
    )
    args = parser.parse_args()
    if args.table:
        with open(args.table) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        print_table(rows, rows[0]["device"])
        return
    if args.worker:
        precision, batch, repeats = args.worker
        print(
            json.dumps(
                worker(precision, int(batch), args.device, int(repeats), args.warmup, args.channels_last)
            )
        )
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    results = []
    for precision in args.precisions.split(","):
        for batch in [int(b) for b in args.batches.split(",")]:
            cmd = [sys.executable, __file__, "--device", args.device, "--worker", precision, str(batch),
                   str(args.repeats)] + ([] if args.warmup else ["--no-warmup"]) \
                + (["--channels-last"] if args.channels_last else [])  # fmt: skip
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(r)
            print(json.dumps(r), file=sys.stderr)
            if args.json:  # written as each measurement ends: a long run that is stopped keeps its rows
                with open(args.json, "a") as f:
                    f.write(json.dumps(r) + "\n")
    print_table(results, args.device)


if __name__ == "__main__":
    main()

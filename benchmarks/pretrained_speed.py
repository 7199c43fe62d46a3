"""Speed and memory of 1024x1024 generation with a network of the official size (issues 10 and 28).

    python benchmarks/pretrained_speed.py                           # `progan generate` against the ideal
    python benchmarks/pretrained_speed.py --levers                  # each speed lever, side by side
    python benchmarks/pretrained_speed.py --iter-images             # issue 10's table
    python benchmarks/pretrained_speed.py --iter-images --device cuda --repeats 20 --batches 1,8,32

Default (issue 28, point 1): an official-format pickle of the CelebA-HQ G_paper (random weights,
benchmarks/official_size.py) is imported, then in each of `--rounds` rounds, one after another in
this run so that the machine's load hits both alike: (a) the ideal, every 3x3 conv of G_paper
timed alone at batch 4 (median of 3 calls), each at its best precision and layout (fp32 / bf16 x
NCHW / channels-last), summed, per image; (b) `progan generate SNAPSHOT --seeds ... --batch 4
--outdir DIR` with every other option at its default, in a fresh process, for 4 and for 4 +
`--images` seeds: the
difference of the two wall times per extra image is the time per image with start-up (imports,
loading, the first batch) excluded. Printed: s per image of both, their ratio (ideal / generate;
the issue asks for 0.7 or more) and generate's peak RSS (the larger run's, from wait4; at most
1.5 GiB asked). The median over rounds is the headline.

`--levers` times the steps of that path one against another in one process, alternating.

`--iter-images`: the table of issue 10. The generator is the official CelebA-HQ G_paper's
architecture (NetworkConfig() defaults: 1024x1024, fmap_base 8192, fmap_max 512, latent 512;
23.1 M parameters) with random weights, so no download is needed and the numbers are those of an
imported karras2018iclr-celebahq-1024x1024.pkl. Each (precision, batch) runs in a fresh worker
process through progan.sampling.iter_images, the path `progan generate` takes (latents -> G_ema's
sampling copy under the precision -> uint8): one warm-up call at batch 1, then `--repeats` timed
calls. img/s = batch / median call time. Peak memory is the worker's high-water RSS (VmHWM) on the
CPU, with the RSS after building the network beside it, and torch.cuda.max_memory_allocated on a
GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH = 4


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


def g_paper_convs() -> list[tuple[str, int, int, int]]:
    """(name, in channels, out channels, resolution) of every 3x3 conv of the official G_paper,
    each at the resolution it computes (a block's first conv after the 2x upsampling)."""
    from progan.networks import NetworkConfig, log2

    cfg = NetworkConfig()
    convs = [("4x4/conv", cfg.nf(1), cfg.nf(1), 4)]
    for lg in range(3, log2(cfg.resolution) + 1):
        res = 2**lg
        convs.append((f"{res}/conv0", cfg.nf(lg - 2), cfg.nf(lg - 1), res))
        convs.append((f"{res}/conv1", cfg.nf(lg - 1), cfg.nf(lg - 1), res))
    return convs


def isolated_conv_seconds(batch: int = BATCH, repeats: int = 3) -> tuple[float, dict]:
    """(sum over G_paper's 3x3 convs of the best time alone, per image; {conv: (best, variant)}).
    Each conv: random input and weights, one warm-up call, the median of `repeats` timed calls in
    each of fp32 / bf16 x NCHW / channels-last (a median, not the least: `generate` is timed over
    a sustained run, and a least time on a shared machine is a lucky moment); the fastest variant
    counts."""
    import torch
    import torch.nn.functional as F

    best = {}
    with torch.inference_mode():
        for name, cin, cout, res in g_paper_convs():
            times = {}
            for dtype in (torch.float32, torch.bfloat16):
                for layout in (torch.contiguous_format, torch.channels_last):
                    x = torch.randn(batch, cin, res, res, dtype=dtype).to(memory_format=layout)
                    w = torch.randn(cout, cin, 3, 3, dtype=dtype).to(memory_format=layout)
                    b = torch.zeros(cout, dtype=dtype)
                    F.conv2d(x, w, b, padding=1)
                    t = []
                    for _ in range(repeats):
                        start = time.perf_counter()
                        F.conv2d(x, w, b, padding=1)
                        t.append(time.perf_counter() - start)
                    precision = "bf16" if dtype == torch.bfloat16 else "fp32"
                    key = f"{precision}/{'CL' if layout == torch.channels_last else 'NCHW'}"
                    times[key] = statistics.median(t)
            variant = min(times, key=times.get)
            best[name] = (times[variant], variant)
    return sum(t for t, _ in best.values()) / batch, best


def timed_generate(snapshot: Path, count: int, outdir: Path, extra: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in GiB) of `progan generate` for seeds 0..count-1 at batch 4."""
    cmd = [sys.executable, "-m", "progan", "generate", str(snapshot), "--seeds", f"0-{count - 1}",
           "--batch", str(BATCH), "--outdir", str(outdir), *extra]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return elapsed, usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def _env() -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _run_json(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *args], env=_env(), capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def generate_against_ideal(rounds: int, images: int, extra: list[str], json_path: str | None) -> None:
    # This process imports no torch and allocates nothing large: a child's ru_maxrss starts from
    # its parent's RSS at the fork, so the snapshot and the isolated convs run in children too.
    work = Path(tempfile.mkdtemp(prefix="pretrained_speed-"))
    info = _run_json("--make-snapshot", str(work))
    snapshot = Path(info["snapshot"])
    print(f"torch {info['torch']}, {info['threads']} threads, load average {os.getloadavg()[0]:.1f}; "
          f"G_paper 1024x1024 imported from an official-format pickle; "
          f"`progan generate --batch {BATCH}` {' '.join(extra) or '(default options)'}\n")  # fmt: skip
    print("| round | ideal s/img (isolated convs) | generate s/img | ratio ideal/generate | peak RSS GiB |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    rows = []
    for r in range(rounds):
        ideal = _run_json("--ideal-worker")
        short, _ = timed_generate(snapshot, BATCH, work / "short", extra)
        long, rss = timed_generate(snapshot, BATCH + images, work / "long", extra)
        per_image = (long - short) / images
        best = ideal["per_image_s"]
        rows.append({"ideal_s": best, "generate_s": per_image, "ratio": best / per_image, "peak_rss_gib": rss,
                     "convs": ideal["convs"], "load": os.getloadavg()[0]})  # fmt: skip
        row = rows[-1]
        print(
            f"| {r + 1} | {row['ideal_s']:.3f} | {per_image:.3f} | {row['ratio']:.2f} | {rss:.2f} |",
            flush=True,
        )
    keys = ("ideal_s", "generate_s", "ratio", "peak_rss_gib")
    med = {k: statistics.median(row[k] for row in rows) for k in keys}
    print(f"| median | {med['ideal_s']:.3f} | {med['generate_s']:.3f} | {med['ratio']:.2f} | "
          f"{med['peak_rss_gib']:.2f} |")  # fmt: skip
    print(
        f"\ngenerate runs at {med['ratio']:.2f} of the isolated-conv ideal (0.7 asked); peak RSS "
        f"{med['peak_rss_gib']:.2f} GiB (1.5 asked); load average now {os.getloadavg()[0]:.1f}"
    )
    convs = rows[-1]["convs"]
    print("fastest variant per conv (last round): " + ", ".join(f"{k} {v[1]}" for k, v in convs.items()))
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"rounds": rows, "median": med}, f, indent=1)


def levers(rounds: int) -> None:
    """Each lever of the sampling path timed against what it replaced, per 1024x1024 image at batch
    4, in one process, the variants of a round one after another (median over rounds)."""
    import copy
    import io
    import zlib
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import torch
    import torch.nn.functional as F
    from isal import isal_zlib
    from PIL import Image

    from progan import images as images_module
    from progan import networks
    from progan.device import autocast
    from progan.images import encode_png, to_uint8
    from progan.layers import _four_taps
    from progan.networks import Generator, NetworkConfig, log2
    from progan.sampling import latents_for_seeds, sampling_network
    from progan.studio.app import thumbnail

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    G = Generator(NetworkConfig()).eval().requires_grad_(False)
    z = latents_for_seeds(range(BATCH), 512)

    def run(net, precision):
        def go():
            with autocast(cpu, precision):
                return to_uint8(net(z))

        return go

    def png(level):
        a = images[0].numpy().transpose(1, 2, 0)
        return lambda: Image.fromarray(a).save(io.BytesIO(), format="PNG", compress_level=level)

    def write_batch(imgs, pillow=False):
        for im in imgs:
            a = np.ascontiguousarray(im.numpy().transpose(1, 2, 0))
            if pillow:
                Image.fromarray(a).save(io.BytesIO(), format="PNG", compress_level=1)
            else:
                encode_png(a)

    def bf16_pass(x, eps=1e-8):
        """pixel_norm_ as it was before the pieces: the squares, the product and the scaling as
        one bf16 pass over the whole activation."""
        rows = x.movedim(1, -1).reshape(-1, x.shape[1])
        mean = torch.full((x.shape[1], 1), 1.0 / x.shape[1], dtype=x.dtype)
        rows.mul_(torch.mm(rows.square(), mean).float().add_(eps).rsqrt_().to(x.dtype))
        return x

    def one_pass_norm(fn):
        def go():
            saved, networks.pixel_norm_ = networks.pixel_norm_, bf16_pass
            try:
                return fn()
            finally:
                networks.pixel_norm_ = saved

        return go

    def batches(overlap, n=3, pillow=False):
        S = sampling_network(G, cpu, "bf16")

        def go():
            with ThreadPoolExecutor(1) as writer:
                pending = None
                for _ in range(n):
                    imgs = run(S, "bf16")()
                    if overlap:
                        if pending is not None:
                            pending.result()
                        pending = writer.submit(write_batch, imgs, pillow)
                    else:
                        write_batch(imgs, pillow)
                if pending is not None:
                    pending.result()

        return go

    def unfrozen(net):
        """The sampling copy as it was before pixel_norm_, the kernels made once and the fused
        activations (issue 28)."""
        old = copy.deepcopy(net)
        for m in old.modules():
            if hasattr(m, "norm_in_place"):
                m.norm_in_place = False
            if hasattr(m, "fuse_activation"):
                m.frozen_up_kernel, m.fuse_activation = None, False
        return old

    def one_at_a_time(net):
        def go():
            with autocast(cpu, "bf16"):
                for i in range(BATCH):
                    to_uint8(net(z[i : i + 1]))

        return go

    def upsampling(fused):
        cfg, convs = NetworkConfig(), []
        for lg in range(3, log2(cfg.resolution) + 1):
            cin, cout, res = cfg.nf(lg - 2), cfg.nf(lg - 1), 2**lg
            x = torch.randn(BATCH, cin, res // 2, res // 2, dtype=torch.bfloat16).to(
                memory_format=torch.channels_last
            )
            w = torch.randn(cout, cin, 3, 3, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
            k = _four_taps(w, mirrored=True).transpose(0, 1).contiguous(memory_format=torch.channels_last)
            convs.append((x, w, k))

        def go():
            for x, w, k in convs:
                if fused:
                    F.conv_transpose2d(x, k, None, stride=2, padding=1)
                else:
                    F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), w, None, padding=1)

        return go

    def uint8_before(x):
        return ((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)

    def png_with(deflate):
        a = np.ascontiguousarray(images[0].numpy().transpose(1, 2, 0))

        def go():
            saved, images_module._deflate = images_module._deflate, deflate
            try:
                return encode_png(a)
            finally:
                images_module._deflate = saved

        return go

    def thumbnail_numpy(image, size=128):
        """The studio's thumbnail as 8fcf1af had it: in NumPy, on one core (same values)."""
        factor = image.shape[-1] // size
        boxes = image.numpy().transpose(1, 2, 0).reshape(size, factor, size, factor, image.shape[0])
        return torch.from_numpy(np.round(boxes.mean(axis=(1, 3))).astype(np.uint8).transpose(2, 0, 1))

    with torch.inference_mode():
        images = run(G, "fp32")()
        with autocast(cpu, "bf16"):  # the sampling copy takes fp32 latents only under autocast
            raw = sampling_network(G, cpu, "bf16")(z)  # G's bf16 output, before uint8
        cases = {
            "G fp32, autocast on the loaded NCHW weights (before)": (run(G, "fp32"), BATCH),
            "G fp32, sampling copy channels-last": (run(sampling_network(G, cpu, "fp32"), "fp32"), BATCH),
            "G bf16, autocast on the loaded NCHW fp32 weights (before)": (run(G, "bf16"), BATCH),
            "G bf16, sampling copy channels-last, bf16 weights": (
                run(sampling_network(G, cpu, "bf16"), "bf16"),
                BATCH,
            ),
            "G bf16 sampling copy, pixel norm apart, kernels every call, activations apart (before)": (
                run(unfrozen(sampling_network(G, cpu, "bf16")), "bf16"),
                BATCH,
            ),
            "G bf16 sampling copy, pixel_norm_ in place, kernels made once, activations fused": (
                run(sampling_network(G, cpu, "bf16"), "bf16"),
                BATCH,
            ),
            "G bf16 sampling copy, pixel_norm_ as one bf16 pass, not in fp32 pieces (before)": (
                one_pass_norm(run(sampling_network(G, cpu, "bf16"), "bf16")),
                BATCH,
            ),
            "G bf16 sampling copy, one image a call (sampling_block 1)": (
                one_at_a_time(sampling_network(G, cpu, "bf16")),
                BATCH,
            ),
            "G's 2x upsampling + first conv, bf16 CL: upsample then 3x3 conv": (upsampling(False), BATCH),
            "G's 2x upsampling + first conv, bf16 CL: one transposed conv (fused)": (upsampling(True), BATCH),
            "PNG encode, zlib level 6 (Pillow's default)": (png(6), 1),
            "PNG encode, zlib level 1": (png(1), 1),
            "PNG encode, progan's writer (Up filter, zlib level 1; images.encode_png)": (
                lambda: encode_png(np.ascontiguousarray(images[0].numpy().transpose(1, 2, 0))),
                1,
            ),
            "PNG encode, progan's writer deflating with the standard library's zlib (before)": (
                png_with(zlib),
                1,
            ),
            "PNG encode, progan's writer deflating with ISA-L (isal, level 1)": (png_with(isal_zlib), 1),
            "G's bf16 output -> uint8, out of place (before)": (lambda: uint8_before(raw), BATCH),
            "G's bf16 output -> uint8, in place on one fp32 copy (images.to_uint8)": (
                lambda: to_uint8(raw),
                BATCH,
            ),
            "studio thumbnail 1024 -> 128, NumPy on one core (8fcf1af, before)": (
                lambda: thumbnail_numpy(images[0]),
                1,
            ),
            "studio thumbnail 1024 -> 128, torch avg_pool2d on the compute thread (studio.app.thumbnail)": (
                lambda: thumbnail(images[0], 128),
                1,
            ),
            "3 batches bf16 + Pillow PNG level 1, written after each batch (before)": (
                batches(False, pillow=True),
                3 * BATCH,
            ),
            "3 batches bf16 + encode_png, written after each batch": (batches(False), 3 * BATCH),
            "3 batches bf16 + encode_png, written in a thread during the next": (batches(True), 3 * BATCH),
        }
        for fn, _ in cases.values():
            fn()  # warm-up
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(rounds):
            for name, (fn, n) in cases.items():
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) / n)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f}, {rounds} rounds, G_paper 1024x1024, batch {BATCH}\n")  # fmt: skip
    print("| lever | s per image (median) | each round |")
    print("| --- | ---: | --- |")
    for name, t in times.items():
        print(f"| {name} | {statistics.median(t):.3f} | {', '.join(f'{x:.3f}' for x in t)} |")


def allocator_worker(kept: bool) -> dict:
    """One fresh process: the bf16 sampling copy of G_paper, one 1024x1024 image a call (as
    `generate` runs it), 4 warm images timed, with glibc's default allocator or with
    `allocator.keep_freed_memory` (freed tensor memory reused instead of unmapped and paged in again).
    s per image, system seconds per image and page faults per image."""
    import resource

    import torch

    from progan.allocator import keep_freed_memory
    from progan.device import autocast
    from progan.images import to_uint8
    from progan.networks import Generator, NetworkConfig
    from progan.sampling import latents_for_seeds, sampling_network

    if kept:
        keep_freed_memory()
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    S = sampling_network(Generator(NetworkConfig()).eval().requires_grad_(False), cpu, "bf16")
    z = latents_for_seeds(range(BATCH), 512)
    with torch.inference_mode(), autocast(cpu, "bf16"):
        to_uint8(S(z[:1]))  # warm-up
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for i in range(BATCH):
            to_uint8(S(z[i : i + 1]))
        wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return {
        "per_image_s": wall / BATCH,
        "sys_s": (after.ru_stime - before.ru_stime) / BATCH,
        "faults": (after.ru_minflt - before.ru_minflt) / BATCH,
        "peak_rss_gib": vm_kib("VmHWM") / 2**20,
    }  # fmt: skip (ru_maxrss survives exec: the parent's)


def allocator_rows(rounds: int) -> None:
    """The allocator lever: each round one fresh process of each kind, one after the other."""
    rows: dict[str, list[dict]] = {"glibc default (before)": [], "keep_freed_memory (progan's CLI)": []}
    for _ in range(rounds):
        for name, flag in zip(rows, ("default", "kept"), strict=True):
            rows[name].append(_run_json("--allocator-worker", flag))
    print("\n| G bf16 sampling copy, one 1024x1024 image a call: allocator | s per image (median) | "
          "system s per image | page faults per image | peak RSS GiB |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in rows.items():
        med = {k: statistics.median(x[k] for x in r) for k in r[0]}
        each = ", ".join(f"{x['per_image_s']:.3f}" for x in r)
        print(f"| {name} | {med['per_image_s']:.3f} ({each}) | "
              f"{med['sys_s']:.3f} | {med['faults']:.0f} | {med['peak_rss_gib']:.2f} |")  # fmt: skip


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
    parser.add_argument(
        "--iter-images", action="store_true", help="issue 10's table (iter_images per precision)"
    )
    parser.add_argument("--levers", action="store_true", help="time each speed lever side by side")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of ideal + generate (default 3)")
    parser.add_argument("--images", type=int, default=16, help="extra images of the longer generate run")
    parser.add_argument(
        "--generate-args", default="", help="more options for progan generate, e.g. '--precision fp32'"
    )
    parser.add_argument("--make-snapshot", help=argparse.SUPPRESS)
    parser.add_argument("--ideal-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--allocator-worker", choices=("default", "kept"), help=argparse.SUPPRESS)
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
    if args.make_snapshot:
        import torch
        from official_size import official_size_snapshot

        path = official_size_snapshot(args.make_snapshot)
        print(
            json.dumps(
                {"snapshot": str(path), "torch": torch.__version__, "threads": torch.get_num_threads()}
            )
        )
        return
    if args.allocator_worker:
        print(json.dumps(allocator_worker(args.allocator_worker == "kept")))
        return
    if args.ideal_worker:
        # The machine's best: the same allocator as `progan` (no page faults for fresh outputs).
        from progan.allocator import keep_freed_memory

        keep_freed_memory()
        per_image, convs = isolated_conv_seconds()
        print(json.dumps({"per_image_s": per_image, "convs": convs}))
        return
    if args.levers:
        levers(args.rounds)
        allocator_rows(args.rounds)
        return
    if not args.iter_images:
        generate_against_ideal(args.rounds, args.images, args.generate_args.split(), args.json)
        return
    env = _env()
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

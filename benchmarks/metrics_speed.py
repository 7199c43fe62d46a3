"""Time and peak memory of the paper's SWD on N images per side at resolution R, streamed.

    python benchmarks/metrics_speed.py --num 16384 --resolution 128
    python benchmarks/metrics_speed.py --num 16384 --resolution 1024

Both image sets are synthesized a batch at a time (smooth random images), as a generator or a
dataset store would deliver them, so the images are never all in memory; descriptors go to a
temporary directory (`DescriptorSet(spill_dir=...)`) and the distance reads them back one level
and one block of rows at a time. Prints one JSON line: seconds per phase and peak RSS (the
process's high-water mark, `ru_maxrss`), plus what holding the images or descriptors in memory
would have needed.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time

import torch

from progan.metrics import swd
from progan.metrics.evaluate import default_batch_size


def batches(num: int, resolution: int, channels: int, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    done = 0
    while done < num:
        n = min(batch, num - done)
        base = torch.rand(n, channels, 8, 8, generator=g)
        x = torch.nn.functional.interpolate(base, size=(resolution, resolution), mode="bilinear")
        x = x + 0.03 * torch.randn(x.shape, generator=g)
        yield (x.clamp(0, 1) * 255).round().to(torch.uint8)
        done += n


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num", type=int, default=16384)
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = args.batch or default_batch_size(args.resolution)
    levels = swd.swd_resolutions(args.resolution)
    desc_bytes = args.num * swd.NHOODS_PER_IMAGE * args.channels * 49 * 4 * len(levels)
    rss0 = peak_rss_mib()
    with tempfile.TemporaryDirectory(prefix="swd-bench-") as tmp:
        t0 = time.perf_counter()
        r, c, dev = args.resolution, args.channels, args.device
        a = swd.collect(batches(args.num, r, c, batch, 1), r, c, seed=1, spill_dir=f"{tmp}/a", device=dev)
        b = swd.collect(batches(args.num, r, c, batch, 2), r, c, seed=2, spill_dir=f"{tmp}/b", device=dev)
        t2 = time.perf_counter()
        rss_desc = peak_rss_mib()
        result = swd.sliced_wasserstein_levels(a, b, device=args.device)
        t3 = time.perf_counter()
    print(
        json.dumps(
            {
                "num": args.num,
                "resolution": args.resolution,
                "levels": levels,
                "batch": batch,
                "threads": torch.get_num_threads(),
                "seconds_descriptors_per_set": round((t2 - t0) / 2, 1),
                "seconds_distance": round(t3 - t2, 1),
                "seconds_total": round(t3 - t0, 1),
                "peak_rss_mib_after_descriptors": round(rss_desc, 0),
                "peak_rss_mib": round(peak_rss_mib(), 0),
                "baseline_rss_mib": round(rss0, 0),
                "images_bytes_if_held_mib": round(args.num * args.channels * args.resolution**2 / 2**20, 0),
                "descriptor_bytes_per_set_mib": round(desc_bytes / 2**20, 0),
                "swd_avg": round(result["swd_avg"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()

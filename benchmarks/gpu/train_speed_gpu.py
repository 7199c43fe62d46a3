"""img/s of progan's own training step on CUDA at stable stages of the paper network (issue 26's
table): 256x256 at minibatch 32 and 1024x1024 at minibatch 8, fp32 (TF32) and bf16. One JSON line
per measurement. Usage (from the project root): python3 benchmarks/gpu/train_speed_gpu.py [--seconds 3]"""

import argparse
import json
import tempfile
import time

import numpy as np
import torch

from progan.data.store import write_store
from progan.runspec import TrainOptions, resolve_run
from progan.schedule import Stage
from progan.training import Trainer

parser = argparse.ArgumentParser()
parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per measurement")
args = parser.parse_args()
work = tempfile.mkdtemp()
rng = np.random.default_rng(0)
for res, batch in ((256, 32), (1024, 8)):
    store = f"{work}/s{res}"
    write_store(store, rng.integers(0, 255, (64, 3, res, res), dtype=np.uint8))
    for precision in ("fp32", "bf16"):
        row = dict(res=res, precision=precision, batch=batch)
        try:
            opts = TrainOptions(data=store, outdir=f"{work}/r", precision=precision, device="cuda",
                                batch=batch, progress=False, snapshot_ticks=0, image_ticks=0,
                                tick_kimg=1e9)  # fmt: skip
            t = Trainer(resolve_run(opts))
            stage = Stage(res, 1.0, batch, 0.001)
            t._set_stage(stage)
            stats: dict = {}
            for _ in range(3):
                t.step(stage, stats)
            torch.cuda.synchronize()
            start, steps = time.perf_counter(), 0
            while time.perf_counter() - start < args.seconds:
                t.step(stage, stats)
                steps += 1
            torch.cuda.synchronize()
            row.update(img_per_s=round(steps * batch / (time.perf_counter() - start), 1),
                       peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 1))  # fmt: skip
        except Exception as e:  # noqa: BLE001 - one failed measurement must not end the table
            row["error"] = f"{type(e).__name__}: {e}"[:200]
        print(json.dumps(row), flush=True)
        t = None
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

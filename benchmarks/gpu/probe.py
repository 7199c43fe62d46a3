"""`progan` with a line per tick that shows what a log does not: the device, the loss scaler,
the layout, CUBLAS_WORKSPACE_CONFIG; PROGAN_GPU_MEMORY_FRACTION caps the GPU memory (an OOM test)."""

import os
import sys

import torch

import progan.training as tr

if fraction := os.environ.get("PROGAN_GPU_MEMORY_FRACTION"):
    torch.cuda.set_per_process_memory_fraction(float(fraction))
original = tr.Trainer._measure_tick


def probed(self, stats, *args):
    record, stop = original(self, stats, *args)
    scaler = "" if self.scaler is None else f" scale {self.scaler.get_scale()}"
    layout = self.D.conv4.weight.is_contiguous(memory_format=torch.channels_last)
    print(f"PROBE rank {self.ctx.rank} tick {self.tick} res {self.resolution} dev {self.device} "
          f"skipped {int(self.skipped)}{scaler} channels-last {layout} "
          f"CUBLAS {os.environ.get('CUBLAS_WORKSPACE_CONFIG')}", flush=True)  # fmt: skip
    return record, stop


tr.Trainer._measure_tick = probed
if __name__ == "__main__":
    from progan.cli import main

    sys.exit(main(sys.argv[1:]))

"""fp16 on CUDA: a run stopped halfway and resumed equals the run uninterrupted, bit for bit
(weights, skipped updates, loss scale). Usage: fp16_resume.py STORE WORKDIR"""

import sys

import torch

from progan.runspec import TrainOptions, resolve_run
from progan.training import Trainer

store, work = sys.argv[1], sys.argv[2]


def trainer(name: str, kimg: float) -> Trainer:
    opts = TrainOptions(data=store, outdir=f"{work}/{name}", precision="fp16", device="cuda", batch=8,
                        training_kimg=0.08, transition_kimg=0.08, total_kimg=kimg, tick_kimg=0.04,
                        snapshot_ticks=1, image_ticks=0, progress=False, deterministic=True,
                        latent_size=16, fmap_base=64, fmap_max=16)  # fmt: skip
    return Trainer(resolve_run(opts))


full = trainer("full", 0.24)
full.run()
half = trainer("half", 0.12)
run_dir = half.run()
resumed = Trainer.from_snapshot(run_dir, {"total_kimg": 0.24})
resumed.run()
a_state = {**full.G.state_dict(), **{f"D.{k}": v for k, v in full.D.state_dict().items()}}
b_state = {**resumed.G.state_dict(), **{f"D.{k}": v for k, v in resumed.D.state_dict().items()}}
same = a_state.keys() == b_state.keys() and all(torch.equal(a_state[k], b_state[k]) for k in a_state)
print(f"skipped {int(full.skipped)} vs {int(resumed.skipped)}, scale {full.scaler.state_dict()} vs "
      f"{resumed.scaler.state_dict()}")  # fmt: skip
print(f"bit-identical: {same and full.scaler.state_dict() == resumed.scaler.state_dict()}")

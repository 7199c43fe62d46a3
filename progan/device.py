"""Where and how tensors compute: device choice, mixed precision, GPU defaults, torch.compile."""

from __future__ import annotations

import contextlib
import sys

import torch

from progan.errors import UserError

# The one definition of the training and sampling precisions: argparse `choices`, autocast's
# dtype and the device rule below all read it.
PRECISIONS = ("fp32", "bf16", "fp16")
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# fp16 autocast and loss scaling run on the CPU too, but CPUs have no fast fp16 convolutions, so
# users are sent to bf16 there; the tests widen this to exercise the fp16 path without a GPU.
FP16_DEVICE_TYPES = ("cuda",)


def check_precision(precision: str, device_type: str) -> None:
    """UserError unless `precision` is known and runs on devices of `device_type`."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision '{precision}'; choose {', '.join(PRECISIONS)}")
    if precision == "fp16" and device_type not in FP16_DEVICE_TYPES:
        raise UserError("--precision fp16 needs a CUDA GPU; use --precision bf16 on the CPU")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for, but no CUDA GPU is available; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise UserError(f"--device {name} is not a device ({e}); use auto, cpu, cuda or cuda:N") from e


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    dtype = PRECISION_DTYPES[precision]
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class CompiledOrEager:
    """torch.compile'd forward that falls back to the eager module (once, with a warning) when
    compilation is unavailable or fails, so that --compile never stops a run."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.compiled = torch.compile(module)
        self.failed = False

    def __call__(self, *args, **kwargs):
        if not self.failed:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - any compiler failure means: run eagerly
                self.failed = True
                print(f"warning: torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                      "continuing without --compile", file=sys.stderr)  # fmt: skip
        return self.module(*args, **kwargs)


def configure_device(device: torch.device) -> None:
    """GPU defaults: TF32 matmuls/convs (the paper's fp32 numbers hold) and cuDNN autotuning."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

"""Where and how tensors compute: device choice, mixed precision, GPU defaults, torch.compile."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable

import torch

from progan.errors import UserError

# The one definition of the training and sampling precisions: argparse `choices`, autocast's
# dtype and the device rule below all read it.
PRECISIONS = ("fp32", "bf16", "fp16")
# What `train`, `demo` and every sampling command accept: `auto` picks one of PRECISIONS by the
# hardware (choose_precision), the same rule for training and sampling.
TRAIN_PRECISIONS = ("auto", *PRECISIONS)
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


# CPU instruction sets (Linux /proc/cpuinfo names) with native bf16 dot products; without them
# PyTorch emulates bf16 convolutions and they run no faster than fp32 (AVX2 CPUs: slower).
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cuda_has_bf16_tensor_cores(device: torch.device) -> bool:
    # bf16 tensor cores arrived with Ampere (compute capability 8.0); older GPUs emulate bf16.
    return torch.cuda.get_device_capability(device)[0] >= 8


def choose_precision(
    device: torch.device, flags: Iterable[str] | None = None, cuda_bf16: bool | None = None
) -> tuple[str, str]:
    """What `--precision auto` trains in on `device`, and why: bf16 where the hardware runs it fast
    (a CPU with AMX or AVX-512 BF16, a CUDA GPU with bf16 tensor cores), fp32 elsewhere.

    `flags` (CPU feature names) and `cuda_bf16` stand in for the hardware's answers (tests)."""
    if device.type == "cuda":
        if cuda_bf16 is None:
            cuda_bf16 = cuda_has_bf16_tensor_cores(device)
        if cuda_bf16:
            return "bf16", "CUDA GPU with bf16 tensor cores (compute capability 8.0 or higher)"
        return "fp32", "CUDA GPU without bf16 tensor cores (compute capability below 8.0)"
    if device.type == "cpu":
        found = [f for f in BF16_CPU_FLAGS if f in set(cpu_flags() if flags is None else flags)]
        if found:
            return "bf16", f"CPU with native bf16 ({', '.join(found)}): bf16 trains about 2x faster than fp32"
        return "fp32", "CPU without AMX or AVX-512 BF16: bf16 would be emulated, no faster than fp32"
    return "fp32", f"{device.type} device: fp32 (bf16 is chosen automatically only on CPUs and CUDA GPUs)"


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """(precision, reason) for a requested precision: `auto` decides by the hardware."""
    if requested == "auto":
        return choose_precision(device)
    return requested, "asked for with --precision"


def sampling_precision(requested: str, device: torch.device | str) -> str:
    """The precision G renders images in, for every sampling path (training grids, generate,
    metrics, video, studio, describe, edit): `auto` is the rule `train --precision auto` uses
    (choose_precision: bf16 on a CPU with AMX or AVX-512 BF16 or a CUDA GPU of compute capability
    8.0 or higher, else fp32), so a run's grids and `progan generate` on the same machine agree.
    A named precision is checked for the device (UserError for fp16 off CUDA)."""
    device = torch.device(device)
    precision = choose_precision(device)[0] if requested == "auto" else requested
    check_precision(precision, device.type)
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    dtype = PRECISION_DTYPES[precision]
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# torch.compile's backend for --compile; the tests use a counting "eager" backend (no compiler).
COMPILE_BACKEND = "inductor"


class CompiledOrEager:
    """torch.compile'd forward that falls back to the eager module (once, with a one-line warning)
    when compilation is unavailable or fails, so that --compile never stops a run.

    Dynamo guards on the stage (`resolution`, `fading`), grad mode and input dtype, and a growing
    run passes through up to 17 phases: compiled once for the whole run, it hit the recompile limit
    (8) at about 16x16 and ran eagerly from there on without a word (issue 26). So the trainer calls
    `new_phase()` when a phase starts, which drops the code compiled for the last one (each phase's
    graphs are compiled once, a handful of entries), and a recompile limit hit anyway is an error
    here that ends in the one-line fallback instead of quiet eager mode. A backward pass compiled
    by AOTAutograd fails inside `loss.backward()`, outside this wrapper; the trainer catches that
    and calls `give_up`."""

    def __init__(self, module: torch.nn.Module, backend=None) -> None:
        self.module = module
        self.compiled = torch.compile(module, backend=backend or COMPILE_BACKEND)
        self.failed = False

    def __call__(self, *args, **kwargs):
        if not self.failed:
            try:
                with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
                    return self.compiled(*args, **kwargs)
            except torch.OutOfMemoryError:
                raise
            except Exception as e:  # noqa: BLE001 - any compiler failure means: run eagerly
                self.give_up(e)
        return self.module(*args, **kwargs)

    def give_up(self, error: BaseException, say: bool = True, what: str | None = None) -> None:
        """Run eagerly from now on, saying why in one line (once): `what` runs eagerly (this
        module's class name unless given; the trainer names G and D for a failed backward)."""
        if self.failed:
            return
        self.failed = True
        if isinstance(error, torch._dynamo.exc.FailOnRecompileLimitHit):
            why = f"it recompiled past Dynamo's limit ({torch._dynamo.config.recompile_limit})"
        else:
            why = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}"
        if say:
            what = what or type(self.module).__name__
            print(
                f"warning: torch.compile failed ({why}); {what} runs without --compile from here",
                file=sys.stderr,
            )

    @staticmethod
    def new_phase() -> None:
        """Forget the graphs of the last phase (every compiled module's: Dynamo's caches are global)."""
        torch._dynamo.reset()


def setup_device(name: str, local_rank: int | None = None, deterministic: bool = False) -> torch.device:
    """The device a training process computes on (a rank's own GPU under --gpus or torchrun), made
    the current one, with the GPU defaults (configure_device) and, for --deterministic, what
    cuBLAS and cuDNN need to repeat their results."""
    device = pick_device(name)
    if device.type == "cuda":
        if local_rank is not None:
            device = torch.device("cuda", local_rank)
        if device.index is not None:  # `--device cuda:1` in one process too (it stayed on cuda:0)
            torch.cuda.set_device(device)
    configure_device(device)
    if deterministic:
        # cuBLAS is deterministic only with a fixed workspace (PyTorch's reproducibility notes;
        # use_deterministic_algorithms raises at the first matmul on CUDA without it); it is read
        # when cuBLAS starts, i.e. before the first GPU matmul, which comes after this.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    return device


def configure_device(device: torch.device) -> None:
    """GPU defaults: TF32 matmuls/convs (the paper's fp32 numbers hold) and cuDNN autotuning."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

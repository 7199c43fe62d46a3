import json
import os

import pytest
import torch
from helpers import tiny_options, tiny_spec

from progan import device
from progan.device import choose_precision, resolve_precision
from progan.training import Trainer

CPU = torch.device("cpu")
AVX2_ONLY = "fpu sse sse2 avx avx2 fma f16c".split()  # AMD EPYC without AVX-512 (this CI machine's kind)


def test_auto_precision_for_given_cpu_flags():
    assert choose_precision(CPU, AVX2_ONLY)[0] == "fp32"
    assert choose_precision(CPU, [*AVX2_ONLY, "avx512f", "avx512bw"])[0] == "fp32"  # AVX-512, no bf16
    precision, reason = choose_precision(CPU, [*AVX2_ONLY, "avx512f", "avx512_bf16"])
    assert precision == "bf16" and "avx512_bf16" in reason
    assert choose_precision(CPU, [*AVX2_ONLY, "amx_tile", "amx_bf16"])[0] == "bf16"
    assert choose_precision(CPU, [])[0] == "fp32"  # no /proc/cpuinfo (macOS)


def test_auto_precision_for_cuda_and_others():
    assert choose_precision(torch.device("cuda"), cuda_bf16=True)[0] == "bf16"
    assert choose_precision(torch.device("cuda"), cuda_bf16=False)[0] == "fp32"
    assert choose_precision(torch.device("mps"))[0] == "fp32"
    assert resolve_precision("bf16", CPU) == ("bf16", "asked for with --precision")


def test_options_json_records_the_choice(tiny_store, tmp_path, monkeypatch):
    monkeypatch.setattr("progan.device.cpu_flags", lambda: {"avx2", "avx512_bf16"})
    t = Trainer(tiny_spec(tiny_store, tmp_path, device="cpu", precision="auto"))
    assert t.precision == "bf16"
    options = json.loads((t.run_dir / "options.json").read_text())
    assert options["precision"] == "auto"
    assert options["precision_chosen"]["precision"] == "bf16"
    assert "avx512_bf16" in options["precision_chosen"]["reason"]


def _oom_on_rank_1_worker(store_path: str, outdir: str) -> None:
    from types import SimpleNamespace

    real_step, calls = Trainer.step, {"n": 0}

    def step(self, stage, stats):
        calls["n"] += 1
        if self.ctx.rank == 1 and calls["n"] == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        real_step(self, stage, stats)

    Trainer.step = step
    torch.set_num_threads(1)
    Trainer(tiny_spec(SimpleNamespace(path=store_path), outdir, batch=16, device="cpu")).run()


def test_out_of_memory_on_one_rank_stops_every_rank_in_one_line(tiny_store, tmp_path):
    import time

    from progan import distributed
    from progan.errors import UserError

    start = time.monotonic()
    with pytest.raises(UserError) as e:
        distributed.launch(2, _oom_on_rank_1_worker, str(tiny_store.path), str(tmp_path / "runs"))
    message = str(e.value)
    assert "\n" not in message and message.startswith("out of CPU memory on rank 1 at 4x4 with minibatch 16")
    assert "--batch 8" in message
    assert time.monotonic() - start < 60


@pytest.fixture
def one_fake_gpu(monkeypatch):
    """torch.cuda as a machine with one CUDA GPU shows it, for what runs before any kernel."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", torch.device(d))))
    monkeypatch.setattr(device, "configure_device", lambda d: calls.append(("configure", d)))
    return calls


def _cli_error(argv, capsys) -> str:
    from progan.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    return err


def test_more_gpus_than_devices_is_one_line(tiny_store, tmp_path, one_fake_gpu, monkeypatch, capsys):
    import torch.multiprocessing as mp

    monkeypatch.setattr(mp, "spawn", lambda *a, **k: pytest.fail("spawned ranks"))
    args = ["train", "--data", str(tiny_store.path), "--outdir", str(tmp_path), "--gpus", "2"]
    err = _cli_error([*args, "--device", "cuda", "--precision", "fp32"], capsys)
    assert "--gpus 2 asked for, but this machine has 1 CUDA GPU(s); pass --gpus 1" in err


def test_cuda_n_is_set_in_one_process_and_deterministic_sets_cublas(one_fake_gpu, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    was = torch.are_deterministic_algorithms_enabled()
    try:
        d = device.setup_device("cuda:1", None, deterministic=True)
        assert d == torch.device("cuda", 1)
        assert one_fake_gpu == [("set_device", d), ("configure", d)]
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.are_deterministic_algorithms_enabled()
        one_fake_gpu.clear()
        assert device.setup_device("cuda", 3) == torch.device("cuda", 3)  # a rank's own GPU
        assert one_fake_gpu[0] == ("set_device", torch.device("cuda", 3))
    finally:
        torch.use_deterministic_algorithms(was)


def test_cpu_clock_is_refused_on_a_gpu(tiny_store, tmp_path, one_fake_gpu):
    from progan.errors import UserError
    from progan.runspec import resolve_run

    opts = tiny_options(tiny_store, tmp_path, minutes=5, clock="cpu", device="cuda", training_kimg=None,
                        transition_kimg=None, total_kimg=None)  # fmt: skip
    with pytest.raises(UserError, match="^--clock cpu counts this process's CPU seconds.*--clock wall"):
        resolve_run(opts)
    resolve_run(tiny_options(tiny_store, tmp_path, minutes=5, clock="cpu", device="cpu", training_kimg=None,
                             transition_kimg=None, total_kimg=None))  # fmt: skip


def test_process_group_timeout_is_explicit_and_long(monkeypatch):
    from datetime import timedelta

    from progan import distributed

    given = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda **kw: given.update(kw))
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    assert distributed.from_environment("cuda").rank == 1
    # NCCL's own default (10 minutes) is shorter than rank 0's metrics at 1024 can take.
    assert given["backend"] == "nccl" and given["timeout"] >= timedelta(minutes=30)


def test_a_snapshot_from_another_device_type_resumes_with_one_warning(tiny_store, tmp_path, capsys):
    # A CUDA generator's state is 16 bytes (seed, offset), a CPU one's 5056: a snapshot written on a
    # GPU gives the CPU generator a state it refuses, and the other way round (issue 26: CPU -> CUDA
    # on an H200). The run reseeds, says so in one line, and goes on.
    from safetensors.torch import load_file, save_file

    run_dir = Trainer(tiny_spec(tiny_store, tmp_path, total_kimg=0.04)).run()
    optim = run_dir / "snapshot-000000.040" / "optim.safetensors"
    tensors = load_file(str(optim))
    tensors["rng.train"] = torch.tensor([7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], dtype=torch.uint8)
    save_file(tensors, str(optim))
    capsys.readouterr()
    resumed = Trainer.from_snapshot(run_dir, {"total_kimg": 0.08})
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "saved its random state on another kind of device; reseeded" in warnings[0]
    resumed.run()
    assert resumed.nimg == 80

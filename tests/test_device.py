import json

import torch
from helpers import tiny_options

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
    t = Trainer(tiny_options(tiny_store, tmp_path, device="cpu", precision="auto"))
    assert t.precision == "bf16"
    options = json.loads((t.run_dir / "options.json").read_text())
    assert options["precision"] == "auto"
    assert options["precision_chosen"]["precision"] == "bf16"
    assert "avx512_bf16" in options["precision_chosen"]["reason"]

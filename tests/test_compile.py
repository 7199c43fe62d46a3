"""--compile stays compiled through a whole growing run, or says in one line why not.

Dynamo's "eager" backend (graphs captured, no code generated) with a counter in front: the tests
see every graph Dynamo compiles and every call that runs a compiled graph, in seconds on a CPU."""

import torch
from helpers import tiny_spec

from progan import device
from progan.training import Trainer


class CountingBackend:
    """The eager backend, counting compiled graphs and calls into them (by the trainer's phase)."""

    def __init__(self) -> None:
        self.compiled = 0
        self.calls = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        self.compiled += 1

        def run(*args):
            self.calls += 1
            return gm.forward(*args)

        return run


def test_compiled_run_stays_compiled_with_bounded_recompiles(tiny_store, tmp_path, monkeypatch, capsys):
    backend = CountingBackend()
    monkeypatch.setattr(device, "COMPILE_BACKEND", backend)
    # 4x4, the 8x8 fade-in, 8x8, the 16x16 fade-in, 16x16: five phases, 60 steps.
    t = Trainer(tiny_spec(tiny_store, tmp_path, compile=True, snapshot_ticks=0, image_ticks=0))
    compiled_by_phase, calls_by_phase, steps = {}, {}, {}
    real_step = Trainer.step

    def step(self, stage, stats):
        before = (backend.compiled, backend.calls)
        real_step(self, stage, stats)
        key = (stage.resolution, stage.fading)
        compiled_by_phase[key] = compiled_by_phase.get(key, 0) + backend.compiled - before[0]
        calls_by_phase[key] = calls_by_phase.get(key, 0) + backend.calls - before[1]
        steps[key] = steps.get(key, 0) + 1

    monkeypatch.setattr(Trainer, "step", step)
    t.run()
    assert not t.G_fwd.failed and not t.D_fwd.failed
    assert "torch.compile" not in capsys.readouterr().err
    assert len(compiled_by_phase) == 5
    # Each phase compiles its few graphs (G with and without grad, D on both batches) once ...
    assert all(0 < n <= 6 for n in compiled_by_phase.values()), compiled_by_phase
    # ... and every step of every phase, the last included, runs them: at least G twice and D
    # twice per step (before: the recompile limit at 16x16, eager from there on without a word).
    assert all(calls_by_phase[k] >= 4 * steps[k] for k in calls_by_phase), calls_by_phase


def test_a_backward_compile_error_falls_back_in_one_line(tiny_store, tmp_path, monkeypatch, capsys):
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    def fails(gm, example_inputs):
        raise RuntimeError("no backward for you")

    backend = aot_autograd(fw_compiler=lambda gm, _: make_boxed_func(gm.forward), bw_compiler=fails)
    monkeypatch.setattr(device, "COMPILE_BACKEND", backend)
    t = Trainer(tiny_spec(tiny_store, tmp_path, compile=True, total_kimg=0.016, snapshot_ticks=0,
                             image_ticks=0))  # fmt: skip
    t.run()
    assert t.G_fwd.failed and t.D_fwd.failed and t.nimg == 16
    lines = [line for line in capsys.readouterr().err.splitlines() if "torch.compile" in line]
    assert (
        len(lines) == 1 and "no backward for you" in lines[0] and "Generator and Discriminator" in lines[0]
    ), lines

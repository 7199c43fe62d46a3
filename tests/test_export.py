"""`progan export --format onnx`: the graph run in onnxruntime against PyTorch, conditional and not."""

import numpy as np
import onnx
import onnxruntime as ort
import torch
from helpers import run_cli, tiny_run

from progan.checkpoint import load_snapshot
from progan.sampling import images_for_seeds, latents_for_seeds


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_unconditional_float_export_matches_pytorch_at_any_batch(tmp_path, capsys):
    tiny_run(tmp_path / "run", resolution=16)
    out = tmp_path / "g.onnx"
    assert run_cli(["export", str(tmp_path / "run"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "image [N, 3, 16, 16] float32" in printed and "largest difference" in printed
    G = load_snapshot(tmp_path / "run").G_ema
    s = session(out)
    assert [i.name for i in s.get_inputs()] == ["latent"] and [o.name for o in s.get_outputs()] == ["image"]
    assert onnx.load(str(out)).opset_import[0].version == 17
    for n in (1, 7):  # the export traced a batch of 2: the batch axis is dynamic
        z = torch.randn(n, 16, generator=torch.Generator().manual_seed(n))
        got = s.run(None, {"latent": z.numpy()})[0]
        with torch.no_grad():
            raw = G(z)
        assert got.shape == (n, 3, 16, 16)
        # Clamped to [-1, 1] as the help says (issue 25: values reached 3.1); inside, G's own values.
        assert raw.abs().max() > 1.5 and np.abs(got).max() <= 1.0
        np.testing.assert_allclose(got, raw.clamp(-1, 1).numpy(), atol=1e-4, rtol=0)


def test_conditional_uint8_export_gives_the_pixels_of_generate(tmp_path):
    tiny_run(tmp_path / "run", resolution=8, label_names=["a", "b", "c"])
    out = tmp_path / "g.onnx"
    assert run_cli(["export", str(tmp_path / "run"), "--out", str(out), "--uint8", "--opset", "13"]) == 0
    s = session(out)
    assert [i.name for i in s.get_inputs()] == ["latent", "labels"]
    assert onnx.load(str(out)).opset_import[0].version == 13
    G = load_snapshot(tmp_path / "run").G_ema
    seeds = list(range(6))
    labels = torch.eye(3)[torch.tensor([2, 0, 1, 1, 0, 2])]
    got = s.run(None, {"latent": latents_for_seeds(seeds, 16).numpy(), "labels": labels.numpy()})[0]
    want = images_for_seeds(G, seeds, labels, precision="fp32").numpy()  # the ONNX graph is fp32
    assert got.dtype == np.uint8 and got.shape == (6, 3, 8, 8)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert (got == want).mean() > 0.99
    # the label input matters: another class gives another picture
    other = s.run(
        None, {"latent": latents_for_seeds(seeds, 16).numpy(), "labels": labels.roll(1, 1).numpy()}
    )[0]
    assert not np.array_equal(got, other)


def conv_count(path) -> int:
    """Convolutions in the graph, the transposed ones (G's fused upsample-and-conv) included."""
    return sum(node.op_type in ("Conv", "ConvTranspose") for node in onnx.load(str(path)).graph.node)


def test_no_fade_branch_in_the_graph_and_fading_snapshots_are_refused(tmp_path, capsys):
    # a 32x32 network whose snapshot is stable at 16x16: conv4 + 2 convs per block (8, 16) + one ToRGB
    tiny_run(tmp_path / "stable", resolution=32, stage_resolution=16)
    assert run_cli(["export", str(tmp_path / "stable"), "--out", str(tmp_path / "s.onnx")]) == 0
    assert conv_count(tmp_path / "s.onnx") == 6
    tiny_run(tmp_path / "fading", resolution=32, stage_resolution=16, alpha=0.25)
    capsys.readouterr()
    assert run_cli(["export", str(tmp_path / "fading"), "--out", str(tmp_path / "f.onnx")]) == 2
    assert "--resolution 8" in capsys.readouterr().err and not (tmp_path / "f.onnx").exists()
    assert (
        run_cli(["export", str(tmp_path / "fading"), "--out", str(tmp_path / "f.onnx"), "--resolution", "8"])
        == 0
    )
    assert conv_count(tmp_path / "f.onnx") == 4
    G = load_snapshot(tmp_path / "fading").G_ema
    G.set_stage(8, 1.0)
    z = torch.randn(3, 16)
    with torch.no_grad():
        want = G(z).clamp(-1, 1).numpy()
    np.testing.assert_allclose(
        session(tmp_path / "f.onnx").run(None, {"latent": z.numpy()})[0], want, atol=1e-4
    )


def test_a_failed_check_writes_nothing_and_exits_1(tmp_path, capsys, monkeypatch):
    import progan.export

    tiny_run(tmp_path / "run", resolution=8)
    monkeypatch.setattr(progan.export, "compare_with_onnxruntime", lambda *a, **k: 0.5)
    assert run_cli(["export", str(tmp_path / "run"), "--out", str(tmp_path / "g.onnx")]) == 1
    assert "0.5" in capsys.readouterr().err
    assert list(tmp_path.glob("*.onnx")) == [] and list(tmp_path.glob(".*")) == []


def test_bad_export_requests_are_one_line_errors(tmp_path, capsys):
    tiny_run(tmp_path / "run", resolution=8)
    for args, needle in [
        (["--out", str(tmp_path / "g.pt")], ".onnx"),
        (["--out", str(tmp_path / "g.onnx"), "--opset", "9"], "--opset"),
        (["--out", str(tmp_path / "g.onnx"), "--resolution", "16"], "untrained"),
        (["--out", str(tmp_path / "no" / "g.onnx")], "does not exist"),
    ]:
        assert run_cli(["export", str(tmp_path / "run"), *args]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err

"""The Python API (progan.load -> Model): the same pictures as the commands, and the README's example."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli, tiny_snapshot
from PIL import Image

import progan

README = Path(__file__).resolve().parents[1] / "README.md"


def read_pngs(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(f)) for f in sorted(folder.iterdir())])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_same_seed_gives_the_same_image_through_the_api_and_generate(tmp_path, precision):
    snap = tiny_snapshot(tmp_path / "snap", 16, label_names=["cat", "dog", "owl"])
    assert (
        run_cli(["generate", snap, "--seeds", "3-6", "--precision", precision, "--outdir", tmp_path / "g"])
        == 0
    )
    model = progan.load(snap, device="cpu")
    api = model.generate("3-6", precision=precision)
    assert api.dtype == np.uint8 and api.shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(api, read_pngs(tmp_path / "g"))
    # seeds as a list, one label for all, label rows, and PIL pictures
    assert run_cli(["generate", snap, "--seeds", "3,4", "--label", "owl", "--precision", precision,
                    "--outdir", tmp_path / "owl"]) == 0  # fmt: skip
    owls = model.generate([3, 4], labels="owl", precision=precision)
    np.testing.assert_array_equal(owls, read_pngs(tmp_path / "owl"))
    rows = model.labels([3, 4], "owl")
    np.testing.assert_array_equal(model.generate([3, 4], labels=rows, precision=precision), owls)
    pil = model.generate([3], labels="owl", precision=precision, as_pil=True)
    np.testing.assert_array_equal(np.asarray(pil[0]), owls[0])
    # render(latents(seeds), labels(seeds)) is generate(seeds)
    np.testing.assert_array_equal(
        model.render(model.latents("3-6"), model.labels("3-6"), precision=precision), api
    )
    assert not np.array_equal(api[0], api[1])


def test_the_defaults_agree_too(tmp_path):
    # generate's --precision auto and the API's precision="auto" are the one rule (device.sampling_precision)
    snap = tiny_snapshot(tmp_path / "snap", 16)
    assert run_cli(["generate", snap, "--seeds", "0-3", "--outdir", tmp_path / "g"]) == 0
    np.testing.assert_array_equal(progan.load(snap, "cpu").generate("0-3"), read_pngs(tmp_path / "g"))


def test_auto_precision_is_the_hardware_rule(tmp_path, monkeypatch):
    from progan import device

    snap = tiny_snapshot(tmp_path / "snap", 8)
    model = progan.load(snap, device="cpu")
    monkeypatch.setattr(device, "cpu_flags", lambda: {"avx2"})
    assert model.precision("auto") == "fp32"
    np.testing.assert_array_equal(model.generate([1, 2]), model.generate([1, 2], precision="fp32"))
    monkeypatch.setattr(device, "cpu_flags", lambda: {"avx512_bf16"})
    assert model.precision("auto") == "bf16"
    np.testing.assert_array_equal(model.generate([1, 2]), model.generate([1, 2], precision="bf16"))


def test_load_takes_a_run_a_snapshot_or_an_official_network_file(tmp_path, monkeypatch):
    from test_pretrained import pf, write_tf_pickle

    snap = tiny_snapshot(tmp_path / "runs" / "00000-x" / "snapshot-000001", 8)
    by_run, by_snap = progan.load(tmp_path / "runs" / "00000-x", "cpu"), progan.load(snap, "cpu")
    assert by_run.path == by_snap.path == snap
    assert "8x8x3" in repr(by_run)

    rng = np.random.default_rng(0)
    kwargs = dict(num_channels=3, resolution=16, fmap_base=64, fmap_max=16, latent_size=16)
    G_vars = pf.tf_g_variables(rng, 16, latent=16, fmap_base=64, fmap_max=16)
    D_vars = pf.tf_d_variables(rng, 16, fmap_base=64, fmap_max=16)
    src = write_tf_pickle(tmp_path / "net.pkl", monkeypatch, G_vars, D_vars, kwargs, dict(kwargs))
    assert run_cli(["import", src, tmp_path / "imported"]) == 0
    assert run_cli(["generate", tmp_path / "imported", "--seeds", "1000,7", "--latents", "official",
                    "--precision", "fp32", "--outdir", tmp_path / "o"]) == 0  # fmt: skip
    model = progan.load(src, "cpu")
    assert model.discriminator() is not None
    np.testing.assert_array_equal(
        model.generate([7, 1000], precision="fp32", method="official"), read_pngs(tmp_path / "o")
    )
    with pytest.raises(progan.model.UserError, match="does not exist"):
        progan.load(tmp_path / "nothing")


def test_edit_moves_along_the_conditioned_direction_as_the_command_does(tmp_path, capsys):
    from progan.directions import add_direction

    snap = tiny_snapshot(tmp_path / "snap", 16)
    rng = np.random.default_rng(1)
    add_direction(
        snap, "smile", torch.from_numpy(rng.standard_normal(16).astype(np.float32)), 16, trait="smile"
    )
    add_direction(
        snap, "beard", torch.from_numpy(rng.standard_normal(16).astype(np.float32)), 16, trait="beard"
    )
    model = progan.load(snap, "cpu")
    z = model.latents([42])[0]
    moved = model.edit(z, smile=2.0)
    smile, beard = (model.directions[k][0].numpy() for k in ("smile", "beard"))
    assert abs(float((moved - z) @ beard)) < 1e-4  # the other trait's linear model sees no change
    assert float((moved - z) @ smile) > 1.0
    free = model.edit(z, free=True, smile=2.0)
    np.testing.assert_allclose(free - z, 2.0 * smile, atol=1e-5)
    out = tmp_path / "edited.png"
    assert (
        run_cli(["edit", snap, "--seed", "42", "--set", "smile=2", "--precision", "fp32", "--out", out]) == 0
    )
    np.testing.assert_array_equal(np.asarray(Image.open(out)), model.render(moved, precision="fp32")[0])


def test_import_progan_stays_cheap():
    code = "import sys, progan; print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def readme_python_example() -> str:
    text = README.read_text()
    section = text.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    # The README's example, run as written on a tiny 16x16 snapshot with a 'smile' direction
    # (its run folder name is replaced by this one, and photos need no face alignment here).
    from progan.directions import add_direction

    run = tmp_path / "runs" / "00003-faces-256"
    snap = tiny_snapshot(run / "snapshot-000100", 16)
    add_direction(snap, "smile", torch.ones(16), 16, trait="smile")
    monkeypatch.chdir(tmp_path)
    code = readme_python_example()
    assert 'progan.load("runs/00003-faces-256")' in code
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README's example
    assert namespace["images"].shape == (4, 16, 16, 3)
    assert (tmp_path / "smiling.png").is_file()
    assert namespace["found"][0].psnr >= 30

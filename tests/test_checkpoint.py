"""The snapshot format: today's snapshots keep loading, and both kinds round-trip."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_run, tiny_snapshot

from progan import checkpoint as ckpt
from progan.errors import UserError
from progan.networks import NetworkConfig, build_networks
from progan.sampling import images_for_seeds

FIXTURES = Path(__file__).parent / "fixtures"
V1 = FIXTURES / "snapshot-v1"


def test_v1_snapshot_loads_for_sampling():
    snap = ckpt.load_snapshot(V1)
    assert snap.kind == "training" and snap.kimg == 0.024 and snap.label_names == []
    # Saved before fused_scale existed: its D pools after the activation, as it was trained.
    old = NetworkConfig(resolution=8, latent_size=8, fmap_base=32, fmap_max=8, fused_scale=False)
    assert snap.config == old
    images = images_for_seeds(snap.G_ema, [0, 1, 2, 3], precision="fp32").numpy().astype(int)
    expected = np.load(FIXTURES / "snapshot-v1-seeds0-3.npy").astype(int)
    # One step of 255 at most: rounding may differ between CPUs' vector units.
    assert images.shape == expected.shape and np.abs(images - expected).max() <= 1


def test_v1_snapshot_restores_training_state():
    state = json.loads((V1 / "state.json").read_text())
    G, D, G_ema = build_networks(ckpt.load_config(state, V1))
    opt_G = torch.optim.Adam(G.parameters())
    opt_D = torch.optim.Adam(D.parameters())
    ts = ckpt.load_training_snapshot(V1, {"G": G, "D": D, "G_ema": G_ema}, {"G_opt": opt_G, "D_opt": opt_D})
    assert (ts.nimg, ts.tick, ts.resolution_trained) == (24, 1, 8)
    assert ts.stage == {"resolution": 8, "alpha": 1.0} and ts.options["batch"] == 8
    assert ts.loader["pos"] == 8 and sorted(ts.loader_tensors["order"].tolist()) == list(range(16))
    assert ts.rng.dtype == torch.uint8 and float(ts.skipped) == 0.0
    assert len(opt_G.state) == len(list(G.parameters())) and opt_G.param_groups[0]["lr"] == 0.001
    weights = ckpt.load_tensors(V1 / "model.safetensors")
    torch.testing.assert_close(D.state_dict()["dense1.weight"], weights["D.dense1.weight"], rtol=0, atol=0)


def _random_generator(config: NetworkConfig) -> torch.nn.Module:
    torch.manual_seed(1)
    G, D, G_ema = build_networks(config)
    with torch.no_grad():
        for p in G_ema.parameters():
            p.normal_()
    return G_ema, G, D


def test_inference_snapshot_round_trip(tmp_path):
    config = NetworkConfig(resolution=16, latent_size=8, fmap_base=32, fmap_max=8, label_size=2)
    G_ema, _, _ = _random_generator(config)
    dest = ckpt.save_inference_snapshot(
        tmp_path / "imported", config, G_ema, label_names=["cat", "dog"], info={"source": "test"}
    )
    assert sorted(p.name for p in dest.iterdir()) == ["model.safetensors", "state.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    snap = ckpt.load_snapshot(dest)
    assert snap.kind == "inference" and snap.info == {"source": "test"} and snap.label_names == ["cat", "dog"]
    assert snap.config == config and snap.G_ema.resolution == 16 and snap.kimg == 0.0
    labels = torch.eye(2)[[0, 1, 1]]
    a = images_for_seeds(G_ema, [0, 1, 2], labels)
    b = images_for_seeds(snap.G_ema, [0, 1, 2], labels)
    assert torch.equal(a, b) and a.float().std() > 0
    # Written again over itself: replaced, still one snapshot.
    ckpt.save_inference_snapshot(dest, config, G_ema, info={"source": "again"})
    assert ckpt.load_snapshot(dest).info == {"source": "again"}


def test_inference_snapshot_with_G_and_D_but_not_resumable(tmp_path):
    config = NetworkConfig(resolution=8, latent_size=8, fmap_base=32, fmap_max=8)
    G_ema, G, D = _random_generator(config)
    dest = ckpt.save_inference_snapshot(tmp_path / "s", config, G_ema, G=G, D=D, nimg=5000)
    keys = ckpt.load_tensors(dest / "model.safetensors").keys()
    assert {k.split(".")[0] for k in keys} == {"G", "D", "G_ema"}
    assert ckpt.load_snapshot(dest).kimg == 5.0
    G2, D2, E2 = build_networks(config)
    with pytest.raises(UserError, match="inference snapshot .* not resumed"):
        ckpt.load_training_snapshot(dest, {"G": G2, "D": D2, "G_ema": E2}, {})


def test_inference_snapshot_refuses_a_foreign_folder(tmp_path):
    config = NetworkConfig(resolution=8, latent_size=8, fmap_base=32, fmap_max=8)
    G_ema, _, _ = _random_generator(config)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match="not a progan snapshot; choose a new folder"):
        ckpt.save_inference_snapshot(tmp_path / "photos", config, G_ema)
    assert (tmp_path / "photos" / "a.jpg").read_bytes() == b"x"


def test_v1_snapshot_resumes_training(tmp_path):
    # Its run options are flat (before TrainOptions held a NetworkConfig); the store it names is
    # remade at a new place, the one thing changed in the copy.
    import shutil

    from progan.data.store import write_store
    from progan.training import Trainer

    images = np.random.default_rng(0).integers(0, 255, size=(16, 3, 8, 8), dtype=np.uint8)
    store = write_store(tmp_path / "store", images)
    snap = tmp_path / "run" / "snapshot-000000.024"
    shutil.copytree(V1, snap)
    state = json.loads((snap / "state.json").read_text())
    assert "latent_size" in state["options"] and "network" not in state["options"]
    state["options"]["data"] = str(store.path)
    (snap / "state.json").write_text(json.dumps(state))
    t = Trainer.from_snapshot(tmp_path / "run", {"total_kimg": 0.04, "progress": False})
    assert t.nimg == 24 and t.config.latent_size == 8 and t.opts.network == t.config
    t.run()
    resumed = ckpt.load_snapshot(tmp_path / "run")
    assert resumed.kimg == 0.04 and resumed.state["options"]["network"]["fmap_max"] == 8


def test_one_function_finds_snapshots_from_a_snapshot_a_run_or_a_folder_of_runs(tmp_path):
    runs = tmp_path / "runs"
    a1, a2 = tiny_run(runs / "00000-a", nimg=1000), tiny_run(runs / "00000-a", nimg=2000)
    (b,) = [tiny_run(runs / "00001-b", nimg=500)]
    (runs / "notes").mkdir()
    assert ckpt.find_snapshots(a1) == [a1]
    assert ckpt.find_snapshots(runs / "00000-a") == [a2]  # a run: its newest
    assert ckpt.find_snapshots(runs / "00000-a", every=True) == [a1, a2]  # oldest first
    assert ckpt.find_snapshots(runs, runs=True) == [a2, b]  # each run's newest, by run name
    assert ckpt.load_snapshot(runs / "00000-a").path == a2
    with pytest.raises(UserError, match="neither a progan snapshot nor a run directory"):
        ckpt.find_snapshots(runs)  # a folder of runs only where a command serves several
    with pytest.raises(UserError, match="holds no snapshots"):
        ckpt.find_snapshots(runs / "notes", runs=True)
    with pytest.raises(UserError, match="does not exist"):
        ckpt.find_snapshots(tmp_path / "absent", every=True)


def test_snapshot_names_and_the_options_readers_need(tmp_path):
    snap = tiny_run(tmp_path / "00003-faces", nimg=120_400)
    assert snap.name == ckpt.snapshot_name(120_400) == "snapshot-000120.400"
    assert ckpt.snapshot_run_name(snap) == "00003-faces"
    imported = tiny_snapshot(tmp_path / "celebahq", 8, ["Smiling", "Male"], options={
        "data": "datasets/celebahq", "loss": {"multi_hot": True}})  # fmt: skip
    assert ckpt.snapshot_run_name(imported) == "celebahq"
    loaded = ckpt.load_snapshot(imported)
    assert loaded.label_names == ["Smiling", "Male"] and loaded.multi_hot
    assert loaded.data == "datasets/celebahq"
    plain = ckpt.load_snapshot(snap)
    assert (plain.label_names, plain.multi_hot, plain.data) == ([], False, None)

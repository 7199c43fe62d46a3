# ruff: noqa: E501 - the table of cases reads best one case per line
"""Issue 13: every failure a user can cause or meet ends in one line naming the file and the fix,
exit code 2, no traceback (unless --debug); hostile input never takes memory out of proportion.

`test_every_failure_is_one_line` walks a table of failure cases for every command; the tests
after it pin the defects of issue 13 one by one."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import png_bytes, run_cli_output, write_archive
from PIL import Image

from progan.cli import main
from progan.data.store import level_file, write_store
from progan.errors import UserError

FIXTURE_SNAPSHOT = Path(__file__).parent / "fixtures" / "snapshot-v1"


@pytest.fixture
def store(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    return write_store(tmp_path / "store", rng.integers(0, 256, (8, 3, 8, 8), dtype=np.uint8)).path


@pytest.fixture
def snapshot(tmp_path) -> Path:
    return Path(shutil.copytree(FIXTURE_SNAPSHOT, tmp_path / "run" / "snapshot-000000.024"))


def _photos(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (12, 12), (40 * i, 90, 200)).save(folder / f"{i}.png")
    return folder


def _edit_state(snap: Path, edit) -> None:
    state = json.loads((snap / "state.json").read_text())
    (snap / "state.json").write_text(json.dumps(edit(state)))


def _save_npy(path: Path, array) -> None:
    with open(path, "wb") as f:
        np.lib.format.write_array(f, np.asarray(array), allow_pickle=True)


# Each case: (id, setup(tmp_path, store, snapshot, monkeypatch) -> argv, words the line must hold).
def _labels(tmp, text, suffix=".csv"):
    src = _photos(tmp / "src")
    (tmp / f"labels{suffix}").write_text(text)
    labels = tmp / f"labels{suffix}"
    return ["prepare", "--quiet", src, tmp / "out", "-r", 8, "--workers", 0, "--labels", labels]


def _damaged_level(kind):
    def setup(tmp, store, snap, mp):
        f = store / level_file(8)
        if kind == "truncated":
            f.write_bytes(f.read_bytes()[:-100])
        elif kind == "few rows":
            _save_npy(f, np.zeros((3, 3, 8, 8), np.uint8))
        elif kind == "swapped":
            os.replace(store / level_file(4), tmp / "x.npy")
            os.replace(f, store / level_file(4))
            os.replace(tmp / "x.npy", f)
        elif kind == "garbage":
            f.write_bytes(os.urandom(300))
        elif kind == "object":
            _save_npy(f, np.array([{"a": 1}] * 8, dtype=object))
        elif kind == "missing":
            f.unlink()
        return ["train", "--data", store, "--outdir", tmp / "runs", "--no-progress"]

    return setup


def _manifest(edit):
    def setup(tmp, store, snap, mp):
        m = json.loads((store / "dataset.json").read_text())
        (store / "dataset.json").write_text(json.dumps(edit(m)))
        return ["train", "--data", store, "--outdir", tmp / "runs", "--no-progress"]

    return setup


def _state(edit, command="train"):
    def setup(tmp, store, snap, mp):
        # The fixture's run trained on a store of its own; this one stands in for it.
        _edit_state(snap, lambda s: {**s, "options": {**s["options"], "data": str(store)}})
        _edit_state(snap, edit)
        if command == "train":
            return ["train", "--resume", snap, "--no-progress", "--kimg", 1]
        if command == "evaluate":
            return ["evaluate", snap, "--metrics", "swd", "--num", 8]
        return ["generate", snap, "--seeds", "0-1", "--grid", tmp / "g.png", "--device", "cpu"]

    return setup


def _full_disk_prepare(tmp, store, snap, mp):
    def pwrite(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    mp.setattr(os, "pwrite", pwrite)
    return ["prepare", "--quiet", _photos(tmp / "src"), tmp / "out", "-r", 8, "--workers", 0]


def _full_disk_snapshot(tmp, store, snap, mp):
    from safetensors import SafetensorError

    import progan.checkpoint as ckpt

    def save_file(*a, **k):
        # What safetensors raises on a full disk.
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')  # fmt: skip  # noqa: E501

    mp.setattr(ckpt, "save_file", save_file)
    return ["train", "--data", store, "--outdir", tmp / "runs", "--no-progress", "--kimg", 0.008,
            "--batch", 8, "--latent-size", 8, "--fmap-base", 16, "--fmap-max", 8, "--tick-kimg", 0.008]  # fmt: skip


def _read_only_parent(tmp, store, snap, mp):
    import tempfile

    def mkdtemp(*a, dir=None, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(dir))

    mp.setattr(tempfile, "mkdtemp", mkdtemp)
    return ["prepare", "--quiet", _photos(tmp / "src"), tmp / "ro" / "out", "-r", 8, "--workers", 0]


def _outdir_is_a_file(tmp, store, snap, mp):
    (tmp / "afile").write_text("x")
    return ["train", "--data", store, "--outdir", tmp / "afile", "--no-progress", "--kimg", 0.008]


def _source_in_dest(tmp, store, snap, mp):
    dest = write_store(tmp / "st", np.zeros((2, 3, 8, 8), np.uint8)).path
    _photos(dest / "photos")
    return ["prepare", "--quiet", dest / "photos", dest, "-r", 8, "--overwrite", "--workers", 0]


CASES = [
    # prepare
    ("prepare SOURCE inside DEST", _source_in_dest, ["inside DEST"]),
    ("prepare --workers -3", lambda t, s, n, m: ["prepare", _photos(t / "src"), t / "o", "-r", 8, "--workers", -3],
     ["--workers"]),
    ("prepare labels nan", lambda t, s, n, m: _labels(t, "0.png,nan\n1.png,0\n2.png,1\n"), ["labels.csv", "nan"]),
    ("prepare labels inf", lambda t, s, n, m: _labels(t, "0.png,1,inf\n1.png,0,1\n2.png,1,0\n"), ["inf"]),
    ("prepare labels 1.5", lambda t, s, n, m: _labels(t, "0.png,1.5\n1.png,0\n2.png,1\n"), ["1.5"]),
    ("prepare attribute 0.5", lambda t, s, n, m: _labels(t, "0.png,0.5,1\n1.png,0,1\n2.png,1,0\n"), ["0.5"]),
    ("prepare negative mix", lambda t, s, n, m: _labels(t, "0.png,-1,1\n1.png,0,1\n2.png,1,-3\n"), ["-3"]),
    ("prepare class 1e9", lambda t, s, n, m: _labels(t, "0.png,1000000000\n1.png,0\n2.png,1\n"), ["whole number"]),
    ("prepare JSON list", lambda t, s, n, m: _labels(t, "[1, 2, 3]", ".json"), ["labels.json"]),
    ("prepare JSON string label", lambda t, s, n, m: _labels(t, '{"0.png": "cat"}', ".json"), ["'cat'"]),
    ("prepare JSON nested", lambda t, s, n, m: _labels(t, '{"0.png": [1, [0]]}', ".json"), ["0.png"]),
    ("prepare JSON pairs", lambda t, s, n, m: _labels(t, '{"labels": [[1]]}', ".json"), ["[[file name"]),
    ("prepare JSON names", lambda t, s, n, m: _labels(t, '{"labels": {"0.png": 1}, "names": 5}', ".json"),
     ["names"]),
    ("prepare full disk", _full_disk_prepare, ["no space left", "out"]),
    ("prepare read-only DEST parent", _read_only_parent, ["read-only", "ro"]),
    ("prepare --verify truncated", lambda t, s, n, m: (s.joinpath(level_file(8)).write_bytes(b"\x93NUMPY"),
     ["prepare", "--verify", s])[1], ["images-8x8.npy"]),
    ("prepare --verify manifest list", lambda t, s, n, m: (s.joinpath("dataset.json").write_text("[]"),
     ["prepare", "--verify", s])[1], ["dataset.json"]),
    # train
    ("train --ema-beta 2", lambda t, s, n, m: ["train", "--data", s, "--ema-beta", 2], ["--ema-beta"]),
    ("train --mbstd-group-size -4", lambda t, s, n, m: ["train", "--data", s, "--mbstd-group-size", -4],
     ["--mbstd-group-size"]),
    ("train --snapshot-ticks -1", lambda t, s, n, m: ["train", "--data", s, "--snapshot-ticks", -1],
     ["--snapshot-ticks"]),
    ("train --image-ticks -1", lambda t, s, n, m: ["train", "--data", s, "--image-ticks", -1], ["--image-ticks"]),
    ("train --seed -1", lambda t, s, n, m: ["train", "--data", s, "--seed", -1], ["--seed"]),
    ("train --metrics-every -2", lambda t, s, n, m: ["train", "--data", s, "--metrics-every", -2],
     ["--metrics-every"]),
    ("train --outdir is a file", _outdir_is_a_file, ["afile"]),
    ("train level truncated", _damaged_level("truncated"), ["images-8x8.npy", "--verify"]),
    ("train level too few rows", _damaged_level("few rows"), ["images-8x8.npy", "(3, 3, 8, 8)"]),
    ("train levels swapped", _damaged_level("swapped"), ["images-4x4.npy"]),
    ("train level garbage", _damaged_level("garbage"), ["images-8x8.npy"]),
    ("train level object dtype", _damaged_level("object"), ["images-8x8.npy"]),
    ("train level missing", _damaged_level("missing"), ["images-8x8.npy", "missing"]),
    ("train manifest count text", _manifest(lambda m: {**m, "count": "8"}), ["count"]),
    ("train manifest resolution 12", _manifest(lambda m: {**m, "resolution": 12}), ["resolution 12"]),
    ("train manifest list", _manifest(lambda m: [m]), ["dataset.json"]),
    ("train full disk at a snapshot", _full_disk_snapshot, ["snapshot-", "No space left on device"]),
    ("resume state list", _state(lambda s: [s]), ["state.json"]),
    ("resume nimg text", _state(lambda s: {**s, "nimg": "24"}), ["nimg"]),
    ("resume options list", _state(lambda s: {**s, "options": []}), ["options"]),
    ("resume huge latent", _state(lambda s: {**s, "network": {**s["network"], "latent_size": 10**12}}),
     ["latent_size"]),
    ("resume ema_beta 7", _state(lambda s: {**s, "options": {**s["options"], "ema_beta": 7}}), ["ema_beta"]),
    ("resume d_lr_ratio 0", _state(lambda s: {**s, "options": {**s["options"], "d_lr_ratio": 0}}), ["d_lr_ratio"]),
    ("resume no loader", _state(lambda s: {k: v for k, v in s.items() if k != "loader"}), ["loader"]),
    ("resume loader rng", _state(lambda s: {**s, "loader": {**s["loader"], "rng": {"x": 1}}}), ["loader"]),
    # generate
    ("generate huge seed", lambda t, s, n, m: ["generate", n, "--seeds", "99999999999999999999999",
     "--grid", t / "g.png"], ["--seeds", "2**32"]),
    ("generate grid of 10^8", lambda t, s, n, m: ["generate", n, "--seeds", "0-100000000", "--grid", t / "g.png",
     "--device", "cpu"], ["--grid", "--outdir"]),
    ("generate state resolution 2^40", _state(lambda s: {**s, "network": {**s["network"], "resolution": 2**40}},
     "generate"), ["resolution"]),
    ("generate stage text", _state(lambda s: {**s, "stage": "x"}, "generate"), ["stage"]),
    ("generate mirror difference text", _state(lambda s: {**s, "network": {**s["network"], "d_mirror_difference": "yes"}},
     "generate"), ["d_mirror_difference"]),
    ("generate garbage weights", lambda t, s, n, m: (n.joinpath("model.safetensors").write_bytes(b"\0" * 64),
     ["generate", n, "--grid", t / "g.png", "--device", "cpu"])[1], ["model.safetensors"]),
    ("generate --outdir is a file", lambda t, s, n, m: (t.joinpath("f").write_text("x"),
     ["generate", n, "--seeds", "0", "--outdir", t / "f", "--device", "cpu"])[1], ["f"]),
    # evaluate
    ("evaluate damaged store", lambda t, s, n, m: (s.joinpath(level_file(8)).write_bytes(b"junk"),
     ["evaluate", s, "--metrics", "swd", "--num", 8])[1], ["images-8x8.npy"]),
    # demo, import
    ("demo --kimg -1", lambda t, s, n, m: ["demo", "--kimg", -1, "--outdir", t / "runs"], ["--kimg"]),
    ("demo --outdir is a file", lambda t, s, n, m: (t.joinpath("f").write_text("x"), ["demo", "--outdir", t / "f", "--kimg", 0.001])[1], ["f"]),
    ("import garbage", lambda t, s, n, m: (t.joinpath("net.pkl").write_bytes(os.urandom(200)), ["import", t / "net.pkl", t / "m"])[1], ["net.pkl"]),
    ("import missing", lambda t, s, n, m: ["import", t / "nothing.pkl", t / "m"], ["nothing.pkl"]),
    ("evaluate damaged state", _state(lambda s: {**s, "network": []}, "evaluate"), ["network"]),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_failure_is_one_line(case, tmp_path, store, snapshot, monkeypatch, capsys):
    _, setup, words = case
    argv = setup(tmp_path, store, snapshot, monkeypatch)
    code, _, err = run_cli_output(argv, capsys)
    assert "Traceback" not in err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"progan {argv[0]}: error: "), err
    for word in words:
        assert str(word) in err, err


def test_debug_shows_the_traceback(tmp_path, store, capsys):
    with pytest.raises(UserError, match="--ema-beta"):
        main(["train", "--data", str(store), "--ema-beta", "2", "--debug"])
    with pytest.raises(UserError, match="--ema-beta"):
        main(["--debug", "train", "--data", str(store), "--ema-beta", "2"])


def test_a_bug_is_one_line_with_exit_1(monkeypatch, capsys, tmp_path):
    import progan.data.cli

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(progan.data.cli, "run", broken)
    from progan import cli

    parser = cli.build_parser()
    args = parser.parse_args(["prepare", "--verify", str(tmp_path)])
    args.func = broken
    monkeypatch.setattr(cli.ArgumentParser, "parse_args", lambda self, argv=None: args)
    code, _, err = run_cli_output(["prepare"], capsys)
    assert code == 1 and "unexpected ZeroDivisionError" in err and "--debug" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_source_inside_dest_is_refused_and_kept(tmp_path, capsys):
    # Issue 13, defect 1: this deleted the photos with exit status 0.
    st = write_store(tmp_path / "st", np.zeros((2, 3, 8, 8), np.uint8)).path
    photos = _photos(st / "photos")
    code, _, err = run_cli_output(
        ["prepare", "--quiet", photos, st, "-r", 8, "--overwrite", "--workers", 0], capsys
    )
    assert code == 2 and "inside DEST" in err
    assert sorted(p.name for p in photos.iterdir()) == ["0.png", "1.png", "2.png"]
    labels = tmp_path / "st" / "labels.csv"
    labels.write_text("0.png,1\n")
    code, _, err = run_cli_output(["prepare", "--quiet", _photos(tmp_path / "src"), st, "-r", 8, "--overwrite",
                                   "--labels", labels], capsys)  # fmt: skip
    assert code == 2 and "--labels" in err and labels.exists()


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_archive_members_and_images_above_the_limits_are_refused(tmp_path, capsys, monkeypatch, fmt):
    # Issue 13, defect 2: members were read whole (a 1 MB zip with a 1 GiB member took 3.2 GB).
    import zipfile

    def flat_png(width, height):
        return png_bytes(np.broadcast_to(np.uint8([10, 200, 30]), (height, width, 3)).copy())

    big = os.urandom(3 * 2**20)  # 3 MiB, above --max-file-mb 2
    members = {"a.png": flat_png(12, 12), "big.png": big, "wide.png": flat_png(3000, 400)}
    archive = write_archive(tmp_path / f"src.{fmt}", members)
    reads = []
    real_read = zipfile.ZipExtFile.read

    def read(self, n=-1):
        reads.append(n)
        return real_read(self, n)

    monkeypatch.setattr(zipfile.ZipExtFile, "read", read)
    code, _, err = run_cli_output(["prepare", "--quiet", archive, tmp_path / "out", "-r", 8, "--workers", 0,
                                   "--max-file-mb", 2, "--max-megapixels", 1], capsys)  # fmt: skip
    assert code == 0, err
    report = {
        r["file"]: r["reason"] for r in json.loads((tmp_path / "out" / "report.json").read_text())["skipped"]
    }
    assert (
        "3.0 MiB" in report["big.png"]
        and "2.0 MiB" in report["big.png"]
        and "--max-file-mb" in report["big.png"]
    )
    assert "3000x400" in report["wide.png"] and "--max-megapixels" in report["wide.png"]
    assert -1 not in reads  # every archive read is bounded


def test_seed_lists_are_ranges_and_images_stream_in_batches(tmp_path):
    # Issue 13, defect 2: --seeds 0-100000000 built every latent up front (std::bad_alloc).
    import tracemalloc

    import torch

    from progan.checkpoint import load_snapshot
    from progan.generate import write_seed_images
    from progan.sampling import images_for_seeds, iter_seed_images, parse_seeds

    tracemalloc.start()
    seeds = parse_seeds("0-100000000,7")
    G = load_snapshot(FIXTURE_SNAPSHOT).G_ema
    stream = iter_seed_images(G, seeds, batch=4)
    first = [next(stream) for _ in range(3)]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(seeds) == 100000002 and seeds[-1] == 7 and seeds[100000000] == 100000000
    assert peak < 8 * 2**20, peak
    assert [c for c, _ in first] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    # Batching changes nothing: the same seeds give the same images as one call.
    streamed = torch.cat([images for _, images in first])
    assert torch.equal(streamed, images_for_seeds(G, list(range(12))))
    written, grid = write_seed_images(
        G, parse_seeds("3,1-2"), outdir=tmp_path / "o", grid=tmp_path / "g.png", batch=2
    )
    assert written == 3 and grid.is_file()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o" / "seed0003.png")),
                          images_for_seeds(G, [3])[0].permute(1, 2, 0).numpy())  # fmt: skip


def test_odd_files_permission_errors_and_free_space_are_reported(tmp_path, monkeypatch, capsys):
    # Issue 13, defect 9: FIFOs and looping symlinks vanished from report.json, a permission error
    # read "corrupt image", and the free-space message said "0.0 GiB".
    import progan.data.prepare as prepare_module

    src = _photos(tmp_path / "src", 4)
    os.mkfifo(src / "pipe.png")
    os.symlink("loop.png", src / "loop.png")
    os.symlink("missing.png", src / "dangling.png")
    os.symlink(src, src / "again")
    real_open = Image.open

    def open_(fp, *a, **k):
        if str(fp).endswith("3.png"):
            raise PermissionError(errno.EACCES, "Permission denied", str(fp))
        return real_open(fp, *a, **k)

    monkeypatch.setattr(prepare_module.Image, "open", open_)
    code, _, err = run_cli_output(
        ["prepare", "--quiet", src, tmp_path / "out", "-r", 8, "--workers", 0], capsys
    )
    assert code == 0, err
    report = {
        r["file"]: r["reason"] for r in json.loads((tmp_path / "out" / "report.json").read_text())["skipped"]
    }
    assert "FIFO" in report["pipe.png"]
    assert "loop" in report["loop.png"] and "broken" in report["dangling.png"]
    assert "not followed" in report["again/"]
    assert "permission denied" in report["3.png"] and "corrupt" not in report["3.png"]
    monkeypatch.setattr(Image, "open", real_open)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**6, 10**6 - 100, 100))
    code, _, err = run_cli_output(
        ["prepare", "--quiet", src, tmp_path / "out2", "-r", 8, "--workers", 0], capsys
    )
    assert code == 2 and "0.0 GiB" not in err and "needs about 960 B" in err and "has 100 B free" in err, err


def test_a_ranks_user_error_is_one_line(monkeypatch):
    # `train --gpus N`: a rank's UserError arrives as the text of its traceback; launch passes on
    # its one line instead of "unexpected ProcessRaisedException".
    import torch.multiprocessing as mp

    from progan import distributed

    def spawn(*a, **k):
        raise mp.ProcessRaisedException(
            "\n\n-- Process 1 terminated with the following error:\nTraceback (most recent call last):\n"
            '  File "x.py", line 1, in f\nprogan.errors.UserError: cannot write snapshot s: no space; free disk space\n',
            1, 123)  # fmt: skip

    class Ranks:  # what mp.start_processes(join=False) returns: its join raised rank 1's error
        processes = []
        join = spawn

    monkeypatch.setattr(mp, "start_processes", lambda *a, **k: Ranks())
    with pytest.raises(UserError, match="^cannot write snapshot s: no space; free disk space$"):
        distributed.launch(2, print)

"""`progan prepare` on images the tests generate in every odd mode, archives, idx pairs, labels."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import png_bytes, run_cli_output, write_archive
from PIL import Image

from progan.data.loader import BatchLoader
from progan.data.prepare import Options, prepare, read_label_file
from progan.data.store import box_downsample, verify_store
from progan.errors import UserError

R = 16


def _prep(src, dest, **kw):
    kw.setdefault("workers", 0)
    kw.setdefault("progress", False)
    return prepare(src, dest, Options(resolution=kw.pop("resolution", R), **kw))


def _flat(colour, size=(24, 24), mode="RGB"):
    return Image.new(mode, size, colour)


def _odd_folder(root: Path) -> dict[str, object]:
    """One file per odd case; returns name -> expected top-left RGB (or None when skipped)."""
    root.mkdir()
    (root / "sub" / "deeper").mkdir(parents=True)
    exp = {}
    _flat((200, 10, 10)).save(root / "rgb.png")
    exp["rgb.png"] = (200, 10, 10)
    _flat(90, mode="L").save(root / "grey.png")
    exp["grey.png"] = (90, 90, 90)
    rgba = Image.new("RGBA", (24, 24), (0, 0, 255, 0))  # fully transparent -> background (white)
    rgba.save(root / "sub" / "rgba.png")
    exp["sub/rgba.png"] = (255, 255, 255)
    half = Image.new("RGBA", (24, 24), (0, 0, 0, 128))  # half transparent black on white
    half.save(root / "sub" / "half.png")
    exp["sub/half.png"] = (127, 127, 127)
    _flat((0, 200, 0)).quantize(4).save(root / "palette.png")  # mode P
    exp["palette.png"] = (0, 200, 0)
    p = Image.new("P", (24, 24), 1)
    p.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    p.save(root / "palette-transparent.png", transparency=1)
    exp["palette-transparent.png"] = (255, 255, 255)
    Image.new("LA", (24, 24), (50, 255)).save(root / "la.png")
    exp["la.png"] = (50, 50, 50)
    Image.new("CMYK", (24, 24), (0, 255, 255, 0)).save(root / "cmyk.tif")
    exp["cmyk.tif"] = (255, 0, 0)
    Image.fromarray(np.full((24, 24), 257 * 77, np.uint16)).save(root / "sub" / "deeper" / "grey16.png")
    exp["sub/deeper/grey16.png"] = (77, 77, 77)
    Image.new("1", (24, 24), 1).save(root / "bilevel.png")
    exp["bilevel.png"] = (255, 255, 255)
    # EXIF orientation 6 (rotate 90 degrees clockwise to display): stored left red / right blue,
    # displayed top red / bottom blue.
    a = np.zeros((24, 48, 3), np.uint8)
    a[:, :24] = (255, 0, 0)
    a[:, 24:] = (0, 0, 255)
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6
    Image.fromarray(a).save(root / "exif.jpg", exif=exif, quality=95)
    exp["exif.jpg"] = (255, 0, 0)
    # Skipped files.
    (root / "zero.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buf, "JPEG")
    (root / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (root / ".hidden.png").write_bytes(b"")  # hidden files are ignored, not reported
    for k in ("zero.png", "notes.txt", "truncated.jpg", "corrupt.png"):
        exp[k] = None
    return exp


def test_odd_modes_skips_and_report(tmp_path):
    exp = _odd_folder(tmp_path / "src")
    res = _prep(tmp_path / "src", tmp_path / "out")
    store = res.store
    kept = sorted(k for k, v in exp.items() if v is not None)
    assert store.count == len(kept) and store.channels == 3  # mixed colour -> 3 channels
    reasons = dict(res.skipped)
    assert set(reasons) == {"zero.png", "notes.txt", "truncated.jpg", "corrupt.png"}
    assert "empty" in reasons["zero.png"] and "not an image" in reasons["notes.txt"]
    assert "truncated" in reasons["truncated.jpg"]
    report = json.loads((store.path / "report.json").read_text())
    assert {s["file"] for s in report["skipped"]} == set(reasons) and report["kept"] == len(kept)
    # The store keeps the sorted walk order (root files, then sub-folders).
    img = store.images(R)
    order = [n for n in sorted(kept, key=lambda n: (n.count("/") > 0, n)) if "/" not in n]
    order += sorted(n for n in kept if n.startswith("sub/") and n.count("/") == 1)
    order += [n for n in kept if n.count("/") == 2]
    for i, name in enumerate(order):
        got = img[i, :, 1, 1].astype(int)
        assert np.abs(got - np.array(exp[name])).max() <= 3, (name, got)
    exif_img = img[order.index("exif.jpg")]
    assert exif_img[0, 1, R // 2] > 200 and exif_img[2, R - 2, R // 2] > 200  # top red, bottom blue
    assert "OK" in verify_store(store.path)


def test_channels_inferred_and_forced(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        _flat(40 * i, mode="L").save(src / f"{i}.png")
    assert _prep(src, tmp_path / "a").store.channels == 1
    store = _prep(src, tmp_path / "b", channels=3).store
    assert store.channels == 3 and (store.images(R)[:, 0] == store.images(R)[:, 2]).all()
    _flat((255, 0, 0)).save(src / "colour.png")
    grey = _prep(src, tmp_path / "c", channels=1).store
    assert grey.channels == 1 and grey.count == 4


def _nonsquare(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    a = np.zeros((32, 64, 3), np.uint8)  # 64 wide, 32 high: red | green | blue | white quarters
    for q, c in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]):
        a[:, 16 * q : 16 * (q + 1)] = c
    Image.fromarray(a).save(src / "wide.png")
    return src


def test_nonsquare_crop_pad_stretch(tmp_path):
    src = _nonsquare(tmp_path)
    crop = _prep(src, tmp_path / "crop").store.images(R)[0]
    assert crop[1, 8, 1] > 240 and crop[2, 8, R - 2] > 240  # centre crop keeps green | blue
    pad = _prep(src, tmp_path / "pad", fit="pad").store.images(R)[0]
    assert pad.std() > 0 and pad[0, R // 2, 1] > 240  # middle row: red at the left edge
    assert np.array_equal(pad[:, : R // 4], pad[:, R // 4 : R // 2][:, ::-1])  # reflected band
    stretch = _prep(src, tmp_path / "stretch", fit="stretch").store.images(R)[0]
    assert stretch[0, 0, 1] > 240 and stretch[:, 0, R - 2].min() > 240  # red ... white, full height


def test_antialiased_downscale(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    a = np.zeros((256, 256), np.uint8)
    a[:, ::2] = 255  # one-pixel stripes: a proper filter gives flat grey, point sampling aliases
    Image.fromarray(a).save(src / "stripes.png")
    img = _prep(src, tmp_path / "o").store.images(R)[0, 0].astype(int)
    assert abs(img.mean() - 127.5) < 3 and img[2:-2, 2:-2].std() < 3


def test_multiprocess_matches_in_process(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (20 + i, 30, 3), np.uint8)).save(src / f"{i:02d}.png")
    (src / "bad.jpg").write_bytes(b"nope")
    a = _prep(src, tmp_path / "a", workers=0).store
    b = _prep(src, tmp_path / "b", workers=2).store
    assert np.array_equal(a.images(R), b.images(R)) and a.count == 12
    assert a.manifest["content_hash"] == b.manifest["content_hash"]


def _archive_members(tmp_path):
    rng = np.random.default_rng(2)
    out = {}
    for name in ["data/cat/a.png", "data/cat/b.png", "data/dog/c.png", "data/readme.txt"]:
        out[name] = (
            png_bytes(rng.integers(0, 256, (20, 20, 3), np.uint8)) if name.endswith(".png") else b"hello"
        )
    return out


@pytest.mark.parametrize("fmt", ["zip", "tar", "tar.gz"])
def test_archives_with_folder_labels(tmp_path, fmt):
    members = _archive_members(tmp_path)
    path = write_archive(tmp_path / f"src.{fmt}", members)
    res = _prep(path, tmp_path / "out", labels="from-folders")
    store = res.store
    assert store.count == 3 and store.label_names == ["cat", "dog"]
    assert store.labels.tolist() == [[1, 0], [1, 0], [0, 1]]
    assert dict(res.skipped) == {"readme.txt": "not inside a class folder (--labels from-folders)"}
    ref = np.asarray(Image.open(io.BytesIO(members["data/dog/c.png"])).resize((R, R), Image.LANCZOS))
    assert np.array_equal(store.images(R)[2], ref.transpose(2, 0, 1))


def _idx(path: Path, arr: np.ndarray, gz: bool):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_pair(tmp_path, gz):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (7, 28, 28), np.uint8)
    labels = np.array([0, 1, 2, 9, 3, 3, 5], np.uint8)
    sfx = ".gz" if gz else ""
    _idx(tmp_path / f"train-images-idx3-ubyte{sfx}", images, gz)
    _idx(tmp_path / f"train-labels-idx1-ubyte{sfx}", labels, gz)
    store = _prep(tmp_path / f"train-images-idx3-ubyte{sfx}", tmp_path / "out", resolution=32).store
    assert store.count == 7 and store.channels == 1 and store.label_size == 10
    assert np.array_equal(store.labels.argmax(1), labels)
    top = store.images(32)[:, 0]
    assert np.array_equal(top[:, 2:30, 2:30], images) and (top[:, :2] == 0).all()  # padded like the paper
    assert np.array_equal(store.images(16), box_downsample(store.images(32)))


def test_label_files_csv_json(tmp_path):
    src = tmp_path / "src"
    (src / "x").mkdir(parents=True)
    for n in ["a.png", "b.png", "x/c.png"]:
        _flat((1, 2, 3)).save(src / n)
    (tmp_path / "cls.csv").write_text("file,class\na.png,2\nb.png,0\nx/c.png,1\n")
    s = _prep(src, tmp_path / "o1", labels=str(tmp_path / "cls.csv")).store
    assert s.labels.argmax(1).tolist() == [2, 0, 1] and s.label_size == 3
    (tmp_path / "attrs.csv").write_text("name,Smiling,Blond\na.png,1,-1\nb.png,-1,-1\nc.png,1,1\n")
    s = _prep(src, tmp_path / "o2", labels=str(tmp_path / "attrs.csv")).store
    assert s.label_names == ["Smiling", "Blond"] and s.labels.tolist() == [[1, 0], [0, 0], [1, 1]]
    (tmp_path / "l.json").write_text(
        json.dumps({"labels": [["a.png", 1], ["b.png", 0]], "names": ["no", "yes"]})
    )
    res = _prep(src, tmp_path / "o3", labels=str(tmp_path / "l.json"))
    assert res.store.label_names == ["no", "yes"] and res.store.labels.argmax(1).tolist() == [1, 0]
    assert "no label" in dict(res.skipped)["x/c.png"]
    (tmp_path / "m.json").write_text(
        json.dumps({"a.png": [0, 1, 1], "b.png": [1, 0, 0], "x/c.png": [0, 0, 0]})
    )
    assert _prep(src, tmp_path / "o4", labels=str(tmp_path / "m.json")).store.labels.sum() == 3
    (tmp_path / "bad.json").write_text(json.dumps({"a.png": [0, 1], "b.png": [1]}))
    with pytest.raises(UserError, match="same number of attributes"):
        read_label_file(tmp_path / "bad.json")


def test_store_feeds_the_loader(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        _flat((40 * i, 0, 0)).save(src / f"{i}.png")
    store = _prep(src, tmp_path / "o", resolution=8).store
    images, labels = BatchLoader(store, seed=0, mirror=True).next(8, 4)
    assert images.dtype.is_floating_point is False and tuple(images.shape) == (4, 3, 8, 8) and labels is None


def _cli(capsys, *args):
    return run_cli_output(["prepare", "--quiet", "--workers", "0", *args], capsys)


def test_cli_bad_input_one_line_errors(tmp_path, capsys):
    code, _, err = _cli(capsys, tmp_path / "missing", tmp_path / "o", "-r", "16")
    assert code == 2 and "does not exist" in err and err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    code, _, err = _cli(capsys, tmp_path / "empty", tmp_path / "o", "-r", "16")
    assert code == 2 and "holds no files" in err and err.count("\n") == 1
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    (tmp_path / "junk" / "b.jpg").write_bytes(b"")
    code, _, err = _cli(capsys, tmp_path / "junk", tmp_path / "o", "-r", "16")
    assert code == 2 and "no usable images" in err and "a.txt" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "junk"]  # nothing half-written
    code, _, err = _cli(capsys, tmp_path / "junk", tmp_path / "o", "-r", "12")
    assert code == 2 and "power of two" in err
    code, _, err = _cli(capsys, tmp_path / "junk", tmp_path / "o")
    assert code == 2 and "--resolution" in err
    code, _, err = _cli(capsys, "--verify", tmp_path / "junk")
    assert code == 2 and "not a progan dataset store" in err and err.count("\n") == 1


def test_cli_prepare_overwrite_verify_limit(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        _flat((i, i, i)).save(src / f"{i}.png")
    (src / "oops.txt").write_text("x")
    code, out, err = _cli(capsys, src, tmp_path / "o", "-r", "8")
    assert code == 0 and "prepared" in out and "5 images" in out and "oops.txt" in err
    code, _, err = _cli(capsys, src, tmp_path / "o", "-r", "8")
    assert code == 2 and "--overwrite" in err
    code, out, _ = _cli(capsys, src, tmp_path / "o", "-r", "8", "--overwrite", "--limit", "2")
    assert code == 0 and "2 images" in out
    code, out, _ = _cli(capsys, "--verify", tmp_path / "o")
    assert code == 0 and "is OK" in out and out.count("\n") == 1
    m = json.loads((tmp_path / "o" / "dataset.json").read_text())
    assert m["prepare"]["options"]["limit"] == 2 and m["prepare"]["source_kind"] == "folder"

"""The store: streaming writer, hashes, verification, corrupted stores, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from progan.data.store import (
    StoreWriter,
    box_downsample,
    content_hash,
    file_data_hash,
    level_file,
    levels_up_to,
    open_store,
    verify_store,
    write_store,
)
from progan.errors import UserError


def _images(n=12, c=3, r=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, c, r, r), dtype=np.uint8)


def test_write_store_levels_are_box_averages_and_verify(tmp_path):
    x = _images()
    labels = np.eye(4, dtype=np.float32)[np.arange(12) % 4]
    store = write_store(tmp_path / "s", x, labels=labels, label_names=list("abcd"), source="test")
    assert store.levels == [4, 8, 16] == levels_up_to(16)
    assert np.array_equal(store.images(16), x)
    assert np.array_equal(store.images(8), box_downsample(x))
    assert np.array_equal(store.images(4), box_downsample(box_downsample(x)))
    assert store.label_names == list("abcd") and np.array_equal(store.labels, labels)
    m = store.manifest
    assert set(m["hashes"]) == {level_file(r) for r in (4, 8, 16)} | {"labels.npy"}
    assert m["content_hash"] == content_hash(m["hashes"])
    assert m["hashes"][level_file(16)] == file_data_hash(tmp_path / "s" / level_file(16))
    line = verify_store(tmp_path / "s")
    assert "OK" in line and "\n" not in line


def test_streaming_writer_trims_to_written_count(tmp_path):
    x = _images(10)
    with StoreWriter(tmp_path / "s", capacity=50, resolution=16, channels=3) as w:
        w.add(x[:3])
        w.add(x[3:7])
        store = w.finish()
    assert store.count == 7
    for r in store.levels:
        assert store.images(r).shape == (7, 3, r, r)
    assert np.array_equal(store.images(16), x[:7])
    assert "OK" in verify_store(store.path)
    # Same content written in one go gives the same content hash.
    assert write_store(tmp_path / "t", x[:7]).manifest["content_hash"] == store.manifest["content_hash"]


def test_writer_leaves_nothing_behind_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with StoreWriter(tmp_path / "s", capacity=5, resolution=8, channels=1) as w:
            w.add(_images(2, 1, 8))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserError, match="no images"):
        with StoreWriter(tmp_path / "s", capacity=5, resolution=8, channels=1) as w:
            w.finish()
    assert list(tmp_path.iterdir()) == []


def test_refuses_existing_destination_unless_overwrite(tmp_path):
    write_store(tmp_path / "s", _images(2))
    with pytest.raises(UserError, match="--overwrite"):
        write_store(tmp_path / "s", _images(3))
    assert write_store(tmp_path / "s", _images(3), overwrite=True).count == 3
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "precious.txt").write_text("x")
    with pytest.raises(UserError, match="not a progan store"):
        write_store(tmp_path / "other", _images(3), overwrite=True)
    assert (tmp_path / "other" / "precious.txt").exists()


@pytest.mark.parametrize("bad", [3, 12, 2])
def test_bad_resolution(tmp_path, bad):
    with pytest.raises(UserError, match="power of two"):
        StoreWriter(tmp_path / "s", 4, bad, 3)


def test_corrupted_stores_are_caught(tmp_path):
    x = _images(6)
    path = write_store(tmp_path / "s", x, labels=np.ones((6, 2), np.float32)).path

    # A flipped byte in a level: hash mismatch.
    a = np.load(path / level_file(8), mmap_mode="r+")
    a[0, 0, 0, 0] ^= 0xFF
    a.flush()
    del a
    with pytest.raises(UserError, match=r"images-8x8.npy does not match its recorded hash") as e:
        verify_store(path)
    assert "\n" not in str(e.value)

    # The same edit with the manifest's hashes updated to hide it: the box averages give it away.
    m = json.loads((path / "dataset.json").read_text())
    m["hashes"][level_file(8)] = file_data_hash(path / level_file(8))
    m["content_hash"] = content_hash(m["hashes"])
    (path / "dataset.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="not the box average"):
        verify_store(path)


def test_truncated_missing_and_edited_files(tmp_path):
    path = write_store(tmp_path / "s", _images(4)).path
    data = (path / level_file(16)).read_bytes()
    (path / level_file(16)).write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="images-16x16.npy"):
        verify_store(path)

    path = write_store(tmp_path / "t", _images(4)).path
    (path / level_file(4)).unlink()
    with pytest.raises(UserError, match="images-4x4.npy is missing"):
        verify_store(path)

    path = write_store(tmp_path / "u", _images(4)).path
    m = json.loads((path / "dataset.json").read_text())
    m["count"] = 5
    (path / "dataset.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="expected uint8"):
        verify_store(path)


def test_not_a_store_newer_version_and_bad_json(tmp_path):
    with pytest.raises(UserError, match="not a progan dataset store.*progan prepare"):
        open_store(tmp_path)
    path = write_store(tmp_path / "s", _images(2)).path
    m = json.loads((path / "dataset.json").read_text())
    m["format_version"] = 99
    (path / "dataset.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="newer progan"):
        verify_store(path)
    (path / "dataset.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        open_store(path)


def test_old_store_without_hashes_still_verifies(tmp_path):
    path = write_store(tmp_path / "s", _images(3)).path
    m = json.loads((path / "dataset.json").read_text())
    del m["hashes"], m["content_hash"]
    (path / "dataset.json").write_text(json.dumps(m))
    assert "no hashes recorded" in verify_store(path)

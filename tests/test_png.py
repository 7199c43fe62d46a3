"""progan's PNG writer (images.encode_png): read back by Pillow, an independent decoder, exactly."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from progan.images import encode_png, save_image


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk, each CRC checked against zlib's crc32 (the PNG spec's)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + payload), kind
        out.append((kind, payload))
        pos += 12 + length
    return out


SHAPES = [((7, 5, 3), "RGB"), ((6, 9, 1), "L"), ((5, 4, 4), "RGBA"), ((8, 3), "L")]


@pytest.mark.parametrize("shape,mode", SHAPES)
def test_a_png_reads_back_exactly_in_pillow(shape, mode):
    array = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    data = encode_png(array)
    img = Image.open(io.BytesIO(data))
    assert img.mode == mode and img.size == (shape[1], shape[0])
    np.testing.assert_array_equal(np.asarray(img).reshape(shape), array)
    kinds = [k for k, _ in chunks(data)]
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]


def test_every_row_is_up_filtered_and_a_photo_round_trips(tmp_path):
    skimage = pytest.importorskip("skimage.data")
    photo = np.ascontiguousarray(skimage.astronaut())  # 512x512 RGB, a real photo
    data = encode_png(photo)
    idat = zlib.decompress(b"".join(p for k, p in chunks(data) if k == b"IDAT"))
    rows = np.frombuffer(idat, np.uint8).reshape(512, 1 + 512 * 3)
    assert (rows[:, 0] == 2).all()  # PNG filter type 2, "Up", on every row
    np.testing.assert_array_equal(rows[0, 1:], photo[0].reshape(-1))  # above the first row: zeros
    np.testing.assert_array_equal(rows[1:, 1:], (photo[1:].astype(int) - photo[:-1]).reshape(511, -1) % 256)
    path = save_image(photo, tmp_path / "photo.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path)), photo)
    assert not list(tmp_path.glob(".*.tmp"))


def test_what_is_not_an_8_bit_picture_is_refused():
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="C 1, 3 or 4"):
        encode_png(np.zeros((4, 4, 2), np.uint8))


def test_isal_deflate_is_used_and_the_zlib_fallback_writes_the_same_picture(monkeypatch):
    # ISA-L (a dependency) deflates 4.5x faster than zlib; without its wheel zlib takes over.
    # Both must be plain zlib streams of the same filtered rows.
    from isal import isal_zlib

    import progan.images as images

    assert images._deflate is isal_zlib
    array = np.random.default_rng(1).integers(0, 256, size=(9, 7, 3), dtype=np.uint8)
    fast = encode_png(array)
    monkeypatch.setattr(images, "_deflate", zlib)
    slow = encode_png(array)
    idats = [zlib.decompress(b"".join(p for k, p in chunks(d) if k == b"IDAT")) for d in (fast, slow)]
    assert idats[0] == idats[1]
    for data in (fast, slow):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), array)

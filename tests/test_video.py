"""`progan video`: the official interpolation latents, morphs, training time-lapses; files decoded back."""

import json

import imageio_ffmpeg
import numpy as np
import pytest
from helpers import tiny_run
from PIL import Image

from progan.checkpoint import load_snapshot
from progan.cli import main
from progan.sampling import SAMPLING_BLOCK, images_for_seeds
from progan.video import interpolation_latents, interpolation_video, morph_video, write_video


def decode_mp4(path):
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    return meta, [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader]


def diff(a, b):
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_interpolation_latents_match_a_wrapped_gaussian_by_hand():
    frames, sigma = 23, 2.5
    z = np.concatenate(list(interpolation_latents(frames, 2, 5, sigma, seed=7)))
    raw = np.random.RandomState(7).randn(frames, 2, 5)
    radius = int(4 * sigma + 0.5)  # scipy's truncate=4.0
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    smooth = np.stack(
        [
            sum(w * raw[(t + o) % frames] for w, o in zip(k, range(-radius, radius + 1), strict=True))
            for t in range(frames)
        ]
    )
    smooth /= np.sqrt(np.mean(smooth**2))
    np.testing.assert_allclose(z, smooth, rtol=1e-5, atol=1e-5)
    assert abs(float(np.sqrt(np.mean(z.astype(np.float64) ** 2))) - 1) < 1e-5


def test_interpolation_mp4_decodes_with_frame_count_size_and_a_seamless_loop(tmp_path, capsys):
    tiny_run(tmp_path / "run", resolution=16)
    out = tmp_path / "loop.mp4"
    main_args = ["video", str(tmp_path / "run"), "--out", str(out), "--seconds", "3", "--fps", "20",
                 "--smoothing", "0.4", "--grid", "1x2", "--zoom", "4", "--no-progress"]  # fmt: skip
    with pytest.raises(SystemExit) as e:
        main(main_args)
    assert e.value.code == 0 and "60 frames" in capsys.readouterr().out
    meta, frames = decode_mp4(out)
    assert len(frames) == 60 and meta["size"] == (128, 64) and meta["fps"] == 20
    steps = [diff(frames[i], frames[i + 1]) for i in range(len(frames) - 1)]
    wrap = diff(frames[-1], frames[0])
    # The last frame leads into the first like any two neighbours do, far closer than distant frames.
    assert wrap <= 1.5 * float(np.median(steps))
    assert diff(frames[0], frames[30]) > 4 * wrap


def test_frames_are_streamed_one_batch_at_a_time(tmp_path):
    G = load_snapshot(tiny_run(tmp_path / "run", 8)).G_ema
    calls = []
    G.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    total, frames = interpolation_video(G, 100.0, 30.0, (1, 1), 1.0, 0, batch=8)
    assert total == 3000 and calls == []  # nothing generated before the first frame is asked for
    next(frames)
    assert calls == [SAMPLING_BLOCK] * (8 // SAMPLING_BLOCK)  # one batch of 8 frames, in G's blocks


def test_morph_passes_through_each_seed_and_loops(tmp_path):
    snap = load_snapshot(tiny_run(tmp_path / "run", 8))
    G = snap.G_ema
    total, frames = morph_video(G, [3, 17, 42], 1.2, 10.0, zoom=1)
    frames = list(frames)
    assert total == len(frames) == 12
    faces = images_for_seeds(G, [3, 17, 42]).permute(0, 2, 3, 1).numpy()
    for i in range(3):  # frames 0, 4, 8 are the chosen faces themselves
        np.testing.assert_array_equal(frames[4 * i], faces[i])
    # gif written and read back: same number of frames, played in a loop
    path = write_video(iter(frames), tmp_path / "m.gif", 10.0, total=total, progress=False)
    with Image.open(path) as im:
        assert im.n_frames == 12 and im.info.get("loop") == 0 and im.size == (8, 8)


def test_conditional_morph_and_webp(tmp_path, capsys):
    tiny_run(tmp_path / "run", 8, label_names=["cat", "dog", "fox"])
    out = tmp_path / "m.webp"
    with pytest.raises(SystemExit) as e:
        main(["video", str(tmp_path / "run"), "--out", str(out), "--kind", "morph", "--seeds", "1,2",
              "--seconds", "0.4", "--fps", "10", "--label", "dog", "--no-progress"])  # fmt: skip
    assert e.value.code == 0
    with Image.open(out) as im:
        assert im.n_frames == 4 and im.size == (256, 256)
    with pytest.raises(SystemExit) as e:
        main(["video", str(tmp_path / "run"), "--out", str(out), "--label", "emu", "--no-progress"])
    assert e.value.code == 2 and "emu" in capsys.readouterr().err


def test_training_timelapse_captions_each_grid(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rng = np.random.default_rng(0)
    stats = []
    for i, (kimg, res) in enumerate([(0.4, 4), (0.8, 8), (1.2, 8)]):
        tag = f"{int(kimg):06d}.{round(kimg * 1000) % 1000:03d}"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(run / f"fakes{tag}.png")
        stats.append({"tick": i, "kimg": kimg, "resolution": res, "alpha": 0.5 if i == 1 else 1.0})
    (run / "stats.jsonl").write_text("\n".join(json.dumps(s) for s in stats) + "\n{torn")
    out = tmp_path / "t.mp4"
    with pytest.raises(SystemExit) as e:
        main(["video", str(run), "--kind", "training", "--out", str(out), "--fps", "4", "--seconds", "3",
              "--zoom", "8", "--no-progress"])  # fmt: skip
    assert e.value.code == 0
    meta, frames = decode_mp4(out)
    assert len(frames) == 12
    w, h = meta["size"]
    assert w == 256 and h > 256  # the grid, enlarged, over a caption band
    band = [f[256:].astype(int) for f in frames]
    assert all(b.max() > 200 for b in band)  # white text on each frame
    assert diff(band[0], band[4]) > 0 and diff(band[4], band[8]) > 0  # the caption changes per grid
    assert np.array_equal(band[0], band[3])


def test_bad_video_requests_are_one_line_errors(tmp_path, capsys):
    tiny_run(tmp_path / "run", 8)
    for args, needle in [
        (["--out", str(tmp_path / "x.avi")], ".mp4"),
        (["--out", str(tmp_path / "no" / "x.mp4")], "does not exist"),
        (["--out", str(tmp_path / "x.mp4"), "--kind", "morph"], "--seeds"),
        (["--out", str(tmp_path / "x.mp4"), "--kind", "morph", "--seeds", "4"], "two seeds"),
        (["--out", str(tmp_path / "x.mp4"), "--grid", "2y2"], "--grid"),
        (["--out", str(tmp_path / "x.mp4"), "--kind", "training"], "fakes"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(["video", str(tmp_path / "run"), *args, "--no-progress"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_long_interpolations_stream_the_wrapped_gaussian_of_chunked_noise(monkeypatch):
    import progan.video as v

    monkeypatch.setattr(v, "MAX_WHOLE_LATENT_VALUES", 150)  # 23 frames x 2 cells x 5 is 230: streamed
    monkeypatch.setattr(v, "STREAM_CHUNK_ROWS", 7)
    frames, sigma = 23, 1.5
    chunks = list(interpolation_latents(frames, 2, 5, sigma, seed=7))
    assert [len(c) for c in chunks] == [7, 7, 7, 2]
    raw = np.concatenate([v._raw_chunk(7, k, frames, 2, 5) for k in range(4)])
    taps = v.gaussian_taps(sigma)
    r = len(taps) // 2
    want = sum(w * raw[(np.arange(frames) + o) % frames] for w, o in zip(taps, range(-r, r + 1), strict=True))
    want /= np.sqrt(np.sum(taps**2))
    np.testing.assert_allclose(np.concatenate(chunks), want, rtol=1e-5, atol=1e-6)


def test_a_100000_second_video_takes_memory_for_a_window_not_the_video(tmp_path):
    # 6 million frames of a 3x4 grid: 1.2e9 latent values, 9 GB in float64 per copy if made whole.
    import tracemalloc

    G = load_snapshot(tiny_run(tmp_path / "run", 8)).G_ema
    tracemalloc.start()
    try:
        total, frames = interpolation_video(G, 100000.0, 60.0, (3, 4), 1.0, 0, batch=24, zoom=1)
        first = [next(frames) for _ in range(3)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == 6_000_000 and len({f.shape for f in first}) == 1 and first[0].ndim == 3
    assert peak < 64 << 20, f"{peak / 2**20:.0f} MiB"
    # A morph of 100 million frames: latents and labels are made a batch at a time too.
    tracemalloc.start()
    try:
        total, frames = morph_video(G, [3, 17, 42], 1e7, 10.0, zoom=1)
        next(frames)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == 100_000_000 and peak < 16 << 20, f"{peak / 2**20:.0f} MiB"


def test_a_too_long_gif_is_refused_before_the_video_is_made(tmp_path, capsys):
    import time
    import tracemalloc

    tiny_run(tmp_path / "run", 8)
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(SystemExit) as e:
            main(["video", str(tmp_path / "run"), "--out", str(tmp_path / "v.gif"), "--seconds", "100000",
                  "--fps", "60", "--no-progress", "--device", "cpu"])  # fmt: skip
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "too many for .gif" in err
    assert peak < 64 << 20 and time.monotonic() - t0 < 30
    assert not list(tmp_path.glob("*.gif"))

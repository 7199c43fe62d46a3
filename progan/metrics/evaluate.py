"""Evaluate generators: one pass over generated images feeds every requested metric.

`compute_metrics` is the library entry (the training loop calls it with G_ema); `evaluate_path`
drives `progan evaluate` over one snapshot, every snapshot of a run, or a dataset store (real
against real: the noise floor). Reals' SWD descriptors and Inception features are cached per
dataset store and metric settings under ``$PROGAN_CACHE_DIR`` (default ``~/.cache/progan/metrics``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from progan import distributed
from progan.checkpoint import find_snapshots, load_snapshot
from progan.data.store import Store, open_store
from progan.errors import UserError
from progan.metrics import fidelity, msssim, swd
from progan.sampling import iter_images, labels_for, latents_for_seeds, metric_seeds

METRICS = ("swd", "msssim", "fid", "kid", "is", "pr")
NEEDS_REALS = {"swd", "fid", "kid", "pr"}
INCEPTION = {"fid", "kid", "is", "pr"}
SPILL_BYTES = 1 << 30  # fakes' SWD descriptors above this go to a temporary directory


def parse_metrics(spec: str | list[str]) -> list[str]:
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    bad = [n for n in names if n not in METRICS]
    if bad or not names:
        raise UserError(f"unknown metric(s) {', '.join(bad) or '(none)'}; choose from {','.join(METRICS)}")
    return list(dict.fromkeys(names))


def default_batch_size(resolution: int) -> int:
    return int(max(2, min(256, (1 << 20) // (resolution * resolution))) // 2 * 2)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("PROGAN_CACHE_DIR")
    return Path(env) / "metrics" if env else Path.home() / ".cache" / "progan" / "metrics"


def store_identity(store: Store, resolution: int) -> dict:
    """What makes reals' statistics reusable: the store content (its hash when it has one)."""
    ident = {"count": store.count, "resolution": resolution, "channels": store.channels}
    if store.manifest.get("content_hash"):
        ident["content_hash"] = store.manifest["content_hash"]
    else:
        f = store.path / f"images-{resolution}x{resolution}.npy"
        st = f.stat()
        ident.update(path=str(f.resolve()), size=st.st_size, mtime_ns=st.st_mtime_ns)
    return ident


def _key(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:20]


def real_indices(count: int, num: int, seed: int, offset: int = 0) -> np.ndarray:
    """`num` distinct images (sorted, for memory-map locality) from a seeded permutation; with
    replacement when the store has fewer. `offset` picks a disjoint second set (noise floor)."""
    rng = np.random.default_rng([seed, 7])
    if num * (offset + 1) <= count:
        perm = rng.permutation(count)
        return np.sort(perm[offset * num : (offset + 1) * num])
    return np.sort(np.random.default_rng([seed, 7, offset]).integers(0, count, size=num))


def real_batches(images: np.ndarray, idx: np.ndarray, batch: int) -> Iterator[np.ndarray]:
    for i in range(0, len(idx), batch):
        yield np.ascontiguousarray(images[idx[i : i + batch]])


def fake_batches(
    G: torch.nn.Module, num: int, batch: int, device: torch.device | str, seed: int, precision: str = "auto"
) -> Iterator[torch.Tensor]:
    """uint8 (n, C, R, R) CPU batches of G's images for `metric_seeds(num, seed)`, through the one
    sampling path: image k is `progan generate --seeds <metric_seeds(num, seed)[k]>`'s image."""
    seeds = metric_seeds(num, seed)
    return (fake_batch(G, seeds[i : i + batch], device, precision) for i in range(0, num, batch))


def fake_batch(
    G: torch.nn.Module, seeds: list[int], device: torch.device | str, precision: str = "auto"
) -> torch.Tensor:
    """uint8 (n, C, R, R) images of these seeds (one batch of `fake_batches`)."""
    labels = labels_for(int(getattr(G, "label_size", 0) or 0), seeds, None)
    latents = [latents_for_seeds(seeds, int(G.latent_size))]
    return next(iter_images(G, latents, labels, batch=len(seeds), device=device, precision=precision))


class _RealCache:
    def __init__(self, store: Store, resolution: int, num: int, seed: int, cache_dir) -> None:
        self.store, self.resolution, self.num, self.seed = store, resolution, num, seed
        self.root = cache_root(cache_dir)
        self.ident = store_identity(store, resolution)

    def _batches(self, batch: int, offset: int = 0) -> Iterator[np.ndarray]:
        idx = real_indices(self.store.count, self.num, self.seed, offset)
        return real_batches(self.store.images(self.resolution), idx, batch)

    def swd_descriptors(self, batch: int, device, offset: int = 0) -> swd.DescriptorSet:
        settings = {
            "kind": "swd-v1",
            "store": self.ident,
            "num": self.num,
            "seed": self.seed,
            "offset": offset,
        }
        path = self.root / f"swd-{_key(settings)}"
        if (path / "descriptors.json").is_file():
            try:
                return swd.DescriptorSet.load(path)
            except (ValueError, OSError, json.JSONDecodeError):
                shutil.rmtree(path, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".swd-tmp-", dir=self.root))
        try:
            ds = swd.collect(
                self._batches(batch, offset),
                self.resolution,
                self.store.channels,
                seed=2 * self.seed + offset * 1000,
                spill_dir=tmp,
                device=device,
            )
            ds.save(settings)
            if path.exists():
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return swd.DescriptorSet.load(path)

    def features(self, extractor: fidelity.FeatureExtractor, batch: int, device) -> np.ndarray:
        settings = {"kind": "inception-v1", "store": self.ident, "num": self.num, "seed": self.seed}
        settings["extractor"] = extractor.name
        path = self.root / f"features-{_key(settings)}.npy"
        if path.is_file() and extractor.name != "custom":
            try:
                return np.load(path)
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
        feats, _ = fidelity.extract_features(
            extractor, self._batches(batch), want_logits=False, device=device
        )
        if extractor.name != "custom":  # an unnamed test network has no stable identity
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
            np.save(tmp, feats)
            os.replace(tmp, path)
        return feats


def _open_reals(store_path, resolution: int, channels: int) -> Store:
    store = open_store(store_path)
    if resolution not in store.levels:
        raise UserError(
            f"store {store.path} has levels {store.levels}, not {resolution}x{resolution}, which the "
            f"generator makes; evaluate against a store prepared at >= {resolution}"
        )
    if store.channels != channels:
        raise UserError(
            f"store {store.path} has {store.channels} channels but the generator makes {channels}"
        )
    return store


def compute_metrics(
    names: list[str],
    G: torch.nn.Module,
    store_path: str | os.PathLike | None,
    num: int,
    device: torch.device | str = "cpu",
    seed: int = 0,
    batch_size: int | None = None,
    inception_weights: str | None = None,
    feature_extractor: fidelity.FeatureExtractor | None = None,
    cache_dir: str | os.PathLike | None = None,
    precision: str = "auto",
    ctx: distributed.Context | None = None,
) -> dict[str, float]:
    """Metrics of generator G (in eval mode, e.g. G_ema) at its current resolution.

    With `ctx` of several ranks, every rank calls this: the generated images are shared out a
    batch each (distributed.shared_in_order), rank 0 alone reads the reals and folds the batches'
    results in order, so the numbers are those of one process; the other ranks return {}.

    Returns a flat dict: swd_<size>... and swd_avg (x1e3), msssim, fid, kid_mean, kid_std,
    is_mean, is_std, precision, recall, as requested. `num` images are generated (MS-SSIM uses
    num // 2 consecutive pairs); SWD, FID, KID and precision/recall compare with `num` reals.
    The generated images are those of `progan.sampling.metric_seeds(num, seed)`.
    Below 16x16, swd and msssim are left out of the result (the paper's methods need 16x16).
    """
    names = parse_metrics(names)
    num = int(num)
    if num < 2:
        raise UserError(f"--num {num} is too small; use at least a few hundred images")
    device = torch.device(device)
    res, channels = int(G.resolution), int(getattr(G, "channels", 3))
    batch = batch_size or default_batch_size(res)
    batch = max(2, batch // 2 * 2)  # MS-SSIM pairs within a batch
    if res < swd.MIN_RESOLUTION:
        # SWD's pyramid and MS-SSIM's five scales need 16x16: skipped (not an error) so that
        # training-time evaluation can run from the first, 4x4 phase on.
        names = [n for n in names if n not in ("swd", "msssim")]
        if not names:
            return {}
    store = None
    if NEEDS_REALS & set(names):
        if store_path is None:
            need = ",".join(n for n in names if n in NEEDS_REALS)
            raise UserError(f"{need} compare with real images: pass --data STORE (the dataset store)")
        store = _open_reals(store_path, res, channels)
    extractor = None
    if INCEPTION & set(names):
        extractor = feature_extractor or fidelity.load_inception(inception_weights, device)
        fidelity._torchmetrics()  # fail early when it is missing

    ctx = ctx or distributed.Context()
    out: dict[str, float] = {}
    reals = _RealCache(store, res, num, seed, cache_dir) if store is not None and ctx.is_main else None
    real_desc = reals.swd_descriptors(batch, device) if "swd" in names and reals else None
    real_feats = reals.features(extractor, batch, device) if extractor is not None and reals else None

    tmp_spill = None
    fake_desc = None
    if "swd" in names:
        est = num * swd.NHOODS_PER_IMAGE * channels * 49 * 4 * len(swd.swd_resolutions(res))
        if est > SPILL_BYTES and ctx.is_main:
            tmp_spill = tempfile.mkdtemp(prefix="progan-swd-")
        fake_desc = swd.DescriptorSet(res, channels, seed=2 * seed + 1, spill_dir=tmp_spill, device=device)
    seeds = metric_seeds(num, seed)

    def prepare(k: int):  # on every rank, batch by batch: the SWD patch centres of batch k
        n = min(batch, num - k * batch)
        return fake_desc.draw_positions(n) if fake_desc is not None else None

    def work(k: int, positions) -> dict:  # one batch of fakes, reduced to what the metrics need
        x = fake_batch(G, seeds[k * batch : (k + 1) * batch], device, precision)
        part: dict = {}
        if fake_desc is not None:
            part["desc"] = fake_desc.describe(x, positions)
        if "msssim" in names:
            n = x.shape[0] // 2 * 2
            part["ms"] = (float(msssim.ms_ssim(x[0:n:2].to(device), x[1:n:2].to(device)).sum()) if n else 0.0,
                          n // 2)  # fmt: skip
        if extractor is not None:
            part["pool"], part["logits"] = fidelity.extract_features(
                extractor, [x], want_logits="is" in names, device=device
            )
        return part

    ms_total, ms_pairs = 0.0, 0
    pools, logits = [], []
    was_training = G.training
    G.eval()
    try:
        for _, part in distributed.shared_in_order(-(-num // batch), prepare, work, ctx):
            if fake_desc is not None:
                fake_desc.append(part["desc"])
            if "ms" in part:
                ms_total += part["ms"][0]
                ms_pairs += part["ms"][1]
            if "pool" in part:
                pools.append(part["pool"])
                if part["logits"] is not None:
                    logits.append(part["logits"])
        if fake_desc is not None and ctx.is_main:
            out.update(swd.sliced_wasserstein_levels(real_desc, fake_desc, seed=seed, device=device))
    finally:
        G.train(was_training)
        if tmp_spill is not None:
            shutil.rmtree(tmp_spill, ignore_errors=True)
    if not ctx.is_main:
        return {}
    if "msssim" in names:
        out["msssim"] = ms_total / max(ms_pairs, 1)
    if extractor is not None:
        fake_pool = np.concatenate(pools)
        fake_logits = np.concatenate(logits) if logits else None
        out.update(fidelity.fidelity_metrics(names, real_feats, fake_pool, fake_logits, seed=seed))
    return out


def real_vs_real_swd(
    store_path,
    num: int,
    resolution: int | None = None,
    seed: int = 0,
    device="cpu",
    batch_size=None,
    cache_dir=None,
) -> dict[str, float]:
    """The SWD noise floor: two disjoint random sets of reals (overlapping only when the store is
    smaller than 2 * num), each with its own patches."""
    store = open_store(store_path)
    res = resolution or store.resolution
    store = _open_reals(store_path, res, store.channels)
    batch = batch_size or default_batch_size(res)
    reals = _RealCache(store, res, num, seed, cache_dir)
    a = reals.swd_descriptors(batch, device, offset=0)
    b = reals.swd_descriptors(batch, device, offset=1)
    return swd.sliced_wasserstein_levels(a, b, seed=seed, device=device)


# ---- runs and snapshots ------------------------------------------------------------------------


def _merge_records(path: Path, records: list[dict]) -> list[dict]:
    old = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                old.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    by = {r.get("snapshot"): r for r in old}
    for r in records:
        by[r["snapshot"]] = {**by.get(r["snapshot"], {}), **r}
    merged = sorted(by.values(), key=lambda r: (float(r.get("kimg", 0.0)), str(r.get("snapshot"))))
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in merged))
    os.replace(tmp, path)
    return merged


def format_table(records: list[dict], keys: list[str]) -> str:
    cols = ["snapshot", "kimg", "res"] + keys
    rows = [
        [str(r.get("snapshot", "")), f"{float(r.get('kimg', 0)):g}", str(r.get("resolution", ""))]
        + [(f"{r[k]:.4f}" if isinstance(r.get(k), (int, float)) else "-") for k in keys]
        for r in records
    ]
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def metric_keys(records: list[dict]) -> list[str]:
    skip = {"snapshot", "kimg", "resolution", "num", "seed", "time", "path", "seconds"}
    keys = []
    for r in records:
        keys += [k for k, v in r.items() if k not in skip and isinstance(v, (int, float)) and k not in keys]

    def order(k):
        group = next(
            (
                i
                for i, p in enumerate(("swd", "msssim", "fid", "kid", "is_", "precision", "recall"))
                if k.startswith(p)
            ),
            9,
        )
        return (
            group,
            0 if k.endswith("avg") else 1,
            -int(k.split("_")[-1]) if k.split("_")[-1].isdigit() else 0,
            k,
        )

    return sorted(keys, key=order)


def evaluate_path(
    path: str | os.PathLike,
    names: list[str],
    num: int,
    data: str | None = None,
    device: str = "cpu",
    seed: int = 0,
    batch_size: int | None = None,
    inception_weights: str | None = None,
    out_dir: str | None = None,
    cache_dir: str | None = None,
    log=print,
    precision: str = "auto",
) -> list[dict]:
    """Evaluate a snapshot, every snapshot of a run, or (a dataset store) the real-vs-real floor.
    Writes metrics.jsonl and metrics-<metric>.png into the run directory (or `out_dir`)."""
    from progan.metrics.plot import plot_metrics

    path = Path(path)
    names = parse_metrics(names)
    records = []
    if (path / "dataset.json").is_file():  # a store: real against real
        bad = [n for n in names if n != "swd"]
        if bad:
            raise UserError(f"a dataset store alone gives only the SWD noise floor, not {','.join(bad)}")
        t0 = time.time()
        vals = real_vs_real_swd(
            path, num, seed=seed, device=device, batch_size=batch_size, cache_dir=cache_dir
        )
        rec = {
            "snapshot": "reals-vs-reals",
            "kimg": 0.0,
            "resolution": open_store(path).resolution,
            "num": num,
        }
        records.append({**rec, **vals, "seconds": round(time.time() - t0, 1)})
        target = Path(out_dir) if out_dir else path
        log(format_table(records, metric_keys(records)))
        if out_dir:
            target.mkdir(parents=True, exist_ok=True)
            _merge_records(target / "metrics.jsonl", records)
        return records
    snaps = find_snapshots(path, every=True)
    run_dir = path.parent if snaps == [path] else path  # where metrics.jsonl goes: the run's folder
    target = Path(out_dir) if out_dir else run_dir
    target.mkdir(parents=True, exist_ok=True)
    for snap_path in snaps:
        t0 = time.time()
        snap = load_snapshot(snap_path)
        G = snap.G_ema.to(device)
        store_path = data or snap.data
        vals = compute_metrics(
            names,
            G,
            store_path,
            num,
            device=device,
            seed=seed,
            batch_size=batch_size,
            inception_weights=inception_weights,
            cache_dir=cache_dir,
            precision=precision,
        )
        rec = {
            "snapshot": Path(snap_path).name,
            "kimg": float(snap.kimg),
            "resolution": int(G.resolution),
            "num": num,
            "seed": seed,
            **vals,
            "seconds": round(time.time() - t0, 1),
        }
        records.append(rec)
        log(f"{rec['snapshot']}: " + ", ".join(f"{k}={v:.4f}" for k, v in vals.items()))
        del G, snap
    merged = _merge_records(target / "metrics.jsonl", records)
    plot_metrics(merged, target)
    log(format_table(records, metric_keys(records)))
    log(f"wrote {target / 'metrics.jsonl'} and plots {target}/metrics-*.png")
    return records

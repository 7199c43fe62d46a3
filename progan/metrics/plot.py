"""Line plots of metrics against kimg, drawn with Pillow (no plotting library needed)."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COLOURS = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (0, 0, 0),
]
GROUPS = {
    "swd": ("SWD x1e3 (lower is better)", lambda k: k.startswith("swd_")),
    "msssim": ("MS-SSIM among generated pairs", lambda k: k == "msssim"),
    "fid": ("FID (lower is better)", lambda k: k == "fid"),
    "kid": ("KID (lower is better)", lambda k: k == "kid_mean"),
    "is": ("Inception Score (higher is better)", lambda k: k == "is_mean"),
    "pr": ("precision / recall", lambda k: k in ("precision", "recall")),
}


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(int(math.ceil((hi - start) / step)) + 1)]


def line_plot(
    path: Path, title: str, series: dict[str, tuple[list[float], list[float]]], xlabel="kimg"
) -> None:
    w, h, left, right, top, bottom = 720, 420, 70, 150, 40, 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    xs = [x for sx, _ in series.values() for x in sx]
    ys = [y for _, sy in series.values() for y in sy if math.isfinite(y)]
    if not xs or not ys:
        d.text((left, top), f"{title}: no data", fill="black", font=font)
        img.save(path)
        return
    xt, yt = _ticks(min(xs), max(xs)), _ticks(min(ys), max(ys))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]

    def px(x, y):
        return (
            left + (x - x0) / ((x1 - x0) or 1) * (w - left - right),
            h - bottom - (y - y0) / ((y1 - y0) or 1) * (h - top - bottom),
        )

    for t in xt:
        p = px(t, y0)
        d.line([p, (p[0], p[1] + 4)], fill="black")
        d.text((p[0] - 10, p[1] + 6), f"{t:g}", fill="black", font=font)
    for t in yt:
        p = px(x0, t)
        d.line([(p[0] - 4, p[1]), (w - right, p[1])], fill=(225, 225, 225))
        d.text((5, p[1] - 6), f"{t:.4g}", fill="black", font=font)
    d.rectangle([left, top, w - right, h - bottom], outline="black")
    d.text((left, 12), title, fill="black", font=font)
    d.text(((w - right + left) / 2 - 12, h - 20), xlabel, fill="black", font=font)
    for i, (label, (sx, sy)) in enumerate(series.items()):
        c = COLOURS[i % len(COLOURS)]
        pts = [px(x, y) for x, y in zip(sx, sy, strict=True) if math.isfinite(y)]
        if len(pts) > 1:
            d.line(pts, fill=c, width=2)
        for p in pts:
            d.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=c)
        d.text((w - right + 12, top + 16 * i), label, fill=c, font=font)
    img.save(path)


def plot_metrics(records: list[dict], out_dir: Path) -> list[Path]:
    """One PNG per metric group present in the records: metrics-<group>.png."""
    written = []
    keys = sorted({k for r in records for k in r})
    for group, (title, match) in GROUPS.items():
        gkeys = [k for k in keys if match(k)]
        if not gkeys:
            continue
        gkeys.sort(
            key=lambda k: (k != "swd_avg", -int(k.split("_")[-1]) if k.split("_")[-1].isdigit() else 0)
        )
        series = {}
        for k in gkeys:
            pts = sorted(
                (float(r.get("kimg", 0.0)), float(r[k]))
                for r in records
                if isinstance(r.get(k), (int, float))
            )
            series[k] = ([p[0] for p in pts], [p[1] for p in pts])
        path = Path(out_dir) / f"metrics-{group}.png"
        line_plot(path, title, series)
        written.append(path)
    return written

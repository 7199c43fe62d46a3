"""What a training run tells the world, fed one `TickRecord` per tick.

The reporter owns the progress bar, stats.jsonl (the one place that appends to it), the console
line and the TensorBoard scalars and images. Each tick field is declared once, in `TickRecord`,
with its console format and whether TensorBoard plots it; the training loop only measures.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from progan.errors import writing
from progan.schedule import Stage

STATS_FILE = "stats.jsonl"


def _f(console: str | None = None, tensorboard: bool = False, default=None):
    """A tick field: `console` is its format in the console line (None: not shown there)."""
    return field(default=default, metadata={"console": console, "tensorboard": tensorboard})


@dataclass
class TickRecord:
    """One line of stats.jsonl: where training stands at the end of a tick and how it went."""

    tick: int = _f("tick {:<4d}")
    kimg: float = _f("kimg {:<9.3f}")
    resolution: int = _f("res {:<4d}", tensorboard=True)
    alpha: float = _f("alpha {:<5.3f}", tensorboard=True)
    minibatch: int = _f()
    lr: float = _f()
    loss_G: float | None = _f("G {:<8.3f}", tensorboard=True)
    loss_D: float | None = _f("D {:<8.3f}", tensorboard=True)
    gradient_penalty: float | None = _f("gp {:<7.4f}", tensorboard=True)
    wasserstein: float | None = _f(tensorboard=True)
    img_per_sec: float = _f("img/s {:<7.1f}", tensorboard=True)
    sec_per_kimg: float = _f()
    skipped_updates: int = _f("skipped {}", tensorboard=True)
    peak_memory_gb: float = _f("mem {:.2f}GB", tensorboard=True)
    timestamp: float = _f()
    metrics: dict[str, float] = field(default_factory=dict)  # "metric/swd_avg": ..., when evaluated

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "metrics"}
        return {**out, **self.metrics}

    def console_line(self) -> str:
        parts = []
        for f in fields(self):
            fmt, value = f.metadata.get("console"), getattr(self, f.name)
            if fmt and value is not None:
                parts.append(fmt.format(value))
        return " ".join(parts)

    def scalars(self) -> dict[str, float]:
        """TensorBoard's scalars: progress/<field> and the metrics under their own names."""
        out = {
            f"progress/{f.name}": getattr(self, f.name)
            for f in fields(self)
            if f.metadata.get("tensorboard") and getattr(self, f.name) is not None
        }
        return {**out, **self.metrics}


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def bar_format(total_kimg: float) -> str:
    """tqdm's format: kimg done / total with as many decimals as a short run needs."""
    digits = 1 if total_kimg >= 10 else 3
    counts = f"{{n:.{digits}f}}/{{total:.{digits}f}} kimg"
    return "{desc}{percentage:3.0f}%|{bar}| " + counts + " [{elapsed}<{remaining}{postfix}]"


def _summary_writer(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but a stripped install should still train
        return None
    return SummaryWriter(str(run_dir))


def truncate_stats(path: Path, tick: int) -> None:
    """Keep the stats lines of ticks up to `tick` (the snapshot resumed from): a run killed after
    logging later ticks trains them again, and must not log them twice. A torn line goes too."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("tick"), int) and record["tick"] <= tick:
            kept.append(line)
    if kept != lines or (lines and not path.read_text().endswith("\n")):
        tmp = path.with_name(f".{path.name}.tmp")
        with writing(path):
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, path)


class Reporter:
    """Progress bar, stats.jsonl, console and TensorBoard of one rank; only rank 0 (`main`) writes."""

    def __init__(self, run_dir: Path | None, total_kimg: float, start_nimg: int, progress: bool, main: bool):
        self.run_dir = run_dir
        self.main = main
        self.writer = _summary_writer(run_dir) if main else None
        # Redraw often on a terminal, rarely in a log file.
        interval = 0.5 if sys.stderr.isatty() else 30.0
        self.bar = tqdm(
            total=round(total_kimg, 3),
            initial=round(start_nimg / 1000, 3),
            unit="kimg",
            disable=not (progress and main),
            mininterval=interval,
            dynamic_ncols=True,
            bar_format=bar_format(total_kimg),
        )
        self._shown = (0, -1.0)
        self._rate = ""

    def set_total(self, total_kimg: float) -> None:
        """A new end for the bar (a timed run fits its total to its deadline)."""
        self.bar.total = round(total_kimg, 3)
        self.bar.refresh()

    def started(self) -> None:
        if self.main:
            print(f"Training run: {self.run_dir}", flush=True)

    def progress(self, nimg: int, stage: Stage) -> None:
        """After every step: the bar, and its resolution/alpha when they changed visibly."""
        # Track nimg exactly: summing minibatch / 1000 drifts past the total in floating point.
        self.bar.update(min(nimg / 1000, self.bar.total) - self.bar.n)
        if stage.resolution != self._shown[0] or abs(stage.alpha - self._shown[1]) >= 0.01:
            self._shown = (stage.resolution, stage.alpha)
            self._postfix(stage)

    def _postfix(self, stage: Stage) -> None:
        self.bar.set_postfix_str(
            f"res {stage.resolution} alpha {stage.alpha:.2f} {self._rate}", refresh=False
        )

    def tick(self, record: TickRecord, nimg: int, stage: Stage) -> None:
        """The tick's one record: a stats.jsonl line, the console line, TensorBoard scalars."""
        self._rate = f"{record.img_per_sec:.0f} img/s"
        self._postfix(stage)
        if not self.main:
            return
        self.append_stats(record)
        self.bar.write(record.console_line())
        if self.writer is not None:
            for key, value in record.scalars().items():
                self.writer.add_scalar(key, value, nimg)

    def append_stats(self, record: TickRecord) -> None:
        """The one place that appends to stats.jsonl."""
        with writing(self.run_dir / STATS_FILE), open(self.run_dir / STATS_FILE, "a") as f:
            f.write(json.dumps(record.to_json()) + "\n")

    def image(self, tag: str, path: Path, nimg: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, np.asarray(Image.open(path).convert("RGB")), nimg, dataformats="HWC")

    def close_bar(self) -> None:
        self.bar.close()

    def close(self, forced: bool = False) -> None:
        self.bar.close()
        # After a forced stop TensorBoard's writer may have been interrupted holding its lock, and
        # closing it would wait forever; its events are flushed every few seconds anyway.
        if self.writer is not None and not forced:
            self.writer.close()
        self.writer = None

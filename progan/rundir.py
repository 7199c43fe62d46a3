"""A run directory's housekeeping: its numbered name, the lock that keeps a second trainer out,
the leftovers of a killed writer, and the signals that ask a run to stop at a step boundary."""

from __future__ import annotations

import os
import re
import signal
import weakref
from pathlib import Path

from progan.data.store import LOCK_FILE, hold_lock, remove_stale_temporaries
from progan.errors import UserError, writing


def new_run_dir(outdir: Path, name: str) -> Path:
    outdir.mkdir(parents=True, exist_ok=True)
    ids = [int(m.group(1)) for p in outdir.iterdir() if (m := re.match(r"^(\d{5})-", p.name))]
    run_dir = outdir / f"{max(ids, default=-1) + 1:05d}-{name}"
    run_dir.mkdir()
    return run_dir


class RunLock:
    """An exclusive lock on a run directory while a trainer uses it (flock on RUN/.lock): a second
    trainer on the same run fails at once instead of both writing snapshots and stats. The kernel
    drops the lock when the process dies, so a killed run can be resumed at once."""

    def __init__(self, run_dir: Path) -> None:
        path = run_dir / LOCK_FILE
        with writing(path):
            self.fd = hold_lock(path)
        if self.fd is None:
            try:
                pid = path.read_text().strip() or "?"
            except OSError:
                pid = "?"
            raise UserError(
                f"run {run_dir} is in use by another trainer (process {pid}); wait for it to finish or "
                f"stop it, then resume"
            )
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        # Released with the trainer even when it is dropped without finishing (tests, errors).
        self._finalizer = weakref.finalize(self, _unlock, path, self.fd)

    def release(self) -> None:
        self._finalizer()


def _unlock(path: Path, fd: int) -> None:
    path.unlink(missing_ok=True)  # before closing: a waiting trainer then locks a fresh file
    os.close(fd)


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Remove the temporary snapshot folders and files that killed writers left in `run_dir` (the
    caller holds the run's lock, so no writer of this run is alive)."""
    removed = remove_stale_temporaries(run_dir, ".snapshot-*.tmp-*", owner_gone=True)
    for tmp in run_dir.glob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


class StopRequests:
    """Ctrl-C (SIGINT) and SIGTERM (what schedulers and `kill` send) ask training to stop at the next
    step boundary, where it writes a snapshot and exits cleanly.

    The handler only sets a flag: raising KeyboardInterrupt from it could land inside TensorBoard's
    writer while it holds a lock, and the final snapshot or exit would then hang. A second Ctrl-C
    raises KeyboardInterrupt for someone who does not want to wait for the current step."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None  # the first signal: the command exits with 128 + it
        self._previous: dict[int, object] = {}

    def install(self) -> StopRequests:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                break
        return self

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signum = self.signum or signum


def interrupted_status(signum: int | None) -> int:
    """The exit status of a run a signal stopped (snapshot written): 128 + the signal, as a shell
    reports a process the signal ended (130 for Ctrl-C, 143 for SIGTERM); 0 for a run that ended.
    Not 0: a script or scheduler must not take a stopped run for a finished one (a test that did
    read a missing final snapshot, FileNotFoundError, when an outer `timeout` stopped its run)."""
    return 0 if signum is None else 128 + signum

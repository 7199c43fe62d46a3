"""Data-parallel training over several processes (GPUs or CPU ranks), as the official code does it.

Each rank computes its slice of the global minibatch; gradients are averaged across ranks with one
all-reduce per network per step, so N ranks x B/N images take the same step as 1 rank x B. This is
what DistributedDataParallel does, done by hand: DDP's autograd hooks do not support the gradient
penalty's double backward, and the blocks of a growing network that are not yet in use would need
`find_unused_parameters` and its per-step graph walk.

Launch with torchrun (one or many machines), or `progan train --gpus N` on one machine.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from progan.errors import UserError

P = TypeVar("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


# Every rank waits in its next collective while rank 0 alone writes snapshots and grids, and reads
# the reals' metric statistics (once per store, then cached). The generated images of a metric are
# shared by all ranks (shared_in_order), so FID-50k at 1024 is no rank-0 pause (one GPU generated
# 50,000 images in about 2 minutes at 469 img/s on an H200). NCCL's default is 10 minutes; an
# hour stays above any of those pauses, and still ends a run whose rank died unseen.
PROCESS_GROUP_TIMEOUT = timedelta(hours=1)


def world_size_from_environment() -> int:
    """The number of ranks torchrun (or `launch`) set up, before joining their group."""
    return max(int(os.environ.get("WORLD_SIZE", "1")), 1)


def from_environment(device_type: str) -> Context:
    """Join the process group that torchrun (or `launch`) describes in the environment, if any."""
    world_size = world_size_from_environment()
    if world_size <= 1:
        return Context()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if _local_rendezvous is not None:  # ranks started by `launch`: the store on 127.0.0.1
            rank = int(os.environ["RANK"])
            dist.init_process_group(
                backend=backend, store=_local_rendezvous, rank=rank, world_size=world_size,
                timeout=PROCESS_GROUP_TIMEOUT,
            )  # fmt: skip
        else:  # torchrun: its rendezvous, at the addresses the user gave
            dist.init_process_group(backend=backend, timeout=PROCESS_GROUP_TIMEOUT)
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def all_reduce_mean_(tensors: list[torch.Tensor], ctx: Context) -> None:
    """Average tensors across ranks in place, with a single flat all-reduce."""
    if not ctx.distributed or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def shutdown() -> None:
    """Leave the process group, if this process joined one (a no-op otherwise)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Context) -> None:
    """Wait until every rank gets here (at the end of a run, so that none tears down its connections
    while rank 0 still writes the final snapshot)."""
    if not ctx.distributed:
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[ctx.local_rank])
    else:
        dist.barrier()


def average_gradients(params: list[torch.nn.Parameter], ctx: Context) -> None:
    # Every rank trains the same stage, so the same parameters have gradients on every rank.
    all_reduce_mean_([p.grad for p in params if p.grad is not None], ctx)


def rank_zero_says(flag: bool, ctx: Context, device: torch.device) -> bool:
    """Rank 0's `flag` on every rank: decisions taken on a clock (a timed run's calibration) must be
    one rank's, or the ranks take different numbers of steps and their collectives mismatch."""
    if not ctx.distributed:
        return flag
    t = torch.tensor(float(flag), device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def rank_zero_object(obj: object, ctx: Context) -> object:
    """Rank 0's `obj` (plain data: a plan, an error message) on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shared_in_order(
    count: int, prepare: Callable[[int], P], work: Callable[[int, P], R], ctx: Context
) -> Iterator[tuple[int, R]]:
    """Work items 0..count-1 shared across ranks, as stylegan2-ada shares its metrics: item k runs
    on rank k % world_size; rank 0 gets (k, work(k, prepare(k))) for every k, in order, and the
    other ranks get nothing. `prepare(k)` runs on every rank for every k, in order (a stream of
    random numbers each item draws from stays the same as in one process); `work` only where k
    runs. One all-gather a round of world_size items; its results are plain data (arrays)."""
    if not ctx.distributed:
        for k in range(count):
            yield k, work(k, prepare(k))
        return
    for start in range(0, count, ctx.world_size):
        tokens = [prepare(k) for k in range(start, min(start + ctx.world_size, count))]
        k = start + ctx.rank
        mine = work(k, tokens[ctx.rank]) if k < count else None
        results: list = [None] * ctx.world_size
        dist.all_gather_object(results, mine)
        if ctx.is_main:
            yield from ((start + j, r) for j, r in enumerate(results) if start + j < count)


def broadcast_parameters(module: torch.nn.Module, ctx: Context) -> None:
    if ctx.distributed:
        for t in module.state_dict().values():
            dist.broadcast(t, src=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Ranks on one machine talk over the loopback interface only: the rendezvous store listens on
# 127.0.0.1 (torch's own TCPStore server would listen on every interface) and gloo / NCCL open
# their sockets on `lo`. Multi-node runs go through torchrun, with the addresses the user names.
LOOPBACK = "127.0.0.1"
LOOPBACK_ENV = {"GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo"}


def _local_store(rank: int, world_size: int, port: int) -> dist.TCPStore:
    if rank != 0:
        return dist.TCPStore(LOOPBACK, port, world_size, is_master=False)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((LOOPBACK, port))
    listener.listen(world_size * 4)
    store = dist.TCPStore(LOOPBACK, port, world_size, is_master=True, master_listen_fd=listener.detach())
    return store


_local_rendezvous: dist.TCPStore | None = None
# How long rank 0 waits at the end of a run for the other ranks to leave their process group.
LEAVE_TIMEOUT = timedelta(seconds=60)


def _worker(local_rank: int, world_size: int, port: int, fn, args) -> None:
    global _local_rendezvous
    os.environ.update(
        RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world_size),
        MASTER_ADDR=LOOPBACK, MASTER_PORT=str(port),
    )  # fmt: skip
    for key, value in LOOPBACK_ENV.items():
        os.environ.setdefault(key, value)
    try:
        _local_rendezvous = _local_store(local_rank, world_size, port)
        status = fn(*args)
    finally:
        shutdown()
    _leave_rendezvous(_local_rendezvous, local_rank, world_size)
    _local_rendezvous = None
    if local_rank == 0 and isinstance(status, int) and status:
        # Rank 0's status reaches `launch` as its exit code, raised only now: every other rank has
        # left (or timed out), so the parent's teardown of the others cuts nothing short.
        sys.exit(status)


def _leave_rendezvous(store: dist.Store, rank: int, world_size: int) -> None:
    """After a run that ended well on every rank: rank 0, which serves the rendezvous store, exits
    only once every other rank has left its process group, so that none loses the store while it
    tears down. (Under torchrun the store lives in the agent, which outlives its workers. Here rank
    1 once aborted with "terminate called without an active exception" right after a 2-rank run
    had finished, in one CI run of about ten, 2026-11-26.)"""
    try:
        if rank == 0:
            store.wait([f"progan-left-{r}" for r in range(1, world_size)], LEAVE_TIMEOUT)
        else:
            store.set(f"progan-left-{rank}", "1")
    except RuntimeError:  # DistStoreError: a rank did not say; the run's results are written anyway
        pass


def check_local_gpus(nprocs: int, device_name: str) -> None:
    """`--gpus N` on a CUDA device: one GPU per rank, so N may not exceed this machine's GPUs."""
    from progan.device import pick_device

    if pick_device(device_name).type == "cuda" and nprocs > (count := torch.cuda.device_count()):
        raise UserError(
            f"--gpus {nprocs} asked for, but this machine has {count} CUDA GPU(s); pass --gpus {count} "
            f"(or --device cpu for {nprocs} CPU ranks)"
        )


def launch(nprocs: int, fn, *args) -> int:
    """Run fn(*args) in `nprocs` processes on this machine, one rank each (like torchrun), meeting
    at a rendezvous on 127.0.0.1; `from_environment` joins them into a process group. Returns
    rank 0's exit status: what fn returned there (an int) or 0.

    While the ranks run, this process outlives SIGTERM and SIGINT: it passes SIGTERM on to them
    (`kill PID` of the command, or a scheduler's signal, stops the run at a step with a snapshot,
    as with one process) and leaves SIGINT to them (Ctrl-C reaches every process of the terminal's
    group; passing it on would count as a second Ctrl-C, a forced stop)."""
    import signal

    import torch.multiprocessing as mp

    context = mp.start_processes(
        _worker, args=(nprocs, free_port(), fn, args), nprocs=nprocs, join=False, start_method="spawn"
    )

    def pass_on(signum, frame) -> None:
        for process in context.processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signum)

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, pass_on),
                signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN)}  # fmt: skip
    try:
        while not context.join():
            pass
    except mp.ProcessExitedException as e:
        if e.error_index == 0 and e.exit_code is not None and e.exit_code > 128:
            return e.exit_code  # rank 0 was stopped by a signal (its run is written: see _worker)
        raise
    except mp.ProcessRaisedException as e:
        # A rank's UserError (a full disk, say) reaches here as the text of its traceback: pass on
        # its one line, so that the command ends as it would with one process.
        prefix = f"{UserError.__module__}.{UserError.__qualname__}: "
        lines = [line for line in str(e).splitlines() if line.startswith(prefix)]
        if lines:
            raise UserError(lines[-1][len(prefix) :]) from None
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0

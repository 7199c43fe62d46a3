"""How the process allocates memory: glibc's malloc kept from handing freed tensor memory back.

Its own module, without torch, so that the CLI sets it before any command (the dataset tool
included, which never imports torch) at no cost in start-up."""

from __future__ import annotations

import ctypes
import platform

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep the memory that freed tensors give back, for the next tensor.

    glibc serves every allocation of 32 MB or more (a 1024x1024 activation of G_paper: 16 maps in
    bf16) from fresh mmap'd pages and unmaps them on free, so each layer's output was paged in
    again, zero-filled by the kernel: 82,000 page faults and 0.04 s of system time per 1024x1024
    image, 11% of G's wall time (2-core Xeon with AMX, benchmarks/README.md, issue 28). With mmap
    off and the heap never trimmed, freed blocks are reused; the peak RSS is the same high-water
    mark (0.63 against 0.60 GiB), now held until exit. Returns whether it took effect: only glibc
    has these knobs (musl, macOS and Windows are left as they are)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))

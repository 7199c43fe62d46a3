"""progan.allocator: glibc's malloc kept from unmapping freed tensor memory, set by every command."""

import platform
import subprocess
import sys

import pytest

FAULTS_OF_FRESH_BLOCKS = """
import resource, torch
from progan.allocator import keep_freed_memory

def faults_per_block():
    # 32 MB blocks, as G_paper's 1024x1024 activation (16 maps, bf16), made and freed. Kept, glibc's
    # heap settles after about ten: a freed aligned block is a few bytes short of the next request
    # until freed neighbours merge (a G at 1024x1024 settles within its first image, RSS 0.63 GiB).
    for _ in range(20):
        torch.ones(8 << 20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.ones(8 << 20)  # freed at once, as a layer's output is after the next layer read it
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5

default = faults_per_block()  # a fresh process: glibc's defaults
print(default, keep_freed_memory(), faults_per_block())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="keep_freed_memory sets glibc's malloc only")
def test_kept_memory_is_not_paged_in_again_for_each_large_tensor():
    """glibc maps a block of 32 MB or more afresh at every allocation and unmaps it on free, so a
    32 MB tensor costs about 8,000 page faults each time it is made (one per 4 KB page, fewer
    with huge pages); with keep_freed_memory (every `progan` command) the freed block is reused."""
    out = subprocess.run([sys.executable, "-c", FAULTS_OF_FRESH_BLOCKS], capture_output=True, text=True,
                         check=True)  # fmt: skip
    default, took_effect, kept = out.stdout.split()
    assert took_effect == "True"
    assert float(default) > 1000, "glibc's default no longer maps large blocks afresh: the lever is moot"
    assert float(kept) < float(default) / 20


def test_every_command_keeps_freed_memory(monkeypatch, tmp_path):
    """The CLI's main sets the allocator before it runs any command."""
    import progan.allocator
    from progan.cli import main

    calls = []
    monkeypatch.setattr(progan.allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    with pytest.raises(SystemExit):
        main(["generate", str(tmp_path / "missing"), "--outdir", str(tmp_path / "out")])
    assert calls == [1]

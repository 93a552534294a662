"""Freed memory goes back to the operating system: a burst of allocations
that glibc would otherwise keep (its pages between live objects) is
returned by trim()."""

from __future__ import annotations

import time
from pathlib import Path

from modelgate.memory import MemoryTrimmer, trim


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_trim_returns_the_pages_freed_between_live_objects() -> None:
    trim()
    before = resident_mb()
    # 200 MB in 2 KB blocks (glibc's, not Python's small-object arenas); one
    # block in a hundred stays alive, so no page at the heap's top is free.
    blocks = [bytearray(2048) for _ in range(100_000)]
    kept = blocks[::100]
    del blocks
    held = resident_mb()
    assert held - before > 150  # freed, and still held by the process
    assert trim()
    after = resident_mb()
    assert held - after > 100, (before, held, after)
    assert len(kept) == 1000


def test_the_trimmer_runs_until_stopped() -> None:
    trimmer = MemoryTrimmer(every=0.05).start()
    time.sleep(0.2)
    started = time.monotonic()
    trimmer.stop()
    assert time.monotonic() - started < 1
    assert trimmer._thread is None

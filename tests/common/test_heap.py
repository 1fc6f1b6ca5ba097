"""keep_freed_heap: the next batch's buffers reuse freed memory instead of faulting pages in."""

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="glibc's malloc settings; other C libraries differ"
)

# Five 10 MiB buffers alive at once, freed, five times (a push batch copied on its way to
# Redis); prints the page faults of each round.
ROUNDS = """
import resource, sys
from services.common.heap import keep_freed_heap
print(keep_freed_heap(int(sys.argv[1])))
def round_faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffers = [bytearray(10 << 20) for _ in range(5)]
    del buffers
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(*(round_faults() for _ in range(5)))
"""
PAGES_PER_ROUND = 5 * (10 << 20) // 4096


def rounds(keep_bytes: int) -> tuple[bool, list[int]]:
    out = subprocess.run(
        [sys.executable, "-c", ROUNDS, str(keep_bytes)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return out[0] == "True", [int(n) for n in out[1].split()]


def test_freed_buffers_are_reused_without_page_faults() -> None:
    applied, faults = rounds(64 << 20)
    assert applied
    assert faults[0] >= PAGES_PER_ROUND / 2  # the first round maps its memory
    assert max(faults[1:]) < PAGES_PER_ROUND / 20


def test_zero_keeps_the_c_librarys_default() -> None:
    applied, faults = rounds(0)
    assert not applied
    # glibc's own thresholds give the freed 50 MiB back: every round faults them in again.
    assert min(faults[1:]) >= PAGES_PER_ROUND / 2

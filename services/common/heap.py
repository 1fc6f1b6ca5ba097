"""Keeping freed memory in the process for the next large buffer (glibc's malloc)."""

import ctypes
import logging
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc's ceiling for the mmap threshold on 64-bit systems (4 MiB x sizeof(long)).
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024


def keep_freed_heap(keep_bytes: int) -> bool:
    """Serve allocations up to 32 MiB from the heap, and keep up to `keep_bytes` of it when freed.

    A push batch is one WebSocket message of up to tens of MiB, copied a few times on its way to
    Redis. With glibc's defaults those buffers go back to the kernel when freed (mmap'd, or the
    heap trimmed past twice its adaptive threshold), and the next batch faults every 4 KiB page
    in again: a batch of 100 x 100 KB spent more time in page faults than in copying.

    Returns False, changing nothing, when `keep_bytes` is 0 or the C library is not glibc.
    """
    if keep_bytes <= 0 or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    # Setting either value turns glibc's adaptive thresholds off: both are set, mmap first.
    ok: bool = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1
    ok = ok and libc.mallopt(M_TRIM_THRESHOLD, keep_bytes) == 1
    if not ok:
        log.warning("malloc settings refused", extra={"keep_bytes": keep_bytes})
    return ok

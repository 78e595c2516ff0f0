"""glibc malloc settings for the processes that answer queries (the worker, and the benchmark's engine).

glibc gives every allocation above its mmap threshold (128 KiB at start, adjusted upwards to at most 32 MiB as
such blocks are freed) pages of its own, and hands them back to the kernel when the block is freed; freed heap
memory at the top is returned too, past the trim threshold. A query's intermediates are many blocks of a few
MiB (the adapter pools in blocks of about 4 MiB, models/r2.py), so every query faulted them all in again: on a
40 min video (1,200 clips) a warm query took 478 ms, and 241-261 ms with the thresholds below, which keep such
blocks in the heap for the next query. The cost is memory the heap keeps after a query: at most the trim
threshold above what is in use, plus fragmentation. Set them once the models are loaded: loading frees hundreds
of MB of file buffers, which the default settings give back to the kernel (with these set first, a worker held
500 MB more after loading).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD_BYTES = 64 << 20
TRIM_THRESHOLD_BYTES = 256 << 20


def keep_freed_blocks() -> bool:
    """Fix glibc's mmap and trim thresholds for this process; False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # no C library found, or one without mallopt (musl)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                                     TRIM_THRESHOLD_BYTES))

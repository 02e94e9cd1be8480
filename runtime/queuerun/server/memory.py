"""Give freed request memory back to the OS (glibc), so an instance's peak RSS tracks its live data.

glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), after which
multi-MiB request bodies are carved from the heap arenas of whichever thread handled them and stay
there once freed: measured with benchmarks/hostile_memory.py, 8 concurrent 5 MiB bodies peaked at
270 MiB with the moving threshold and 150 MiB with it pinned at 128 KiB (glibc's default). Pinning it
keeps every block over 128 KiB in its own mapping, unmapped on free. Same effect as the environment
variable ``MALLOC_MMAP_THRESHOLD_=131072``, which must be set before the process starts; mallopt(3)
can be called at any time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Final

log = logging.getLogger("queuerun.server")

M_MMAP_THRESHOLD: Final = -3  # mallopt(3) parameter number, from glibc's malloc.h
MMAP_THRESHOLD: Final = 128 * 1024


def pin_mmap_threshold() -> bool:
    """Pin glibc's mmap threshold; False where there is no glibc (musl, macOS): nothing to do there."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if not ok:
        log.warning("mallopt(M_MMAP_THRESHOLD) failed: freed request memory may stay in the process")
    return ok

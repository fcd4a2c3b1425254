"""glibc allocator settings for a long-running server process (see ``ServerSettings.tune_malloc``)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

__all__ = ["tune_malloc"]

logger = logging.getLogger(__name__)

# mallopt() parameter numbers from glibc's <malloc.h>.
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_MMAP_THRESHOLD = 128 * 1024
_ARENA_MAX = 2


def tune_malloc() -> bool:
    """Make freed frame buffers go back to the OS; True when applied (glibc on Linux only).

    A decoded 640x480 frame is ~1 MB and an encoded one ~50 KB. By default glibc raises its
    mmap threshold after the first large free, so later frames come from the heap arenas
    (one per thread that allocates, up to 8 per core), where fragmentation keeps RSS
    growing for hours. A fixed 128 KiB threshold and two arenas keep it flat.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_ARENA_MAX, _ARENA_MAX))
    logger.info("malloc tuning %s", "applied" if applied else "refused by the C library")
    return applied

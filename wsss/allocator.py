"""Keep freed memory for reuse instead of handing it back to the kernel (glibc malloc).

    keep_freed_memory()    once, at the start of a command (the ``wsss`` entry point does)

glibc serves every allocation over its mmap threshold (at most 32 MB) with a fresh ``mmap`` and
returns it with ``munmap`` when freed. A GETAM batch at VOC sizes allocates and frees hundreds
of such buffers per batch (attention matrices, their gradients), so each batch faults its
memory in again page by page: on 2 CPU cores at batch 16 (DeiT-S/16, 496×368) a third of the
time went to the kernel (about 100,000 minor page faults per image). With mmap off and the heap
never trimmed, freed buffers are reused: the faults and the kernel time vanish and GETAM runs
1.7× faster per image alone and the whole chain 1.3× (``benchmarks/bench_pseudo_labels.py``); the
process keeps its peak memory mapped until it ends, and the peak rises by 10-13 % (measured when this
was introduced; ``benchmarks/bench_pseudo_labels.py`` prints the rise). ``WSSS_KEEP_FREED_MEMORY=0``
in the environment leaves the allocator as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1  # mallopt parameters of glibc's malloc.h
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1  # bytes of free heap top before glibc trims it (an int): in effect never


def keep_freed_memory() -> bool:
    """Switch glibc malloc to reuse freed memory for the rest of this process (see the module
    docstring). Returns whether it did: False without glibc (macOS, musl, Windows) or when
    ``WSSS_KEEP_FREED_MEMORY=0``."""
    if os.environ.get("WSSS_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # glibc only: musl has a mallopt that does nothing
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))

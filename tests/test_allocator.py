"""wsss.allocator.keep_freed_memory: large buffers come from the heap and stay there for reuse,
instead of being mapped for each allocation and unmapped when freed (glibc's default)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# In a fresh process: hold a 64 MB buffer (GETAM's attention matrices at VOC sizes are of this
# order), then free it, and print from glibc's mallinfo2 the bytes in mmapped chunks while it is
# held and the free bytes the heap keeps after it is freed.
SCRIPT = """
import ctypes, sys
import numpy as np
from wsss.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
buffer = np.ones(2**23)  # 64 MB
mapped_while_held = libc.mallinfo2().hblkhd
del buffer
print(kept, mapped_while_held >> 20, libc.mallinfo2().fordblks >> 20)
"""

MB = 64


def allocation(mode: str, **env: str) -> tuple[str, int, int]:
    """(whether the switch took, MB mapped while the buffer is held, MB free in the heap after)."""
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout.split()
    return out[0], int(out[1]), int(out[2])


def test_a_freed_buffer_stays_in_the_heap_for_the_next_one():
    kept, mapped, free_after = allocation("keep")
    assert kept == "True"
    assert mapped < MB and free_after >= MB  # from the heap, and kept there once freed
    default, mapped, free_after = allocation("default")
    assert default == "False"
    assert mapped >= MB and free_after < MB  # glibc's own: a mapping of its own, unmapped when freed


def test_the_environment_can_leave_the_allocator_alone():
    kept, mapped, free_after = allocation("keep", WSSS_KEEP_FREED_MEMORY="0")
    assert kept == "False" and mapped >= MB and free_after < MB

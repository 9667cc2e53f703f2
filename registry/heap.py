"""The C allocator's settings for a server that streams large request bodies.

A blob upload's body arrives in buffers of up to 256 KiB (the event loop's socket reads, then the HTTP
parser's copies), a few MiB of them alive at a time. glibc returns freed memory at the top of its heap to
the kernel once more than 128 KiB to 512 KiB is free there (a threshold it adapts to the largest block
freed), and gives blocks above its mmap threshold their own mapping. So the end of every chunk of a chunked
upload handed the buffers' pages back, and the next chunk took them again, each page faulted in and
zeroed by the kernel: about a tenth of the CPU of a chunked push (perf: exc_page_fault, clear_page_erms,
unmap_page_range). Keeping up to HEAP_KEPT bytes of freed heap, and serving blocks up to MMAP_FROM from the
heap, ends that; the process keeps at most HEAP_KEPT bytes it is not using.
"""

from __future__ import annotations

import ctypes

#: freed memory at the top of the heap that is kept for the next request instead of handed back
HEAP_KEPT = 32 << 20
#: blocks from this size up get a mapping of their own (glibc's own default starts at 128 KiB)
MMAP_FROM = 8 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_heap() -> None:
    """Set glibc's trim and mmap thresholds (fixed ones also end its adaptive thresholds). Where the C
    library is not glibc (no mallopt, or one that ignores these settings) its own behaviour stays."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mallopt(_M_TRIM_THRESHOLD, HEAP_KEPT)
    mallopt(_M_MMAP_THRESHOLD, MMAP_FROM)

"""Keep freed memory in the process (glibc), so that each new intermediate tensor does not fault its pages in again.

A forward allocates and frees its large intermediates layer after layer: at 8,192 tokens and d_model 256, tensors of
8-32 MiB, about 1-2 GiB per forward in all. glibc's malloc serves such blocks either with a fresh mmap (above its
mmap threshold, which adapts up to 32 MiB) or from the heap, whose free top it hands back to the kernel beyond a trim
threshold; either way the next tensor of that size starts on unmapped pages, and the kernel zero-fills and maps them
one 4 KiB fault at a time. On the cloud VMs we measure on a fault costs about 1.7 us, so that a freshly allocated
32 MiB tensor costs 14 ms before it holds anything: up to a third of a forward (benchmarks/README.md, "Allocator").

`keep_freed_memory` sets M_MMAP_MAX to 0 (every block comes from the heap) and M_TRIM_THRESHOLD to `limit` (up to that
much free heap stays mapped), so a layer's tensors reuse the pages its predecessor freed. Peak RSS stays about the
same (the memory kept is memory the process used a moment before; 0-12 % more measured); resident memory after a
forward stays up to `limit` above what is live. The settings are process-wide and one-way (glibc's adaptive
thresholds do not come back), so the library never applies them on import: the `caduceus-hf` command does, for its
own process (CADUCEUS_HF_KEEP_FREED_MEMORY=0 turns that off), and a program of yours may call it. Elsewhere than
glibc (macOS, Windows, musl) it does nothing: those allocators keep freed pages on their own terms.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's malloc.h
DEFAULT_LIMIT = 256 << 20
ENV = "CADUCEUS_HF_KEEP_FREED_MEMORY"


@functools.cache
def _mallopt():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(name), "mallopt", None) if name else None
    if mallopt is not None:
        mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt


def keep_freed_memory(limit: int = DEFAULT_LIMIT) -> bool:
    """Serve every block from the heap and keep up to `limit` bytes of freed heap mapped (glibc only; process-wide,
    one-way). Returns whether the settings were applied."""
    if not 0 <= limit < 2**31:
        raise ValueError(f"limit must be between 0 and 2**31 - 1 bytes, got {limit}")
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))


def keep_freed_memory_unless_disabled() -> bool:
    """`keep_freed_memory()` unless the environment sets CADUCEUS_HF_KEEP_FREED_MEMORY=0 (what the command runs)."""
    value = os.environ.get(ENV, "1").strip()
    if value not in ("0", "1"):
        raise ValueError(f"{ENV} must be 0 or 1, got {value!r}")
    return value == "1" and keep_freed_memory()

"""Keep freed image-sized buffers in the process, so receiving an image costs no page faults.

Every message rclpy takes (raw bytes), Fast DDS copies and the node decodes is a fresh multi-MiB buffer. glibc
serves those with ``mmap`` (above its dynamic threshold) or returns them to the kernel at the heap top, so the
next message faults in its pages again: measured 10,600 minor faults per 1024² 4-modality set (14 MiB in) and
a bare rclpy echo's 13-15 ms round trip on a 2-vCPU VM, and 0 faults / 3.9-5.1 ms with the buffers kept
(``benchmarks/bench_node_overhead.py``). ``mallopt`` raises the mmap threshold to glibc's maximum and the trim
threshold so freed buffers are reused. A user's ``GLIBC_TUNABLES`` / ``MALLOC_*_`` settings win; other C
libraries are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's cap on 64-bit (HEAP_MAX_SIZE / 2): larger buffers stay mmapped
TRIM_THRESHOLD = 256 * 1024 * 1024  # freed memory kept at the heap top before it goes back to the kernel
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def user_malloc_settings() -> bool:
    """True when the environment already tunes glibc malloc's thresholds (then they are left as they are)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(name in os.environ for name in _USER_SETTINGS) or any(
        key in tunables for key in ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")
    )


def keep_large_buffers() -> str:
    """Set the thresholds (process-wide, every thread's arena); returns what was done, for the log."""
    if user_malloc_settings():
        return "malloc thresholds from the environment (GLIBC_TUNABLES / MALLOC_*_)"
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        gnu_get_libc_version = libc.gnu_get_libc_version
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS): nothing to tune
        return "malloc not tuned (not glibc)"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if not (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return "malloc not tuned (mallopt refused)"
    gnu_get_libc_version.restype = ctypes.c_char_p
    version = gnu_get_libc_version().decode()
    return f"glibc {version} malloc keeps freed buffers up to {MMAP_THRESHOLD_MAX >> 20} MiB (no page faults per image)"

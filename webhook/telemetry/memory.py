"""Giving freed memory back to the system after a large pass.

CPython keeps what it freed for reuse: after a reconcile pass over 10,000 policies or
an audit over 150,000 Pods, the process would sit at the pass's peak. glibc's
`malloc_trim` returns the free heap to the kernel; elsewhere (musl, macOS) this does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    return trim


def release_memory() -> bool:
    """Return the free heap to the kernel; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True

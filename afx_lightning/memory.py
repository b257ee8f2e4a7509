"""Freed memory kept in the process, so the encoder's large tensors reuse pages instead of faulting in new ones.

glibc's malloc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and gives it
back with ``munmap`` when freed. The encoder's activations are far larger (a paper-configuration Inception step,
M = 100, allocates tensors of 100-500 MB), so each training step and each predicted batch had the kernel fault in
and zero all of them again: 1.9 M page faults (7.5 GB) per step, about a third of its time. With mmap and trimming
off, freed chunks stay in the heap and the next step reuses them (no faults at all after the first step).

The cost is resident memory: the process keeps its high-water mark plus fragmentation (that step peaked at
6.7 GB instead of 4.6 GB). What is reused is a step's working set: a lone block freed and asked for again at the
same size still gets fresh pages, because glibc's aligned allocations (PyTorch's) do not fit back into the chunk
they freed, and the heap grows until freed neighbours merge (a process allocating one 256 MB tensor in a loop
settled at 1.8-2.5 GB resident). PyTorch has no general CPU caching allocator, and jemalloc or tcmalloc would have to be
preloaded before the interpreter starts; two ``mallopt`` calls need neither. Off glibc (macOS, musl) nothing changes.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

# mallopt(3) parameters and glibc's values for them (malloc/malloc.c).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
_NEVER_TRIM = -1  # mallopt(3): "Setting M_TRIM_THRESHOLD to -1 disables trimming completely"

ENV_VAR = "AFX_KEEP_FREED_MEMORY"
"""``AFX_KEEP_FREED_MEMORY=0`` leaves malloc as it is in the ``afx`` commands (for a machine short of memory)."""


def _glibc() -> ctypes.CDLL | None:
    try:  # asks the C library itself (platform.libc_ver would scan the interpreter's binary)
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return None
    except (AttributeError, ValueError, OSError):  # no confstr, or a C library that does not know the name
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both must exist
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory() -> bool:
    """Keep freed memory in the heap from now on (see the module docstring); whether it took effect."""
    libc = _glibc()
    if libc is None:
        return False
    return libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM) == 1


def release_freed_memory() -> None:
    """Back to glibc's defaults (mmap for large chunks, trim above 128 KiB), and hand what the heap holds free back."""
    libc = _glibc()
    if libc is None:
        return
    libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
    libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
    libc.malloc_trim(0)


@contextmanager
def freed_memory_kept(keep: bool = True) -> Iterator[bool]:
    """``keep_freed_memory`` for a block, then back to the defaults (``keep=False``: the defaults throughout).
    For side-by-side measurements; the ``afx`` commands keep freed memory for the whole process."""
    release_freed_memory()
    kept = keep_freed_memory() if keep else False
    try:
        yield kept
    finally:
        release_freed_memory()

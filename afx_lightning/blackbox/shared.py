"""Named NumPy arrays in one POSIX shared-memory block, so batch audio never goes through a pickled pipe."""

from __future__ import annotations

from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory

import numpy as np

ArraySpec = tuple[str, tuple[int, ...], str]  # name, shape, dtype


@dataclass(frozen=True)
class SharedLayout:
    """Where each array lives inside the block; small and picklable, sent once to each worker."""

    block_name: str
    arrays: tuple[tuple[str, tuple[int, ...], str, int], ...]  # name, shape, dtype, byte offset


def _aligned(n: int, align: int = 64) -> int:
    return (n + align - 1) // align * align


class SharedArrays:
    """Owner side: allocates the block; :meth:`attach` gives a worker the same arrays by layout."""

    def __init__(self, specs: tuple[ArraySpec, ...] | list[ArraySpec]):
        offsets, offset = [], 0
        for name, shape, dtype in specs:
            offsets.append((name, tuple(int(s) for s in shape), np.dtype(dtype).str, offset))
            offset = _aligned(offset + int(np.prod(shape)) * np.dtype(dtype).itemsize)
        self._shm = shared_memory.SharedMemory(create=True, size=max(offset, 1))
        self.layout = SharedLayout(self._shm.name, tuple(offsets))
        self.arrays = _views(self._shm, self.layout)
        for a in self.arrays.values():
            a.fill(0)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def close(self) -> None:
        """Free the block (owner only); views become invalid."""
        if self._shm is None:
            return
        self.arrays = {}
        try:
            self._shm.close()
        except BufferError:  # a view is still alive somewhere; the unlink below still frees the name
            pass
        try:
            self._shm.unlink()
        except FileNotFoundError:
            pass
        self._shm = None


class AttachedArrays:
    """Worker side: maps an existing block without taking ownership of it."""

    def __init__(self, layout: SharedLayout):
        self._shm = shared_memory.SharedMemory(name=layout.block_name)
        # Attaching registers the block with this process's resource tracker, which would unlink it when this
        # process exits; the owner alone frees it.
        resource_tracker.unregister(self._shm._name, "shared_memory")  # type: ignore[attr-defined]
        self.arrays = _views(self._shm, layout)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


def _views(shm: shared_memory.SharedMemory, layout: SharedLayout) -> dict[str, np.ndarray]:
    return {
        name: np.ndarray(shape, dtype=np.dtype(dtype), buffer=shm.buf, offset=offset)
        for name, shape, dtype, offset in layout.arrays
    }

"""The contract between the pool and its worker processes: the messages on the pipe, the per-row state in shared
memory, and the kinds of fault either side reports.

Torch-free (workers import it). Messages are small frozen dataclasses (one ``Render`` and one ``Rendered`` per
worker per step; audio and parameters stay in shared memory), so pickling them costs microseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum

from .shared import SharedLayout


class RowState(IntEnum):
    """A row's state in the group's ``status`` array (int32). ``BUILDING`` and ``RUNNING`` rows have a start
    time: the pool times a row's instance construction and its rendering against separate limits."""

    IDLE = 0  # not yet reached this step (the pool resets every row to it before sending ``Render``)
    BUILDING = 1
    RUNNING = 2
    DONE = 3
    FAULT = 4


class FaultKind(str, Enum):
    """What went wrong with a row. The worker reports ``EXCEPTION`` and ``NONFINITE``; the pool detects the
    others. The value is the :class:`~afx_lightning.blackbox.pool.FaultStats` counter's name (a ``str`` enum, so
    ``event.kind == "timeout"`` holds)."""

    EXCEPTION = "exception"
    NONFINITE = "nonfinite"
    CRASH = "crash"
    TIMEOUT = "timeout"
    BUILD_TIMEOUT = "build_timeout"


@dataclass(frozen=True)
class GroupLayout:
    """One slot group as a worker sees it: its shared arrays and instances per slot."""

    layout: SharedLayout
    instances: int


@dataclass(frozen=True)
class WorkerConfig:
    chain_factory: Callable[..., object]
    sample_rate: int
    block_size: int
    groups: dict[str, GroupLayout]


# ---------------------------------------------------------------- pool -> worker
@dataclass(frozen=True)
class Init:
    """First message: the pickled :class:`WorkerConfig` (unpickled by the worker, so an unimportable chain
    factory fails there, where the pool reports it as a start-up error)."""

    config: bytes


@dataclass(frozen=True)
class Render:
    """Render ``rows`` (their audio and parameters are in the group's shared memory) through ``slots``."""

    group: str
    rows: list[int]
    slots: list[int]
    fresh: list[bool]


@dataclass(frozen=True)
class Close:
    pass


# ---------------------------------------------------------------- worker -> pool
@dataclass(frozen=True)
class Ready:
    """Reply to :class:`Init`: the worker attached the shared memory and can render."""

    pid: int


@dataclass(frozen=True)
class RowFault:
    row: int
    kind: FaultKind
    message: str


@dataclass(frozen=True)
class Rendered:
    """Reply to :class:`Render`: the rows that faulted, CPU seconds spent rendering (construction excluded),
    and the instances built with the wall seconds that took."""

    faults: list[RowFault]
    cpu_s: float
    instances_built: int
    build_s: float


# ---------------------------------------------------------------- what the pool saw (never pickled)
@dataclass(frozen=True)
class WorkerLost:
    """A busy worker that died (``CRASH``) or overran a row's limit (``TIMEOUT``, ``BUILD_TIMEOUT``) instead of
    replying :class:`Rendered`; the pool kills and restarts it."""

    kind: FaultKind
    message: str

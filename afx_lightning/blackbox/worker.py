"""The plugin worker process: owns the plugin instances of its slots and renders rows from shared memory.

Started as ``python -m afx_lightning.blackbox FD`` (a fresh interpreter that never re-imports the
user's ``__main__``) and torch-free on purpose (fast start, small footprint). The parent sends one small
message per step naming the rows to render; audio, parameters and outputs stay in shared memory. Per-row
status and start time are written to shared memory too, so the parent can tell which row a crashed or hung
worker was on, and whether it was still building that row's plugin instances (timed by its own, longer limit)
or already rendering.
"""

from __future__ import annotations

import os
import pickle
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Tuple

import numpy as np

from .shared import AttachedArrays, SharedLayout

# Per-row status in shared memory. BUILDING and RUNNING rows have a start time: the parent times a row's
# instance construction and its rendering against separate limits (building a VST3 chain can take seconds).
IDLE, BUILDING, RUNNING, DONE, FAULT = 0, 1, 2, 3, 4


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
    groups: Dict[str, GroupLayout]


# ---------------------------------------------------------------- messages between the pool and a worker
@dataclass(frozen=True)
class Init:
    """First message: the pickled :class:`WorkerConfig` (unpickled by the worker, so an unimportable chain
    factory fails there, where the pool reports it as a start-up error)."""

    config: bytes


@dataclass(frozen=True)
class Ready:
    pid: int


@dataclass(frozen=True)
class Render:
    """Render ``rows`` (their audio and parameters are in the group's shared memory) through ``slots``."""

    group: str
    rows: List[int]
    slots: List[int]
    fresh: List[bool]


class RowFault(NamedTuple):
    row: int
    kind: str  # one of pool.FAULT_KINDS
    message: str


@dataclass(frozen=True)
class Rendered:
    """Reply to :class:`Render`: the rows that faulted, CPU seconds spent rendering (construction excluded),
    and the instances built with the wall seconds that took."""

    faults: List[RowFault]
    cpu_s: float
    instances_built: int
    build_s: float


@dataclass(frozen=True)
class Close:
    pass


def worker_main(conn) -> None:  # pragma: no cover - runs in a child process
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle; it then closes us.
    init: Init = conn.recv()
    config: WorkerConfig = pickle.loads(init.config)
    groups = {name: AttachedArrays(g.layout) for name, g in config.groups.items()}
    conn.send(Ready(os.getpid()))
    instances: Dict[Tuple[str, int], list] = {}

    def build(group: str, slot: int) -> list:
        drop(group, slot)
        chains = [
            config.chain_factory(sample_rate=config.sample_rate, block_size=config.block_size)
            for _ in range(config.groups[group].instances)
        ]
        instances[(group, slot)] = chains
        return chains

    def drop(group: str, slot: int) -> None:
        for chain in instances.pop((group, slot), []):
            try:
                chain.close()
            except Exception:
                pass

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if isinstance(message, Close):
            return
        arrays = groups[message.group]
        audio, params, out = arrays["audio"], arrays["params"], arrays["out"]
        status, started = arrays["status"], arrays["started"]
        faults: List[RowFault] = []
        built, build_s, build_cpu_s = 0, 0.0, 0.0
        cpu_start = time.process_time()
        for row, slot, is_fresh in zip(message.rows, message.slots, message.fresh):
            stage = ""
            try:
                chains = instances.get((message.group, slot))
                if is_fresh or chains is None:
                    stage = "building instances: "
                    started[row] = time.monotonic()
                    status[row] = BUILDING
                    t0, c0 = time.perf_counter(), time.process_time()
                    chains = build(message.group, slot)
                    built += len(chains)
                    build_s += time.perf_counter() - t0
                    build_cpu_s += time.process_time() - c0
                    stage = ""
                started[row] = time.monotonic()
                status[row] = RUNNING
                x = audio[row]
                for i, chain in enumerate(chains):
                    y = chain.process(x, params[row, i])
                    if y.shape != x.shape:
                        raise ValueError(f"chain returned shape {y.shape} for input {x.shape}")
                    if not np.isfinite(y).all():
                        faults.append(RowFault(row, "nonfinite", f"instance {i} returned NaN/Inf"))
                        break
                    out[row, i] = y
            except Exception as exc:  # the plugin's fault, not ours: report and carry on
                faults.append(RowFault(row, "exception", f"{stage}{type(exc).__name__}: {exc}"))
                if os.environ.get("AFX_DEBUG_WORKERS"):
                    traceback.print_exc()
            if faults and faults[-1].row == row:
                drop(message.group, slot)  # its state may be corrupt: the next frame gets fresh instances
                out[row] = audio[row]
                status[row] = FAULT
            else:
                status[row] = DONE
        cpu_s = time.process_time() - cpu_start - build_cpu_s
        conn.send(Rendered(faults, cpu_s, built, build_s))

"""The plugin worker process: owns the plugin instances of its slots and renders rows from shared memory.

Started as ``python -m afx_lightning.blackbox FD`` (a fresh interpreter that never re-imports the
user's ``__main__``) and torch-free on purpose (fast start, small footprint). The parent sends one small
message per step naming the rows to render; audio, parameters and outputs stay in shared memory. Per-row
status and start time are written to shared memory too, so the parent can tell which row a crashed or hung
worker was on.
"""

from __future__ import annotations

import os
import pickle
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import numpy as np

from .shared import AttachedArrays, SharedLayout

IDLE, RUNNING, DONE, FAULT = 0, 1, 2, 3


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


def worker_main(conn) -> None:  # pragma: no cover - runs in a child process
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle; it then closes us.
    _, config_bytes = conn.recv()
    config: WorkerConfig = pickle.loads(config_bytes)
    groups = {name: AttachedArrays(g.layout) for name, g in config.groups.items()}
    conn.send(("ready", os.getpid()))
    instances: Dict[Tuple[str, int], list] = {}

    def fresh_instances(group: str, slot: int) -> list:
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
        if message[0] == "close":
            return
        _, group, rows, slots, fresh = message
        arrays = groups[group]
        audio, params, out = arrays["audio"], arrays["params"], arrays["out"]
        status, started = arrays["status"], arrays["started"]
        faults: List[Tuple[int, str, str]] = []
        cpu_start = time.process_time()
        for row, slot, is_fresh in zip(rows, slots, fresh):
            started[row] = time.monotonic()
            status[row] = RUNNING
            try:
                chains = instances.get((group, slot))
                if is_fresh or chains is None:
                    chains = fresh_instances(group, slot)
                x = audio[row]
                for i, chain in enumerate(chains):
                    y = chain.process(x, params[row, i])
                    if y.shape != x.shape:
                        raise ValueError(f"chain returned shape {y.shape} for input {x.shape}")
                    if not np.isfinite(y).all():
                        faults.append((row, "nonfinite", f"instance {i} returned NaN/Inf"))
                        break
                    out[row, i] = y
            except Exception as exc:  # the plugin's fault, not ours: report and carry on
                faults.append((row, "exception", f"{type(exc).__name__}: {exc}"))
                if os.environ.get("AFX_DEBUG_WORKERS"):
                    traceback.print_exc()
            if faults and faults[-1][0] == row:
                drop(group, slot)  # its state may be corrupt: the next frame gets fresh instances
                out[row] = audio[row]
                status[row] = FAULT
            else:
                status[row] = DONE
        conn.send(("done", faults, time.process_time() - cpu_start))

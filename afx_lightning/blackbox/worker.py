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

import numpy as np

from .messages import Close, FaultKind, Init, Ready, Render, Rendered, RowFault, RowState, WorkerConfig
from .shared import AttachedArrays


def worker_main(conn) -> None:  # pragma: no cover - runs in a child process
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle; it then closes us.
    init = conn.recv()
    if not isinstance(init, Init):
        raise TypeError(f"fx worker: first message must be Init, got {type(init).__name__}")
    config: WorkerConfig = pickle.loads(init.config)
    groups = {name: AttachedArrays(g.layout) for name, g in config.groups.items()}
    conn.send(Ready(os.getpid()))
    instances: dict[tuple[str, int], list] = {}

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
        if not isinstance(message, Render):
            raise TypeError(f"fx worker: expected Render or Close, got {type(message).__name__}")
        arrays = groups[message.group]
        audio, params, out = arrays["audio"], arrays["params"], arrays["out"]
        status, started = arrays["status"], arrays["started"]
        faults: list[RowFault] = []
        built, build_s, build_cpu_s = 0, 0.0, 0.0
        cpu_start = time.process_time()
        for row, slot, is_fresh in zip(message.rows, message.slots, message.fresh, strict=True):
            stage = ""
            try:
                chains = instances.get((message.group, slot))
                if is_fresh or chains is None:
                    stage = "building instances: "
                    started[row] = time.monotonic()
                    status[row] = RowState.BUILDING
                    t0, c0 = time.perf_counter(), time.process_time()
                    chains = build(message.group, slot)
                    built += len(chains)
                    build_s += time.perf_counter() - t0
                    build_cpu_s += time.process_time() - c0
                    stage = ""
                started[row] = time.monotonic()
                status[row] = RowState.RUNNING
                x = audio[row]
                for i, chain in enumerate(chains):
                    y = chain.process(x, params[row, i])
                    if y.shape != x.shape:
                        raise ValueError(f"chain returned shape {y.shape} for input {x.shape}")
                    if not np.isfinite(y).all():
                        faults.append(RowFault(row, FaultKind.NONFINITE, f"instance {i} returned NaN/Inf"))
                        break
                    out[row, i] = y
            except Exception as exc:  # the plugin's fault, not ours: report and carry on
                faults.append(RowFault(row, FaultKind.EXCEPTION, f"{stage}{type(exc).__name__}: {exc}"))
                if os.environ.get("AFX_DEBUG_WORKERS"):
                    traceback.print_exc()
            if faults and faults[-1].row == row:
                drop(message.group, slot)  # its state may be corrupt: the next frame gets fresh instances
                out[row] = audio[row]
                status[row] = RowState.FAULT
            else:
                status[row] = RowState.DONE
        cpu_s = time.process_time() - cpu_start - build_cpu_s
        conn.send(Rendered(faults, cpu_s, built, build_s))

"""A pool of plugin worker processes, sized to the CPUs, with fault isolation.

Slots are spread over workers (slot s lives on worker s mod W) and never move, so a slot's plugin instances
keep their state across steps. A worker that crashes or hangs is killed and restarted; the row it was on is
retried on fresh instances or returned dry (zero gradient), the rows it had not reached are rendered by its
replacement, and every such event is counted in :class:`FaultStats` and logged: nothing fails silently.

Building a row's plugin instances (on a fresh slot: 1 + 2K, FD: 2P + 1 chains) is timed apart from rendering:
``build_timeout_s`` (generous: loading a VST3 chain is slow; ``benchmarks/fx_layer.py`` reports ``plugin_build_s``) bounds construction and
``timeout_s`` bounds the plugin calls, so a slow-to-load chain does not turn every fresh row into a timeout.
Construction is counted in :class:`BuildStats`.

A group may take several rows per slot in one call (``SlotGroup.frames``, inference): a slot's rows are its
consecutive frames, rendered in the order given on its worker, so one message carries many frames and the
per-call round trip is paid once for all of them. A row that faults there is not retried after its slot's later
frames have rendered (that would put its state out of order): it comes back dry, and the slot's next frame
starts on fresh instances, as after any dropped row.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import time
import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing import Pipe
from multiprocessing.connection import wait

import numpy as np

from .messages import (
    Close,
    FaultKind,
    GroupLayout,
    Init,
    Ready,
    Render,
    Rendered,
    RowFault,
    RowState,
    WorkerConfig,
    WorkerLost,
)
from .shared import SharedArrays

log = logging.getLogger(__name__)

# Limits of the pool's own housekeeping (seconds); the per-row limits are the pool's arguments.
ROW_TIMEOUT_S = 30.0  # default ``timeout_s``: one row's plugin calls
BUILD_TIMEOUT_S = 120.0  # default ``build_timeout_s``: building one row's instances
START_TIMEOUT_S = 120.0  # a new worker imports numpy, the chain's backend and the factory before it is Ready
KILL_WAIT_S = 10.0  # reaping a killed worker
EXIT_WAIT_S = 5.0  # a worker whose pipe closed, to exit by itself before it is killed
SHUTDOWN_WAIT_S = 2.0  # all workers, after Close, before they are killed
POLL_S = 0.25  # how often busy rows' start times are checked against their limits (at most timeout_s / 4)

# A row is "active" (timed, and charged if its worker dies) while its instances are built or it renders.
_ACTIVE = (RowState.BUILDING, RowState.RUNNING)
_FINISHED = (RowState.DONE, RowState.FAULT)


@dataclass(frozen=True)
class SlotGroup:
    """A set of slots with the same number of plugin instances each (train: 1 + 2K, eval: 1), and how many rows
    (consecutive frames) a slot may have in one render call (``frames``; 1 in training)."""

    num_slots: int
    instances: int
    frames: int = 1

    @property
    def rows(self) -> int:
        return self.num_slots * self.frames


@dataclass
class FaultStats:
    """Running totals since the pool started."""

    exception: int = 0
    nonfinite: int = 0
    crash: int = 0
    timeout: int = 0
    build_timeout: int = 0
    retries: int = 0
    rows_dropped: int = 0
    worker_restarts: int = 0
    slots_reset: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)

    def record(self, kind: FaultKind) -> None:
        """Count one fault of ``kind``."""
        if kind is FaultKind.EXCEPTION:
            self.exception += 1
        elif kind is FaultKind.NONFINITE:
            self.nonfinite += 1
        elif kind is FaultKind.CRASH:
            self.crash += 1
        elif kind is FaultKind.TIMEOUT:
            self.timeout += 1
        elif kind is FaultKind.BUILD_TIMEOUT:
            self.build_timeout += 1
        else:  # pragma: no cover - a new FaultKind needs its counter here
            raise ValueError(f"unknown fault kind {kind!r}")

    @property
    def faults(self) -> int:
        return self.exception + self.nonfinite + self.crash + self.timeout + self.build_timeout


@dataclass
class BuildStats:
    """Plugin instances constructed since the pool started and the wall seconds the workers spent on it
    (summed over workers; not part of ``RenderResult.plugin_cpu_s``)."""

    instances_built: int = 0
    build_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class FaultEvent:
    kind: FaultKind
    group: str
    row: int
    slot: int
    message: str


@dataclass
class RenderResult:
    """``out``: [M, I, C, N] rendered audio (a dropped row holds its dry input in every instance).
    ``plugin_cpu_s``: worker CPU seconds in plugin calls; ``build_s``: worker wall seconds building the
    ``instances_built`` instances of fresh rows during this call."""

    out: np.ndarray
    failed: np.ndarray
    events: list[FaultEvent] = field(default_factory=list)
    plugin_cpu_s: float = 0.0
    wall_s: float = 0.0
    instances_built: int = 0
    build_s: float = 0.0


def _local_world_size(cpus: int) -> int:
    """How many training processes (DDP ranks) of this job share this process's CPUs, at least 1.

    ``LOCAL_WORLD_SIZE`` (torchrun, or set it yourself); under SLURM the tasks per node, unless the task is
    already confined to its own CPUs (affinity no larger than ``SLURM_CPUS_PER_TASK``); otherwise, once
    ``torch.distributed`` is initialised (Lightning's own launcher), its world size: one machine assumed.
    """
    value = os.environ.get("LOCAL_WORLD_SIZE")
    if value is None and os.environ.get("SLURM_JOB_ID"):
        per_task = os.environ.get("SLURM_CPUS_PER_TASK", "")
        if per_task.isdigit() and cpus <= int(per_task):
            return 1
        value = (
            os.environ.get("SLURM_NTASKS_PER_NODE")
            or os.environ.get("SLURM_STEP_TASKS_PER_NODE", "").split("(")[0].split(",")[0]
        )
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            pass
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return max(1, dist.get_world_size())
    except ImportError:  # pragma: no cover
        pass
    return 1


def default_num_workers() -> int:
    """The CPUs this process may run on (respects taskset/cgroups affinity), shared out among the DDP ranks
    on this machine (see :func:`_local_world_size`), at least 1."""
    try:
        cpus = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = max(1, os.cpu_count() or 1)
    return max(1, cpus // _local_world_size(cpus))


class FxWorkerPool:
    """Renders rows of a batch through per-slot plugin instances living in worker processes.

    ``timeout_s`` bounds one row's plugin calls, ``build_timeout_s`` the construction of one row's instances;
    a row that overruns either is a fault (its worker is restarted, the row retried or dropped).
    ``wait_ready=False`` returns once the workers are launched; the first :meth:`render` waits for them.
    """

    def __init__(
        self,
        chain_factory: Callable[..., object],
        groups: Mapping[str, SlotGroup],
        channels: int,
        block_size: int,
        num_params: int,
        sample_rate: int,
        num_workers: int | None = None,
        timeout_s: float = ROW_TIMEOUT_S,
        max_retries: int = 1,
        build_timeout_s: float = BUILD_TIMEOUT_S,
        wait_ready: bool = True,
    ):
        try:
            pickle.dumps(chain_factory)
        except Exception as exc:
            raise TypeError(
                f"chain factory {chain_factory!r} must be picklable (a module-level function or a "
                f"functools.partial of one): plugins are built inside worker processes ({exc})"
            ) from None
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if build_timeout_s <= 0:
            raise ValueError(f"build_timeout_s must be positive, got {build_timeout_s}")
        self.groups = dict(groups)
        self.channels, self.block_size, self.num_params = channels, block_size, num_params
        self.num_workers = int(num_workers or default_num_workers())
        self.timeout_s = float(timeout_s)
        self.build_timeout_s = float(build_timeout_s)
        self.max_retries = int(max_retries)
        self.stats = FaultStats()
        self.build_stats = BuildStats()
        self._shared: dict[str, SharedArrays] = {}
        for name, g in self.groups.items():
            self._shared[name] = SharedArrays(
                [
                    ("audio", (g.rows, channels, block_size), "float32"),
                    ("params", (g.rows, g.instances, num_params), "float32"),
                    ("out", (g.rows, g.instances, channels, block_size), "float32"),
                    ("status", (g.rows,), "int32"),
                    ("started", (g.rows,), "float64"),
                ]
            )
        self._config = WorkerConfig(
            chain_factory=chain_factory,
            sample_rate=sample_rate,
            block_size=block_size,
            groups={n: GroupLayout(self._shared[n].layout, g.instances) for n, g in self.groups.items()},
        )
        self._procs: list[subprocess.Popen | None] = [None] * self.num_workers
        self._conns: list[object | None] = [None] * self.num_workers
        # Which slots each worker has created instances for, so a restart knows whose state was lost.
        self._live_slots: list[set] = [set() for _ in range(self.num_workers)]
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._conns, list(self._shared.values()))
        for w in range(self.num_workers):
            self._spawn(w)
        self._starting = list(range(self.num_workers))
        if wait_ready:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Wait for the workers the constructor started (the first render does, when it was told not to wait:
        their interpreters start while the caller does other work). A worker that cannot start raises here."""
        starting, self._starting = self._starting, []
        if starting:
            self._await_ready(starting)

    # ------------------------------------------------------------------ workers
    def _start_worker(self, w: int) -> None:
        self._spawn(w)
        self._await_ready([w])

    def _spawn(self, w: int) -> None:
        parent, child = Pipe(duplex=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # user factories must import there too
        proc = subprocess.Popen(
            [sys.executable, "-m", "afx_lightning.blackbox", str(child.fileno())],
            pass_fds=(child.fileno(),),
            env=env,
        )
        child.close()
        parent.send(Init(pickle.dumps(self._config)))
        self._procs[w], self._conns[w] = proc, parent
        self._live_slots[w] = set()

    def _await_ready(self, workers: Sequence[int], timeout_s: float = START_TIMEOUT_S) -> None:
        """A worker that cannot even start (unimportable factory, broken install) is a setup error, not a fault."""
        for w in workers:
            conn, proc = self._conns[w], self._procs[w]
            try:
                if not conn.poll(timeout_s):
                    raise TimeoutError
                message = conn.recv()
            except (EOFError, OSError, TimeoutError):
                proc.kill()
                proc.wait()
                self.close()
                raise RuntimeError(
                    f"fx worker {w} failed to start (exit code {proc.returncode}); its error is printed above. "
                    "Is the chain factory importable from a fresh interpreter?"
                ) from None
            if not isinstance(message, Ready):
                proc.kill()
                proc.wait()
                self.close()
                raise RuntimeError(f"fx worker {w} answered its start-up with {message!r} instead of Ready")

    def _restart_worker(self, w: int) -> None:
        proc = self._procs[w]
        if proc is not None:
            proc.kill()
            proc.wait(timeout=KILL_WAIT_S)
        lost = len(self._live_slots[w])
        self.stats.worker_restarts += 1
        self.stats.slots_reset += lost
        log.warning("fx worker %d restarted; %d slot(s) lost their plugin state", w, lost)
        self._start_worker(w)

    def close(self) -> None:
        """Stop the workers and free the shared memory (idempotent)."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    # ------------------------------------------------------------------ rendering
    def render(
        self,
        group: str,
        slots: Sequence[int],
        fresh: Sequence[bool],
        audio: np.ndarray,
        params: np.ndarray,
    ) -> RenderResult:
        """Render row m of ``audio`` [M, C, N] with ``params[m, i]`` through instance i of slot ``slots[m]``."""
        if self.closed:
            raise RuntimeError("the fx worker pool is closed")
        self.wait_ready()
        if group not in self.groups:
            raise KeyError(f"unknown slot group {group!r}; this pool has {sorted(self.groups)}")
        spec, arrays = self.groups[group], self._shared[group]
        slots = [int(s) for s in slots]
        fresh = [bool(f) for f in fresh]
        m = len(slots)
        self._check_rows(group, spec, slots, audio, params)
        t0 = time.perf_counter()
        arrays["audio"][:m] = audio
        arrays["params"][:m] = params
        arrays["status"][:m] = RowState.IDLE

        attempts = [0] * m
        failed = np.zeros(m, dtype=bool)
        events: list[FaultEvent] = []
        cpu = 0.0
        built, build_s = 0, 0.0
        todo: dict[int, list[int]] = {}
        for row, slot in enumerate(slots):
            todo.setdefault(slot % self.num_workers, []).append(row)
        while todo:
            busy = {}
            for w, rows in todo.items():
                if self._procs[w].poll() is not None:  # died between steps (e.g. killed from outside)
                    self._restart_worker(w)
                    for r in rows:
                        fresh[r] = True
                self._conns[w].send(Render(group, rows, [slots[r] for r in rows], [fresh[r] for r in rows]))
                self._live_slots[w].update(slots[r] for r in rows)
                busy[w] = rows
            todo = {}
            while busy:
                outcome = self._wait_any(busy, arrays["status"], arrays["started"], spec.instances)
                for w, reply in outcome.items():
                    rows = busy.pop(w)
                    if isinstance(reply, Rendered):
                        cpu += reply.cpu_s
                        built += reply.instances_built
                        build_s += reply.build_s
                        problems = reply.faults
                        retry_rows: list[int] = []
                    else:  # the worker died or hung: find the row it was on and re-run those it never reached
                        status = arrays["status"]
                        culprit = [r for r in rows if status[r] in _ACTIVE]
                        if not culprit:  # died between rows: charge the next row, so retries stay bounded
                            culprit = [r for r in rows if status[r] not in _FINISHED][:1]
                        problems = [RowFault(r, reply.kind, reply.message) for r in culprit]
                        # Faults the worker had handled but could not report before it died.
                        problems += [
                            RowFault(
                                r, FaultKind.EXCEPTION, "plugin error (details lost: the worker died later in the step)"
                            )
                            for r in rows
                            if status[r] == RowState.FAULT
                        ]
                        retry_rows = [r for r in rows if status[r] not in _FINISHED and r not in culprit]
                        self._restart_worker(w)
                        for r in retry_rows:
                            fresh[r] = True  # the replacement worker starts these slots from scratch
                    for fault in problems:
                        row = fault.row
                        self.stats.record(fault.kind)
                        events.append(FaultEvent(fault.kind, group, row, slots[row], fault.message))
                        log.warning(
                            "fx fault (%s) in group %r slot %d: %s", fault.kind.value, group, slots[row], fault.message
                        )
                        # a slot's later frames already rendered past this row: a retry now would be out of order
                        overtaken = any(slots[r] == slots[row] and r > row and r not in retry_rows for r in rows)
                        if attempts[row] < self.max_retries and not overtaken:
                            attempts[row] += 1
                            self.stats.retries += 1
                            fresh[row] = True
                            retry_rows.append(row)
                        else:
                            failed[row] = True
                            arrays["out"][row] = arrays["audio"][row]
                            self.stats.rows_dropped += 1
                    if retry_rows:
                        retry_rows = sorted(retry_rows)
                        if spec.frames > 1:  # every retried row was marked fresh: only each slot's first
                            seen: set[int] = set()  # starts over, its later frames continue from it
                            for r in retry_rows:
                                fresh[r] = slots[r] not in seen
                                seen.add(slots[r])
                        todo.setdefault(w, []).extend(retry_rows)
        out = arrays["out"][:m].copy()
        self.build_stats.instances_built += built
        self.build_stats.build_s += build_s
        return RenderResult(out, failed, events, cpu, time.perf_counter() - t0, built, build_s)

    def _check_rows(self, group: str, spec: SlotGroup, slots: list[int], audio: np.ndarray, params: np.ndarray) -> None:
        m = len(slots)
        if m == 0:
            raise ValueError("render() needs at least one row")
        most = 1 if len(set(slots)) == m else max(Counter(slots).values())  # training: one set(), no counting
        if most > 1 and spec.frames == 1:
            raise ValueError("each slot may appear only once per batch (its plugin state is sequential)")
        if most > spec.frames:
            raise ValueError(
                f"a slot may appear at most {spec.frames} time(s) per call in group {group!r} (its rows are its "
                f"consecutive frames), got {most}"
            )
        if min(slots) < 0 or max(slots) >= spec.num_slots:
            raise ValueError(
                f"slot ids must lie in [0, {spec.num_slots}) for group {group!r}, got {min(slots)}..{max(slots)}"
            )
        expected_audio = (m, self.channels, self.block_size)
        if tuple(audio.shape) != expected_audio:
            raise ValueError(f"audio must be shaped {expected_audio} (rows, channels, block), got {tuple(audio.shape)}")
        expected_params = (m, spec.instances, self.num_params)
        if tuple(params.shape) != expected_params:
            raise ValueError(f"params must be shaped {expected_params} (rows, instances, P), got {tuple(params.shape)}")

    def _wait_any(
        self, busy: dict[int, list[int]], status: np.ndarray, started: np.ndarray, instances: int
    ) -> dict[int, Rendered | WorkerLost]:
        """Block until at least one busy worker answers (its :class:`Rendered`), dies, or overruns a row's build or
        render limit (a :class:`WorkerLost`)."""
        waitables = {self._conns[w]: w for w in busy}  # a dead worker's pipe reads as EOF
        poll = min(POLL_S, self.timeout_s / 4)
        while True:
            ready = wait(list(waitables), timeout=poll)
            outcome: dict[int, Rendered | WorkerLost] = {}
            for obj in ready:
                w = waitables[obj]
                if w in outcome:
                    continue
                conn = self._conns[w]
                if conn.poll():
                    try:
                        message = conn.recv()
                    except (EOFError, OSError):
                        pass
                    else:
                        if not isinstance(message, Rendered):
                            raise RuntimeError(f"fx worker {w} answered Render with {message!r} instead of Rendered")
                        outcome[w] = message
                        continue
                proc = self._procs[w]
                try:
                    proc.wait(timeout=EXIT_WAIT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                outcome[w] = WorkerLost(FaultKind.CRASH, f"worker process died ({_describe_exit(proc.returncode)})")
            if outcome:
                return outcome
            now = time.monotonic()
            for w, rows in busy.items():
                # one read of each row's status (the worker moves on meanwhile); its start time is written first
                active = next(((r, int(status[r])) for r in rows if status[r] in _ACTIVE), None)
                if active is None:
                    continue
                row, state = active
                elapsed = now - started[row]
                if state == RowState.BUILDING and elapsed > self.build_timeout_s:
                    outcome[w] = WorkerLost(
                        FaultKind.BUILD_TIMEOUT,
                        f"building {instances} plugin instance(s) exceeded build_timeout_s={self.build_timeout_s:g} s",
                    )
                elif state == RowState.RUNNING and elapsed > self.timeout_s:
                    outcome[w] = WorkerLost(FaultKind.TIMEOUT, f"plugin call exceeded {self.timeout_s:g} s")
            if outcome:
                return outcome


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"exit code {code}"


def _shutdown(procs, conns, shared: list[SharedArrays]) -> None:
    for conn in conns:
        if conn is not None:
            try:
                conn.send(Close())
            except Exception:
                pass
    deadline = time.monotonic() + SHUTDOWN_WAIT_S
    for proc in procs:
        if proc is None:
            continue
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for conn in conns:
        if conn is not None:
            conn.close()
    for s in shared:
        s.close()

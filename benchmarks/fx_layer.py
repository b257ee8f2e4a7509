"""Benchmark: one SPSA training step of the black-box layer vs. the plugins' own CPU time vs. one process per slot.

Usage::

    python benchmarks/fx_layer.py                      # M=100, 20 steps, workers = all CPUs (prints one JSON object)
    python benchmarks/fx_layer.py --quick              # CI smoke run (tiny numbers, < 30 s)
    python benchmarks/fx_layer.py --per-slot-batch 20  # measure the per-slot baseline at M'=20, scale to M
    python benchmarks/fx_layer.py --workers-sweep 1,2  # also: fx step at each pool size ("worker_scaling")
    python benchmarks/fx_layer.py --fd-ratio           # also: FD vs SPSA step cost on pb_mastering, P=50, M=4

``--workers-sweep`` and ``--fd-ratio`` add keys (``worker_scaling``; ``fd_vs_spsa``, ``fd_vs_spsa_step_ratio``,
``fd_vs_spsa_theory`` = (2P+1)/3 renders per slot) and leave the rest of the JSON as it is without them.

Three measurements on the same kind of data (random frames [M, 1, N] at about -20 dBFS RMS, θ ~ U[0, 1]^P perturbed
by the layer's own SPSA estimator, so every step renders 3·M blocks: θ, θ⁺, θ⁻ per slot):

``fx``        ``BlackBoxLayer(chain, num_slots=M)`` in training mode: ``y = layer(frames, θ, slot, fresh)`` then
              ``y.backward(g)`` (forward renders the 3·M blocks in the worker pool; backward only combines).
``plugin``    the plugins alone: 3·M chain instances built in this process, each ``chain.process(frame, θᵢ)``
              once per step, timed with ``time.process_time`` (no pool, no IPC, no torch).
``per_slot``  the official DeepAFx design: 3·M processes (``multiprocessing`` "spawn" context), one chain instance
              each; per step the parent pickles (frame, θᵢ) into every process's Pipe, then receives every
              output (pickled back), and does the SPSA combination itself.

The three are interleaved in rounds (rotating their order) so that load from other processes on the machine
hits all of them alike; medians over steps are reported. The parent runs with ``torch.set_num_threads(1)``: the
only torch work of a step is the tiny perturbation/combination, and extra intra-op threads would merely compete
with the plugin workers for the cores.

Only this file's ``__main__`` block imports torch: the spawned per-slot workers re-import this module and must
stay as light as the pool's own workers (numpy + the chain's backend).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from multiprocessing.connection import wait as mp_wait

import numpy as np

SAMPLE_RATE = 22050
BLOCK_SIZE = 1024
FRAME_RMS = 0.1  # about -20 dBFS: the compressors work (thresholds span [-60, 0] dB)


# ---------------------------------------------------------------------------------------------- per-slot baseline


def _per_slot_worker(conn, chain_name: str, sample_rate: int, block_size: int) -> None:  # runs in a child
    """One process, one chain instance: (frame, θ) in, rendered frame out, both pickled through the Pipe."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the parent, which then stops us
    from afx_lightning.registry import build_chain

    try:
        chain = build_chain(chain_name, sample_rate=sample_rate, block_size=block_size)
    except BaseException as exc:  # report, so the parent fails fast instead of waiting
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            break
        if message is None:
            break
        frame, theta = message
        conn.send(chain.process(frame, theta))
    chain.close()


class PerSlotProcesses:
    """3·M processes (forward, θ⁺, θ⁻ for each slot), each with one chain instance: DeepAFx's official layout."""

    def __init__(self, chain_name: str, num_slots: int, instances: int, startup_timeout_s: float = 300.0):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.num_slots, self.instances = num_slots, instances
        self.procs: list = []
        self.conns: list = []  # [slot * instances + i]
        t0 = time.perf_counter()
        try:
            for _ in range(num_slots * instances):
                parent, child = ctx.Pipe(duplex=True)
                proc = ctx.Process(
                    target=_per_slot_worker, args=(child, chain_name, SAMPLE_RATE, BLOCK_SIZE), daemon=True
                )
                proc.start()
                child.close()
                self.procs.append(proc)
                self.conns.append(parent)
            pending = {c: k for k, c in enumerate(self.conns)}
            deadline = time.monotonic() + startup_timeout_s
            while pending:
                ready = mp_wait(list(pending), timeout=max(0.0, deadline - time.monotonic()))
                if not ready:
                    raise TimeoutError(f"{len(pending)} per-slot process(es) did not start in {startup_timeout_s:g} s")
                for c in ready:
                    k = pending.pop(c)
                    try:
                        message = c.recv()
                    except EOFError:
                        raise RuntimeError(
                            f"per-slot process {k} died at start (exit {self.procs[k].exitcode})"
                        ) from None
                    if message[0] != "ready":
                        raise RuntimeError(f"per-slot process {k} failed: {message[1]}")
        except BaseException:
            self.close()
            raise
        self.startup_s = time.perf_counter() - t0

    def render(self, audio: np.ndarray, params: np.ndarray) -> np.ndarray:
        """audio [M, C, N], params [M, I, P] -> out [M, I, C, N]: send to all, then receive from all."""
        m, inst = params.shape[0], params.shape[1]
        for s in range(m):
            frame = audio[s]
            for i in range(inst):
                self.conns[s * self.instances + i].send((frame, params[s, i]))
        out = np.empty((m, inst) + audio.shape[1:], dtype=np.float32)
        for s in range(m):
            for i in range(inst):
                out[s, i] = self.conns[s * self.instances + i].recv()
        return out

    def close(self) -> None:
        for c in self.conns:
            try:
                c.send(None)
            except Exception:
                pass
        deadline = time.monotonic() + 5.0
        for p in self.procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(timeout=2.0)
            if p.is_alive():
                p.kill()
                p.join()
        for c in self.conns:
            c.close()
        self.procs, self.conns = [], []


# ---------------------------------------------------------------------------------------------- helpers


def _median(xs: Sequence[float]) -> float | None:
    return float(statistics.median(xs)) if xs else None


def _spread(xs: Sequence[float]) -> dict[str, float]:
    if not xs:
        return {}
    q = np.quantile(np.asarray(xs), [0.0, 0.25, 0.5, 0.75, 1.0])
    return {
        "n": len(xs),
        "min": float(q[0]),
        "p25": float(q[1]),
        "median": float(q[2]),
        "p75": float(q[3]),
        "max": float(q[4]),
    }


def _sched_each(pids: Sequence[int]) -> np.ndarray:
    """[len(pids), 2]: on-CPU s and run-queue wait s of each process (Linux ``/proc/<pid>/schedstat``; 0 elsewhere).

    The wait is time a process was runnable but not running: on a shared machine it shows how much of a
    step's wall time went to other processes rather than to the benchmark.
    """
    out = np.zeros((len(pids), 2))
    for k, pid in enumerate(pids):
        try:
            with open(f"/proc/{pid}/schedstat") as f:
                run_ns, wait_ns = f.read().split()[:2]
            out[k] = (int(run_ns) * 1e-9, int(wait_ns) * 1e-9)
        except (OSError, ValueError):
            pass
    return out


def _sched(pids: Sequence[int]) -> np.ndarray:
    """[on-CPU s, run-queue wait s] summed over ``pids``."""
    return _sched_each(pids).sum(axis=0)


def _log(msg: str) -> None:
    print(f"[fx_layer] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from afx_lightning.blackbox import default_num_workers

    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--chain", default="pb_mb_compressor", help="registered chain name (default: %(default)s)")
    ap.add_argument("--batch", "-M", type=int, default=100, help="batch size M = training slots (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=20, help="measured steps of fx and plugin (default: %(default)s)")
    ap.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="unmeasured steps first; the first creates instances (default: %(default)s)",
    )
    ap.add_argument(
        "--workers", type=int, default=default_num_workers(), help="fx pool workers (default: all CPUs = %(default)s)"
    )
    ap.add_argument(
        "--per-slot-steps", type=int, default=None, help="measured steps of the per-slot baseline (default: --steps)"
    )
    ap.add_argument(
        "--per-slot-batch",
        type=int,
        default=None,
        help="measure the per-slot baseline at this M' <= M (3·M' processes) and scale its step time by M/M' (default: M)",
    )
    ap.add_argument("--no-per-slot", action="store_true", help="skip the per-slot baseline")
    ap.add_argument("--rounds", type=int, default=None, help="interleaving rounds (default: min(steps, 5))")
    ap.add_argument("--epsilon", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="CI smoke run: M=6, 3 steps, 1 warm-up, 2 workers max")
    ap.add_argument(
        "--workers-sweep",
        default=None,
        metavar="W1,W2,...",
        help="also time the fx step of --chain at M with each pool size (adds 'worker_scaling')",
    )
    ap.add_argument(
        "--fd-ratio", action="store_true", help="also time the fx step with gradient='fd' vs 'spsa' (adds 'fd_vs_spsa')"
    )
    ap.add_argument("--fd-chain", default="pb_mastering", help="chain of --fd-ratio (default: %(default)s)")
    ap.add_argument(
        "--fd-batch", type=int, default=4, help="M of --fd-ratio (FD renders (2P+1)·M blocks; default: %(default)s)"
    )
    ap.add_argument(
        "--fd-steps", type=int, default=5, help="measured steps of each --fd-ratio method (default: %(default)s)"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.steps, args.warmup = min(args.batch, 6), min(args.steps, 3), min(args.warmup, 1)
        args.workers = min(args.workers, 2)
        args.rounds = 1
        args.fd_steps = min(args.fd_steps, 2)
    if args.workers_sweep:
        try:
            args.workers_sweep = [int(w) for w in str(args.workers_sweep).split(",") if w.strip()]
        except ValueError:
            ap.error("--workers-sweep takes comma-separated integers, e.g. 1,2")
        if not args.workers_sweep or min(args.workers_sweep) < 1:
            ap.error("--workers-sweep needs pool sizes >= 1")
    if args.per_slot_steps is None:
        args.per_slot_steps = args.steps
    if args.per_slot_batch is None or args.per_slot_batch > args.batch:
        args.per_slot_batch = args.batch
    if args.rounds is None:
        args.rounds = max(1, min(args.steps, 5))
    if min(args.batch, args.steps, args.workers, args.per_slot_batch) < 1 or args.warmup < 1:
        ap.error("--batch, --steps, --workers, --per-slot-batch must be >= 1 and --warmup >= 1 (it creates instances)")
    return args


def _split(total: int, rounds: int) -> list[int]:
    """``total`` steps over ``rounds`` rounds, as evenly as possible."""
    base, extra = divmod(total, rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


# ---------------------------------------------------------------------------------------------- benchmark


def run(args: argparse.Namespace) -> dict:
    import torch

    from afx_lightning.blackbox import BlackBoxLayer
    from afx_lightning.blackbox.gradients import GradientEstimator
    from afx_lightning.registry import build_chain

    torch.set_num_threads(1)
    m, n = args.batch, BLOCK_SIZE
    rng = np.random.default_rng(args.seed)
    total_steps = args.warmup + max(args.steps, args.per_slot_steps)
    # The same data for every method: step t uses frames[t], thetas[t], grads[t].
    frames = [(FRAME_RMS * rng.standard_normal((m, 1, n))).astype(np.float32) for _ in range(total_steps)]
    grads = [rng.standard_normal((m, 1, n)).astype(np.float32) for _ in range(total_steps)]
    probe = build_chain(args.chain, sample_rate=SAMPLE_RATE, block_size=BLOCK_SIZE)
    p = probe.num_params
    probe.close()
    thetas = [rng.random((m, p)).astype(np.float32) for _ in range(total_steps)]
    estimator = GradientEstimator("spsa", args.epsilon, 1)
    instances = estimator.num_instances(p)  # 3
    slot = torch.arange(m)
    no_fresh = torch.zeros(m, dtype=torch.bool)

    layer: BlackBoxLayer | None = None
    per_slot: PerSlotProcesses | None = None
    chains: list = []
    res: dict[str, list[float]] = {
        k: []
        for k in (
            "fx_step",
            "fx_fwd",
            "fx_bwd",
            "fx_parent_cpu",
            "fx_worker_cpu",
            "fx_sched_cpu",
            "fx_wait",
            "fx_critical",
            "plugin_cpu",
            "plugin_wall",
            "plugin_wait",
            "per_slot_step",
            "per_slot_parent_cpu",
            "per_slot_sched_cpu",
            "per_slot_wait",
        )
    }
    counters = {"fx": 0, "plugin": 0, "per_slot": 0}
    info: dict[str, object] = {}
    try:
        # ---- fx layer
        t0 = time.perf_counter()
        layer = BlackBoxLayer(
            args.chain,
            SAMPLE_RATE,
            BLOCK_SIZE,
            1,
            num_slots=m,
            epsilon=args.epsilon,
            num_workers=args.workers,
            seed=args.seed,
        ).train()
        pool = layer.pool  # start the workers now, not inside the first step
        # parent + pool workers (private attribute, read only for the scheduler accounting)
        fx_pids = [os.getpid()] + [p.pid for p in getattr(pool, "_procs", []) if p is not None]
        info["fx_startup_s"] = time.perf_counter() - t0

        def fx_step(t: int, record: bool) -> None:
            audio = torch.from_numpy(frames[t])
            theta = torch.from_numpy(thetas[t]).clone().requires_grad_(True)
            g = torch.from_numpy(grads[t])
            fresh = torch.ones(m, dtype=torch.bool) if t == 0 else no_fresh
            s0 = _sched_each(fx_pids)
            c0, w0 = time.process_time(), time.perf_counter()
            y = layer(audio, theta, slot, fresh)
            w1 = time.perf_counter()
            y.backward(g)
            w2, c1 = time.perf_counter(), time.process_time()
            s1 = _sched_each(fx_pids)
            assert theta.grad is not None and torch.isfinite(theta.grad).all()
            if record:
                res["fx_step"].append(w2 - w0)
                res["fx_fwd"].append(w1 - w0)
                res["fx_bwd"].append(w2 - w1)
                res["fx_parent_cpu"].append(c1 - c0)
                res["fx_worker_cpu"].append(layer.last_result.plugin_cpu_s)
                d = s1 - s0  # rows: parent, workers...
                res["fx_sched_cpu"].append(float(d[:, 0].sum()))
                res["fx_wait"].append(float(d[:, 1].sum()))
                # The parent's work is serial (before the sends, after the replies); workers run side by side.
                res["fx_critical"].append(float(d[0, 0] + d[1:, 0].max()))

        # ---- plugins alone: 3·M instances in this process
        t0 = time.perf_counter()
        chains = [build_chain(args.chain, sample_rate=SAMPLE_RATE, block_size=BLOCK_SIZE) for _ in range(m * instances)]
        info["plugin_build_s"] = time.perf_counter() - t0
        plugin_gen = torch.Generator().manual_seed(args.seed)

        def plugin_step(t: int, record: bool) -> None:
            params, _ = estimator.perturb(torch.from_numpy(thetas[t]), plugin_gen)
            params_np, audio = params.numpy(), frames[t]
            s0 = _sched([os.getpid()])
            c0, w0 = time.process_time(), time.perf_counter()
            for s in range(m):
                frame = audio[s]
                for i in range(instances):
                    chains[s * instances + i].process(frame, params_np[s, i])
            c1, w1 = time.process_time(), time.perf_counter()
            s1 = _sched([os.getpid()])
            if record:
                res["plugin_cpu"].append(c1 - c0)
                res["plugin_wall"].append(w1 - w0)
                res["plugin_wait"].append(s1[1] - s0[1])

        # ---- per-slot processes (official DeepAFx layout)
        mp_slots = args.per_slot_batch
        per_slot_gen = torch.Generator().manual_seed(args.seed)
        if not args.no_per_slot:
            _log(f"starting {mp_slots * instances} per-slot processes (spawn) ...")
            per_slot = PerSlotProcesses(args.chain, mp_slots, instances)
            info["per_slot_startup_s"] = per_slot.startup_s
            _log(f"per-slot processes ready in {per_slot.startup_s:.1f} s")
            per_slot_pids = [os.getpid()] + [p.pid for p in per_slot.procs]

        def per_slot_step(t: int, record: bool) -> None:
            audio_np = frames[t][:mp_slots]
            theta = torch.from_numpy(thetas[t][:mp_slots])
            g = torch.from_numpy(grads[t][:mp_slots])
            s0 = _sched(per_slot_pids)
            c0, w0 = time.process_time(), time.perf_counter()
            params, step = estimator.perturb(theta, per_slot_gen)
            out = torch.from_numpy(per_slot.render(audio_np, params.numpy()))  # [M', 3, C, N]
            y = out[:, 0]
            difference = out[:, 1:2] - out[:, 2:]
            grad = estimator.combine(torch.einsum("mcn,mdcn->md", g, difference), step)
            w1, c1 = time.perf_counter(), time.process_time()
            s1 = _sched(per_slot_pids)
            assert y.shape == g.shape and torch.isfinite(grad).all()
            if record:
                res["per_slot_step"].append(w1 - w0)
                res["per_slot_parent_cpu"].append(c1 - c0)
                res["per_slot_sched_cpu"].append(s1[0] - s0[0])
                res["per_slot_wait"].append(s1[1] - s0[1])

        methods = {"fx": (fx_step, args.steps), "plugin": (plugin_step, args.steps)}
        if per_slot is not None:
            methods["per_slot"] = (per_slot_step, args.per_slot_steps)

        _log(f"warm-up: {args.warmup} step(s) each")
        for name, (fn, _) in methods.items():
            for t in range(args.warmup):
                fn(t, False)
                counters[name] += 1

        _log(f"measuring in {args.rounds} interleaved round(s)")
        plan = {name: _split(total, args.rounds) for name, (_, total) in methods.items()}
        order = list(methods)
        for r in range(args.rounds):
            for name in order[r % len(order) :] + order[: r % len(order)]:  # rotate who goes first
                fn = methods[name][0]
                for _ in range(plan[name][r]):
                    fn(counters[name], True)
                    counters[name] += 1
            _log(
                f"round {r + 1}/{args.rounds}: fx {_median(res['fx_step']):.4f} s, plugin cpu "
                f"{_median(res['plugin_cpu']):.4f} s"
                + (f", per-slot {_median(res['per_slot_step']):.4f} s" if res["per_slot_step"] else "")
            )
        info["fx_fault_stats"] = layer.fault_stats.as_dict()
    finally:
        if layer is not None:
            layer.close()
        if per_slot is not None:
            per_slot.close()
        for c in chains:
            c.close()

    fx_step_s = _median(res["fx_step"])
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # Steps in which the benchmark's own processes waited for a CPU less than 5 % of the step: what the pool
    # does on an otherwise idle machine (the parent's own wait on 2 cores with 2 workers is ~0).
    quiet = [w for w, q in zip(res["fx_step"], res["fx_wait"]) if q < 0.05 * w]
    plugin_cpu_s = _median(res["plugin_cpu"])
    scale = m / mp_slots
    per_slot_measured = _median(res["per_slot_step"])
    per_slot_step_s = per_slot_measured * scale if per_slot_measured is not None else None
    result = {
        "chain": args.chain,
        "M": m,
        "P": p,
        "K": 1,
        "renders_per_step": m * instances,
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "cpus_usable": ncpu,
        "steps": args.steps,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "fx_step_s": fx_step_s,
        "fx_forward_s": _median(res["fx_fwd"]),
        "fx_backward_s": _median(res["fx_bwd"]),
        "plugin_cpu_s": plugin_cpu_s,
        "overhead": fx_step_s / plugin_cpu_s,
        # Wall against wall, both under the same (interleaved) load: robust to other processes on the machine.
        "overhead_vs_plugin_wall": fx_step_s / _median(res["plugin_wall"]),
        "per_slot_step_s": per_slot_step_s,
        "speedup_vs_per_slot_processes": (per_slot_step_s / fx_step_s) if per_slot_step_s else None,
        "per_slot_processes": (mp_slots * instances) if per_slot is not None else 0,
        "per_slot_M": mp_slots if per_slot is not None else None,
        "per_slot_steps": args.per_slot_steps if per_slot is not None else 0,
        "per_slot_scaling": (
            None
            if per_slot is None
            else "none: measured at the full M"
            if mp_slots == m
            else f"measured with {mp_slots * instances} processes at M'={mp_slots}, step time scaled by M/M' = {scale:g}"
        ),
        "details": {
            "fx_step_s": _spread(res["fx_step"]),
            "fx_parent_cpu_s": _median(res["fx_parent_cpu"]),
            "fx_worker_cpu_s": _median(res["fx_worker_cpu"]),
            "fx_sched_cpu_s": _median(res["fx_sched_cpu"]),
            "fx_runqueue_wait_s": _spread(res["fx_wait"]),
            "fx_step_s_quiet": _spread(quiet),
            "fx_step_s_idle_estimate": _median(res["fx_critical"]),
            "plugin_cpu_s": _spread(res["plugin_cpu"]),
            "plugin_wall_s": _median(res["plugin_wall"]),
            "plugin_runqueue_wait_s": _median(res["plugin_wait"]),
            "plugin_cpu_per_render_us": plugin_cpu_s / (m * instances) * 1e6,
            "ideal_fx_step_s": plugin_cpu_s / args.workers,
            "per_slot_step_s_measured": _spread(res["per_slot_step"]),
            "per_slot_parent_cpu_s": _median(res["per_slot_parent_cpu"]),
            "per_slot_sched_cpu_s": _median(res["per_slot_sched_cpu"]),
            # No faster than the parent's own serial CPU, nor than all its processes' CPU spread over the cores.
            "per_slot_step_s_idle_lower_bound": (
                max(_median(res["per_slot_parent_cpu"]), _median(res["per_slot_sched_cpu"]) / ncpu) * scale
                if res["per_slot_step"]
                else None
            ),
            "per_slot_runqueue_wait_s": _median(res["per_slot_wait"]),
            **{k: v for k, v in info.items()},
        },
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.platform(),
        "processor": platform.machine(),
        "notes": (
            "fx_step_s: wall time of forward+backward of the layer in training mode (3·M renders in the pool). "
            "plugin_cpu_s: process_time of the same 3·M chain.process calls in one process (no pool). "
            "overhead = fx_step_s / plugin_cpu_s (< 1 means the pool's parallelism more than pays for its IPC). "
            "fx_worker_cpu_s: the pool workers' render-loop CPU per step, summed (process_time in the workers). "
            "*_sched_cpu_s / *_runqueue_wait_s: on-CPU and runnable-but-waiting time per step of all the method's "
            "processes (parent + workers), from /proc/<pid>/schedstat; a large wait means other processes on the "
            "machine took the cores. fx_step_s_quiet: fx steps whose wait was < 5% of the step. "
            "fx_step_s_idle_estimate: parent CPU + the busiest worker's CPU per step, i.e. the step's critical "
            "path with no other load (a model, not a measurement). per_slot_step_s_idle_lower_bound: "
            "max(parent CPU, all its processes' CPU / cores) per step (scaled like per_slot_step_s). "
            "overhead_vs_plugin_wall: fx_step_s over the wall time of the in-process plugin loop, both under the "
            "same load. "
            "Parent runs torch.set_num_threads(1). Medians over steps; methods interleaved in rounds."
        ),
    }
    return result


# ---------------------------------------------------------------------------------------------- optional extras


def time_layer_steps(
    chain: str, m: int, workers: int, gradient: str, steps: int, warmup: int, epsilon: float, seed: int
) -> dict:
    """Median wall time of forward+backward of ``BlackBoxLayer(chain, gradient=...)`` in training mode at M=m."""
    import torch

    from afx_lightning.blackbox import BlackBoxLayer

    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    layer = None
    times: list[float] = []
    try:
        t0 = time.perf_counter()
        layer = BlackBoxLayer(
            chain,
            SAMPLE_RATE,
            BLOCK_SIZE,
            1,
            num_slots=m,
            gradient=gradient,
            epsilon=epsilon,
            num_workers=workers,
            seed=seed,
        ).train()
        _ = layer.pool  # start the workers now
        startup_s = time.perf_counter() - t0
        p = layer.num_params
        instances = layer.estimator.num_instances(p)
        slot = torch.arange(m)
        for t in range(warmup + steps):
            audio = torch.from_numpy((FRAME_RMS * rng.standard_normal((m, 1, BLOCK_SIZE))).astype(np.float32))
            theta = torch.from_numpy(rng.random((m, p)).astype(np.float32)).requires_grad_(True)
            g = torch.from_numpy(rng.standard_normal((m, 1, BLOCK_SIZE)).astype(np.float32))
            fresh = torch.full((m,), t == 0, dtype=torch.bool)
            w0 = time.perf_counter()
            y = layer(audio, theta, slot, fresh)
            y.backward(g)
            w1 = time.perf_counter()
            assert theta.grad is not None and torch.isfinite(theta.grad).all()
            if t >= warmup:
                times.append(w1 - w0)
        faults = layer.fault_stats.as_dict()
    finally:
        if layer is not None:
            layer.close()
    return {
        "fx_step_s": _median(times),
        "fx_step_s_spread": _spread(times),
        "instances_per_slot": instances,
        "renders_per_step": instances * m,
        "startup_s": startup_s,
        "P": p,
        "faults": {k: v for k, v in faults.items() if v},
    }


def workers_sweep(args: argparse.Namespace) -> list[dict]:
    out = []
    for w in args.workers_sweep:
        _log(f"workers sweep: {args.chain}, M={args.batch}, {w} worker(s)")
        r = time_layer_steps(args.chain, args.batch, w, "spsa", args.steps, args.warmup, args.epsilon, args.seed)
        out.append(
            {
                "workers": w,
                "fx_step_s": r["fx_step_s"],
                "fx_step_s_spread": r["fx_step_s_spread"],
                "faults": r["faults"],
            }
        )
    base = out[0]["fx_step_s"]
    for row in out:
        row["speedup_vs_first"] = base / row["fx_step_s"]
    return out


def fd_vs_spsa(args: argparse.Namespace) -> dict:
    workers = args.workers
    res = {}
    for gradient in ("spsa", "fd"):
        _log(f"fd ratio: {args.fd_chain}, M={args.fd_batch}, gradient={gradient}")
        res[gradient] = time_layer_steps(
            args.fd_chain, args.fd_batch, workers, gradient, args.fd_steps, 1, args.epsilon, args.seed
        )
    p = res["fd"]["P"]
    theory = res["fd"]["instances_per_slot"] / res["spsa"]["instances_per_slot"]  # (2P+1)/3 at K=1
    return {
        "chain": args.fd_chain,
        "M": args.fd_batch,
        "P": p,
        "workers": workers,
        "steps": args.fd_steps,
        "spsa_step_s": res["spsa"]["fx_step_s"],
        "fd_step_s": res["fd"]["fx_step_s"],
        "fd_vs_spsa_step_ratio": res["fd"]["fx_step_s"] / res["spsa"]["fx_step_s"],
        "fd_vs_spsa_theory": theory,
        "theory_formula": f"(2P+1)/3 = {2 * p + 1}/3 renders per slot",
        "renders_per_step": {"spsa": res["spsa"]["renders_per_step"], "fd": res["fd"]["renders_per_step"]},
        "details": res,
        "note": "below theory when the small SPSA step is dominated by fixed per-step costs (IPC, scheduling)",
    }


def main(argv: Sequence[str] | None = None) -> int:
    import signal

    # A plain `kill` unwinds through the finally blocks too, so no worker or shared-memory block is left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_args(argv)
    result = run(args)
    if args.workers_sweep:
        result["worker_scaling"] = workers_sweep(args)
    if args.fd_ratio:
        result["fd_vs_spsa"] = fd_vs_spsa(args)
        result["fd_vs_spsa_step_ratio"] = result["fd_vs_spsa"]["fd_vs_spsa_step_ratio"]
        result["fd_vs_spsa_theory"] = result["fd_vs_spsa"]["fd_vs_spsa_theory"]
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
